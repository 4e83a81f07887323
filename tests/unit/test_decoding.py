"""core.engines.decoding without a model: the detokenizer's window, the worker's jobs and heartbeats."""

import queue
import threading
import time

import pytest

from core.engines.decoding import Detokenizer, GenerationWorker


class ByteTokenizer:
    """Each token is one byte of UTF-8, as byte-level BPE can be: a character may span tokens."""

    def decode(self, ids, skip_special_tokens=True):
        return bytes(ids).decode("utf-8", errors="replace")


def test_detokenizer_never_emits_half_a_character_and_loses_nothing():
    text = "Ça coûte 5 € — 日本語 ok."
    ids = list(text.encode())
    detok, chunks, windows = Detokenizer(ByteTokenizer()), [], []
    for i in ids:
        chunks.append(detok.add([i]))
        windows.append(len(detok.ids) - detok.prefix)  # what the next call decodes: a few tokens, not the reply
    chunks.append(detok.flush())
    assert "".join(chunks) == text and not any("\ufffd" in c for c in chunks)
    assert max(windows) <= 8


def test_the_worker_runs_jobs_in_order_in_one_thread_and_hands_errors_to_the_reader():
    worker, seen = GenerationWorker(), []

    def emit(values):
        def work(job):
            seen.append(threading.current_thread())
            for v in values:
                job.out.put(v)
        return work

    first, second = worker.submit(emit([1, 2, 3])), worker.submit(emit([4]))
    assert [i for batch in first.results(5, 0.5) for i in batch] == [1, 2, 3]
    assert [i for batch in second.results(5, 0.5) for i in batch] == [4]
    assert set(seen) == {worker.thread}

    def broken(job):
        raise RuntimeError("CUDA error: an illegal memory access")

    with pytest.raises(RuntimeError, match="illegal memory"):
        list(worker.submit(broken).results(5, 0.5))
    assert [i for batch in worker.submit(emit([5])).results(5, 0.5) for i in batch] == [5]  # still serving


def test_a_slow_job_gives_heartbeats_then_its_tokens_and_a_silent_one_times_out():
    worker = GenerationWorker()

    def slow(job):
        time.sleep(0.35)
        job.out.put(7)

    batches = list(worker.submit(slow).results(5, 0.1))
    assert batches[-1] == [7] and batches[:-1] and all(b == [] for b in batches[:-1])
    hang = threading.Event()
    with pytest.raises(queue.Empty):
        list(worker.submit(lambda job: hang.wait(5)).results(0.3, 0.1))
    hang.set()
