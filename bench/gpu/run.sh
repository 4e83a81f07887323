#!/usr/bin/env bash
# On the GPU machine (device tool), from the repo root, with .whl, .deb and .bench-audio carried:
# installs the carried wheels and espeak-ng (no network there), then runs bench/gpu_turn.py.
#   .whl          hqq, gemlite, termcolor, torchao, bitsandbytes, openai-whisper, more-itertools
#   .deb          espeak-ng's Debian packages and libpcaudio.so.0 built from bench/gpu/pcaudio_stub.c
#   .bench-audio  the questions as 16 kHz WAVs, spoken by espeak-ng on the developer's machine
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site
mkdir -p /tmp/espeak
for f in .deb/*.deb; do dpkg -x "$f" /tmp/espeak; done
lib=/tmp/espeak/usr/lib/x86_64-linux-gnu
cp .deb/libpcaudio.so.0 "$lib/"
[ -e /usr/lib/x86_64-linux-gnu/espeak-ng-data ] || ln -s "$lib/espeak-ng-data" /usr/lib/x86_64-linux-gnu/espeak-ng-data
export PATH=/tmp/espeak/usr/bin:$PATH LD_LIBRARY_PATH=$lib:${LD_LIBRARY_PATH:-} ESPEAK_DATA_PATH=$lib
espeak-ng -w /tmp/check.wav "ready" && echo "espeak-ng works"
export BENCH_AUDIO=.bench-audio PYTHONUNBUFFERED=1 TRITON_PRINT_AUTOTUNING=1
exec python3 bench/gpu_turn.py "$@"
