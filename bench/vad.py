"""Call mode's voice-activity detector against Silero VAD, on the same audio, side by side.

    .venv/bin/python bench/vad.py [--out bench/results/vad-cpu.json]

Audio: questions spoken by espeak-ng with 1.5-4 s of silence between them (tests/fake_mic.py),
clean and with white noise added at 20 dB and 10 dB SNR (noise over the whole file, silences
included), with keyboard clicks (10 ms bursts, 6 a second), and noise or clicks alone (every
detection there is a false one).

  energy   the app's own detector: ui/call_mode.py's script run in Chromium, fed the file in 20 ms
           frames (call.frame), at 16 kHz. No browser audio processing (echo cancellation, noise
           suppression), so this is harder than what it hears in the page.
  energy, in the page   the same script as the page runs it: Chromium's fake microphone plays the
           file through getUserMedia with echo cancellation, noise suppression and gain control
           (what a user's browser does), 48 kHz, on a loopback page; played in real time.
  silero   Silero VAD v6 (the ONNX model faster-whisper ships; the model @ricky0123/vad-web runs in
           a browser), faster_whisper.vad.get_speech_timestamps with call mode's settings: 0.7 s of
           silence ends an utterance, at least 0.25 s of speech, no padding.

Per condition and detector: utterances found, matched to a question (overlapping it), missed,
false (matching none), median |onset error| and |end error| against the spoken span, and the CPU
time per second of audio. Prints JSON.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import date
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.quick import parse_args  # noqa: E402
from core.media import SAMPLE_RATE, load_audio, wav_bytes  # noqa: E402
from tests.e2e.conftest import CHROMIUM_FLAGS  # noqa: E402
from tests.fake_mic import conversation  # noqa: E402
from tests.turn_audio import add_clicks  # noqa: E402
from ui.call_mode import JS, SILENCE_MS  # noqa: E402

QUESTIONS = ["What is in this picture?", "What colour is the big red car?", "Please describe this image.",
             "Is there a dog in the picture?", "What is written on the sign?", "How many people are there?"]
GAPS_S = [1.5, 4.0, 2.0, 3.0, 1.5, 2.5]
FRAME = SAMPLE_RATE // 50  # 20 ms, as the page's AudioWorklet sends


def noisy(samples: np.ndarray, snr_db: float | None, rng: np.random.Generator) -> np.ndarray:
    if snr_db is None:
        return samples
    speech_power = np.mean(samples[np.abs(samples) > 1e-3] ** 2)
    noise = rng.normal(0, np.sqrt(speech_power / 10 ** (snr_db / 10)), len(samples)).astype(np.float32)
    return np.clip(samples + noise, -1, 1)


def with_clicks(samples: np.ndarray, rng: np.random.Generator, per_s: float = 6) -> np.ndarray:
    """Typing on a keyboard over the whole file (tests/turn_audio.py's clicks, per_s a second)."""
    out = samples.copy()
    add_clicks(out, 0, len(out), rng, per_s)
    return out


def energy_detector(page, samples: np.ndarray) -> tuple[list[tuple[float, float]], float]:
    """(start_s, end_s) of each utterance call mode's script sends, and its CPU seconds."""
    page.evaluate("""async (js) => {
        delete window.__talkCall;
        const url = URL.createObjectURL(new Blob([js], { type: "text/javascript" }));
        const mount = (await import(url)).default;
        mount({ data: { on: false, silence_ms: %d }, parentElement: document.body, setTriggerValue: () => {} });
        Object.assign(window.__talkCall, { rate: %d, t0: 0 });
    }""" % (SILENCE_MS, SAMPLE_RATE), JS)
    seconds = page.evaluate("""(samples) => {
        const call = window.__talkCall, all = Float32Array.from(samples), start = performance.now();
        for (let i = 0; i + %d <= all.length; i += %d) call.frame(all.slice(i, i + %d));
        return (performance.now() - start) / 1000;
    }""" % (FRAME, FRAME, FRAME), samples.tolist())
    log = page.evaluate("window.__talkCall.log")
    found = [(e["onset_sample"] / SAMPLE_RATE, e["end_sample"] / SAMPLE_RATE) for e in log
             if not e["dropped"] and e["end_sample"] is not None]
    return found, seconds


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def in_the_page(playwright, samples: np.ndarray, work: Path) -> list[tuple[float, float]]:
    """What call mode hears when the file is its microphone (browser audio processing included)."""
    wav = work / "mic.wav"
    wav.write_bytes(wav_bytes(np.concatenate([samples, np.zeros(SAMPLE_RATE, np.float32)])))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(work)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    browser = playwright.chromium.launch(executable_path=shutil.which("chromium"),
                                         args=CHROMIUM_FLAGS + [f"--use-file-for-fake-audio-capture={wav}%noloop"])
    try:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{server.server_address[1]}/")  # a secure context: getUserMedia works
        page.evaluate("""async (js) => {
            const url = URL.createObjectURL(new Blob([js], { type: "text/javascript" }));
            (await import(url)).default({ data: { on: true, silence_ms: %d }, parentElement: document.body,
                                          setTriggerValue: () => {} });
        }""" % SILENCE_MS, JS)
        time.sleep(len(samples) / SAMPLE_RATE + 1.5)
        log, rate = page.evaluate("[window.__talkCall.log, window.__talkCall.rate]")
    finally:
        browser.close()
        server.shutdown()
    return [(e["onset_sample"] / rate, e["end_sample"] / rate) for e in log
            if not e["dropped"] and e["end_sample"] is not None]


def silero_detector(samples: np.ndarray) -> tuple[list[tuple[float, float]], float]:
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(min_silence_duration_ms=SILENCE_MS, min_speech_duration_ms=250, speech_pad_ms=0)
    start = time.process_time()
    spans = get_speech_timestamps(samples, options)
    seconds = time.process_time() - start
    return [(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in spans], seconds


def score(found: list[tuple[float, float]], truth: list, seconds: float | None, audio_s: float) -> dict:
    matched, onset, end = set(), [], []
    false = 0
    for start_s, end_s in found:
        hits = [i for i, t in enumerate(truth) if start_s < t.end_s and end_s > t.start_s]
        if not hits:
            false += 1
            continue
        first, last = truth[hits[0]], truth[hits[-1]]
        matched.update(hits)
        onset.append(abs(start_s - first.start_s))
        end.append(abs(end_s - last.end_s))
    return {
        "found": len(found), "matched_questions": len(matched), "missed": len(truth) - len(matched),
        "false": false,
        "median_onset_error_s": round(statistics.median(onset), 3) if onset else None,
        "median_end_error_s": round(statistics.median(end), 3) if end else None,
        "cpu_ms_per_audio_s": None if seconds is None else round(1000 * seconds / audio_s, 2),
    }


def clicks_and_noise(page, playwright, clean, truth, audio_s, rng, work, in_page: bool) -> dict:
    """Keyboard clicks over the questions, and noise or clicks alone (false starts)."""
    results: dict = {}
    samples = with_clicks(clean, rng)
    results["keyboard clicks, 6 a second"] = {}
    for detector, run in (("energy", lambda x: energy_detector(page, x)), ("silero", silero_detector)):
        found, seconds = run(samples)
        results["keyboard clicks, 6 a second"][detector] = score(found, truth, seconds, audio_s)
    if in_page:
        results["keyboard clicks, 6 a second"]["energy, in the page"] = score(
            in_the_page(playwright, samples, work), truth, None, audio_s)
    for name, alone in (("noise alone (-34 dBFS)", rng.normal(0, 0.02, len(clean)).astype(np.float32)),
                        ("keyboard clicks alone", with_clicks(np.zeros_like(clean), rng))):
        results[name] = {}
        for detector, run in (("energy", lambda x: energy_detector(page, x)), ("silero", silero_detector)):
            found, seconds = run(alone)
            results[name][detector] = score(found, [], seconds, audio_s)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--in-the-page", action="store_true", help="also through the browser's microphone (real time)")
    parser.add_argument("--questions", type=int, default=len(QUESTIONS), help="how many of the questions")
    parser.add_argument("--only-clean", action="store_true", help="the clean audio only (no noise, no clicks)")
    args = parse_args(parser, questions=2, only_clean=True)
    from playwright.sync_api import sync_playwright

    rng = np.random.default_rng(0)
    work = Path(tempfile.mkdtemp())
    wav = work / "questions.wav"
    parts: list = [1.0]
    for question, gap in zip(QUESTIONS[: args.questions], GAPS_S):
        parts += [question, gap]
    truth = conversation(wav, parts)
    clean = load_audio(wav.read_bytes(), max_seconds=600).samples
    audio_s = len(clean) / SAMPLE_RATE
    results = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_FLAGS)
        page = browser.new_page()
        page.set_content("<html><body></body></html>")
        conditions = [("clean", None), ("white noise 20 dB", 20.0), ("white noise 10 dB", 10.0)]
        for name, snr in conditions[:1] if args.only_clean else conditions:
            samples = noisy(clean, snr, rng)
            found, seconds = energy_detector(page, samples)
            results[name] = {"energy": score(found, truth, seconds, audio_s)}
            found, seconds = silero_detector(samples)
            results[name]["silero"] = score(found, truth, seconds, audio_s)
            if args.in_the_page:
                results[name]["energy, in the page"] = score(in_the_page(playwright, samples, work), truth, None, audio_s)
        if not args.only_clean:
            results.update(clicks_and_noise(page, playwright, clean, truth, audio_s, rng, work, args.in_the_page))
        browser.close()
    from importlib.metadata import version

    print_out = {
        "benchmark": "vad", "date": date.today().isoformat(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": {"faster-whisper": version("faster-whisper"), "onnxruntime": version("onnxruntime"),
                     "playwright": version("playwright")},
        "questions": len(truth), "audio_s": round(audio_s, 2), "silence_ms": SILENCE_MS, "results": results,
    }
    text = json.dumps(print_out, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
