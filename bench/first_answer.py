"""The first answer in seconds: start-up, follow-ups on the kept KV cache, a picture encoded before
its question, and CUDA graphs or compiled frames made at users' turns, per model family.

    python bench/first_answer.py --out DIR --family llava-1.5|llava-next|onevision [--parts ...] [--quick]

On the GPU machine (bench/gpu/run.sh first_answer ... after bench/gpu/prepare.sh here), with the
real architectures and random weights (bench/gpu/build.py): speed does not depend on the weights.
--quick runs the same code on the CPU with a tiny random model of the family (a smoke run for CI,
not a timing).

Parts (one JSON object, printed and written to DIR/first_answer-FAMILY.json as each part ends):
  cold      a new process with empty caches (the kept 4-bit model, gemlite's kernel choices,
            inductor and Triton): load until it answers, the first question about a picture at once
            (time to first token, and to 96 tokens: the eager decoder, the warm-up running beside it),
            then the warm-up's end (ready_s) and the same question on the warmed decoder
  restart   a new process again, the caches filled by the cold start: the same figures
  turns     in this process (caches warm): 20 follow-up turns of growing length (a 640x480 photo,
            then questions; the replies kept in the conversation): time to first token per turn,
            tokens reused from the cache, decode tokens/s; CUDA graphs recorded and frames compiled
            by dynamo during those turns (0 is the target); then a second photo of another shape
  prepared  a picture attached 2 s before its question (LlavaModel.prepare) against the same
            picture and question arriving together: time to first token of each
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CACHE_TOKENS = 2048  # LLAVA_CACHE_TOKENS' CUDA default (grown per family for its largest image)
REPLY_TOKENS = 96
TURNS = 20
RESULT: dict = {}


def environment(device: str) -> dict:
    import torch
    import transformers

    versions = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}
    for name in ("hqq", "gemlite", "triton"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001  (not installed: recorded as missing)
            versions[name] = None
    return {"device": torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "cpu",
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "versions": versions}


def build(family: str, folder: Path, quick: bool) -> Path:
    if (folder / "config.json").exists():
        return folder
    if quick:
        from tests.tiny_llava import build_tiny_llava

        return build_tiny_llava(folder, family=family)
    from bench.gpu import build as real

    return {"llava-1.5": real.llava_15_7b, "llava-next": real.llava_next_7b, "onevision": real.onevision_05b}[family](folder)


def photo(width: int, height: int):
    from PIL import Image

    from bench.scene import picture

    return Image.open(io.BytesIO(picture())).convert("RGB").resize((width, height))


def load(folder: Path, device: str):
    """LlavaModel.load as the app calls it on this device; (model, seconds, progress lines)."""
    from core.engines.vlm import LlavaModel

    steps, start = [], time.perf_counter()
    quant = "4bit" if device == "cuda" else "none"
    model = LlavaModel.load(str(folder), quant, device, cache_tokens=CACHE_TOKENS if device == "cuda" else None,
                            progress=lambda line: steps.append([round(time.perf_counter() - start, 2), line]))
    return model, round(time.perf_counter() - start, 2), steps


FIRST_TOKEN: dict = {}  # when the decoder yielded a turn's first token id (in the worker thread)


def clock_first_tokens() -> None:
    """Decoder.tokens notes when it yields its first id: random weights often write text that is not
    printable until the reply ends (a byte-level token cut mid-character), so the first text can come
    with the last token, and the time to the first token is the id's."""
    from core.engines.decoding import Decoder

    if getattr(Decoder.tokens, "clocked", False):
        return
    original = Decoder.tokens

    def tokens(self, *args, **kwargs):
        for n, token in enumerate(original(self, *args, **kwargs)):
            if n == 0:
                FIRST_TOKEN["at"] = time.perf_counter()
            yield token

    tokens.clocked = True
    Decoder.tokens = tokens


def ask(model, exchanges, images, tokens: int = REPLY_TOKENS) -> dict:
    """One turn through the model's stream: time to the first token id, to the first text and to the
    end, tokens reused."""
    from core.engines.vlm import GenerationOptions

    clock_first_tokens()
    FIRST_TOKEN.clear()
    start, first, text = time.perf_counter(), None, ""
    for chunk in model.stream(exchanges, images, GenerationOptions(temperature=0, max_new_tokens=tokens)):
        if chunk and first is None:
            first = time.perf_counter()
        text += chunk
    end = time.perf_counter()
    last = model.last
    return {"ttft_s": round(FIRST_TOKEN.get("at", end) - start, 4), "first_text_s": round((first or end) - start, 4),
            "total_s": round(end - start, 3),
            "prompt_tokens": last.get("prompt_tokens"), "cached_tokens": last.get("cached_tokens"),
            "prefill_s": last.get("prefill_s"), "text": text}


