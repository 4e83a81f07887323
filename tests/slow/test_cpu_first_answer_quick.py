"""bench/cpu_first_answer.py --quick: the CPU benchmark's code path on the tiny OneVision, in seconds."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_quick_run_prints_every_measure_for_both_arms(tmp_path):
    out = tmp_path / "quick.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "cpu_first_answer.py"), "--quick",
                           "--arms", "fp32-full-grid,int8-one-tile", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["versions"]["torch"] and report["device"] and report["date"]
    assert set(report["table"]) == {"fp32-full-grid", "int8-one-tile"}
    for row in report["table"].values():
        assert row["image_tokens"] > 0 and row["decode_tok_s"] > 0 and row["peak_rss_gib"] > 0
        assert all(row[key] > 0 for key in ("pre_encoded_first_s", "together_first_s", "turn_10_first_s"))
    assert report["table"]["int8-one-tile"]["image_tokens"] < report["table"]["fp32-full-grid"]["image_tokens"]
    chosen = report["arms"]["int8-one-tile"]
    assert chosen["turn_10"]["cached_tokens"] > chosen["image_tokens"]  # the follow-up reused the kept cache
    assert chosen["pre_encoded"]["cached_tokens"] >= chosen["image_tokens"]  # the picture was encoded beforehand
    assert set(chosen["prefill_512_s_by_threads"]) == {"1", "2"}
