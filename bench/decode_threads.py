"""Where the streamed path's 2.2x went: the same eager model decoded five ways, side by side.

    python bench/decode_threads.py --device cuda --model-dir DIR   # LLaVA-1.5-7B fp16 (bench/gpu/build.py)
    python bench/decode_threads.py --device cpu                    # a mid-size random LLaVA built here

  generate            model.generate(), nothing else
  generate+streamer   with a TextIteratorStreamer, read after generate() returns (same thread)
  old stream()        generate() in a thread, the streamer read by this thread as it fills (the app
                      before: LlavaModel.stream with TextIteratorStreamer)
  loop, one thread    the app's decode loop (core.engines.decoding.Decoder), tokens read where they are made
  loop, worker        the app as it runs: the loop in the generation thread, read by this one
                      through LlavaModel.stream (Detokenizer)

Prints JSON: decode tokens/s (median of --reps, after a warm-up) for each, greedy, --tokens new
tokens with end-of-sequence suppressed. Nothing is compiled: this is the eager path (the CPU's).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.quick import parse_args  # noqa: E402


def cpu_model(folder: Path) -> Path:
    """A random LLaVA whose language model is big enough for its steps to take real time."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from tests.tiny_llava import build_tiny_llava

    build_tiny_llava(folder)  # processor and tokenizer
    tiny = json.loads((folder / "config.json").read_text())
    text = tiny["text_config"]
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**{k: tiny["vision_config"][k] for k in (
            "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size", "patch_size")}),
        text_config=LlamaConfig(vocab_size=text["vocab_size"], hidden_size=512, intermediate_size=1408,
                                num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=8,
                                max_position_embeddings=2048, bos_token_id=text["bos_token_id"],
                                eos_token_id=text["eos_token_id"], pad_token_id=text["pad_token_id"]),
        image_token_index=tiny["image_token_index"], vision_feature_layer=-2, vision_feature_select_strategy="default",
    )
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).eval().save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--model-dir")
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--reps", type=int, default=3)
    args = parse_args(parser, tokens=8, reps=1)

    import tempfile

    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor, TextIteratorStreamer

    from core.conversation import Exchange, Question
    from core.engines.api import GenerationOptions
    from core.engines.decoding import Sampling
    from core.engines.vlm import LlavaModel

    folder = Path(args.model_dir) if args.model_dir else cpu_model(Path(tempfile.mkdtemp()) / "llava")
    dtype = torch.float16 if args.device == "cuda" else torch.float32
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=dtype, device_map={"": args.device}).eval()
    llava = LlavaModel(model, AutoProcessor.from_pretrained(folder), "bench")
    llava.decoder.eos = set()
    exchanges = [Exchange(Question("Describe the picture in detail, please.", image="img"))]
    images = {"img": Image.new("RGB", (640, 480), (120, 180, 240))}
    inputs = llava.inputs(exchanges, images).to(args.device, dtype)
    n = args.tokens
    generate_kwargs = dict(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False)

    def sync():
        if args.device == "cuda":
            torch.cuda.synchronize()

    def plain():
        llava.model.generate(**generate_kwargs)

    def with_streamer():
        streamer = TextIteratorStreamer(llava.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        llava.model.generate(**generate_kwargs, streamer=streamer)
        for _ in streamer:
            pass

    def old_stream():
        streamer = TextIteratorStreamer(llava.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        worker = threading.Thread(target=llava.model.generate, kwargs={**generate_kwargs, "streamer": streamer})
        worker.start()
        for _ in streamer:
            pass
        worker.join()

    def loop_here():
        for _ in llava.decoder.tokens(inputs, n, Sampling(), lambda: False):
            pass

    def loop_worker():
        for _ in llava.stream(exchanges, images, GenerationOptions(temperature=0, max_new_tokens=n)):
            pass

    paths = {"generate": plain, "generate+streamer": with_streamer, "old stream()": old_stream,
             "loop, one thread": loop_here, "loop, worker": loop_worker}
    rates: dict[str, list[float]] = {name: [] for name in paths}
    with torch.no_grad():
        for run in paths.values():
            run()  # warm-up
        for _ in range(args.reps):
            for name, run in paths.items():  # interleaved, so that all see the same machine
                sync()
                start = time.perf_counter()
                run()
                sync()
                rates[name].append(n / (time.perf_counter() - start))
    print(json.dumps({
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else f"cpu, {torch.get_num_threads()} threads",
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
        "prompt_tokens": int(inputs["input_ids"].shape[1]), "new_tokens": n,
        "tokens_per_s": {name: round(statistics.median(r), 1) for name, r in rates.items()},
        "note": "whole generation time (prefill included) over new tokens; eager, greedy",
    }, indent=1))


if __name__ == "__main__":
    main()
