"""N concurrent conversations: time to first token (p50/p95) and aggregate tokens/s.

    .venv/bin/python bench/concurrency.py                       # both arms, tiny model, this machine
    .venv/bin/python bench/concurrency.py --arms server --base-url http://GPU:8000/v1 \\
        --remote-model llava-hf/llava-1.5-7b-hf --max-new-tokens 128 --extra-body '{"ignore_eos": true}'

Arms:
  inprocess  the in-process LLaVA (--model; default a tiny random one built in a temp folder):
             one turn at a time, first come first served (core/chat/fair_queue.py)
  server     an OpenAI-compatible server (--base-url, --remote-model); without --base-url the
             script starts `transformers serve --continuous-batching` on --model itself

Each conversation is its own ChatSession driven through core.chat.turn (ask with an image, answer, no
speech), in its own thread; the N conversations of a round start together (a barrier), and the
rounds of the two arms alternate so that both see the same machine. Time to first token is from
the start of the answer to its first token, so it includes the wait in the queue (p50/p95 over
all conversations of all rounds). Aggregate tokens/s is all tokens of a round over the round's
wall time, the median over rounds. Tokens are counted as generated: by generate() in process, by
the server's usage report remotely. Prints JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.quick import parse_args  # noqa: E402
from bench.scene import QUESTION, picture  # noqa: E402
from core.chat import turn  # noqa: E402
from core.chat.session import ChatSession  # noqa: E402
from core.config import Settings  # noqa: E402
from core.engines.remote import RemoteChatModel  # noqa: E402
from core.engines.vlm import GenerationOptions, LlavaModel  # noqa: E402
from tests.local_server import LocalServer  # noqa: E402


def conversation(settings: Settings, engines: turn.Engines, options: GenerationOptions, image: bytes) -> dict:
    """One turn with an image; its time to first token, tokens and largest place in the queue."""
    session = ChatSession(settings)
    asked = turn.ask(session, engines, turn.TurnInput(text=QUESTION, image=image))
    start, first, ahead, answer = time.perf_counter(), None, 0, None
    for event in turn.answer(session, engines, asked.index, options, speak=False):
        if isinstance(event, turn.Token) and first is None:
            first = time.perf_counter() - start
        elif isinstance(event, turn.Waiting):
            ahead = max(ahead, event.ahead)
        elif isinstance(event, turn.Done):
            answer = event.answer
    if answer is None or answer.status != "complete":
        raise RuntimeError(f"a conversation failed: {answer}")
    tokens = answer.timings.get("completion_tokens", 0) if answer.text else 0
    return {"ttft_s": first if first is not None else time.perf_counter() - start, "tokens": tokens, "ahead": ahead}


def one_round(n: int, settings, engines, options, image) -> tuple[list[dict], float]:
    barrier, results, errors = threading.Barrier(n + 1), [None] * n, []

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = conversation(settings, engines, options, image)
        except Exception as e:  # noqa: BLE001  (reported below, after every thread has ended)
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results, time.perf_counter() - start


def summary(n: int, samples: list[dict], rounds: list[tuple[int, float]]) -> dict:
    """Percentiles over every conversation; tokens/s per round (all its tokens over its wall time)."""
    ttft = [r["ttft_s"] for r in samples]
    rates = [tokens / wall for tokens, wall in rounds]
    return {
        "n": n,
        "conversations": len(samples),
        "ttft_p50_s": round(float(np.percentile(ttft, 50)), 3),
        "ttft_p95_s": round(float(np.percentile(ttft, 95)), 3),
        "tokens_per_s": round(statistics.median(rates), 1),  # median over rounds
        "tokens_per_s_rounds": [round(r, 1) for r in rates],
        "tokens_per_conversation": round(statistics.mean(r["tokens"] for r in samples), 1),
        "max_queue_ahead": max(r["ahead"] for r in samples),
    }


def measure(arms: dict, ns: list[int], rounds: int, options: GenerationOptions, log_dir: Path) -> dict[str, list[dict]]:
    """Rounds of each arm alternate, so that both see the same machine (other load comes and goes)."""
    settings = Settings.from_env({"LOG_DIR": str(log_dir), "TTS_ENGINE": "none", "LLAVA_MODEL": "unused"})
    engines, image = {name: turn.Engines(chat) for name, chat in arms.items()}, picture()
    for name in arms:
        conversation(settings, engines[name], options, image)  # warm-up, not counted
    runs: dict[str, list[dict]] = {name: [] for name in arms}
    for n in ns:
        samples: dict[str, list[dict]] = {name: [] for name in arms}
        walls: dict[str, list[tuple[int, float]]] = {name: [] for name in arms}
        for _ in range(rounds):
            for name in arms:
                results, seconds = one_round(n, settings, engines[name], options, image)
                samples[name] += results
                walls[name].append((sum(r["tokens"] for r in results), seconds))
        for name in arms:
            runs[name].append(summary(n, samples[name], walls[name]))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs="+", choices=["inprocess", "server"], default=["inprocess", "server"])
    parser.add_argument("--n", nargs="+", type=int, default=[1, 2, 4, 8], help="concurrent conversations")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of N conversations per N")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--model", help="LLaVA folder or id, in process and for --serve (default: a tiny random one)")
    parser.add_argument("--base-url", help="an OpenAI-compatible server (default: start transformers serve)")
    parser.add_argument("--remote-model", help="the model name on that server (default: its only model)")
    parser.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"))
    parser.add_argument("--extra-body", type=json.loads, help='extra request fields, e.g. \'{"ignore_eos": true}\' for vLLM')
    parser.add_argument("--no-continuous-batching", action="store_true", help="start transformers serve without it")
    args = parse_args(parser, n=[1, 2], rounds=1, max_new_tokens=8)
    options = GenerationOptions(temperature=0, max_new_tokens=args.max_new_tokens)
    report: dict = {
        "question": QUESTION, "image": "640x480 PNG", "max_new_tokens": args.max_new_tokens, "rounds": args.rounds,
        "cpu_cores": os.cpu_count(), "arms": {},
    }

    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        model_path = args.model
        if model_path is None and ("inprocess" in args.arms or not args.base_url):
            from tests.tiny_llava import build_tiny_llava

            model_path = str(build_tiny_llava(Path(tmp) / "tiny-llava"))
            report["model_note"] = "tiny random LLaVA (tests/tiny_llava.py): timings are real, answers are noise"
        arms: dict = {}
        if "inprocess" in args.arms:
            arms["inprocess"] = LlavaModel.load(model_path)
        server = None
        if "server" in args.arms:
            base_url = args.base_url
            if not base_url:
                server = stack.enter_context(LocalServer(model_path, continuous_batching=not args.no_continuous_batching))
                base_url = server.base_url
                args.remote_model = args.remote_model or server.model
            arms["server"] = RemoteChatModel.connect(base_url, args.api_key, args.remote_model, extra_body=args.extra_body)
        report["load_avg_1min_before"] = round(os.getloadavg()[0], 2)
        runs = measure(arms, args.n, args.rounds, options, Path(tmp))
        report["load_avg_1min_after"] = round(os.getloadavg()[0], 2)
        for name, chat in arms.items():
            report["arms"][name] = {"model": chat.name, "runs": runs[name]}
        if server is not None:
            report["arms"]["server"]["server"] = "transformers serve --device cpu" + (
                "" if args.no_continuous_batching else " --continuous-batching")
            report["arms"]["server"]["server_notes"] = [
                line.strip() for line in server.output().splitlines() if "continuous batching" in line.lower()][:3]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
