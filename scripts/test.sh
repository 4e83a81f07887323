#!/usr/bin/env bash
# Install (app + test tools + apt packages), then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh requirements-dev.txt
export HF_HUB_OFFLINE=1  # tests never download anything
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
