#!/usr/bin/env bash
# Install the app into .venv (and the apt packages it needs):
#   bash scripts/install.sh [front-end|app|dev]
#   front-end  requirements.txt: the pages, History, the remote engines (OPENAI_BASE_URL), faster-whisper
#              on the CPU, TTS; no torch (what Streamlit Community Cloud installs)
#   app        (the default) + the in-process model: torch, then requirements-local.txt and openai-whisper;
#              on a machine where nvidia-smi finds a GPU the CUDA build of torch and requirements-gpu.txt
#              (scripts/torch_spec.py says which build and why), else the CPU build
#   dev        app + the test tools (requirements-dev.txt), the test browser (packages-test.txt) and ESLint
#              for the page's scripts in ui/js (from npm, into node_modules/: ESLINT below)
# TORCH_SPEC overrides the torch build, e.g.
#   TORCH_SPEC="torch==2.13.0+cu128 --index-url https://download.pytorch.org/whl/cu128" bash scripts/install.sh
# INSTALL_DRY_RUN=1 prints the apt and pip commands instead of running them (tests/unit/test_torch_spec.py).
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-app}"
ESLINT=(eslint@9.39.5 @eslint/js@9.39.5 globals@16.5.0)  # the JavaScript linter (eslint.config.mjs), dev only
# The end-of-turn model, smart-turn v3 (core/listening/turn_end.py), is the ONNX file inside Pipecat's wheel:
# installed without Pipecat's dependencies (aiohttp, pydantic, numba, ...), which nothing here imports.
SMART_TURN=pipecat-ai==1.14.0
case "$mode" in
    front-end|app|dev) ;;
    *) echo "usage: bash scripts/install.sh [front-end|app|dev]" >&2; exit 2 ;;
esac

apt_packages() {  # install the Debian packages listed in the given files that are missing
    local missing=() package
    for package in $(grep -hv '^#' "$@"); do
        dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "Installing apt packages: ${missing[*]}"
        local sudo
        sudo=$([ "$(id -u)" = 0 ] || echo sudo)
        if [ -n "${INSTALL_DRY_RUN:-}" ]; then echo "apt-get install ${missing[*]}"; return; fi
        $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}
apt_packages packages.txt $([ "$mode" = dev ] && echo packages-test.txt)

[ -x .venv/bin/python ] || python3 -m venv .venv
pip() {
    if [ -n "${INSTALL_DRY_RUN:-}" ]; then echo "pip $*"; return; fi
    .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2>&1 | grep -v "is ignored: it is neither" || true
}
check() {  # check MODULES...: they import, or the install failed
    [ -n "${INSTALL_DRY_RUN:-}" ] || .venv/bin/python -c "import $(IFS=,; echo "$*")" \
        || { echo "install failed: see the pip output above" >&2; exit 1; }
}
if [ "$mode" = front-end ]; then
    pip install -r requirements.txt
    pip install --no-deps "$SMART_TURN"
    check streamlit faster_whisper av gtts openai
    exit 0
fi

# The in-process model. torch first, in the build for this machine, then everything else with torch
# held at that build (so that no other requirement swaps it for PyPI's).
if [ -n "${TORCH_SPEC:-}" ]; then
    build=custom want="" spec="$TORCH_SPEC"
    echo "Installing torch as TORCH_SPEC says: $TORCH_SPEC"
else
    { read -r build; read -r want; read -r spec; } < <(.venv/bin/python scripts/torch_spec.py)
fi
installed=$(.venv/bin/python -c "import torch; print(torch.__version__)" 2>/dev/null || true)
if [ -z "$want" ] || [[ "$installed" != "$want"* ]]; then
    # A CPU wheel pip can find without the network (its find-links, a wheel cache) first: the CPU index
    # below is retried for every package where download.pytorch.org cannot be reached.
    if [ "$build" = cpu ] && [ -z "${INSTALL_DRY_RUN:-}" ] \
        && .venv/bin/python -m pip install -q --disable-pip-version-check --no-index --no-deps "torch==$want" >/dev/null 2>&1; then
        pip install "torch==$want"  # its dependencies, from PyPI (torch itself is in place)
    else
        # shellcheck disable=SC2086  # spec holds several pip arguments
        pip install $spec
    fi
fi
installed=$(.venv/bin/python -c "import torch; print(torch.__version__)") \
    || { echo "torch could not be installed ($spec): see the pip output above" >&2; exit 1; }
echo "torch $installed"
hold=$(mktemp) && trap 'rm -f "$hold"' EXIT
echo "torch==$installed" >"$hold"
requirements=(-r requirements.txt -r requirements-local.txt)  # one resolve: gTTS's click range meets huggingface-hub's
if [[ "$build" == cu* ]] || { [ "$build" = custom ] && .venv/bin/python -c "import sys, torch; sys.exit(torch.version.cuda is None)"; }; then
    requirements+=(-r requirements-gpu.txt)
fi
[ "$mode" = dev ] && requirements+=(-r requirements-dev.txt)
pip install -c "$hold" "${requirements[@]}"
pip install --no-deps "openai-whisper==20250625"
pip install --no-deps "$SMART_TURN"
check torch transformers streamlit faster_whisper whisper gtts

if [ "$mode" = dev ]; then
    command -v npm >/dev/null || apt_packages <(echo npm)
    if [ -n "${INSTALL_DRY_RUN:-}" ]; then echo "npm install ${ESLINT[*]}"; exit 0; fi
    installed=$(node -p 'require("./node_modules/eslint/package.json").version' 2>/dev/null || true)
    if [ "eslint@$installed" != "${ESLINT[0]}" ]; then
        npm install --prefix . --no-save --no-package-lock --no-audit --no-fund -q "${ESLINT[@]}" \
            || { echo "ESLint could not be installed from npm: see the output above" >&2; exit 1; }
    fi
fi
