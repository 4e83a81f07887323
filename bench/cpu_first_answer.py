"""What a laptop user waits for: the CPU default (onevision-qwen2-0.5b) from a photo to the first word.

    python bench/cpu_first_answer.py                       # real size, random weights, built in a temp folder (~40 s, 3.4 GB)
    python bench/cpu_first_answer.py --model-dir /tmp/ov   # a folder bench/gpu/build.py's onevision_05b(dir, device="cpu") made
    python bench/cpu_first_answer.py --quick               # the tiny OneVision (tests.tiny_llava), seconds: CI's smoke run

Each arm loads the model through the app's own LlavaModel.load in a process of its own (so that its
peak memory is its own) and, on a 640x480 photo, measures through LlavaModel.stream / prepare:

  pre-encoded   the photo attached (LlavaModel.prepare) --lead seconds (10) before the question;
                time to the first text of the reply, counted from the question
  together      a new photo and its question at once: time to the first text
  turn 10       nine short follow-ups on that conversation (the kept KV cache); the tenth's time to
                the first text
  decode        a 64-token reply: tokens/s after the first
  peak RSS      the process's maximum resident memory (getrusage), loading and quantising included;
                the first int8 arm quantises the fp32 checkpoint and keeps the int8 model (a first
                start), the second loads the kept one (every later start): "weights" says which
                (--arms int8-one-tile,int8-one-tile: the default's first start, then a restart)

Arms, side by side in one run (two other agents share these 2 cores: compare ratios, and the load
average recorded beside each arm):
  fp32-full-grid   LLAVA_QUANT=none: fp32, OneVision's anyres grid (the CPU default before)
  int8-full-grid   torch's dynamic int8 (language model and vision tower), the full grid
  int8-one-tile    LLAVA_QUANT=int8, the CPU default now: int8 and a picture read whole plus one tile
The chosen arm also times the language model's prefill of 512 tokens with 1 and with 2 threads.

Prints JSON (device, date, versions, load averages, each arm, ratios to the first arm); --out writes it.
Speed does not depend on the weights: random ones time like the released checkpoint's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ARMS = {  # name: (LLAVA_QUANT, keep the model's own grid)
    "fp32-full-grid": ("none", True),
    "int8-full-grid": ("int8", True),
    "int8-one-tile": ("int8", False),
}
CHOSEN = "int8-one-tile"
PHOTO = (640, 480)
FOLLOW_UPS = ["And the colours?", "What is on the left?", "And on the right?", "Is it day or night?",
              "How many things are there?", "What is in the middle?", "Anything written?", "Which season?",
              "Describe it in one word."]  # turns 2..10


def photo(seed: int):
    """A 640x480 picture with the texture of a photo (speed depends on its size only)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:PHOTO[1], 0:PHOTO[0]]
    base = np.stack([x / PHOTO[0], y / PHOTO[1], (x + y) / sum(PHOTO)], axis=-1) * 200
    return Image.fromarray((base + rng.normal(0, 25, base.shape)).clip(0, 255).astype("uint8"))


def ask(llava, exchanges, images, tokens: int) -> dict:
    """One turn through LlavaModel.stream: seconds to the first text, to the end, tokens, the reply."""
    from bench.first_answer import FIRST_TOKEN, clock_first_tokens
    from core.engines.api import GenerationOptions

    clock_first_tokens()  # random weights' text may not be printable until the end: time the first token id
    FIRST_TOKEN.clear()
    start = time.perf_counter()
    first, reply = None, ""
    generation = llava.stream(exchanges, images, GenerationOptions(temperature=0, max_new_tokens=tokens))
    for chunk in generation:
        if chunk and first is None:
            first = time.perf_counter() - start
        reply += chunk
    total = time.perf_counter() - start
    return {"first_s": round(first if first is not None else total, 3), "total_s": round(total, 3),
            "first_token_s": round(FIRST_TOKEN.get("at", start + total) - start, 3),
            "tokens": generation.info.completion_tokens, "reply": reply,
            **{k: llava.last.get(k) for k in ("prompt_tokens", "cached_tokens")}}


