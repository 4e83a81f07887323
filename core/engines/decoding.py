"""The reply, token by token: a small decode loop over the model, run by one long-lived thread.

Why not generate() with a TextIteratorStreamer: on the H100 the same compiled model decoded 2.3x
faster in this loop than in generate(), whose per-token bookkeeping (logits processors, stopping
criteria, a streamer that re-decodes its cache) runs on the CPU between GPU steps
(bench/gpu_turn.py measures both). The loop:

    prefill   model(**inputs) once over the prompt (image features included), eager
    decode    one token per step through the language model and lm_head, with a static KV cache;
              on CUDA the step is compiled with CUDA graphs (torch.compile "reduce-overhead"), so a
              step is one graph replay; the next step is queued before the current token is read
              back, so the GPU never waits for Python
    sample    greedy, or temperature + top-p (the same warpers as generate(), in the same order)
    stop      at an end-of-sequence token, max_new_tokens, or the stop event

CUDA graphs belong to the thread that recorded them (torch's cudagraph trees keep their state in
thread-local storage: a compiled model called from a second thread fails an assertion), so one
GenerationWorker thread per process runs every model's work: warm-up (compiling and recording) at
load time and every turn after that. One GPU runs one decode at a time anyway.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

logger = logging.getLogger(__name__)

WARM_UP_TOKENS = 4  # decode steps of the warm-up: enough for torch.compile to record its graphs
PREFILL_MULTIPLE = 64  # a static-cache prompt is padded to a multiple of this many tokens (see Decoder)


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0


class Decoder:
    """Prefill and decode for one LLaVA-family model, with a KV cache reused across turns.

    cache_tokens: the length (prompt + reply) of a static cache, whose tensors keep their addresses
    from turn to turn, as CUDA graphs need; None: a dynamic cache that grows as needed (the CPU path,
    where nothing is compiled). compile needs a static cache.

    With a static cache the prompt is padded on the right to a multiple of PREFILL_MULTIPLE tokens:
    Triton kernels (gemlite's 4-bit matmuls) are compiled and tuned per size class of their
    inputs, so a few padded lengths, all seen at warm-up, replace a new length at every turn (a
    turn of a new length took 3 to 19 s on the H100 before). The padding is causal-safe: no
    prompt position attends to it, and decoding starts at the real length, overwriting it.
    """

    def __init__(self, model, cache_tokens: int | None, compile: bool, pad_to: int = PREFILL_MULTIPLE):
        import torch

        self.model = model
        self.device = model.device
        self.compile = compile
        self.cache_tokens = cache_tokens
        self.pad_to = pad_to
        self.eos = _eos_ids(model)
        self._static_cache = None
        if cache_tokens is not None:
            from transformers import StaticCache

            self._static_cache = StaticCache(config=model.config, max_cache_len=cache_tokens)
        elif compile:
            raise ValueError("a compiled decoder needs a static cache (cache_tokens)")
        self._step = torch.compile(self._forward_one, mode="reduce-overhead", fullgraph=True) if compile else self._forward_one
        self._cuda = self.device.type == "cuda"
        # Where each token lands on the host; pinned, so that the copy does not wait for later steps.
        self._host = torch.zeros(1, dtype=torch.long, pin_memory=self._cuda)
        self.last: dict[str, float] = {}  # the last turn's prompt_tokens, padded_tokens, prefill_s

    def tokens(self, inputs, max_new_tokens: int, sampling: Sampling, stop: Callable[[], bool]) -> Iterator[int]:
        """Yield the ids of the reply to inputs (the processor's output, on the model's device)."""
        import torch

        with torch.no_grad():
            cache = self._new_cache()
            length = inputs["input_ids"].shape[1]
            padded = self._padded(inputs) if cache is not None else inputs
            total = padded["input_ids"].shape[1]
            start = time.perf_counter()
            out = self.model(**padded, past_key_values=cache, use_cache=True, logits_to_keep=total - length + 1,
                             cache_position=torch.arange(total, device=self.device))
            self._cache = out.past_key_values
            if total > length:
                _forget_padding(self._cache, length)
            token = _pick(out.logits[:, 0], sampling)  # the logits at the prompt's last real token
            if self._cuda:
                torch.cuda.synchronize()
            self.last = {"prompt_tokens": length, "padded_tokens": total, "prefill_s": round(time.perf_counter() - start, 4)}
            position = torch.tensor([length], device=self.device)
            for n in range(max_new_tokens):
                self._host.copy_(token.view(-1), non_blocking=True)
                ready = _event(self._cuda)
                following = None
                if n + 1 < max_new_tokens and not stop():  # queue the next step before reading this token
                    following = _pick(self._run_step(token, position), sampling)
                    position = position + 1
                if ready is not None:
                    ready.synchronize()
                token_id = int(self._host[0])
                if token_id in self.eos:
                    return
                yield token_id
                if following is None:
                    return
                token = following

    def _padded(self, inputs):
        """inputs with input_ids (and attention_mask) padded on the right, within the cache."""
        import torch

        length = inputs["input_ids"].shape[1]
        target = min(-(-length // self.pad_to) * self.pad_to, self.cache_tokens)
        if target == length:
            return inputs
        pad = target - length
        padded = dict(inputs)
        filler = self.model.config.get_text_config().pad_token_id or 0
        padded["input_ids"] = torch.nn.functional.pad(inputs["input_ids"], (0, pad), value=filler)
        if "attention_mask" in inputs:
            padded["attention_mask"] = torch.nn.functional.pad(inputs["attention_mask"], (0, pad), value=1)
        return padded

    def prefill_sizes(self) -> list[int]:
        """Every padded prompt length a turn can have, for the warm-up."""
        return list(range(self.pad_to, self.cache_tokens + 1, self.pad_to)) if self.cache_tokens else []

    def warm_prefill(self, length: int) -> None:
        """Run the language model over length dummy tokens (no cache): compiles and tunes the
        kernels of that size now rather than at a user's turn."""
        import torch

        with torch.no_grad():
            ids = torch.full((1, length), 1, dtype=torch.long, device=self.device)
            self.model.model.language_model(input_ids=ids, use_cache=False)

    def _new_cache(self):
        if self._static_cache is None:
            return None  # the model makes a DynamicCache
        self._static_cache.reset()
        return self._static_cache

    def _run_step(self, token, position):
        import torch

        if self.compile:
            torch.compiler.cudagraph_mark_step_begin()
        return self._step(token.view(1, 1), position)

    def _forward_one(self, token, position):
        """One decode step: the language model and lm_head over one token; returns its logits."""
        mask = None
        if self.cache_tokens is not None:  # what is written beyond this position (prompt padding) stays unseen
            import torch

            mask = (torch.arange(self.cache_tokens, device=position.device) <= position).long().view(1, -1)
        hidden = self.model.model.language_model(
            input_ids=token, position_ids=position.view(1, 1), cache_position=position, attention_mask=mask,
            past_key_values=self._cache, use_cache=True,
        ).last_hidden_state
        return self.model.lm_head(hidden[:, -1])


def _forget_padding(cache, length: int) -> None:
    """The next token goes to position length, over the padding. transformers' static layers count
    the positions they have written (since 5.2x) instead of reading cache_position: set that
    count back, in place (CUDA graphs hold its address)."""
    for layer in getattr(cache, "layers", []):
        written = getattr(layer, "cumulative_length", None)
        if hasattr(written, "fill_"):
            written.fill_(length)


def _pick(logits, sampling: Sampling):
    """The next token (a [1] tensor on the device): argmax, or temperature then top-p sampling."""
    import torch

    if sampling.temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(dim=-1) - sorted_probs > sampling.top_p  # the most likely always stays
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        return order.gather(-1, torch.multinomial(sorted_probs, 1)).view(-1)
    return torch.multinomial(probs, 1).view(-1)


def _event(cuda: bool):
    if not cuda:
        return None
    import torch

    event = torch.cuda.Event()
    event.record()
    return event


def _eos_ids(model) -> set[int]:
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = getattr(model.config.get_text_config(), "eos_token_id", None)
    return set(eos if isinstance(eos, list) else [] if eos is None else [eos])


class Detokenizer:
    """Token ids in, new text out, as soon as it is printable: each call decodes a short window
    (the tokens since the last emitted text, plus the one before for context) rather than the whole
    reply, and holds back a trailing partial character (a byte-level token can end mid-UTF-8)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = 0  # start of the decode window
        self.read = 0  # end of what has been emitted

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def add(self, ids: list[int]) -> str:
        self.ids.extend(ids)
        before = self._decode(self.ids[self.prefix:self.read])
        now = self._decode(self.ids[self.prefix:])
        if len(now) > len(before) and not now.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return now[len(before):]
        return ""

    def flush(self) -> str:
        before = self._decode(self.ids[self.prefix:self.read])
        now = self._decode(self.ids[self.prefix:])
        self.prefix = self.read = len(self.ids)
        return now[len(before):]


_END = object()


class Job:
    """One turn handed to the worker: it puts lists of token ids, then _END or an exception."""

    def __init__(self, work: Callable[["Job"], None]):
        self.work = work
        self.out: queue.SimpleQueue = queue.SimpleQueue()
        self.halt = threading.Event()  # set by the reader when it goes away: the work stops at the next token
        self.done = threading.Event()

    def results(self, timeout_s: float, heartbeat_s: float) -> Iterator[list[int]]:
        """Token ids as they come, in batches (whatever arrived since the last read); an empty
        batch every heartbeat_s while nothing comes; queue.Empty after timeout_s of nothing."""
        while True:
            waited = 0.0
            while True:
                try:
                    item = self.out.get(timeout=min(heartbeat_s, timeout_s - waited))
                    break
                except queue.Empty:
                    waited += heartbeat_s
                    if waited >= timeout_s:
                        raise
                    yield []
            batch: list[int] = []
            while True:
                if item is _END:
                    if batch:
                        yield batch
                    return
                if isinstance(item, BaseException):
                    raise item
                batch.append(item)
                try:
                    item = self.out.get_nowait()
                except queue.Empty:
                    break
            yield batch


class GenerationWorker:
    """One long-lived thread that owns the models and runs the jobs given to it, in order."""

    def __init__(self, name: str = "llava-worker"):
        self._jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self.thread.start()

    def submit(self, work: Callable[[Job], None]) -> Job:
        job = Job(work)
        self._jobs.put(job)
        return job

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                job.work(job)
                job.out.put(_END)
            except BaseException as e:  # handed to the reader, which turns it into a message
                logger.exception("generation failed")
                job.out.put(e)
            finally:
                job.done.set()


_worker: GenerationWorker | None = None
_worker_lock = threading.Lock()


def shared_worker() -> GenerationWorker:
    """The process's one generation thread, started on first use."""
    global _worker
    with _worker_lock:
        if _worker is None:
            _worker = GenerationWorker()
        return _worker
