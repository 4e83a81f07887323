"""Which torch build scripts/install.sh installs here: the CUDA build when nvidia-smi finds a GPU
whose driver runs one, else the CPU build. Standard library only (it runs before anything is installed).

    python scripts/torch_spec.py   prints three lines:
        build     cpu, cu128 or cu130
        version   what `torch.__version__` starts with once the build is installed (already there: skipped)
        pip       the arguments for `pip install`
    and, on stderr, one sentence saying which build and why.

The CUDA builds need a driver that runs their CUDA version: nvidia-smi's header says the newest
CUDA its driver runs ("CUDA Version: 13.0"). 13.0 and newer (driver 580+) get cu130, 12.8 and 12.9
(driver 570+) get cu128; older drivers get the CPU build and the sentence says to update the driver.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

TORCH_VERSION = "2.13.0"  # the version the app is tested with (CPU here; the GPU path measured on 2.11+cu130)
INDEX = "https://download.pytorch.org/whl"
CUDA_BUILDS = ((13, 0, "cu130"), (12, 8, "cu128"))  # newest first: (driver's CUDA major, minor, build)
OLDEST_CUDA = "12.8"


@dataclass(frozen=True)
class TorchSpec:
    build: str  # "cpu" or "cu1XX"
    version: str  # prefix of torch.__version__ once installed
    pip_args: str
    reason: str  # for the person installing


def cpu_spec(reason: str, platform: str = sys.platform) -> TorchSpec:
    if platform == "linux":  # PyPI's Linux torch is the CUDA build (GBs of NVIDIA libraries): take the CPU index's
        return TorchSpec("cpu", TORCH_VERSION, f"torch=={TORCH_VERSION} --extra-index-url {INDEX}/cpu", reason)
    return TorchSpec("cpu", TORCH_VERSION, f"torch=={TORCH_VERSION}", reason)  # macOS, Windows: PyPI's is the CPU build


def driver_cuda(smi_output: str) -> tuple[int, int] | None:
    """The newest CUDA version the driver runs, from nvidia-smi's header."""
    found = re.search(r"CUDA Version\s*:\s*(\d+)\.(\d+)", smi_output)
    return (int(found[1]), int(found[2])) if found else None


def gpu_name(smi_output: str) -> str:
    found = re.search(r"\|\s+\d+\s+(NVIDIA [^|]*?|Tesla [^|]*?|Quadro [^|]*?)\s{2,}", smi_output)
    return found[1].strip() if found else "an NVIDIA GPU"


def spec_for(smi_output: str | None, platform: str = sys.platform) -> TorchSpec:
    """The build for a machine whose `nvidia-smi` printed smi_output (None: no nvidia-smi, or it failed)."""
    if smi_output is None:
        return cpu_spec("No NVIDIA GPU (nvidia-smi not found or failing): installing the CPU build of torch.", platform)
    cuda = driver_cuda(smi_output)
    name = gpu_name(smi_output)
    if cuda is None:
        return cpu_spec("nvidia-smi does not say which CUDA version its driver runs: installing the CPU build "
                        "of torch. Set TORCH_SPEC to choose a CUDA build (README, The two commands).", platform)
    for major, minor, build in CUDA_BUILDS:
        if cuda >= (major, minor):
            return TorchSpec(
                build, f"{TORCH_VERSION}+{build}", f"torch=={TORCH_VERSION}+{build} --index-url {INDEX}/{build}",
                f"{name} found (driver runs CUDA {cuda[0]}.{cuda[1]}): installing torch {TORCH_VERSION}+{build} "
                "and the GPU extras (requirements-gpu.txt).",
            )
    return cpu_spec(f"{name} found, but its driver runs CUDA {cuda[0]}.{cuda[1]} and torch's CUDA builds need "
                    f"{OLDEST_CUDA} or newer: installing the CPU build. Update the NVIDIA driver (570 or newer) "
                    "and run the command again.", platform)


def nvidia_smi() -> str | None:
    """nvidia-smi's output, or None when there is none or it fails (no driver loaded)."""
    path = shutil.which("nvidia-smi")
    if path is None:
        return None
    try:
        done = subprocess.run([path], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def main() -> None:
    spec = spec_for(nvidia_smi())
    print(spec.build, spec.version, spec.pip_args, sep="\n")
    print(spec.reason, file=sys.stderr)


if __name__ == "__main__":
    main()
