"""Server time of one rerun of the chat page with a long conversation (issue 5: < 100 ms at 200 turns).

    .venv/bin/python bench/rerun_bench.py [--turns 200] [--repeat 10]

Prints JSON. A logged session of --turns exchanges (every reply with its spoken audio, a new
image every 20 turns, a few voice questions with their recordings) is resumed into the chat
page (AppTest, tiny random LLaVA, espeak-ng), then the page is rerun --repeat times without
input, as any click does. Reported: median and p95 of AppTest.run() in seconds, side by side in
one run: a 1-turn session; the long one as the page draws it (its last SHOWN_TURNS turns, the
rest behind "Show earlier turns"); and the long one with every turn drawn.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from bench.quick import parse_args  # noqa: E402
from core.chat.session import ChatSession  # noqa: E402
from core.config import Settings  # noqa: E402
from core.conversation import Answer, Question  # noqa: E402
from core.media import digest  # noqa: E402
from core.store.session_log import SessionLog, save_media  # noqa: E402
from tests.tiny_llava import build_tiny_llava  # noqa: E402
from ui.chat_view import SHOWN_TURNS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def wav(seconds: float, pitch: float) -> bytes:
    import wave

    t = np.arange(int(seconds * 16000)) / 16000
    pcm = (0.2 * np.sin(2 * np.pi * pitch * t) * 32767).astype("<i2").tobytes()
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000), w.writeframes(pcm)
    return out.getvalue()


def stored(log_dir: Path, data: bytes, extension: str) -> str:
    name = digest(data)
    save_media(log_dir, data, name, extension)
    return name


def long_session(log_dir: Path, turns: int) -> str:
    log = SessionLog.create(log_dir, durable=False, model="tiny")
    for number in range(turns):
        image = None
        if number % 20 == 0:
            buffer = io.BytesIO()
            Image.new("RGB", (1024, 768), (number % 256, 90, 200)).save(buffer, "PNG")
            image = stored(log_dir, buffer.getvalue(), "png")
        recording = stored(log_dir, wav(2.0, 200 + number), "wav") if number % 5 == 0 else None
        log.question(number, Question(f"Question number {number}: what is on the left of the picture?", image=image,
                                      source="voice" if recording else "text", audio=recording))
        reply = " ".join(f"This is sentence {i} of reply {number}, with some **markdown** and a $5 price." for i in range(6))
        log.answer(number, Answer(reply, audio=stored(log_dir, wav(6.0, 300 + number), "wav"), audio_format="wav",
                                  timings={"ttft_s": 0.1, "total_s": 2.0}))
    return log.session_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=10)
    args = parse_args(parser, turns=3, repeat=1)
    from streamlit.testing.v1 import AppTest

    with tempfile.TemporaryDirectory() as tmp:
        log_dir = Path(tmp) / "logs"
        model = build_tiny_llava(Path(tmp) / "tiny-llava")
        os.environ.update({"LOG_DIR": str(log_dir), "LLAVA_MODEL": str(model), "TTS_ENGINE": "espeak",
                           "HF_HUB_OFFLINE": "1"})
        settings = Settings.from_env()
        short, long = long_session(log_dir, 1), long_session(log_dir, args.turns)
        variants = {  # name: (session, turns drawn)
            "1_turn": (short, 1),
            f"{args.turns}_turns": (long, min(args.turns, SHOWN_TURNS)),  # as the page draws it
            f"{args.turns}_turns_all_drawn": (long, args.turns),  # after "Show earlier turns" up to the start
        }
        results = {}
        for name, (session_id, drawn) in variants.items():
            at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=300)
            at.run()  # models load, a fresh chat
            at.session_state["chat"] = ChatSession.resume(settings, session_id)
            at.session_state["shown"] = drawn
            start = time.perf_counter()
            at.run()
            first = time.perf_counter() - start
            assert not at.exception and len(at.chat_message) == 2 * drawn, (at.exception, len(at.chat_message))
            times = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                at.run()
                times.append(time.perf_counter() - start)
            times.sort()
            results[name] = {"first_s": round(first, 4), "median_s": round(statistics.median(times), 4),
                                         "p95_s": round(times[min(len(times) - 1, int(0.95 * len(times)))], 4)}
    every, small = results[f"{args.turns}_turns_all_drawn"], results["1_turn"]
    print(json.dumps({**results, "shown_turns": SHOWN_TURNS,
                      "per_drawn_turn_ms": round((every["median_s"] - small["median_s"]) / (args.turns - 1) * 1000, 3),
                      "target_lt_0.1": results[f"{args.turns}_turns"]["median_s"] < 0.1}, indent=2))


if __name__ == "__main__":
    main()
