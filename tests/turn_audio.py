"""The end-of-turn test set, made here and never committed: questions spoken by Piper and espeak-ng,
ten with a 0.4-0.8 s pause mid-sentence, some ending in a filler ("um"), some with keyboard clicks
under them, each with the span of every part it is spoken in.

    .venv/bin/python -m tests.turn_audio DIR     # writes DIR/piper.wav, DIR/espeak.wav, DIR/truth.json

Each voice says the twelve questions of SCRIPT in order, 1.5-2.5 s apart, over faint room noise
(-60 dBFS). espeak-ng speaks a paused question as one sentence with an SSML break in it (one
intonation over the whole question); Piper speaks its parts one by one, joined with the pause, so
each part ends with a falling voice, as a finished sentence would: the harder case for a detector
that listens for an unfinished question. Truth is taken from the audio: a part starts at its first
10 ms slice above -50 dBFS and ends at its last one (the last word's end).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from core.media import SAMPLE_RATE, load_audio, wav_bytes

SLICE = SAMPLE_RATE // 100  # 10 ms, the resolution of the truth
SPEECH_DBFS = -50.0  # a slice this loud is speech (the room noise is -60 dBFS)
NOISE_DBFS = -60.0
PEAK = 0.5  # each question is scaled to this peak
GAPS_S = (1.5, 2.0, 2.5)  # between questions, in turn
LEAD_S, TAIL_S = 1.0, 2.5  # silence before the first question and after the last
CLICKS_PER_S = 6  # typing: 10 ms decaying bursts (bench/vad.py's keyboard case)


@dataclass(frozen=True)
class Question:
    """What is said: its parts, the pause after each part but the last (s), and whether typing runs
    under it (from 0.5 s before it to the next question)."""

    parts: tuple[str, ...]
    pauses: tuple[float, ...] = ()
    clicks: bool = False


# (piper pause, espeak pause): ten pauses from 0.4 to 0.8 s over the five paused questions
SCRIPT: tuple[tuple[Question, Question], ...] = tuple(
    (Question(parts, (p,), clicks), Question(parts, (e,), clicks)) if p else (Question(parts, (), clicks),) * 2
    for parts, p, e, clicks in [
        (("What is the man", "holding in his hand?"), 0.4, 0.5, False),
        (("What is in this picture?",), 0, 0, False),
        (("How many people are", "standing by the door?"), 0.6, 0.7, False),
        (("Describe the weather in this photo.",), 0, 0, True),
        (("What colour is the", "car on the left?"), 0.8, 0.45, True),
        (("Who is sitting at the table?",), 0, 0, True),
        (("Where was this photo taken? Um",), 0, 0, False),
        (("Is there a dog, um,", "next to the bench?"), 0.55, 0.75, False),
        (("Is it day or night?",), 0, 0, False),
        (("Can you read the", "words on the sign?"), 0.65, 0.8, False),
        (("What are they eating? Um",), 0, 0, False),
        (("What is on the wall behind her?",), 0, 0, False),
    ]
)
VOICES = ("piper", "espeak")


@dataclass(frozen=True)
class Part:
    text: str
    start_s: float  # first speech slice, seconds from the start of the stream
    end_s: float  # end of its last speech slice


@dataclass(frozen=True)
class Spoken:
    """A question as it lies in its stream."""

    voice: str
    parts: tuple[Part, ...]
    clicks: bool

    @property
    def text(self) -> str:
        return " ".join(part.text for part in self.parts)

    @property
    def start_s(self) -> float:
        return self.parts[0].start_s

    @property
    def end_s(self) -> float:
        """The end of the last word: what an end-of-turn delay is measured from."""
        return self.parts[-1].end_s

    @property
    def longest_pause_s(self) -> float:
        return max((b.start_s - a.end_s for a, b in zip(self.parts, self.parts[1:])), default=0.0)


@dataclass(frozen=True, eq=False)
class Stream:
    voice: str
    samples: np.ndarray  # float32 at SAMPLE_RATE
    questions: tuple[Spoken, ...]


def speech_slices(samples: np.ndarray) -> np.ndarray:
    """Whether each 10 ms slice is speech (louder than SPEECH_DBFS)."""
    slices = samples[: len(samples) // SLICE * SLICE].reshape(-1, SLICE)
    return 10 * np.log10(np.mean(slices.astype(np.float64) ** 2, axis=1) + 1e-12) > SPEECH_DBFS


def trimmed(samples: np.ndarray) -> np.ndarray:
    loud = np.flatnonzero(speech_slices(samples))
    if not len(loud):
        raise ValueError("no speech in the synthesised audio")
    return samples[loud[0] * SLICE:(loud[-1] + 1) * SLICE]


def spans(samples: np.ndarray, min_gap_s: float = 0.3) -> list[tuple[int, int]]:
    """(start, end) samples of each run of speech slices, runs closer than min_gap_s joined."""
    loud = np.flatnonzero(speech_slices(samples))
    runs = [[loud[0], loud[0]]]
    for index in loud[1:]:
        if (index - runs[-1][1]) * SLICE > min_gap_s * SAMPLE_RATE:
            runs.append([index, index])
        runs[-1][1] = index
    return [(a * SLICE, (b + 1) * SLICE) for a, b in runs]


def espeak(question: Question) -> np.ndarray:
    """One sentence, an SSML break where each pause is (its intonation runs over the whole question)."""
    breaks = [f'<break time="{round(p * 1000)}ms"/>' for p in question.pauses] + [""]
    ssml = "<speak>" + " ".join(f"{part} {pause}" for part, pause in zip(question.parts, breaks)) + "</speak>"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-m", "-s", "160", "-w", str(out), ssml], check=True, capture_output=True)
        return trimmed(load_audio(out.read_bytes(), max_seconds=60).samples)


class Piper:
    """The bundled Piper voice, each part spoken on its own and joined with the pause."""

    def __init__(self):
        from core.engines.tts import PiperSpeaker

        self.speaker = PiperSpeaker()

    def __call__(self, question: Question) -> np.ndarray:
        pieces = []
        for part, pause in zip(question.parts, question.pauses + (0.0,)):
            audio = load_audio(self.speaker.speak(part).audio, max_seconds=60).samples
            pieces += [trimmed(audio), np.zeros(int(pause * SAMPLE_RATE), np.float32)]
        return np.concatenate(pieces)


def add_clicks(samples: np.ndarray, start: int, end: int, rng: np.random.Generator, per_s: float = CLICKS_PER_S) -> None:
    """Typing on a keyboard between samples start and end, in place: 10 ms decaying bursts (peak 0.3)."""
    burst = int(0.01 * SAMPLE_RATE)
    shape = np.exp(-np.linspace(0, 5, burst)).astype(np.float32) * 0.3
    for at in rng.integers(start, max(start + 1, end - burst), int(per_s * (end - start) / SAMPLE_RATE)):
        samples[at:at + burst] += shape * rng.normal(0, 1, burst).astype(np.float32)
    np.clip(samples, -1, 1, out=samples)


def stream(voice: str, questions: list[Question], say, seed: int = 0) -> Stream:
    """The questions said one after another by `say`, GAPS_S apart, with room noise and typing."""
    rng = np.random.default_rng(seed)
    pieces, placed, at = [np.zeros(int(LEAD_S * SAMPLE_RATE), np.float32)], [], int(LEAD_S * SAMPLE_RATE)
    for number, question in enumerate(questions):
        audio = say(question)
        audio = audio * (PEAK / max(1e-6, np.max(np.abs(audio))))
        found = spans(audio, min_gap_s=min(question.pauses, default=1.0) - 0.1)
        if len(found) != len(question.parts):
            raise ValueError(f"{voice}: {question.parts} came out in {len(found)} parts")
        parts = tuple(Part(text, float((at + a) / SAMPLE_RATE), float((at + b) / SAMPLE_RATE))
                      for text, (a, b) in zip(question.parts, found))
        gap = np.zeros(int((TAIL_S if number == len(questions) - 1 else GAPS_S[number % 3]) * SAMPLE_RATE), np.float32)
        pieces += [audio.astype(np.float32), gap]
        placed.append((Spoken(voice, parts, question.clicks), at, at + len(audio) + len(gap)))
        at += len(audio) + len(gap)
    samples = np.concatenate(pieces)
    samples += rng.normal(0, 10 ** (NOISE_DBFS / 20), len(samples)).astype(np.float32)
    for spoken, start, end in placed:
        if spoken.clicks:
            add_clicks(samples, max(0, start - SAMPLE_RATE // 2), end, rng)
    return Stream(voice, samples, tuple(spoken for spoken, _, _ in placed))


def make_set(voices: tuple[str, ...] = VOICES, count: int | None = None) -> list[Stream]:
    """One stream per voice, each with the first `count` questions of SCRIPT (all by default)."""
    speakers = {"piper": Piper, "espeak": lambda: espeak}
    return [stream(voice, [pair[VOICES.index(voice)] for pair in SCRIPT[:count]], speakers[voice](), seed)
            for seed, voice in enumerate(voices)]


def words(text: str) -> list[str]:
    """Lower case, punctuation gone: what a word error rate compares."""
    return "".join(c if c.isalnum() or c == "'" else " " for c in text.lower()).split()


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, words in the reference): Levenshtein over words."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, other in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (word != other))
    return row[-1], len(ref)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for made in make_set():
        (args.folder / f"{made.voice}.wav").write_bytes(wav_bytes(made.samples))
        truth[made.voice] = [asdict(question) for question in made.questions]
    (args.folder / "truth.json").write_text(json.dumps(truth, indent=1) + "\n")


if __name__ == "__main__":
    main()
