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
DYNAMIC_CACHES = 4  # conversations whose KV caches are kept at once on the CPU (people taking turns)
DYNAMIC_CACHE_BYTES = 1 << 30  # and the memory they may hold together (OneVision-0.5B: 25 KiB a token)


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0


class _Held:
    """What one KV cache holds: the token ids whose keys and values it has, in order, and the image
    their <image> tokens stood for (its digest: image tokens all have one id, so the ids alone cannot
    tell two pictures apart)."""

    def __init__(self, cache=None):
        import torch

        self.cache = cache  # a StaticCache, a DynamicCache, or None (nothing yet)
        self.ids = torch.zeros(0, dtype=torch.long)
        self.image: str | None = None
        self.prompt = 0  # how many of ids were the last prompt (the rest: its reply)
        self.used = 0.0  # time.monotonic() of its last turn: the least recently used goes first

    def forget(self) -> None:
        """What the cache holds is unknown (a prefill failed or was cut): reuse none of it."""
        import torch

        self.ids = torch.zeros(0, dtype=torch.long)
        self.image = None

    def reusable(self, ids, image: str | None, image_token: int | None) -> int:
        """How many leading tokens of ids (a 1-D CPU tensor) this cache already holds."""
        n = min(len(self.ids), len(ids))
        differ = (self.ids[:n] != ids[:n]).nonzero()
        common = int(differ[0]) if len(differ) else n
        if image != self.image and image_token is not None:  # the same ids, another picture
            at = (ids[:common] == image_token).nonzero()
            if len(at):
                common = int(at[0])
        return common

    def nbytes(self) -> int:
        layers = getattr(self.cache, "layers", None) or []
        return sum(t.numel() * t.element_size() for layer in layers
                   for t in (getattr(layer, "keys", None), getattr(layer, "values", None)) if hasattr(t, "numel"))


