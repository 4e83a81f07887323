#!/usr/bin/env bash
# Install, then run the app on http://localhost:8501.
# With OPENAI_BASE_URL set (a chat server answers) it installs the front end only (requirements.txt, no
# torch); otherwise the in-process model too, in the torch build for this machine (CUDA when nvidia-smi
# finds a GPU: scripts/install.sh). Without internet access to the Hugging Face hub and with LLAVA_MODEL
# unset, it builds a tiny random LLaVA (answers are noise; the chat page says so) so that the whole app can
# still be tried; without access to Google's voice and with TTS_ENGINE unset, replies are spoken offline
# (TTS_ENGINE=piper) rather than each waiting for gTTS to fail. See README.
set -euo pipefail
cd "$(dirname "$0")/.."
reachable() {  # reachable HOST: a TCP connection to HOST:443 opens within 5 s
    python3 -c "
import socket, sys
try: socket.create_connection((sys.argv[1], 443), timeout=5).close()
except OSError: sys.exit(1)" "$1" 2>/dev/null
}
if [ -n "${OPENAI_BASE_URL:-}" ] && [ "${STT_ENGINE:-}" != openai-whisper ]; then
    echo "OPENAI_BASE_URL is set: installing the front end only (requirements.txt, no torch)."
    bash scripts/install.sh front-end
else
    bash scripts/install.sh app
    if [ -z "${LLAVA_MODEL:-}" ] && ! reachable huggingface.co; then
        export LLAVA_MODEL=models/tiny-llava HF_HUB_OFFLINE=1
        # the marker file says "random weights" to the chat page (core/engines/demo.py); older builds lack it
        [ -f "$LLAVA_MODEL/RANDOM_WEIGHTS.txt" ] || .venv/bin/python -m tests.tiny_llava "$LLAVA_MODEL" >/dev/null
        echo "The Hugging Face hub cannot be reached: using a tiny RANDOM LLaVA ($LLAVA_MODEL)."
        echo "Its answers are noise. Set LLAVA_MODEL to a downloaded model folder for real answers."
    fi
fi
if [ -z "${TTS_ENGINE:-}" ] && ! reachable translate.google.com; then
    export TTS_ENGINE=piper
    echo "Google's voice (gTTS) cannot be reached: replies are spoken offline (TTS_ENGINE=piper)."
fi
exec .venv/bin/streamlit run streamlit_app.py "$@"
