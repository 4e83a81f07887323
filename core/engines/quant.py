"""4-bit and 8-bit weights for the language model of a LLaVA, on CUDA; int8 on the CPU.

LLAVA_QUANT=4bit  HQQ 4-bit (group 64) with gemlite's Triton kernels: the fastest 4-bit path
                  measured on an H100 (bench/gpu_turn.py), and it compiles with CUDA graphs
LLAVA_QUANT=nf4   bitsandbytes NF4 with fp16 compute: the original script's setting
LLAVA_QUANT=8bit  bitsandbytes int8
LLAVA_QUANT=int8  the CPU's default: torch's dynamic int8 Linear layers (weights int8 per tensor,
                  activations quantised on the fly), in the language model and the vision tower
                  (quantize_int8 below); on CUDA it loads as 8bit

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


def hqq_settings() -> dict:
    """What a kept 4-bit model was made with (core.engines.saved_model keys its file on it)."""
    return {"method": "hqq", "bits": HQQ_BITS, "group_size": HQQ_GROUP_SIZE, "axis": 1, "kernels": "gemlite"}


def int8_settings() -> dict:
    """What a kept int8 CPU model was made with (quantize_int8 below)."""
    return {"method": "torch-dynamic-int8", "parts": ["language_model", "vision_tower"]}


def is_quantised(model) -> bool:
    """No plain Linear layer is left in the language model (they were all made 4-bit)."""
    import torch

    return not any(isinstance(m, torch.nn.Linear) for m in language_model(model).modules())


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


def quantize_int8(model, vision: bool = True) -> int:
    """Replace the Linear layers of the language model (and, with vision, of the vision tower) by
    torch's dynamic int8 Linear (CPU kernels: fbgemm on x86). Returns the number of layers replaced.

    Measured on the 2-core AVX2 CPU (DESIGN.md, bench/cpu_first_answer.py): the language model's
    prefill 2.3x and decoding 3x faster than fp32; the SigLIP tower 4x faster per tile, its features
    within 0.8 % (cosine 0.99996) of fp32's. torch.ao's quantize_dynamic is deprecated in favour of
    torchao's quantize_ API, which is not installed here; it still works in torch 2.13, and its
    deprecation warnings are silenced. The projector, the embeddings and lm_head stay fp32."""
    import warnings

    import torch
    from torch.ao.quantization import quantize_dynamic

    parts = [language_model(model)] + ([model.model.vision_tower] if vision else [])
    count = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantize_dynamic's deprecation, per call
        for part in parts:
            count += sum(isinstance(m, torch.nn.Linear) for m in part.modules())
            quantize_dynamic(part, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    return count


def kernel_choices_file() -> Path:
    """Where gemlite's tuned kernel choices are kept between starts (Triton keeps its compiled
    kernels itself), so that a restart does not tune again: one file per GPU model."""
    import torch

    gpu = torch.cuda.get_device_name(0).lower().replace(" ", "-")
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "talk-with-a-picture"
    return root / f"gemlite-{gpu}.json"


def load_kernel_choices() -> bool:
    """gemlite's kernel choices kept by an earlier start on this GPU model; on a card gemlite ships no
    choices for, those of its closest card first (the H200 is an H100 with more memory: same chip,
    same kernels; gemlite matches on the name and found none, so a first start tuned everything)."""
    import gemlite

    sibling = shipped_choices_for(torch_device_name())
    if sibling:
        gemlite.load_config(str(sibling), print_error=False)
    path = kernel_choices_file()
    return path.exists() and gemlite.load_config(str(path), print_error=False)


SIBLING_CARDS = {"h200": "h100", "gh200": "h100", "h800": "h100", "h20": "h100"}  # same chip, gemlite has the first's


def torch_device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0)


def shipped_choices_for(device_name: str) -> Path | None:
    """The kernel choices gemlite ships for a sibling of this card, when it ships none for the card."""
    from importlib.util import find_spec

    spec = find_spec("gemlite")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "configs"
    name = device_name.lower().replace(" ", "_")
    tags = sorted((p.stem for p in folder.glob("*.json")), key=len, reverse=True)
    if any(tag in name for tag in tags):
        return None  # gemlite loads its own at import
    for card, sibling in SIBLING_CARDS.items():
        if card in name.split("_") and (folder / f"{sibling}.json").exists():
            return folder / f"{sibling}.json"
    return None


def warm_up_lengths(lengths: list[int], closest=None) -> list[int]:
    """One prompt length per tuning class of gemlite's kernels: gemlite tunes and keys its choices
    on M rounded up to its classes (64, 96, 128, 192, 256, 384, 512, 768, 1024, ...), so one
    length of each is enough for a turn never to tune (10 lengths instead of 32 for a 2,048 cache;
    14 instead of 136 for OneVision's 8,704). Every length when gemlite is not there."""
    if closest is None:
        try:
            from gemlite.triton_kernels.utils import get_closest_m as closest
        except ImportError:
            return list(lengths)
    classes: dict[int, int] = {}
    for length in lengths:
        classes.setdefault(closest(length), length)
    return sorted(classes.values())


def save_kernel_choices() -> None:
    import gemlite

    path = kernel_choices_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        gemlite.cache_config(str(path))
    except OSError as e:  # a read-only home: the next start tunes again, nothing else is lost
        logger.warning("could not keep gemlite's kernel choices in %s: %s", path, e)