class Decoder:
    """Prefill and decode for one LLaVA-family model, with the KV cache kept between turns.

    cache_tokens: the length (prompt + reply) of a static cache, whose tensors keep their addresses
    from turn to turn, as CUDA graphs need; None: dynamic caches that grow as needed (the CPU path,
    where nothing is compiled). compile needs a static cache.

    Keeping the cache: each cache remembers the ids it holds (the prompt and the reply tokens fed
    back), and a new prompt prefills only what follows the longest prefix it shares with them: a
    follow-up prefills its question, Regenerate and Edit the part after the change, a new image
    everything from that image on. Causal attention makes the kept keys and values exactly those a
    full prefill would compute. A static cache is one (its addresses are in the CUDA graphs);
    dynamic caches are up to DYNAMIC_CACHES, within DYNAMIC_CACHE_BYTES, so that people taking turns
    on one model each find their own conversation; a prompt takes the cache that holds most of it.

    With a static cache the part prefilled is padded on the right to a multiple of PREFILL_MULTIPLE
    tokens: Triton kernels (gemlite's 4-bit matmuls) are compiled and tuned per size class of their
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
        self.image_token = _image_token_id(model.config)
        if cache_tokens is not None:
            from transformers import StaticCache

            _no_window_within(model.config, cache_tokens)
            self.held = [_Held(StaticCache(config=model.config, max_cache_len=cache_tokens))]
        elif compile:
            raise ValueError("a compiled decoder needs a static cache (cache_tokens)")
        else:
            self.held = []
        self._cache = None  # the cache of the turn being decoded
        self._part_graph: _PartGraph | None = None  # a short part prefilled by one graph replay (CUDA)
        self._step = torch.compile(self._forward_one, mode="reduce-overhead", fullgraph=True) if compile else self._forward_one
        self._cuda = self.device.type == "cuda"
        # Where each token lands on the host; pinned, so that the copy does not wait for later steps.
        self._host = torch.zeros(1, dtype=torch.long, pin_memory=self._cuda)
        self.last: dict[str, float] = {}  # the last prefill's prompt_tokens, cached_tokens, padded_tokens, prefill_s

    def tokens(self, inputs, max_new_tokens: int, sampling: Sampling, stop: Callable[[], bool],
               image: str | None = None) -> Iterator[int]:
        """Yield the ids of the reply to inputs (the processor's output, on the CPU or the model's
        device); image: the digest of the picture its <image> tokens stand for."""
        import torch

        with torch.no_grad():
            held, logits = self._prefill(inputs, image)
            length = len(held.ids)
            token = _pick(logits, sampling)
            fed: list[int] = []  # reply tokens whose keys and values are in the cache
            read: list[int] = []
            position = torch.tensor([length], device=self.device)
            try:
                for n in range(max_new_tokens):
                    self._host.copy_(token.view(-1), non_blocking=True)
                    ready = _event(self._cuda)
                    following = None
                    if n + 1 < max_new_tokens and not stop():  # queue the next step before reading this token
                        following = _pick(self._run_step(token, position), sampling)
                        position = position + 1
                    if ready is not None:
                        ready.synchronize()
                    read.append(int(self._host[0]))
                    if following is not None:
                        fed.append(read[-1])
                    if read[-1] in self.eos:
                        return
                    yield read[-1]
                    if following is None:
                        return
                    token = following
            except Exception:
                held.forget()  # a step may have failed half-way
                raise
            finally:  # also when the reader stops early: what was fed is in the cache
                if len(held.ids) == length:
                    held.ids = torch.cat([held.ids, torch.tensor(fed, dtype=torch.long)])

    def prefill(self, inputs, image: str | None = None) -> None:
        """Prefill the prompt into a cache and keep it, decoding nothing: a picture attached before
        its question is encoded while the person still types or speaks."""
        import torch

        with torch.no_grad():
            self._prefill(inputs, image)

    def _prefill(self, inputs, image: str | None):
        """Prefill what no cache holds yet; returns (the cache, the logits at the prompt's last token)."""
        import torch

        ids = inputs["input_ids"][0].to("cpu")
        length = len(ids)
        held = self._take(ids, image)
        reuse = min(held.reusable(ids, image, self.image_token), length - 1)  # at least one token to read logits from
        if self.image_token is not None:  # an image is prefilled whole or not at all
            at = (ids == self.image_token).nonzero()
            if len(at) and int(at[0]) < reuse <= int(at[-1]):
                reuse = int(at[0])
        part = self._part(inputs, reuse, at_image=self.image_token is not None and bool((ids[reuse:] == self.image_token).any()))
        total = reuse + part["input_ids"].shape[1]
        start = time.perf_counter()
        held.forget()
        cache = self._keep_only(held, reuse)
        if self._part_graph is not None and self._part_graph.fits(part, reuse):
            logits = self._part_graph(part["input_ids"], reuse)[:, length - reuse - 1]
        else:
            out = self.model(**part, past_key_values=cache, use_cache=True, logits_to_keep=total - length + 1,
                             cache_position=torch.arange(reuse, total, device=self.device))
            held.cache = out.past_key_values
            logits = out.logits[:, 0]  # at the prompt's last real token
        if total > length:
            _forget_padding(held.cache, length)
        self._cache = held.cache
        if self._cuda:
            torch.cuda.synchronize()
        held.ids, held.image, held.prompt, held.used = ids, image, length, time.monotonic()
        self.last = {"prompt_tokens": length, "cached_tokens": reuse, "padded_tokens": total,
                     "prefill_s": round(time.perf_counter() - start, 4)}
        self._evict()
        return held, logits

    def _take(self, ids, image: str | None) -> _Held:
        """The cache to prefill ids into. Static: the one. Dynamic: the one that holds most of ids when
        ids go on from all it holds (a follow-up); else a new one that starts as a view of that
        prefix (Regenerate, Edit, a second person with the same system prompt), so that the
        conversation it held stays for its next turn. Dynamic layers append by concatenating, never
        in place, so a view of another cache's tensors is never written through."""
        if self.cache_tokens is not None:
            return self.held[0]
        best = max(self.held, key=lambda h: (h.reusable(ids, image, self.image_token), h.used), default=None)
        common = best.reusable(ids, image, self.image_token) if best is not None else 0
        if best is not None and common >= best.prompt > 0:
            return best
        branch = _Held()
        if common:
            branch.cache, branch.ids, branch.image = _view(best.cache, common), best.ids[:common], best.image
        self.held.append(branch)
        while len(self.held) > DYNAMIC_CACHES:
            self.held.remove(min(self.held[:-1], key=lambda h: h.used))
        return branch

    def _keep_only(self, held: _Held, reuse: int):
        """The cache cut back to its first reuse tokens (None: the model starts a new one)."""
        cache = held.cache
        if cache is None or (reuse == 0 and self.cache_tokens is None):
            return None
        if self.cache_tokens is not None:
            if reuse == 0:
                cache.reset()
            else:
                _forget_padding(cache, reuse)
            return cache
        if any(getattr(layer, "is_sliding", False) for layer in cache.layers):
            return None  # a sliding window has dropped what it slid past: start again
        return _view(cache, reuse)

    def _evict(self) -> None:
        """Dynamic caches beyond DYNAMIC_CACHE_BYTES go, least recently used first (never the last)."""
        if self.cache_tokens is not None:
            return
        while len(self.held) > 1 and sum(h.nbytes() for h in self.held) > DYNAMIC_CACHE_BYTES:
            self.held.remove(min(self.held, key=lambda h: h.used))

    def _part(self, inputs, reuse: int, at_image: bool) -> dict:
        """The inputs from position reuse on (padded with a static cache); the image's tensors only
        when its tokens are among them."""
        part = {"input_ids": inputs["input_ids"][:, reuse:].to(self.device)}
        if at_image:
            part.update({k: v.to(self.device) for k, v in inputs.items() if k not in ("input_ids", "attention_mask")})
            part = {k: (v.to(self.model.dtype) if v.is_floating_point() else v) for k, v in part.items()}
        if reuse == 0 and "attention_mask" in inputs:
            part["attention_mask"] = inputs["attention_mask"].to(self.device)
        return self._padded(part, room=self.cache_tokens - reuse) if self.cache_tokens is not None else part

    def _padded(self, inputs, room: int):
        """inputs with input_ids (and attention_mask) padded on the right, within room tokens."""
        import torch

        length = inputs["input_ids"].shape[1]
        target = min(-(-length // self.pad_to) * self.pad_to, room)
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

    def _run_step(self, token, position):
        import torch

        if self.compile:
            torch.compiler.cudagraph_mark_step_begin()
        return self._step(token.view(1, 1), position)

    def capture_part_graph(self) -> bool:
        """Record the prefill of one PREFILL_MULTIPLE-token part at any position as a CUDA graph (CUDA,
        static cache): a follow-up's new tokens and a question about a picture encoded beforehand
        fit in it, and one replay replaces the 224 quantised layers' eager launches (56-92 ms on the
        H200 for 16-32 tokens). Needs the cache allocated (after a first prefill). In the worker."""
        if not (self._cuda and self.cache_tokens is not None) or self.held[0].cache is None:
            return False
        import torch

        held = self.held[0]
        held.forget()
        self._cache = held.cache
        with torch.no_grad():  # else the cache's tensors come to require grad, and the compiled step recompiles
            self._part_graph = _PartGraph(self, held.cache)
        return True

    def forward_part(self, ids, positions):
        """The language model and lm_head over ids at positions (a part of a prompt, no image), with
        the static cache; the logits of every position."""
        import torch

        mask = (torch.arange(self.cache_tokens, device=positions.device) <= positions[-1]).long().view(1, -1)
        hidden = self.model.model.language_model(
            input_ids=ids, position_ids=positions.view(1, -1), cache_position=positions, attention_mask=mask,
            past_key_values=self._cache, use_cache=True,
        ).last_hidden_state
        return self.model.lm_head(hidden)

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


class _PartGraph:
    """Decoder.forward_part over PREFILL_MULTIPLE tokens, recorded once and replayed with new ids
    and positions (torch.cuda.CUDAGraph: static input buffers; the cache's tensors and its written
    length are read and updated on the device, so the position can change from replay to replay)."""

    def __init__(self, decoder: Decoder, cache):
        import torch

        self.size = decoder.pad_to
        self.cache = cache
        self.ids = torch.zeros(1, self.size, dtype=torch.long, device=decoder.device)
        self.positions = torch.arange(self.size, device=decoder.device)
        written = [layer.cumulative_length.clone() for layer in cache.layers]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # eager runs first: kernels tuned and loaded before recording
            for _ in range(2):
                _forget_padding(cache, 0)
                decoder.forward_part(self.ids, self.positions)
        torch.cuda.current_stream().wait_stream(side)
        _forget_padding(cache, 0)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.logits = decoder.forward_part(self.ids, self.positions)
        for layer, length in zip(cache.layers, written):
            layer.cumulative_length.copy_(length)

    def fits(self, part: dict, reuse: int) -> bool:
        return set(part) == {"input_ids"} and part["input_ids"].shape[1] == self.size

    def __call__(self, ids, reuse: int):
        """The logits of the part ids placed at positions reuse..reuse+size-1 (the cache's written
        length must be reuse)."""
        import torch

        self.ids.copy_(ids, non_blocking=True)
        self.positions.copy_(torch.arange(reuse, reuse + self.size), non_blocking=True)
        self.graph.replay()
        return self.logits


def _view(cache, length: int):
    """A cache of the same kind holding views of the first length positions of another's layers."""
    import copy

    view = copy.copy(cache)
    view.layers = [copy.copy(layer) for layer in cache.layers]
    for layer in view.layers:
        if getattr(layer, "keys", None) is not None and layer.keys.numel():
            layer.keys, layer.values = layer.keys[..., :length, :], layer.values[..., :length, :]
    return view


def _forget_padding(cache, length: int) -> None:
    """The next token goes to position length, over the padding. transformers' static layers count
    the positions they have written (since 5.2x) instead of reading cache_position: set that
    count back, in place (CUDA graphs hold its address)."""
    for layer in getattr(cache, "layers", []):
        written = getattr(layer, "cumulative_length", None)
        if hasattr(written, "fill_"):
            written.fill_(length)


def _image_token_id(config) -> int | None:
    """The id of the <image> placeholder (its positions hold the picture's features)."""
    for name in ("image_token_id", "image_token_index"):
        if isinstance(getattr(config, name, None), int):
            return getattr(config, name)
    return None


def _no_window_within(config, cache_tokens: int) -> None:
    """A sliding window at least as long as the static cache never slides: drop it. Mistral's
    config (llava-v1.6-mistral) carries a 4,096-token window; with it, transformers' mask guards on
    the cache's written length and the compiled step recorded a new CUDA graph at every new length
    (15-25 s at a user's turn on the H200). Without it, the same attention, and one graph."""
    text = config.get_text_config()
    window = getattr(text, "sliding_window", None)
    if isinstance(window, int) and window >= cache_tokens:
        text.sliding_window = None
        if getattr(text, "layer_types", None):
            text.layer_types = ["full_attention" for _ in text.layer_types]


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