def first_question(model) -> dict:
    from core.conversation import Exchange, Question

    image = photo(640, 480)
    turn = ask(model, [Exchange(Question("What is in this picture?", image="first"))], {"first": image})
    turn.pop("text")
    return turn


def part_process(ctx, name: str) -> None:
    """cold or restart: this script again in a new process, which loads and asks once."""
    env = {**os.environ, **ctx["cache_env"]}
    command = [sys.executable, __file__, "--child", "--family", ctx["family"], "--model-dir", str(ctx["folder"]),
               "--device", ctx["device"]]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=ctx["child_timeout"])
    (ctx["out"] / f"child-{ctx['family']}-{name}.log").write_text(done.stderr[-200_000:])  # TORCH_LOGS go there
    lines = done.stdout.strip().splitlines()
    RESULT[name] = json.loads(lines[-1]) if done.returncode == 0 and lines else {"error": done.stderr[-4000:]}
    RESULT[name]["process_wall_s"] = round(time.perf_counter() - start, 1)


def child(args) -> None:
    """Load; ask at once (while the warm-up runs, the eager decoder answers); wait for the warm-up; ask again."""
    model, seconds, steps = load(Path(args.model_dir), args.device)
    started = time.perf_counter()
    asked = first_question(model)
    answered = round(seconds + time.perf_counter() - started, 2)
    warming = model.warming
    if warming is not None:
        warming.done.wait()
    warmed = round(seconds + time.perf_counter() - started, 2)
    print(json.dumps({"answering_s": seconds, "first_question": asked, "first_answer_after_start_s": answered,
                      "warm_up_s": warming.seconds if warming else None, "warm_up_failure": warming.failure if warming else None,
                      "ready_s": warmed, "question_when_warm": first_question(model), "steps": steps}))


class Recorded:
    """CUDA graphs recorded by torch.compile's cudagraph trees and frames compiled by dynamo, counted."""

    def __init__(self, worker):
        import torch._dynamo.utils as dynamo_utils

        self.counters = dynamo_utils.counters
        self.graphs = 0
        worker.submit(lambda job: self._count_recordings()).done.wait()  # imported in the thread that uses it:
        # cudagraph trees keep their state in that thread's storage, set up when the module is imported

    def _count_recordings(self) -> None:
        try:
            from torch._inductor import cudagraph_trees

            manager = cudagraph_trees.CUDAGraphTreeManager
            original = manager.record_function

            def record_function(this, *a, **k):
                self.graphs += 1
                return original(this, *a, **k)

            manager.record_function = record_function
        except (ImportError, AttributeError):
            self.graphs = None

    def snapshot(self) -> dict:
        return {"cuda_graphs_recorded": self.graphs, "frames_compiled": sum(self.counters["frames"].values()),
                "unique_graphs": self.counters["stats"].get("unique_graphs", 0)}


