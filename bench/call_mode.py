"""Hands-free call mode against the click-to-record path, in Chromium, with the tiny models on this CPU.

    .venv/bin/python bench/call_mode.py [--questions 8] [--out bench/results/call_mode-cpu.json]

Starts the app (tiny random LLaVA, bundled Whisper, espeak-ng) and plays questions spoken by
espeak-ng through Chromium's fake microphone:

  call mode   per question, a fresh page: Hands-free on, the question; no click.
  click path  per question, a fresh page: mic button, the question, approve at the end of the
              speech (the quickest a person could click).
  conversation  one page, one file: the questions, 6 s of silence after each, Hands-free on. The
              replies (512 tokens) are still being written and spoken when the next question
              starts, so every question after the first is a barge-in.

Measured per question: end of speech (the last non-silent sample of the question in the file,
mapped to the page's clock) to the first audio of its reply playing in the page; for barge-ins,
speech onset to the previous reply's audio paused. Call mode maps file time to the page's clock from
the microphone's own frames; the click path from the mic click (capture starts a little later, so
its figure includes that start-up too). Prints JSON (medians, every figure, machine, versions).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.quick import parse_args  # noqa: E402
from tests.e2e.conftest import CHROMIUM_FLAGS, app_process, free_port  # noqa: E402
from tests.fake_mic import conversation  # noqa: E402
from ui.call_mode import SILENCE_MS  # noqa: E402

QUESTIONS = ["What is in this picture?", "What colour is the big red car?", "Please describe this image.",
             "Is there a dog in the picture?", "What is written on the sign?", "How many people are there?",
             "What is the weather like?", "Where was this photo taken?"]
GAP_S = 6.0  # silence after each question in call mode


def app(work: Path):
    """The app (its own process) with the tiny model built into work; a context manager yielding its URL."""
    from tests.tiny_llava import build_tiny_llava

    model = build_tiny_llava(work / "tiny-llava")
    port = free_port()
    env = {"LLAVA_MODEL": str(model), "LOG_DIR": str(work / "logs"), "TTS_ENGINE": "espeak"}
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", str(port),
               "--server.address", "127.0.0.1", "--server.fileWatcherType", "none"]
    return url, app_process(command, env, work / "server.log", url)


def open_page(playwright, url: str, wav: Path):
    browser = playwright.chromium.launch(executable_path=shutil.which("chromium"),
                                         args=CHROMIUM_FLAGS + [f"--use-file-for-fake-audio-capture={wav}%noloop"])
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    page.set_default_timeout(120_000)
    page.goto(url)
    page.wait_for_selector("text=Talk with a picture")
    page.wait_for_selector("[data-testid=stChatInput]")
    return browser, page


OF_REPLY = "e.turn.index === r[0] && e.turn.heard === r[1]"  # a clip of reply r: [item index, utterance id]


def first_audio(page, reply: tuple[int, int]) -> float:
    page.wait_for_function(f"(r) => window.__talkSpeech && window.__talkSpeech.log.some(e => {OF_REPLY})", arg=reply)
    return page.evaluate(f"(r) => window.__talkSpeech.log.find(e => {OF_REPLY}).start", reply)


def each_on_a_fresh_page(playwright, url: str, work: Path, questions: list[str], ask) -> dict:
    """Per question, a page whose microphone says it (after lead silence): ask(page, spoken) asks
    it and returns the page time of the end of speech; then the wait for the reply's first audio."""
    latencies = []
    for number, question in enumerate(questions):
        wav = work / f"question-{number}.wav"
        spoken = conversation(wav, [1.0, question, 2.0])[0]
        browser, page = open_page(playwright, url, wav)
        end_of_speech, turn = ask(page, spoken)
        latencies.append((first_audio(page, turn) - end_of_speech) / 1000)
        browser.close()
    return {"end_of_speech_to_first_audio_s": latencies}


