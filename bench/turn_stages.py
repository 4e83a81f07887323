"""Per-stage timings of one typed turn (with an image) and one voice turn, through core/chat/turn.py.

    .venv/bin/python bench/turn_stages.py [--model DIR] [--max-new-tokens N] [--repeat N]

Prints JSON. Without --model, a tiny random LLaVA is built in a temp folder (answers are noise,
timings are real); Whisper is the bundled tiny.en, speech is espeak-ng. Each stage is the median
over --repeat runs, in seconds (tokens_per_s in tokens per second).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.quick import parse_args  # noqa: E402
from bench.scene import QUESTION, picture  # noqa: E402
from core.chat import turn  # noqa: E402
from core.chat.session import ChatSession  # noqa: E402
from core.config import Settings  # noqa: E402
from core.engines.stt import FasterWhisperTranscriber, bundled_tiny_en  # noqa: E402
from core.engines.tts import EspeakSpeaker  # noqa: E402
from core.engines.vlm import GenerationOptions, LlavaModel  # noqa: E402


def run_turn(session, engines, turn_input, options) -> dict[str, float]:
    asked = turn.ask(session, engines, turn_input)
    if not isinstance(asked, turn.Asked):
        raise RuntimeError(f"turn rejected: {asked}" if asked else "no turn")
    reply = turn.answer(session, engines, asked.index, options, timings=asked.timings)
    for _ in reply:
        pass
    return reply.answer.timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="LLaVA folder or id (default: a tiny random one)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=5)
    args = parse_args(parser, max_new_tokens=8, repeat=1)

    with tempfile.TemporaryDirectory() as tmp:
        model_path = args.model
        if model_path is None:
            from tests.tiny_llava import build_tiny_llava

            model_path = str(build_tiny_llava(Path(tmp) / "tiny-llava"))
        start = time.perf_counter()
        chat = LlavaModel.load(model_path)
        load_llava = time.perf_counter() - start
        start = time.perf_counter()
        transcriber = FasterWhisperTranscriber(bundled_tiny_en())
        load_whisper = time.perf_counter() - start
        settings = Settings.from_env({"LOG_DIR": str(Path(tmp) / "logs"), "LLAVA_MODEL": model_path})
        wav = Path(tmp) / "question.wav"
        subprocess.run(["espeak-ng", "-s", "150", "-w", str(wav), QUESTION], check=True)
        options = GenerationOptions(temperature=0, max_new_tokens=args.max_new_tokens)

        runs: dict[str, list[dict]] = {"typed": [], "voice": []}
        for _ in range(args.repeat + 1):  # the first round warms up and is not counted
            session = ChatSession(settings)
            engines = turn.Engines(chat, transcriber, EspeakSpeaker())  # a fresh speech cache each round
            typed = run_turn(session, engines, turn.TurnInput(text=QUESTION, image=picture()), options)
            voice = run_turn(session, engines, turn.TurnInput(audio=wav.read_bytes()), options)
            runs["typed"].append(typed)
            runs["voice"].append(voice)

        def medians(samples: list[dict]) -> dict[str, float]:
            keys = sorted({k for s in samples for k in s})
            return {k: round(statistics.median(s[k] for s in samples if k in s), 4) for k in keys}

        print(json.dumps({
            "model": chat.name,
            "whisper": transcriber.name,
            "tts": "espeak-ng",
            "max_new_tokens": args.max_new_tokens,
            "repeat": args.repeat,
            "load_s": {"llava": round(load_llava, 3), "whisper": round(load_whisper, 3)},
            "typed_turn": medians(runs["typed"][1:]),
            "voice_turn": medians(runs["voice"][1:]),
        }, indent=2))


if __name__ == "__main__":
    main()
