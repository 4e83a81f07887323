"""Which torch build `bash scripts/app.sh` installs: decided by scripts/torch_spec.py from nvidia-smi,
driven here by a fake nvidia-smi on PATH; scripts/install.sh is run with INSTALL_DRY_RUN=1, which
prints the pip commands instead of running them (nothing is installed)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

HEADER = """Tue Nov 25 07:00:00 2026
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI {driver}              Driver Version: {driver}      CUDA Version: {cuda}     |
|-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |
|=========================================+========================+======================|
|   0  NVIDIA H100 80GB HBM3          On  |   00000000:19:00.0 Off |                    0 |
| N/A   31C    P0             70W /  700W |       0MiB /  81559MiB |      0%      Default |
+-----------------------------------------+------------------------+----------------------+
"""
FAILING = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."


def fake_bin(tmp_path: Path, output: str | None, status: int = 0) -> Path:
    """A folder for PATH holding an nvidia-smi that prints output and exits with status (None: no nvidia-smi)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    if output is not None:
        (folder / "output.txt").write_text(output)
        script = folder / "nvidia-smi"
        # shell builtins only: PATH may hold nothing but this folder
        script.write_text(f"#!/bin/sh\nwhile IFS= read -r line; do printf '%s\\n' \"$line\"; done < '{folder / 'output.txt'}'\n"
                          f"exit {status}\n")
        script.chmod(0o755)
    return folder


def torch_spec(path: str) -> tuple[list[str], str]:
    done = subprocess.run([sys.executable, str(ROOT / "scripts/torch_spec.py")], capture_output=True, text=True,
                          env={**os.environ, "PATH": path}, check=True)
    return done.stdout.splitlines(), done.stderr.strip()


@pytest.mark.parametrize("driver, cuda, build", [
    ("580.65.06", "13.0", "cu130"), ("590.12", "13.1", "cu130"), ("575.51.03", "12.9", "cu128"),
    ("570.124.06", "12.8", "cu128"),
])
def test_a_gpu_whose_driver_runs_the_build_gets_the_cuda_wheel(tmp_path, driver, cuda, build):
    (got, version, pip_args), said = torch_spec(str(fake_bin(tmp_path, HEADER.format(driver=driver, cuda=cuda))))
    assert got == build
    assert version == f"2.13.0+{build}"
    assert pip_args.split() == [f"torch=={version}", "--index-url", f"https://download.pytorch.org/whl/{build}"]
    assert "NVIDIA H100 80GB HBM3" in said and f"CUDA {cuda}" in said and "requirements-gpu.txt" in said


@pytest.mark.parametrize("output, status, why", [
    (None, 0, "No NVIDIA GPU"),  # no nvidia-smi on PATH
    (FAILING, 9, "No NVIDIA GPU"),  # nvidia-smi there, the driver not loaded
    (HEADER.format(driver="550.54.15", cuda="12.4"), 0, "Update the NVIDIA driver"),
    (HEADER.format(driver="580.65.06", cuda="N/A"), 0, "TORCH_SPEC"),
])
def test_no_usable_gpu_gets_the_cpu_wheel_and_says_why(tmp_path, output, status, why):
    (build, version, pip_args), said = torch_spec(str(fake_bin(tmp_path, output, status)))
    assert (build, version) == ("cpu", "2.13.0")
    assert pip_args.split()[0] == "torch==2.13.0" and "--index-url" not in pip_args
    if sys.platform == "linux":  # PyPI's Linux torch is the CUDA build: the CPU one comes from the CPU index
        assert pip_args.split()[1:] == ["--extra-index-url", "https://download.pytorch.org/whl/cpu"]
    assert why in said


def dry_install(tmp_path: Path, mode: str, output: str | None) -> str:
    """scripts/install.sh MODE in a copy of the project, with INSTALL_DRY_RUN=1: the commands it would run.
    Its .venv/bin/python is this interpreter (so "torch already installed" is this environment's torch)."""
    project = tmp_path / "project"
    shutil.copytree(ROOT / "scripts", project / "scripts")
    for path in [*ROOT.glob("requirements*.txt"), *ROOT.glob("packages*.txt")]:
        shutil.copy(path, project)
    python = project / ".venv/bin/python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    path = f"{fake_bin(tmp_path, output)}:{os.environ['PATH']}"
    env = {key: value for key, value in os.environ.items() if key != "TORCH_SPEC"}
    done = subprocess.run(["bash", str(project / "scripts/install.sh"), mode], capture_output=True, text=True,
                          env={**env, "PATH": path, "INSTALL_DRY_RUN": "1"}, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def pip_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("pip ")]


def test_install_on_a_gpu_host_takes_the_cuda_torch_and_the_gpu_extras(tmp_path):
    output = dry_install(tmp_path, "app", HEADER.format(driver="580.65.06", cuda="13.0"))
    lines = pip_lines(output)
    torch_line = [line for line in lines if re.search(r"\btorch==", line)]
    assert torch_line == ["pip install torch==2.13.0+cu130 --index-url https://download.pytorch.org/whl/cu130"]
    (extras,) = [line for line in lines if "requirements-local.txt" in line]
    assert "-r requirements-gpu.txt" in extras and "-c " in extras  # torch held at the build just installed
    assert "-r requirements.txt" in extras  # the front end in the same resolve
    assert lines.index(torch_line[0]) < lines.index(extras)
    assert "NVIDIA H100 80GB HBM3 found" in output  # says which


def test_install_without_a_gpu_adds_no_gpu_extras(tmp_path):
    lines = pip_lines(dry_install(tmp_path, "app", None))
    assert any("-r requirements-local.txt" in line for line in lines)
    assert not any("requirements-gpu.txt" in line or "--index-url" in line for line in lines)
    assert any(line.startswith("pip install --no-deps openai-whisper") for line in lines)
    assert "pip install --no-deps pipecat-ai==1.14.0" in lines  # smart-turn v3's model, not Pipecat's dependencies


def test_front_end_install_is_requirements_txt_and_the_turn_model_even_on_a_gpu_host(tmp_path):
    output = dry_install(tmp_path, "front-end", HEADER.format(driver="580.65.06", cuda="13.0"))
    assert pip_lines(output) == ["pip install -r requirements.txt", "pip install --no-deps pipecat-ai==1.14.0"]


def test_the_test_install_adds_the_test_tools_and_the_test_browser(tmp_path):
    output = dry_install(tmp_path, "dev", None)
    lines = pip_lines(output)
    (extras,) = [line for line in lines if "requirements-local.txt" in line]
    assert "-r requirements-dev.txt" in extras
    (npm,) = [line for line in output.splitlines() if line.startswith("npm ")]  # the page scripts' linter
    assert npm.split()[:3] == ["npm", "install", "eslint@9.39.5"]
    assert "npm " not in dry_install(tmp_path / "app", "app", None)  # only the test install has it