def rss_gib() -> float:
    try:
        import psutil

        return round(psutil.Process().memory_info().rss / 2**30, 3)
    except ImportError:
        return float("nan")


def run_arm(name: str, model_dir: str, lead_s: float) -> dict:
    import torch
    from transformers import AutoConfig

    from core.conversation import Answer, Exchange, Question
    from core.engines.vlm import LlavaModel

    quant, full_grid = ARMS[name]
    load_avg = os.getloadavg()
    start = time.perf_counter()
    steps: list[str] = []
    llava = LlavaModel.load(model_dir, quant=quant, device="cpu", progress=steps.append)
    if full_grid:  # undo core.engines.vlm.cpu_grid: int8 alone, on the model's own grid
        grid = AutoConfig.from_pretrained(model_dir).image_grid_pinpoints
        llava.model.config.image_grid_pinpoints = llava.processor.image_processor.image_grid_pinpoints = grid
    load_s = time.perf_counter() - start
    result: dict = {"llava_quant": quant, "grid": "full" if full_grid else "one tile", "name": llava.name,
                    "note": llava.note, "threads": torch.get_num_threads(), "load_s": round(load_s, 1),
                    "rss_after_load_gib": rss_gib(), "weights": "kept int8" if any("kept" in x for x in steps) else "checkpoint"}

    # Pre-encoded: the photo attached lead_s before its question.
    images = {"attached": photo(1), "together": photo(2)}
    attached = time.perf_counter()
    job = llava.prepare("attached", images)
    encoded: dict = {}
    threading.Thread(target=lambda: (job.done.wait(), encoded.setdefault("s", time.perf_counter() - attached)),
                     daemon=True).start()
    time.sleep(max(0.0, attached + lead_s - time.perf_counter()))
    turn = ask(llava, [Exchange(Question("What is in this picture?", image="attached"))], images, 8)
    result["pre_encoded"] = {**turn, "lead_s": lead_s, "encode_s": round(encoded.get("s", float("nan")), 3)}
    result["image_tokens"] = turn["prompt_tokens"] - llava._text_tokens(
        llava.prompt([Exchange(Question("What is in this picture?", image="attached"))])) + 1

    # Together, then follow-ups on the kept cache (turns 2..10), then a longer reply for decode speed.
    conversation = [Exchange(Question("What is in this picture?", image="together"))]
    turns = [ask(llava, conversation, images, 8)]
    for text in FOLLOW_UPS:
        conversation = [*conversation[:-1], Exchange(conversation[-1].question, Answer(turns[-1]["reply"])),
                        Exchange(Question(text))]
        turns.append(ask(llava, conversation, images, 8))
    result["together"] = turns[0]
    result["turn_10"] = turns[9]
    result["follow_ups_first_s"] = [t["first_s"] for t in turns[1:]]
    conversation = [*conversation[:-1], Exchange(conversation[-1].question, Answer(turns[-1]["reply"])),
                    Exchange(Question("Describe the picture in detail."))]
    eos, llava.decoder.eos = llava.decoder.eos, set()  # random weights may end at once: decode speed needs tokens
    long = ask(llava, conversation, images, 64)
    llava.decoder.eos = eos
    result["decode"] = {**long, "tok_s": round((long["tokens"] - 1) / max(long["total_s"] - long["first_token_s"], 1e-9), 2)}
    if name == CHOSEN:
        result["prefill_512_s_by_threads"] = threads(llava)
    for t in [result["pre_encoded"], result["decode"], *turns]:
        t.pop("reply", None)
    result["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)
    result["load_avg_before"] = [round(x, 2) for x in load_avg]
    result["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    return result


def threads(llava) -> dict:
    """The language model's prefill of 512 tokens with 1 and 2 threads (best of 2), in the worker."""
    import torch

    default = torch.get_num_threads()
    timings = {}
    for n in (1, 2):
        def work(job, n=n):
            torch.set_num_threads(n)
            best = float("inf")
            for _ in range(2):
                start = time.perf_counter()
                llava.decoder.warm_prefill(512)
                best = min(best, time.perf_counter() - start)
            timings[str(n)] = round(best, 3)
            torch.set_num_threads(default)

        llava.worker.submit(work).done.wait()
    return timings


def environment() -> dict:
    import torch
    import transformers

    info = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), platform.processor())
    flags = set(next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), []))
    simd = ", ".join(f for f in ("avx2", "avx512f", "amx_tile") if f in flags) or "no AVX2"
    memory = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)
    return {"device": f"{cpu} ({simd}), {os.cpu_count()} cores, {memory} GiB, no GPU",
            "platform": platform.platform(),
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "transformers": transformers.__version__}}