def hands_free(page, spoken) -> tuple[float, tuple[int, int]]:
    page.get_by_test_id("talk-call-toggle").click()
    page.wait_for_function("window.__talkCall && window.__talkCall.t0 !== null")
    page.wait_for_function("window.__talkCall.sent >= 1")
    return page.evaluate("window.__talkCall.t0") + spoken.end_s * 1000, (0, 1)


def click_to_record(page, spoken) -> tuple[float, tuple[int, int]]:
    page.evaluate("""() => document.addEventListener("click", (e) => {
        if (e.target.closest('[data-testid="stChatInputMicButton"]')) window.__micClick = performance.now();
    }, true)""")
    page.click("[data-testid=stChatInputMicButton]")
    clicked = page.evaluate("window.__micClick")
    time.sleep(spoken.end_s)  # the person stops speaking, and clicks at once
    page.click("[data-testid=stChatInputApproveButton]")
    return clicked + spoken.end_s * 1000, (0, 0)


def call_conversation(playwright, url: str, work: Path, questions: list[str]) -> dict:
    wav = work / "call.wav"
    parts: list = [1.0]
    for question in questions:
        parts += [question, GAP_S]
    spoken = conversation(wav, parts)
    browser, page = open_page(playwright, url, wav)
    page.get_by_test_id("talk-call-toggle").click()
    page.wait_for_function("window.__talkCall && window.__talkCall.t0 !== null")
    latencies, barges = [], []
    for number, question in enumerate(spoken):
        start = first_audio(page, (number, number + 1))  # item index (no notices), utterance id
        t0 = page.evaluate("window.__talkCall.t0")
        latencies.append((start - (t0 + question.end_s * 1000)) / 1000)
    for number, question in enumerate(spoken[1:], start=1):
        onset = page.evaluate("window.__talkCall.t0") + question.start_s * 1000
        cut = page.evaluate(f"""([r, onset]) => window.__talkSpeech.log.filter(e => {OF_REPLY})
                                  .find(e => e.start <= onset && (e.end === null || e.end >= onset))""",
                            [(number - 1, number), onset])
        barges.append(None if cut is None or not cut["stopped"] else (cut["end"] - onset) / 1000)
    heard = page.evaluate("window.__talkCall.log")
    browser.close()
    return {"end_of_speech_to_first_audio_s": latencies, "barge_in_s": barges,
            "utterances_heard": len([h for h in heard if not h["dropped"]])}


def versions() -> dict:
    from importlib.metadata import version

    names = ("streamlit", "torch", "transformers", "faster-whisper", "playwright")
    found = {name: version(name) for name in names}
    chromium = subprocess.run([shutil.which("chromium") or "chromium", "--version"], capture_output=True, text=True)
    found["chromium"] = chromium.stdout.strip()
    return found


def median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--out", type=Path)
    args = parse_args(parser, questions=1)
    questions = (QUESTIONS * 4)[: args.questions]
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        url, running = app(work)
        with running, sync_playwright() as playwright:
            if not args.quick:  # a smoke run needs no warm-up
                each_on_a_fresh_page(playwright, url, work, questions[:1], click_to_record)  # warm-up: first-turn costs
            call = each_on_a_fresh_page(playwright, url, work, questions, hands_free)
            click = each_on_a_fresh_page(playwright, url, work, questions, click_to_record)
            talk = call_conversation(playwright, url, work, questions)
    result = {
        "benchmark": "call_mode", "date": date.today().isoformat(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "versions": versions(),
        "end_of_turn_silence_s": SILENCE_MS / 1000,
        "median": {
            "call_mode_end_of_speech_to_first_audio_s": median(call["end_of_speech_to_first_audio_s"]),
            "click_path_end_of_speech_to_first_audio_s": median(click["end_of_speech_to_first_audio_s"]),
            "conversation_end_of_speech_to_first_audio_s": median(talk["end_of_speech_to_first_audio_s"]),
            "barge_in_onset_to_audio_paused_s": median(talk["barge_in_s"]),
        },
        "call_mode": call, "click_path": click, "conversation": talk,
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
