#!/usr/bin/env bash
# Install everything the app and its tests need into .venv (apt packages from packages.txt too).
# TORCH_SPEC picks the torch build: the default is the CPU wheel this project is tested with;
# on a CUDA machine use e.g. TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124".
set -euo pipefail
cd "$(dirname "$0")/.."
requirements="${1:-requirements.txt}"

missing=()
for package in $(grep -v '^#' packages.txt); do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "Installing apt packages: ${missing[*]}"
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2>&1 | grep -v "is ignored: it is neither" || true; }
pip install ${TORCH_SPEC:-torch==2.13.0}
pip install -r "$requirements"
pip install --no-deps "openai-whisper==20250625"
.venv/bin/python -c "import torch, transformers, streamlit, faster_whisper, whisper, gtts" \
    || { echo "install failed: see the pip output above" >&2; exit 1; }