def part_turns(ctx) -> None:
    from core.conversation import Answer, Exchange, Question
    from core.errors import GenerationError

    model, recorded = ctx["model"], ctx["recorded"]
    before = recorded.snapshot()
    images = {"p1": photo(640, 480), "p2": photo(1024, 768 if ctx["family"] != "llava-1.5" else 1024)}
    conversation = [Exchange(Question("Describe this picture in detail.", image="p1"))]
    rows = []
    for n in range(ctx["turns"]):
        if n == ctx["turns"] // 2:  # a second photo of another shape half-way
            conversation.append(Exchange(Question("And this one?", image="p2")))
        start = max(i for i, e in enumerate(conversation) if e.question.image)  # what the app sends: the visual
        try:  # context (Conversation.visual_context)
            row = ask(model, conversation[start:], images, tokens=ctx["reply_tokens"])
        except GenerationError as e:  # the conversation outgrew the context: the app says so; a new one starts
            rows.append({"error": e.message, "prompt_tokens_before": rows[-1]["prompt_tokens"] if rows else None})
            conversation = [Exchange(Question("Describe this picture in detail.", image=conversation[start].question.image))]
            continue
        text = row.pop("text")
        rows.append(row)
        conversation[-1] = Exchange(conversation[-1].question, Answer(text))
        conversation.append(Exchange(Question(f"Tell me more about part {n + 1} of it, please.")))
    after = recorded.snapshot()
    follow = [r for i, r in enumerate(rows) if i not in (0, ctx["turns"] // 2) and "ttft_s" in r]
    RESULT["turns"] = {
        "rows": rows,
        "follow_up_ttft_median_s": round(statistics.median(r["ttft_s"] for r in follow), 4),
        "follow_up_ttft_max_s": max(r["ttft_s"] for r in follow),
        "first_reply_s": rows[0].get("total_s"), "tenth_reply_s": rows[min(9, len(rows) - 1)].get("total_s"),
        "prompt_tokens": [rows[0].get("prompt_tokens"), rows[-1].get("prompt_tokens")],
        "made_during_turns": {k: (after[k] - before[k]) if after[k] is not None else None for k in after},
    }


def part_decode(ctx) -> None:
    from core.conversation import Exchange, Question

    model = ctx["model"]
    question = [Exchange(Question("Describe the picture in detail, please.", image="d"))]
    rows = [ask(model, question, {"d": photo(336, 336)}, tokens=ctx["decode_tokens"]) for _ in range(2)]
    row = rows[-1]  # the same prompt again: all but its last token on the cache
    tokens = model.count_tokens(row.pop("text"))
    RESULT["decode"] = {**{k: v for k, v in row.items()}, "tokens": tokens,
                        "decode_tok_s": round((tokens - 1) / max(row["total_s"] - row["ttft_s"], 1e-6), 1)}


def part_prepared(ctx) -> None:
    from core.conversation import Exchange, Question

    model, rows = ctx["model"], {}
    for arm in ("together", "attached_2s_before"):
        digest = f"prepared-{arm}"
        images = {digest: photo(640, 480)}
        if arm != "together":
            model.prepare(digest, images)
            time.sleep(ctx["attach_s"])
        row = ask(model, [Exchange(Question("What is written on the sign?", image=digest))], images)
        row.pop("text")
        rows[arm] = row
    RESULT["prepared"] = rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="folder for the JSON (default: a temporary one)")
    parser.add_argument("--family", default="llava-1.5", choices=["llava-1.5", "llava-next", "onevision"])
    parser.add_argument("--parts", default="cold,restart,turns,decode,prepared")
    parser.add_argument("--model-dir")
    parser.add_argument("--device", default=None)
    parser.add_argument("--quick", action="store_true", help="a tiny model on the CPU: a smoke run, not a timing")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    if args.child:
        return child(argparse.Namespace(**{**vars(args), "device": device}))
    scratch = Path(tempfile.mkdtemp(prefix="first-answer-"))
    out = Path(args.out or scratch)
    out.mkdir(parents=True, exist_ok=True)
    folder = Path(args.model_dir or scratch / args.family)
    RESULT.update({"environment": environment(device), "family": args.family, "quick": args.quick})
    start = time.perf_counter()
    build(args.family, folder, args.quick)
    RESULT["environment"]["build_s"] = round(time.perf_counter() - start, 1)
    caches = scratch / "caches"  # empty at the cold start, filled by it for the restart
    ctx = {"family": args.family, "folder": folder, "device": device, "child_timeout": 900, "out": out,
           "cache_env": {"XDG_CACHE_HOME": str(caches), "TORCHINDUCTOR_CACHE_DIR": str(caches / "inductor"),
                         "TRITON_CACHE_DIR": str(caches / "triton")},
           "turns": 4 if args.quick else TURNS, "reply_tokens": 8 if args.quick else REPLY_TOKENS,
           "decode_tokens": 16 if args.quick else 200, "attach_s": 0.2 if args.quick else 2.0}
    target = out / f"first_answer-{args.family}{'-quick' if args.quick else ''}.json"
    for part in args.parts.split(","):
        started = time.perf_counter()
        try:
            if part in ("cold", "restart"):
                part_process(ctx, part)
            else:
                if "model" not in ctx:
                    from core.engines.decoding import shared_worker

                    os.environ.update(ctx["cache_env"])
                    ctx["recorded"] = Recorded(shared_worker())
                    ctx["model"], seconds, _ = load(folder, device)
                    RESULT["in_process_load_s"] = seconds
                    if ctx["model"].warming is not None:  # the turns measure the warmed decoder
                        ctx["model"].warming.done.wait()
                        RESULT["in_process_warm_up_s"] = ctx["model"].warming.seconds
                {"turns": part_turns, "decode": part_decode, "prepared": part_prepared}[part](ctx)
        except Exception as e:  # noqa: BLE001  (the other parts still run; the error is in the JSON)
            RESULT.setdefault("errors", {})[part] = traceback.format_exc()[-2000:]
            print(f"part {part} failed: {e}", file=sys.stderr)
        RESULT.setdefault("part_seconds", {})[part] = round(time.perf_counter() - started, 1)
        target.write_text(json.dumps(RESULT, indent=1))
    if device == "cuda":
        RESULT["vram_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    target.write_text(json.dumps(RESULT, indent=1))
    print(json.dumps(RESULT, indent=1))
    if RESULT.get("errors"):
        sys.exit(1)


if __name__ == "__main__":
    main()
