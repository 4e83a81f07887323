"""End of turn by meaning against a fixed silence, side by side, and the transcript made while the
person speaks; on the turn test set (tests/turn_audio.py: 24 questions by Piper and espeak-ng, ten
with a 0.4-0.8 s pause mid-sentence, two ending in "um", six with typing under them).

    .venv/bin/python bench/turn_end.py [--out bench/results/turn_end-cpu-DATE.json] [--quick]

Each detector is core.listening's Listener fed the stream's 20 ms frames at real-time pace (the
frame is handed over when its last sample would have been heard), with the bundled Whisper base
transcribing at each pause in its worker thread, as the server would run it:

  energy, 0.7 s      the page's detector (ui/js/call_mode.js, ported) and its 0.7 s silence
  silero, 0.7 s / 0.3 s   Silero VAD v6 and a fixed silence
  smart-turn         Silero, then smart-turn v3 after 0.24 s of silence; 1.2 s still ends a turn
  smart-turn + words the same, and a turn it hears as finished ends once the words of the pause
                     (the incremental transcript) do not stop on "the", "and", "um"...
  ..., transcript in pieces   smart-turn, the transcript made of pieces between pauses (not the
                     whole turn so far at each pause: core/listening/incremental.py)

Per detector: questions cut in the middle (heard in two turns or more), turns that merge questions,
missed questions, false turns, the end-of-turn delay after the last word (wall clock: the model's
time included; median, p90), the speech-start latency (barge-in), CPU per decision. Per transcript:
the word error rate of the incremental transcript against one pass over the same turn and against
the script, and the time left after the end of the turn (incremental; and one pass, for comparison).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.quick import parse_args  # noqa: E402
from core.listening.listener import Listener, SpeechStarted, TurnEnded  # noqa: E402
from core.listening.speech import FRAME, EnergyDetector, SileroDetector  # noqa: E402
from core.listening.turn_end import SilenceRule, SmartTurn, SmartTurnRule  # noqa: E402
from core.media import SAMPLE_RATE  # noqa: E402
from tests.turn_audio import SCRIPT, make_set, word_errors  # noqa: E402


def detectors(model: SmartTurn) -> dict:
    """name -> (a new (detector, rule) pair for one stream, the incremental transcript's way or None).
    The transcripts of those whose figures differ (the page's rule, smart-turn's) are measured:
    Whisper is most of this benchmark's time."""
    return {
        "energy, 0.7 s (the page)": (lambda: (EnergyDetector(), SilenceRule(0.7)), "whole"),
        "silero, 0.7 s": (lambda: (SileroDetector(), SilenceRule(0.7)), None),
        "silero, 0.3 s": (lambda: (SileroDetector(), SilenceRule(0.3)), None),
        "silero + smart-turn v3": (lambda: (SileroDetector(), SmartTurnRule(model)), "whole"),
        "silero + smart-turn v3, transcript in pieces": (lambda: (SileroDetector(), SmartTurnRule(model)), "pieces"),
        "silero + smart-turn v3 + words": (lambda: (SileroDetector(), SmartTurnRule(model, check_words=True)), "whole"),
    }


def listen(listener: Listener, samples: np.ndarray, real_time: bool) -> list[tuple[object, float]]:
    """Feed the frames (at real-time pace, or as fast as they go); each event with its time on the
    stream's clock: wall seconds since the stream began, or, not in real time, when it would have
    come (a frame is taken when it is heard or when the one before is done, and takes its time)."""
    heard, start, clock = [], time.perf_counter(), 0.0
    for at in range(0, len(samples) - FRAME + 1, FRAME):
        due = (at + FRAME) / SAMPLE_RATE
        if real_time and (wait := start + due - time.perf_counter()) > 0:
            time.sleep(wait)
        began = time.perf_counter()
        events = listener.feed(samples[at:at + FRAME])
        clock = max(clock, due) + time.perf_counter() - began
        for event in events:
            heard.append((event, time.perf_counter() - start if real_time else clock))
            if isinstance(event, TurnEnded) and event.transcript:
                note_done(event)
    return heard


done: dict = {}  # TurnEnded -> seconds from its event to its transcript


def note_done(event: TurnEnded) -> None:
    ended = time.perf_counter()
    event.transcript.add_done_callback(lambda _: done.setdefault(event, time.perf_counter() - ended))


def overlaps(turn: TurnEnded, question) -> bool:
    return turn.start_sample / SAMPLE_RATE < question.end_s and turn.end_sample / SAMPLE_RATE > question.start_s


def score_stream(events, questions) -> dict:
    """Cut, merged, missed, false, delays and onsets of one stream's turns against its questions."""
    turns = [(e, t) for e, t in events if isinstance(e, TurnEnded)]
    starts = [e for e, _ in events if isinstance(e, SpeechStarted)]
    out = {"cut": 0, "merging_turns": 0, "missed": 0, "false": 0, "delays": [], "paused_delays": [], "onsets": [],
           "matched": [], "reasons": [e.reason for e, _ in turns]}
    for turn, _ in turns:
        hits = [q for q in questions if overlaps(turn, q)]
        out["false"] += not hits
        out["merging_turns"] += len(hits) > 1
    for question in questions:
        mine = [(e, t) for e, t in turns if overlaps(e, question)]
        out["missed"] += not mine
        out["cut"] += len(mine) > 1
        if len(mine) == 1 and sum(overlaps(mine[0][0], q) for q in questions) == 1:
            out["delays"].append(mine[0][1] - question.end_s)
            if question.longest_pause_s:
                out["paused_delays"].append(mine[0][1] - question.end_s)
            out["matched"].append((question, mine[0][0]))
        onset = [s.heard_sample / SAMPLE_RATE - question.start_s for s in starts
                 if abs(s.start_sample / SAMPLE_RATE - question.start_s) < 0.3]
        out["onsets"] += onset[:1]
    return out


def spread(values: list[float], scale: float = 1.0, digits: int = 3) -> dict | None:
    if not values:
        return None
    return {"median": round(scale * statistics.median(values), digits),
            "p90": round(scale * float(np.percentile(values, 90)), digits), "n": len(values)}


def transcripts(matched, transcriber, real_time: bool) -> dict:
    """The incremental transcripts against one pass over the same turns, and the script."""
    rows, one_pass_s, left_s = [], [], []
    for question, turn in matched:
        incremental = turn.transcript.result()
        start = time.perf_counter()
        single = transcriber.transcribe(turn.audio)
        one_pass_s.append(time.perf_counter() - start)
        left_s.append(done.get(turn, float("nan")))
        rows.append((question.text, incremental.text, single.text))
    totals = {name: [word_errors(ref, hyp) for ref, hyp in pairs] for name, pairs in {
        "incremental_vs_one_pass": [(s, i) for _, i, s in rows], "incremental_vs_script": [(q, i) for q, i, _ in rows],
        "one_pass_vs_script": [(q, s) for q, _, s in rows]}.items()}
    return {
        "turns": len(rows),
        "wer": {name: round(sum(e for e, _ in pairs) / max(1, sum(n for _, n in pairs)), 4) for name, pairs in totals.items()},
        "differing_from_one_pass": [{"incremental": i, "one_pass": s} for _, i, s in rows if i.strip() != s.strip()],
        # as fast as it goes, the whole stream's pieces queue at once: the time left means nothing
        "time_left_after_end_s": {"incremental": spread(left_s) if real_time else None, "one_pass": spread(one_pass_s)},
    }


def run_detector(make, streams, transcriber, way: str, model: SmartTurn, real_time: bool) -> dict:
    scored, vad_cpu, decisions_before = [], 0.0, len(model.cpu_s)
    for stream in streams:
        detector, rule = make()
        listener = Listener(detector, rule, transcriber, transcript_way=way)
        events = listen(listener, stream.samples, real_time)
        for event, _ in events:
            if isinstance(event, TurnEnded) and event.transcript:
                event.transcript.result(timeout=600)
        listener.close()
        vad_cpu += detector.cpu_s
        scored.append(score_stream(events, stream.questions))
    audio_s = sum(len(s.samples) for s in streams) / SAMPLE_RATE
    total = {key: sum((s[key] for s in scored), [] if isinstance(scored[0][key], list) else 0) for key in scored[0]}
    return {
        "rule": rule.name, "transcript": way, "questions": sum(len(s.questions) for s in streams),
        "cut_in_the_middle": total["cut"], "turns_merging_questions": total["merging_turns"],
        "missed": total["missed"], "false_turns": total["false"],
        "delay_after_last_word_s": spread(total["delays"]), "delay_paused_questions_s": spread(total["paused_delays"]),
        "speech_start_after_onset_ms": spread(total["onsets"], 1000, 0),
        "ended_by": {reason: total["reasons"].count(reason) for reason in sorted(set(total["reasons"]))},
        "vad_cpu_ms_per_audio_s": round(1000 * vad_cpu / audio_s, 2),
        "decision_cpu_ms": spread(model.cpu_s[decisions_before:], 1000, 1),
        "transcripts": transcripts(total["matched"], transcriber, real_time) if transcriber else None,
    }


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    def of(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:  # a package being reinstalled beside this run: no reason to lose it
            return "?"

    espeak = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.split()
    return {"onnxruntime": of("onnxruntime"), "faster-whisper": of("faster-whisper"),
            "pipecat-ai (smart-turn v3.2 model)": of("pipecat-ai"), "piper-tts": of("piper-tts"),
            "espeak-ng": espeak[3] if len(espeak) > 3 else "?", "numpy": of("numpy")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--questions", type=int, default=len(SCRIPT), help="how many of the 12 questions per voice")
    parser.add_argument("--fast", action="store_true", help="feed the frames as fast as they go (delays on the sample clock)")
    parser.add_argument("--only", help="the detectors whose name contains this")
    parser.add_argument("--whisper", default="base", help="the bundled Whisper: base (the CPU default) or tiny.en")
    parser.add_argument("--no-transcripts", action="store_true", help="the detectors alone (the words rule needs them)")
    args = parse_args(parser, questions=1, fast=True, whisper="tiny.en")
    from core.engines.stt import load_transcriber

    streams = make_set(count=args.questions)
    transcriber, _ = load_transcriber("faster-whisper", args.whisper, "cpu")
    model = SmartTurn()
    results = {}
    for name, (make, way) in detectors(model).items():
        if (args.only and args.only not in name) or (args.no_transcripts and "words" in name):
            continue
        use = transcriber if way and not args.no_transcripts else None
        results[name] = run_detector(make, streams, use, way or "whole", model, not args.fast)
        print(json.dumps({name: results[name]}), file=sys.stderr, flush=True)  # a long run's parts, as they come
    questions = [q for s in streams for q in s.questions]
    report = {
        "benchmark": "turn_end", "date": date.today().isoformat(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average": os.getloadavg()},
        "versions": versions(), "transcriber": None if args.no_transcripts else transcriber.name, "real_time": not args.fast,
        "set": {"questions": len(questions), "paused": sum(q.longest_pause_s > 0 for q in questions),
                "ending_in_um": sum(q.text.endswith("Um") for q in questions),
                "with_typing": sum(q.clicks for q in questions),
                "audio_s": round(sum(len(s.samples) for s in streams) / SAMPLE_RATE, 1)},
        "detectors": results,
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
