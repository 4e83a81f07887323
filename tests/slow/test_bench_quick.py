"""Every benchmark still runs: its --quick mode (bench/quick.py: tiny inputs, the real code path, a
smoke run and not a timing) as a subprocess, whose stdout must be its JSON report.

The selected benchmarks run two at a time, the slowest first, as soon as the first of these tests
asks (much of their time is waiting: a browser, a fake microphone speaking in real time, a server
starting); each test then reads its own. A smoke run asserts no figure, so sharing the CPU is fine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import ROOT

BENCHES = sorted(p for p in (ROOT / "bench").glob("*.py") if 'if __name__ == "__main__":' in p.read_text())
# What each report holds (a part that stopped running, or ran into an error, is missing or named),
# slowest first (seconds for --quick here: 2 cores shared with other work)
PARTS = {
    "call_mode": ["call_mode", "click_path", "conversation", "median"],  # 70 s
    "turn_end": ["set", "detectors"],  # 55 s (Whisper tiny.en on 2 questions, with the machine loaded)
    "first_answer": ["cold", "restart", "turns", "decode", "prepared"],  # 45 s
    "turn_latency": ["turns", "structural", "stt"],  # 40 s
    "gpu_turn": ["turn", "stt", "recompile", "decode", "restart"],  # 35 s
    "speech_engines": ["tts", "round_trip", "stt"],  # 30 s
    "concurrency": ["arms"],  # 25 s
    "turn_stages": ["typed_turn", "voice_turn"],  # 16 s
    "decode_threads": ["tokens_per_s"],  # 14 s
    "rerun_bench": ["1_turn", "3_turns", "per_drawn_turn_ms"],  # 14 s
    "whisper_weights": ["openai_whisper", "faster_whisper"],  # 12 s
    "vad": ["results"],  # 8 s
    "history_bench": [],  # 7 s
}
OWN_TEST = {"cpu_first_answer"}  # its quick run has a test of its own (tests/slow/test_cpu_first_answer_quick.py)
BROWSER = {"call_mode", "vad"}  # Chromium: marked e2e as well
AT_ONCE = 2
TIMEOUT_S = 300


def run(bench: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, f"bench/{bench}.py", "--quick"], cwd=ROOT, capture_output=True, text=True,
                          timeout=TIMEOUT_S, env={**os.environ, "HF_HUB_OFFLINE": "1"})


@pytest.fixture(scope="module")
def runs(request):
    """bench name -> the future of its run, for every benchmark this session selected."""
    chosen = {item.callspec.params["bench"] for item in request.session.items
              if item.module is request.module and hasattr(item, "callspec")}
    pool = ThreadPoolExecutor(max_workers=AT_ONCE)
    yield {name: pool.submit(run, name) for name in PARTS if name in chosen}
    pool.shutdown(cancel_futures=True)  # after a failure with -x, those not started never start


def test_every_benchmark_has_its_quick_run_here():
    assert [p.stem for p in BENCHES if p.stem not in OWN_TEST] == sorted(PARTS)  # a new benchmark joins PARTS


@pytest.mark.slow
@pytest.mark.parametrize("bench", [pytest.param(name, marks=[pytest.mark.e2e] if name in BROWSER else [])
                                   for name in PARTS])
def test_quick_mode_runs_and_prints_its_report(bench, runs):
    done = runs[bench].result()
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout)  # nothing else on stdout
    assert "errors" not in report, report.get("errors")
    assert all(report.get(part) for part in PARTS[bench]), {part: report.get(part) for part in PARTS[bench]}
