"""The History page with many sessions: index build, incremental update, search, first list page.

    .venv/bin/python bench/history_bench.py [--sessions 10000] [--turns 10] [--queries 40]

Prints JSON. Writes synthetic sessions (random sentences from a fixed vocabulary, a few shared
images) with core.store.session_log into a temp LOG_DIR, then measures, in seconds:
- build_s: the first HistoryIndex.sync() over every file;
- incremental_s: sync() after 10 new sessions were written (the other files are only stat'ed);
- noop_sync_s: sync() when nothing changed (what every History page run pays);
- search_s: median and p95 of HistoryIndex.search() over --queries queries (single words of
  different frequencies, two-word queries, prefixes);
- list_page_s: server time of one run of the History page (AppTest: sync, count, first page of
  20 rows with thumbnails): the first run in the process (imports included), a run with the
  thumbnail cache emptied, and warm runs (median of 5).
Targets (issue 3): search < 0.2 s, list page < 1 s, incremental update < 1 s.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image  # noqa: E402

from bench.quick import parse_args  # noqa: E402
from core.conversation import Answer, Question  # noqa: E402
from core.media import digest  # noqa: E402
from core.store.history_index import HistoryIndex  # noqa: E402
from core.store.session_log import SessionLog, save_media  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "pe", "da", "zu", "ri", "fo", "gle", "bra", "tin"]


def vocabulary(rng: random.Random, size: int = 3000) -> list[str]:
    words = {"".join(rng.choices(SYLLABLES, k=rng.randint(2, 4))) for _ in range(size * 2)}
    return sorted(words)[:size]


def sentence(rng: random.Random, words: list[str], n: int) -> str:
    # Zipf-like: low indexes are common words, high ones rare
    return " ".join(words[min(int(rng.paretovariate(1.1)) - 1, len(words) - 1)] for _ in range(n)).capitalize() + "."


def images(log_dir: Path, rng: random.Random, count: int = 40) -> list[str]:
    digests = []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.new("RGB", (640, 480), tuple(rng.randrange(256) for _ in range(3))).save(buffer, "PNG")
        data = buffer.getvalue()
        digests.append(digest(data))
        save_media(log_dir, data, digests[-1], "png")
    return digests


def write_sessions(log_dir: Path, count: int, turns: int, rng: random.Random, words: list[str], pictures: list[str]):
    for _ in range(count):
        log = SessionLog.create(log_dir, durable=False, model="synthetic")
        for number in range(turns):
            image = rng.choice(pictures) if number == 0 or rng.random() < 0.1 else None
            log.question(number, Question(sentence(rng, words, rng.randint(4, 12)) + "?", image=image,
                                          source="voice" if rng.random() < 0.5 else "text"))
            reply = " ".join(sentence(rng, words, rng.randint(6, 18)) for _ in range(rng.randint(1, 4)))
            log.answer(number, Answer(reply, timings={"ttft_s": 0.1, "total_s": 1.0}))


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--queries", type=int, default=40)
    args = parse_args(parser, sessions=20, turns=2, queries=4)
    rng = random.Random(0)
    words = vocabulary(rng)

    with tempfile.TemporaryDirectory() as tmp:
        log_dir = Path(tmp) / "logs"
        pictures = images(log_dir, rng)
        write_s, _ = timed(lambda: write_sessions(log_dir, args.sessions, args.turns, rng, words, pictures))
        index = HistoryIndex(log_dir)
        build_s, built = timed(index.sync)
        noop_s, _ = timed(index.sync)
        write_sessions(log_dir, 10, args.turns, rng, words, pictures)
        incremental_s, update = timed(index.sync)

        queries = []
        for i in range(args.queries):
            kind = i % 4
            if kind == 0:
                queries.append(words[rng.randrange(5)])  # very common
            elif kind == 1:
                queries.append(words[rng.randrange(100, 3000)])  # rare
            elif kind == 2:
                queries.append(f"{words[rng.randrange(50)]} {words[rng.randrange(50, 500)]}")
            else:
                queries.append(words[rng.randrange(50)][:3])  # a prefix, as while typing
        search_times, hits = [], []
        for query in queries:
            seconds, found = timed(lambda q=query: index.search(q))
            search_times.append(seconds)
            hits.append(len(found))

        os.environ.update({"LOG_DIR": str(log_dir), "HF_HUB_OFFLINE": "1"})
        from streamlit.testing.v1 import AppTest

        from ui.history_view import _thumbnail

        def render() -> float:
            at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120)
            at.switch_page("pages/history.py")
            seconds, _ = timed(at.run)
            assert not at.exception and len([b for b in at.button if (b.key or "").startswith("open-")]) == 20
            return seconds

        first_run_s = render()  # also pays for importing the app's modules, once per server process
        _thumbnail.cache_clear()
        page_times = [render() for _ in range(6)]  # the first one makes the thumbnails again
        index_bytes = sum(p.stat().st_size for p in log_dir.glob("index.sqlite3*"))
        log_bytes = sum(p.stat().st_size for p in (log_dir / "sessions").iterdir())

    print(json.dumps({
        "sessions": args.sessions + 10, "turns": (args.sessions + 10) * args.turns,
        "log_mb": round(log_bytes / 2**20, 1), "index_mb": round(index_bytes / 2**20, 1),
        "write_logs_s": round(write_s, 2),
        "build_s": round(build_s, 3), "indexed": built.added,
        "incremental_s": round(incremental_s, 3), "incremental_added": update.added,
        "noop_sync_s": round(noop_s, 3),
        "search_s": {"median": round(statistics.median(search_times), 4), "p95": round(percentile(search_times, 0.95), 4),
                     "max": round(max(search_times), 4), "queries": len(queries), "median_hits": statistics.median(hits)},
        "list_page_s": {"first_in_process": round(first_run_s, 3), "cold_thumbnails": round(page_times[0], 3),
                        "warm_median": round(statistics.median(page_times[1:]), 3)},
        "targets": {"search_p95_lt_0.2": percentile(search_times, 0.95) < 0.2,
                    "list_page_lt_1": page_times[0] < 1.0, "incremental_lt_1": incremental_s < 1.0},
    }, indent=2))


if __name__ == "__main__":
    main()
