"""4-bit and 8-bit weights for the language model of a LLaVA, on CUDA.

LLAVA_QUANT=4bit  HQQ 4-bit (group 64) with gemlite's Triton kernels: the fastest 4-bit path
                  measured on an H100 (bench/gpu_turn.py), and it compiles with CUDA graphs
LLAVA_QUANT=nf4   bitsandbytes NF4 with fp16 compute: the original script's setting
LLAVA_QUANT=8bit  bitsandbytes int8

Only the language model's Linear layers are quantised: the vision tower, the projector, the
embeddings and lm_head stay in fp16, as in every measurement of DESIGN.md. The model is loaded on
the CPU first and each layer is quantised on its way to the GPU, so the GPU never holds the fp16
weights of the whole language model (a 7B model fits a 6 GiB card).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

HQQ_BITS = 4
HQQ_GROUP_SIZE = 64  # weights per scale/zero pair; 64 is what gemlite's fastest 4-bit kernels take


def bitsandbytes_config(quant: str):
    """from_pretrained's quantization_config for nf4 / 8bit; ImportError without bitsandbytes."""
    import bitsandbytes  # noqa: F401  (imported here to say clearly that it is missing)
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=quant == "nf4",
        load_in_8bit=quant == "8bit",
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch.float16,
    )


def language_model(model):
    """The text decoder inside a LLaVA-family model (llava, llava-next, onevision)."""
    return model.model.language_model


def quantize_hqq(model, device: str, kernels: bool = True, progress=None) -> int:
    """Replace the language model's Linear layers by 4-bit HQQ layers on device; then, on CUDA,
    hand them to gemlite's kernels. Returns the number of layers quantised.

    kernels=False keeps HQQ's own (slow, portable) matmul: the CPU tests use it to check the wiring.
    """
    import torch
    from hqq.core.quantize import BaseQuantizeConfig, HQQLinear

    config = BaseQuantizeConfig(nbits=HQQ_BITS, group_size=HQQ_GROUP_SIZE, axis=1)
    dtype = torch.float16 if device == "cuda" else torch.float32
    decoder = language_model(model)
    targets = [(parent, name) for parent in decoder.modules() for name, child in parent.named_children()
               if isinstance(child, torch.nn.Linear)]
    for i, (parent, name) in enumerate(targets):
        linear = getattr(parent, name)
        setattr(parent, name, HQQLinear(linear, config, compute_dtype=dtype, device=device, del_orig=True))
        if progress and (i + 1) % 32 == 0:
            progress(f"Quantising the language model to 4 bit: {i + 1} of {len(targets)} layers")
    model.to(device)  # the rest: vision tower, projector, embeddings, norms, lm_head (HQQ layers stay put)
    if kernels and device == "cuda":
        from hqq.utils.patching import prepare_for_inference

        prepare_for_inference(decoder, backend="gemlite")
    return len(targets)


def kernel_choices_file() -> Path:
    """Where gemlite's tuned kernel choices are kept between starts (Triton keeps its compiled
    kernels itself), so that a restart does not tune again: one file per GPU model."""
    import torch

    gpu = torch.cuda.get_device_name(0).lower().replace(" ", "-")
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "talk-with-a-picture"
    return root / f"gemlite-{gpu}.json"


def load_kernel_choices() -> bool:
    import gemlite

    path = kernel_choices_file()
    return path.exists() and gemlite.load_config(str(path), print_error=False)


def save_kernel_choices() -> None:
    import gemlite

    path = kernel_choices_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        gemlite.cache_config(str(path))
    except OSError as e:  # a read-only home: the next start tunes again, nothing else is lost
        logger.warning("could not keep gemlite's kernel choices in %s: %s", path, e)
