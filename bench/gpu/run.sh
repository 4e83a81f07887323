#!/usr/bin/env bash
# On the GPU machine (device tool), from the repo root, with .whl (and, for the voice turn, .deb and
# .bench-audio) carried, as gathered by bench/gpu/prepare.sh on the developer's machine:
#   bash bench/gpu/run.sh SCRIPT [ARGS...]    e.g.  bash bench/gpu/run.sh first_answer --family onevision --out $OUT
# installs the carried wheels (no network there) and, when carried, espeak-ng, then runs bench/SCRIPT.py.
set -euo pipefail
script="$1"
shift
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site
if [ -d .deb ]; then
    mkdir -p /tmp/espeak
    for f in .deb/*.deb; do dpkg -x "$f" /tmp/espeak; done
    lib=/tmp/espeak/usr/lib/x86_64-linux-gnu
    cp .deb/libpcaudio.so.0 "$lib/"
    [ -e /usr/lib/x86_64-linux-gnu/espeak-ng-data ] || ln -s "$lib/espeak-ng-data" /usr/lib/x86_64-linux-gnu/espeak-ng-data
    export PATH=/tmp/espeak/usr/bin:$PATH LD_LIBRARY_PATH=$lib:${LD_LIBRARY_PATH:-} ESPEAK_DATA_PATH=$lib
    espeak-ng -w /tmp/check.wav "ready" && echo "espeak-ng works"
fi
export BENCH_AUDIO=.bench-audio PYTHONUNBUFFERED=1
exec python3 "bench/$script.py" "$@"
