#!/usr/bin/env bash
# On the developer's machine (which reaches the package registries), before a GPU run: gathers what
# the GPU machine cannot download into three ignored folders that the device call carries, then
#   bench/gpu/run.sh SCRIPT [ARGS...]   runs there (installs them, then python3 bench/SCRIPT.py ARGS).
#   .whl          wheels: hqq and gemlite (built here from their sdists), termcolor, openai-whisper,
#                 more-itertools (the GPU image has torch, transformers, triton, numpy, tiktoken)
#   .deb          espeak-ng's Debian packages, and libpcaudio.so.0 built from bench/gpu/pcaudio_stub.c
#   .bench-audio  bench/scene.py's questions as 16 kHz WAVs spoken by espeak-ng
# Usage: bash bench/gpu/prepare.sh [--no-speech]   (--no-speech: the wheels only, for bench/first_answer.py)
set -euo pipefail
cd "$(dirname "$0")/../.."
python=.venv/bin/python
[ -x "$python" ] || python=python3
mkdir -p .whl .deb .bench-audio
"$python" -m pip wheel -q --no-deps -w .whl hqq==0.2.8.post1 gemlite==0.6.0.post2 termcolor==3.1.0
[ "${1:-}" = --no-speech ] && { ls .whl; exit 0; }
"$python" -m pip wheel -q --no-deps -w .whl openai-whisper==20250625 more-itertools==10.8.0
(cd .deb && apt-get download -q espeak-ng libespeak-ng1 espeak-ng-data libsonic0 >/dev/null)
cc -shared -fPIC -o .deb/libpcaudio.so.0 bench/gpu/pcaudio_stub.c
"$python" - <<'PY'
import subprocess
import sys

sys.path.insert(0, ".")
from bench.scene import QUESTIONS

for i, question in enumerate(QUESTIONS):
    raw = f".bench-audio/raw-{i}.wav"
    subprocess.run(["espeak-ng", "-s", "150", "-w", raw, question], check=True)
PY
for raw in .bench-audio/raw-*.wav; do  # 16 kHz mono, as the browser records
    "$python" -c "import sys; from core.media import load_audio; from tests.fakes import wav_bytes; \
open(sys.argv[2], 'wb').write(wav_bytes(load_audio(open(sys.argv[1], 'rb').read(), max_seconds=60).samples))" \
        "$raw" "${raw/raw-/q-}" && rm "$raw"
done
ls .whl .deb .bench-audio
