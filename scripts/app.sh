#!/usr/bin/env bash
# Install, then run the app on http://localhost:8501.
# With OPENAI_BASE_URL set (a chat server answers) it installs the front end only (requirements.txt, no
# torch); otherwise the in-process model too, in the torch build for this machine (CUDA when nvidia-smi
# finds a GPU: scripts/install.sh). Without internet access to the Hugging Face hub and with LLAVA_MODEL
# unset, it builds a tiny random LLaVA (answers are noise) so that the whole app can still be tried; see README.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${OPENAI_BASE_URL:-}" ] && [ "${STT_ENGINE:-}" != openai-whisper ]; then
    echo "OPENAI_BASE_URL is set: installing the front end only (requirements.txt, no torch)."
    bash scripts/install.sh front-end
else
    bash scripts/install.sh app
    if [ -z "${LLAVA_MODEL:-}" ] && ! .venv/bin/python -c "
import socket, sys
try: socket.create_connection(('huggingface.co', 443), timeout=5).close()
except OSError: sys.exit(1)" 2>/dev/null; then
        export LLAVA_MODEL=models/tiny-llava HF_HUB_OFFLINE=1
        [ -f "$LLAVA_MODEL/config.json" ] || .venv/bin/python -m tests.tiny_llava "$LLAVA_MODEL" >/dev/null
        echo "The Hugging Face hub cannot be reached: using a tiny RANDOM LLaVA ($LLAVA_MODEL)."
        echo "Its answers are noise. Set LLAVA_MODEL to a downloaded model folder for real answers."
    fi
fi
exec .venv/bin/streamlit run streamlit_app.py "$@"
