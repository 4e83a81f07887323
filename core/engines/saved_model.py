"""The quantised model kept on disk between starts, so that a restart reads 4.5 GiB of 4-bit weights
straight to the GPU instead of 14 GB of fp16 and quantising them again (31 s on the H200), and a
CPU start reads the int8 model instead of fp32 weights it would quantise again (and hold on to).

One file per (model, revision, quantisation settings, library versions, GPU): the key is a hash of
all of them, so that a new checkpoint, another LLAVA_QUANT, an upgraded hqq or gemlite, or another
card never loads weights made for something else. The file is written to a temporary name, synced
and renamed (a crash never leaves half an entry under the real name); an entry that cannot be read
back (cut short, damaged, unpicklable after an upgrade the key missed) is deleted and rebuilt, never
trusted.

torch.save pickles the whole module tree (HQQ's and gemlite's layers hold packed weights and their
metadata, not plain tensors a state_dict could restore onto fresh modules). transformers' output-
capturing forward hooks are closures pickle cannot take; they are installed lazily, on the first
forward that asks for hidden states, and marked by an attribute: both are stripped before saving,
and transformers installs them again when they are needed, from a registry that each model's
__init__ fills and unpickling does not: load() fills it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

logger = logging.getLogger(__name__)

VERSIONED = ("torch", "transformers", "hqq", "gemlite")  # what the pickled modules' classes come from
HOOKS_FLAG = "_output_capturing_hooks_installed"


def cache_folder() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "talk-with-a-picture" / "quantised"


def revision(model_id: str) -> str:
    """What identifies the weights: for a local folder, each file's name, size and modification time;
    for a hub id, the commit of its cached snapshot (the config's _commit_hash)."""
    folder = Path(model_id).expanduser()
    if folder.is_dir():
        files = sorted(p for p in folder.iterdir() if p.is_file())
        return json.dumps([[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files])
    from transformers import AutoConfig

    return str(getattr(AutoConfig.from_pretrained(model_id), "_commit_hash", None) or "")


def entry(model_id: str, settings: dict, device: str) -> Path:
    """The file for this model with these quantisation settings on this device."""
    import torch

    versions = {}
    for package in VERSIONED:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    card = torch.cuda.get_device_name(0) if device == "cuda" and torch.cuda.is_available() else device
    key = json.dumps({"model": str(Path(model_id).expanduser().resolve()) if Path(model_id).expanduser().exists() else model_id,
                      "revision": revision(model_id), "settings": settings, "versions": versions, "device": card},
                     sort_keys=True)
    return cache_folder() / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.pt"


def load(path: Path, device: str):
    """The model saved at path, on device; None when there is none or it cannot be read (then it
    is deleted, so that this start rebuilds it)."""
    import torch

    if not path.is_file():
        return None
    try:
        model = torch.load(path, map_location=device, weights_only=False, mmap=True)  # read as it is placed
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"holds a {type(model).__name__}, not a model")
        _register_output_capture(model)
        _set_hqq_backend(model)
        return model.eval()
    except Exception as e:  # noqa: BLE001  (any failure: the entry is not trusted)
        logger.warning("The saved quantised model %s cannot be used (%s): rebuilding it.", path, str(e)[:200])
        path.unlink(missing_ok=True)
        return None


def save(model, path: Path) -> bool:
    """Keep model at path (atomic). False, with a log line, when the disk refuses: the app goes on
    and the next start quantises again."""
    import torch

    _strip_output_hooks(model)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as out:
                torch.save(model, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, path)
        finally:
            if os.path.exists(temp):
                os.unlink(temp)
    except (OSError, RuntimeError) as e:
        logger.warning("Could not keep the quantised model in %s (%s): the next start quantises again.", path, e)
        return False
    return True


def _register_output_capture(model) -> None:
    """What each transformers model's __init__ registers and unpickling skips: the outputs its
    submodules can record (hidden states, attentions), keyed by class. Without it, in a new process,
    the vision tower returns no hidden states and LLaVA cannot take its features from them."""
    from transformers import PreTrainedModel
    from transformers.utils import output_capturing

    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            output_capturing._CAN_RECORD_REGISTRY[str(module.__class__)] = module._can_record_outputs


def _set_hqq_backend(model) -> None:
    """HQQLinear's forward is set on its class by each instance's __init__ (HQQLinear.set_backend):
    layers left as HQQLinear (HQQ's own matmul, without gemlite) need it set again after unpickling."""
    import sys

    quantize = sys.modules.get("hqq.core.quantize")
    if quantize is not None and any(isinstance(m, quantize.HQQLinear) for m in model.modules()):
        quantize.HQQLinear.set_backend(quantize.HQQLinear.backend)


def _strip_output_hooks(model) -> None:
    """Remove transformers' output-capturing hooks (closures) and their flag, in place."""
    for module in model.modules():
        hooks = getattr(module, "_forward_hooks", None)
        if hooks:
            for handle in [k for k, hook in hooks.items() if getattr(hook, "__name__", "") == "output_capturing_hook"]:
                del hooks[handle]
        if HOOKS_FLAG in vars(module):
            delattr(module, HOOKS_FLAG)