def summary(arm: dict) -> dict:
    return {"image_tokens": arm["image_tokens"], "pre_encoded_first_s": arm["pre_encoded"]["first_s"],
            "together_first_s": arm["together"]["first_s"], "turn_10_first_s": arm["turn_10"]["first_s"],
            "decode_tok_s": arm["decode"]["tok_s"], "peak_rss_gib": arm["peak_rss_gib"],
            "load_avg_1min": arm["load_avg_before"][0]}


TARGETS = {"pre_encoded_first_s": 3.0, "together_first_s": 15.0, "turn_10_first_s": 2.0, "peak_rss_gib": 4.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", help="onevision-qwen2-0.5b folder (default: built at real size in a temp folder)")
    parser.add_argument("--quick", action="store_true", help="the tiny OneVision: seconds, the same code path")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of {', '.join(ARMS)}")
    parser.add_argument("--lead", type=float, help="seconds between attaching the photo and asking (10; --quick 0.5)")
    parser.add_argument("--out", help="write the JSON here too")
    parser.add_argument("--arm", help=argparse.SUPPRESS)  # one arm, in its own process
    args = parser.parse_args()
    lead = args.lead if args.lead is not None else (0.5 if args.quick else 10.0)
    if args.arm:
        print(json.dumps(run_arm(args.arm, args.model_dir, lead)))
        return
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = args.model_dir
        if not model_dir and args.quick:
            from tests.tiny_llava import build_tiny_llava

            model_dir = str(build_tiny_llava(Path(scratch) / "tiny-onevision", family="onevision"))
        elif not model_dir:
            from bench.gpu.build import onevision_05b

            model_dir = str(onevision_05b(Path(scratch) / "onevision-0.5b", device="cpu"))
        arms = {}
        for name in args.arms.split(","):
            done = subprocess.run([sys.executable, __file__, "--arm", name, "--model-dir", model_dir, "--lead", str(lead)],
                                  capture_output=True, text=True, check=False,  # a kept int8 model: this run's own
                                  env={**os.environ, "XDG_CACHE_HOME": str(Path(scratch) / "cache")})
            if done.returncode:
                sys.stderr.write(done.stderr[-4000:])
                raise SystemExit(f"arm {name} failed ({done.returncode})")
            arms[name if name not in arms else f"{name}-again"] = json.loads(done.stdout.strip().splitlines()[-1])
    first = next(iter(arms))
    table = {name: summary(arm) for name, arm in arms.items()}
    ratios = {name: {key: round(table[first][key] / value, 2) if value else None for key, value in row.items()
                     if key in ("pre_encoded_first_s", "together_first_s", "turn_10_first_s")}
              | {"decode_tok_s": round(row["decode_tok_s"] / table[first]["decode_tok_s"], 2)}
              for name, row in table.items() if name != first}
    report = {
        "benchmark": "cpu_first_answer", "date": started, **environment(),
        "model": "tiny onevision (tests.tiny_llava)" if args.quick else "llava-onevision-qwen2-0.5b, real size, random weights",
        "photo": list(PHOTO), "lead_s": lead, "table": table, f"speed-up over {first}": ratios,
        "targets": {name: {key: table[name][key] <= limit for key, limit in TARGETS.items()}
                    | {"decode_tok_s": table[name]["decode_tok_s"] >= 8.0} for name in table},
        "arms": arms,
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
