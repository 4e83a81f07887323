#!/usr/bin/env bash
# Install (the app with its in-process model, the test tools, the test browser), then lint and run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh dev
export HF_HUB_OFFLINE=1  # tests never download anything
.venv/bin/ruff check .
node_modules/.bin/eslint --max-warnings 0 ui/js  # the page's scripts (eslint.config.mjs)
exec .venv/bin/python -m pytest "$@"
