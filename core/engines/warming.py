"""Answering while the compiled decoder warms up.

A cold start on the GPU spends about two minutes compiling the decode step, recording its CUDA
graphs and tuning the 4-bit kernels for each prompt size (a restart about 16 s); the weights were
ready long before. Rather than keep the person waiting, the warm-up runs in the generation worker
(where the graphs must be recorded: they belong to the thread that records them) while turns are
answered by an eager decoder in a thread of its own: the same weights, a dynamic KV cache, no
graphs, slower per token (and slower still while the compiler holds the GIL), but answering in
seconds. When the warm-up ends, turns go to the compiled decoder; the eager decoder's caches are
freed. The two threads share the GPU safely: graphs are recorded on a side stream in thread-local
capture mode (torch's cudagraph trees and core.engines.decoding._PartGraph), so the eager thread's
kernels and allocations neither join nor break a recording. Triton's autotuner is not safe to run
from two threads at once (gemlite's 4-bit kernels are autotuned on their first call at each size:
on the H100 both threads met an untuned size together and one read the other's half-made entry,
"'NoneType' object is not a mapping"), so its launches take a lock.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from core.engines.decoding import Decoder, GenerationWorker

logger = logging.getLogger(__name__)


class Warming:
    """A warm-up running in the background, and the eager decoder that answers meanwhile."""

    def __init__(self, model, warm_up: Callable[[], float], on_failure: Callable[[BaseException], None]):
        self.started = time.monotonic()
        self.done = threading.Event()
        self.seconds: float | None = None  # how long the warm-up took, once done
        self.failure = ""  # why it failed: the eager decoder then answers until the next start
        _one_autotuning_at_a_time()
        self.eager = Decoder(model, cache_tokens=None, compile=False)
        self.worker = GenerationWorker("llava-eager")
        self._on_failure = on_failure
        threading.Thread(target=self._run, args=(warm_up,), name="llava-warm-up", daemon=True).start()

    def _run(self, warm_up: Callable[[], float]) -> None:
        try:
            self.seconds = warm_up()
            logger.info("Warmed up in %.0f s: turns now go to the compiled decoder.", self.seconds)
        except BaseException as e:  # noqa: BLE001  (whatever it was, the eager decoder keeps answering)
            logger.exception("The warm-up failed: answering with the eager decoder until the next start.")
            self.failure = str(e) or type(e).__name__
            self._on_failure(e)
        finally:
            self.done.set()
            if not self.failure:
                self.worker.submit(lambda job: self.eager.held.clear())  # its caches, after any turn it still runs

    @property
    def answering_eagerly(self) -> bool:
        return not self.done.is_set() or bool(self.failure)

    def note(self) -> str:
        """For the page: why answers are slower now ('' once the compiled decoder answers)."""
        if self.failure:
            return ("Compiling the model for this GPU failed (the log says why): answers come from the slower "
                    "uncompiled path until the next start.")
        if self.done.is_set():
            return ""
        return (f"The model is being compiled for this GPU ({time.monotonic() - self.started:.0f} s so far; about "
                "two minutes on a first start, seconds after that): it already answers, more slowly until then.")


def _one_autotuning_at_a_time() -> None:
    """Triton's Autotuner.run under one process-wide lock (once). Uncontended, the lock costs well under
    a microsecond beside a launch of tens; graph replays do not go through it at all."""
    try:
        from triton.runtime.autotuner import Autotuner
    except ImportError:  # no Triton (the CPU): nothing is autotuned
        return
    if getattr(Autotuner.run, "one_at_a_time", False):
        return
    original, lock = Autotuner.run, threading.RLock()

    def run(self, *args, **kwargs):
        with lock:
            return original(self, *args, **kwargs)

    run.one_at_a_time = True
    Autotuner.run = run
