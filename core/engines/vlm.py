"""The in-process LLaVA (transformers): load, quantise, warm up, and stream replies.

A model takes the exchanges of the current visual context and yields the reply in chunks
(core.engines.api.ChatModel). Decoding runs in one worker thread that owns the model (core.engines.decoding).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from importlib.util import find_spec
from typing import Mapping, Sequence

from PIL import Image

from core.conversation import Exchange, Question, build_messages, image_digests, trimmings
from core.engines.api import (  # noqa: F401  (ChatModel: what this implements)
    HEARTBEAT,
    HEARTBEAT_S,
    ChatModel,
    GenerationInfo,
    GenerationOptions,
    Interrupt,
    generation,
)
from core.engines.decoding import (
    PREFILL_MULTIPLE,
    WARM_UP_TOKENS,
    Decoder,
    Detokenizer,
    GenerationWorker,
    Sampling,
    shared_worker,
)
from core.engines.kept_pixels import keep_pixels
from core.engines.warming import Warming
from core.errors import GenerationError, ModelLoadError

logger = logging.getLogger(__name__)

MIN_REPLY_TOKENS = 32  # a conversation is trimmed until at least this much room is left for the reply
IMAGE_QUESTION_ROOM = 128  # a static cache must hold the largest image and this much more (a question, a short reply)...
IMAGE_TURN_ROOM = 512  # ... else it is made this much longer than the largest image
WARM_UP_IMAGE_SIDE = 336  # pixels; any size works, the processor resizes it
FINISH_WAIT_S = 5.0  # how long a reader that leaves early waits for the worker to stop


class LlavaModel:
    """A LLaVA-family model (llava-1.5, llava-v1.6, onevision, ...) in this process."""

    def __init__(self, model, processor, name: str, token_timeout_s: float = 300.0, note: str = "",
                 cache_tokens: int | None = None, compile: bool = False):
        self.model = model.requires_grad_(False)  # inference only: no tensor it writes ever needs grad
        keep_pixels(processor)  # a follow-up does not resize and tile its picture again
        self.processor = processor
        self.name = name
        self.note = note  # how it was loaded, when that differs from what was asked
        self.token_timeout_s = token_timeout_s
        self.lock = threading.Lock()  # one turn at a time; core.chat.turn queues turns first come, first served
        text_config = model.config.get_text_config()
        context = getattr(text_config, "max_position_embeddings", 4096)
        if cache_tokens:
            cache_tokens, enlarged = _cache_for_images(processor, cache_tokens, context)
            self.note = " ".join(filter(None, (self.note, enlarged)))
        self.context_length: int = min(context, cache_tokens) if cache_tokens else context
        self.decoder = Decoder(model, self.context_length if cache_tokens else None, compile)
        self.worker = shared_worker()  # CUDA graphs are thread-local: every model decodes in this one thread
        self.warming: Warming | None = None  # a warm-up in the background (CUDA), and who answers meanwhile
        self.last: dict = {}  # the last turn's prompt_tokens, cached_tokens, padded_tokens, prefill_s

    @classmethod
    def load(cls, model_id: str, quant: str = "none", device: str = "cpu", token_timeout_s: float = 300.0,
             cache_tokens: int | None = None, progress=None) -> "LlavaModel":
        """Load LLAVA_MODEL, quantise it (core.engines.quant), and warm it up.

        On CUDA: 4bit is HQQ + gemlite, nf4/8bit are bitsandbytes, none is fp16; 4bit and none are
        compiled with CUDA graphs, and the warm-up compiles and records them, so that no user's turn
        waits for a compiler. On the CPU, eager: int8 is torch's dynamic int8 in the language model
        and the vision tower, with a picture read as a whole plus one tile (cpu_grid); none is fp32
        with the model's own grid (bench/cpu_first_answer.py measures both).
        """
        from core.engines import quant as quantisation

        progress = progress or logger.info
        quant, note = _available(quant, device)
        model, processor, kept, dtype = _weights(model_id, quant, device, progress)
        if device == "cpu" and quant == "int8":
            note = " ".join(filter(None, (note, cpu_grid(model, processor))))
        compile = device == "cuda" and quant in ("4bit", "none")
        precision = quant if quant != "none" else str(dtype).removeprefix("torch.")
        llava = cls(model, processor, f"{model_id} ({precision}, {device}{', compiled' if compile else ''})",
                    token_timeout_s, note, cache_tokens, compile)
        if llava.note:
            logger.warning(llava.note)
        if compile:
            _keep_compiled_kernels()
            tuned = quant == "4bit" and quantisation.load_kernel_choices()
            llava.warm_up_in_background(kept, keep_choices=quant == "4bit")
            progress("Ready to answer. In the background the decoder is compiled, its CUDA graphs recorded and its "
                     f"kernels tuned ({'seconds' if tuned else 'about two minutes on a first start'}); answers are "
                     "slower until then.")
        return llava

    def warm_up_in_background(self, kept=None, keep_choices: bool = False) -> None:
        """Warm up in the worker while an eager decoder answers (core.engines.warming). A kept 4-bit
        model whose warm-up fails is deleted: never trusted again, the next start rebuilds it."""
        def failed(error: BaseException) -> None:
            if kept is not None:
                kept.unlink(missing_ok=True)

        def warm_up() -> float:
            seconds = self.warm_up()
            if keep_choices:  # gemlite's tuned kernel choices, for the next start
                from core.engines import quant

                quant.save_kernel_choices()
            return seconds

        self.warming = Warming(self.model, warm_up, failed)

    def status_note(self) -> str:
        """For the page, while it matters: answers are slower because the warm-up still runs."""
        return self.warming.note() if self.warming else ""

    def _decoding(self) -> tuple[Decoder, GenerationWorker]:
        """The decoder for a turn now and the thread it runs in: the compiled one, or the eager one
        while the compiled one warms up."""
        if self.warming is not None and self.warming.answering_eagerly:
            return self.warming.eager, self.warming.worker
        return self.decoder, self.worker

    def warm_up(self) -> float:
        """Generate a few tokens about a blank picture, so that compiling and recording happen now."""
        start = time.perf_counter()
        blank = {"warm-up": Image.new("RGB", (WARM_UP_IMAGE_SIDE, WARM_UP_IMAGE_SIDE), "gray")}
        question = [Exchange(Question("Describe this image.", image="warm-up"))]
        options = GenerationOptions(temperature=0, max_new_tokens=WARM_UP_TOKENS)
        for _ in range(2):  # the second run replays what the first recorded
            for _ in self._stream(question, blank, options, Interrupt(), (self.decoder, self.worker)):
                pass
        self.worker.submit(lambda job: self.decoder.capture_part_graph()).done.wait()
        from core.engines.quant import warm_up_lengths

        for length in warm_up_lengths(self.decoder.prefill_sizes()):  # a prompt length of each kernel class
            self.worker.submit(lambda job, n=length: self.decoder.warm_prefill(n)).done.wait()
        return time.perf_counter() - start

    def prepare(self, image: str, images: Mapping[str, Image.Image], system_prompt: str = ""):
        """Encode a picture as soon as it is attached: the vision tower and the prompt up to its
        question are prefilled in the worker while the person still types or speaks, so the question
        prefills only its own words. Turns stay first come, first served (this is a job in the
        worker's queue like a turn); a question that arrives meanwhile waits for the rest of it.
        Returns the job: job.halt.set() cancels it if it has not started (a replaced picture)."""
        inputs = self.inputs([Exchange(Question("", image=image))], images, system_prompt)
        decoder, worker = self._decoding()

        def work(job) -> None:
            if not job.halt.is_set():
                decoder.prefill(inputs, image)

        return worker.submit(work)

    def count_tokens(self, text: str) -> int:
        """Tokens of the text (a reply's own count is its Generation's info)."""
        return len(self.processor.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt(self, exchanges: Sequence[Exchange], system_prompt: str = "") -> str:
        """The prompt text, formatted by the model's own chat template."""
        messages = build_messages(exchanges, system_prompt)
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def inputs(self, exchanges: Sequence[Exchange], images: Mapping[str, Image.Image], system_prompt: str = ""):
        """The processor's tensors for the prompt, on the CPU (the worker moves them)."""
        pictures = [images[d] for d in image_digests(exchanges)]
        return self.processor(images=pictures or None, text=self.prompt(exchanges, system_prompt), return_tensors="pt")

    def fit(self, exchanges, images, options: GenerationOptions):
        """Trim the oldest exchanges until the prompt and the reply fit the context.

        Returns (kept exchanges, model inputs, max new tokens). When only the image exchange and the
        question are left and still leave less room than asked for, the reply gets what remains.
        """
        try:
            return self._fit(exchanges, images, options, room=options.max_new_tokens)
        except GenerationError:
            return self._fit(exchanges, images, options, room=MIN_REPLY_TOKENS)

    def _fit(self, exchanges, images, options: GenerationOptions, room: int):
        """The longest trimming whose prompt leaves room tokens for the reply; GenerationError when none does.

        A prompt's length is the processor's: each <image> expands to as many tokens as that image
        gives (576 for llava-1.5; for llava-v1.6 and OneVision it depends on the image's size and
        shape, up to thousands). The images stay while older text goes, so their tokens are counted
        once (the processor over the whole conversation, less its text) and each shorter trimming is
        measured by tokenising its text alone; the processor runs again only for the one that fits.
        """
        measured = None  # (the first trimming, its inputs): the one run of the processor so far
        for kept in trimmings(exchanges):  # raises GenerationError after the shortest
            text_tokens = self._text_tokens(self.prompt(kept, options.system_prompt))
            if measured is None:
                measured = kept, self.inputs(kept, images, options.system_prompt)
                image_tokens = measured[1]["input_ids"].shape[1] - text_tokens  # what the <image>s add
            if text_tokens + image_tokens + room <= self.context_length:
                inputs = measured[1] if measured[0] is kept else self.inputs(kept, images, options.system_prompt)
                length = inputs["input_ids"].shape[1]
                return kept, inputs, min(options.max_new_tokens, self.context_length - length)
        raise AssertionError("unreachable: trimmings() raises when nothing is left to drop")

    def _text_tokens(self, prompt: str) -> int:
        """Tokens of the prompt text as the processor tokenises it, each <image> counted as one."""
        return len(self.processor.tokenizer(prompt)["input_ids"])

    @generation
    def stream(self, exchanges, images, options: GenerationOptions, stop: Interrupt | None = None):
        stop, decoding = stop or Interrupt(), self._decoding()
        if decoding[0] is self.decoder:
            return (yield from self._stream(exchanges, images, options, stop, decoding))
        return (yield from self._eager_or_after_warm_up(exchanges, images, options, stop, decoding))

    def _eager_or_after_warm_up(self, exchanges, images, options: GenerationOptions, stop: Interrupt, decoding):
        """A turn during the warm-up: the eager decoder's; should that fail before its first word, the
        turn waits for the warm-up (heartbeats meanwhile, so that Stop still works) and is answered by
        the compiled decoder, as every turn was before answering during the warm-up existed."""
        inner, wrote = self._stream(exchanges, images, options, stop, decoding), False
        try:
            while True:
                try:
                    chunk = next(inner)
                except StopIteration as done:
                    return done.value
                wrote = wrote or bool(chunk)
                yield chunk
        except GenerationError:
            if wrote or self.warming is None:
                raise
            logger.exception("The eager decoder failed during the warm-up: this turn waits for the compiled one.")
        while not self.warming.done.wait(HEARTBEAT_S):
            if stop.is_set():
                return GenerationInfo(len(exchanges))
            yield HEARTBEAT
        if self.warming.failure:
            raise GenerationError("The model could not be started on this GPU (the log says why).", "Restart the app.")
        return (yield from self._stream(exchanges, images, options, stop, (self.decoder, self.worker)))

    def _stream(self, exchanges, images, options: GenerationOptions, stop: Interrupt, decoding):
        decoder, worker = decoding
        kept, inputs, max_new_tokens = self.fit(exchanges, images, options)
        if len(kept) < len(exchanges):
            logger.info("trimmed %d old exchanges to fit the context", len(exchanges) - len(kept))
        sampling = Sampling(options.temperature, options.top_p)

        image = next(iter(image_digests(kept)), None)
        prefill: dict = {}  # this turn's prompt_tokens, cached_tokens, prefill_s (read in the worker)

        def work(job) -> None:  # in the worker thread
            for token_id in decoder.tokens(inputs, max_new_tokens, sampling,
                                           lambda: stop.is_set() or job.halt.is_set(), image):
                prefill.update(prefill or decoder.last)
                job.out.put(token_id)
            self.last = dict(decoder.last)

        job = worker.submit(work)
        text, produced = Detokenizer(self.processor.tokenizer), 0
        try:
            for ids in job.results(self.token_timeout_s, HEARTBEAT_S):
                if not ids:
                    yield HEARTBEAT  # a heartbeat: the prompt is long, or another model's turn runs first
                    continue
                produced += len(ids)
                if chunk := text.add(ids):
                    yield chunk
            if chunk := text.flush():
                yield chunk
        except queue.Empty as e:
            raise GenerationError(f"The model produced nothing for {self.token_timeout_s:.0f} s.", "Try again.") from e
        except Exception as e:  # raised in the worker: out of memory, a CUDA error, a bug
            raise GenerationError(f"The model failed while writing: {e}", "Try again.") from e
        finally:
            job.halt.set()  # the reader stopped early or went away: end the work at the next token
            job.done.wait(FINISH_WAIT_S)
        return GenerationInfo(len(kept), inputs["input_ids"].shape[1], produced,
                              prefill.get("cached_tokens"), prefill.get("prefill_s"))


def _weights(model_id: str, quant: str, device: str, progress):
    """(model, processor, the kept entry it came from or None, dtype): 4bit (CUDA) and int8 (CPU) from
    the entry kept by an earlier start when there is one, else from the checkpoint, quantised on the
    way and kept. On the CPU the kept int8 model is what keeps memory low: the checkpoint's fp32
    weights are never read again (OneVision-0.5B: 4.3 GiB resident after quantising them, 1.5 GiB
    loading the kept int8 model; bench/cpu_first_answer.py)."""
    import torch
    from transformers import AutoModelForImageTextToText

    from core.engines import quant as quantisation
    from core.engines import saved_model

    kwargs: dict = {"dtype": torch.float16 if device == "cuda" else torch.float32}
    if quant in ("nf4", "8bit"):
        kwargs["quantization_config"] = quantisation.bitsandbytes_config(quant)
    if device == "cuda" and quant != "4bit":  # 4bit loads on the CPU and quantises on the way to the GPU
        kwargs["device_map"] = {"": 0}
    try:
        processor = _load_processor(model_id)
        settings = {"4bit": quantisation.hqq_settings, "int8": quantisation.int8_settings}.get(quant)
        entry = saved_model.entry(model_id, settings(), device) if settings else None
        model = saved_model.load(entry, device) if entry else None
        if model is not None:
            progress(f"Loaded the {'4-bit' if quant == '4bit' else 'int8'} weights kept from an earlier start.")
            return model, processor, entry, kwargs["dtype"]
        model = AutoModelForImageTextToText.from_pretrained(model_id, **kwargs).eval()
    except Exception as e:
        raise ModelLoadError(
            f"Could not load the model LLAVA_MODEL={model_id!r}: {e}",
            "Set LLAVA_MODEL to a local model folder (offline, `python -m tests.tiny_llava "
            "models/tiny-llava` builds a random test model), or connect to the Hugging Face hub.",
        ) from e
    if quant == "4bit":
        progress("Quantising the language model to 4 bit (HQQ, gemlite kernels)…")
        quantisation.quantize_hqq(model, device, progress=progress)
    elif quant == "int8":
        progress("Quantising the model to int8 for the CPU…")
        quantisation.quantize_int8(model)
    if entry is not None:
        progress("Keeping the quantised weights for the next start…")
        saved_model.save(model, entry)
    return model, processor, None, kwargs["dtype"]


def _keep_compiled_kernels() -> None:
    """inductor's and Triton's caches under the app's cache folder unless set: their defaults are
    under /tmp (gone at a reboot), and a restart that finds them compiles and tunes nothing."""
    import os

    from core.engines.saved_model import cache_folder

    root = cache_folder().parent
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(root / "inductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(root / "triton"))


def _available(quant: str, device: str) -> tuple[str, str]:
    """The quantisation that can run here, and a note when it is not the one asked for."""
    if device != "cuda":
        if quant not in ("int8", "none"):
            return "int8", f"LLAVA_QUANT={quant} needs a CUDA GPU: loaded in int8 on the CPU (LLAVA_QUANT=int8)."
        return quant, ""
    if quant == "int8":  # the CPU's dynamic int8 has no CUDA kernels: bitsandbytes' int8 is the GPU's
        fallback = "8bit" if find_spec("bitsandbytes") else "none"
        return fallback, f"LLAVA_QUANT=int8 is the CPU's setting: on the GPU loaded as {fallback}."
    if quant == "4bit" and not (find_spec("hqq") and find_spec("gemlite")):
        fallback = "nf4" if find_spec("bitsandbytes") else "none"
        return fallback, (f"hqq and gemlite are not installed (requirements-gpu.txt): LLAVA_QUANT=4bit "
                          f"loaded as {fallback}, which is several times slower.")
    if quant in ("nf4", "8bit") and not find_spec("bitsandbytes"):
        return "none", "bitsandbytes is not installed: loaded in fp16."
    return quant, ""


def _load_processor(model_id: str):
    """AutoProcessor, or, where its video processor needs torchvision and torchvision is missing
    (the CPU torch of this project has no torchvision build), the same processor without it.

    LLaVA-OneVision's processor holds a video processor (LlavaOnevisionVideoProcessor), which
    transformers 5 builds only with torchvision; the app sends no video, so the image processor
    (its PIL backend) and the tokenizer are all it needs.
    """
    from transformers import AutoConfig, AutoProcessor
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

    try:
        return AutoProcessor.from_pretrained(model_id)
    except ImportError as e:
        if "torchvision" not in str(e).lower():
            raise
        logger.info("%s: loading the processor without its video processor (%s)", model_id, str(e).strip()[:80])
        processor_class = PROCESSOR_MAPPING[type(AutoConfig.from_pretrained(model_id))]

    class WithoutVideo(processor_class):
        @classmethod
        def get_attributes(cls):
            return [name for name in super().get_attributes() if name != "video_processor"]

    WithoutVideo.__name__ = WithoutVideo.__qualname__ = processor_class.__name__
    return WithoutVideo.from_pretrained(model_id)


def max_image_tokens(processor) -> int | None:
    """The most tokens one image can become: over the any-resolution grid's shapes (llava-v1.6,
    OneVision), or the one fixed count (llava-1.5). None when the processor cannot say."""
    image_processor = getattr(processor, "image_processor", None)
    sizes = getattr(image_processor, "image_grid_pinpoints", None) or [[336, 336]]
    try:
        counts = processor._get_num_multimodal_tokens(image_sizes=[list(s) for s in sizes]).num_image_tokens
    except (AttributeError, TypeError, KeyError):
        return None
    return max(counts) if counts else None


def cpu_grid(model, processor) -> str:
    """Read each picture as a whole plus one tile on the CPU (llava-v1.6, OneVision): the grid of
    both the processor and the model becomes the one square tile, so a 640x480 photo is 1,317
    OneVision image tokens and two vision passes instead of 2,929 and five (with int8, seconds on
    2 cores before the first word instead of 45: bench/cpu_first_answer.py). Returns the note for
    the page; '' for a model without a grid (llava-1.5)."""
    image_processor = getattr(processor, "image_processor", None)
    if not getattr(model.config, "image_grid_pinpoints", None) or not hasattr(image_processor, "image_grid_pinpoints"):
        return ""
    side = model.config.vision_config.image_size
    before = max_image_tokens(processor)
    model.config.image_grid_pinpoints = image_processor.image_grid_pinpoints = [[side, side]]
    return (f"On the CPU a picture is read as a whole and as one {side}-px tile (up to {max_image_tokens(processor)} "
            f"image tokens instead of {before}): less detail, an answer in seconds. LLAVA_QUANT=none reads it "
            "on the full grid in fp32, several times slower.")


def _cache_for_images(processor, cache_tokens: int, context: int) -> tuple[int, str]:
    """A static cache long enough for the model's largest image, a question and a reply.

    LLAVA_CACHE_TOKENS' CUDA default (2048) was measured on llava-1.5, whose image is 576 tokens;
    a llava-v1.6 image is up to 2,928 (2,340 for a 4:3 photo), a OneVision image up to 8,154
    (7,309 for a 2048x1536 photo, 2,929 for 640x480): a 2048-token cache would refuse such an image
    however short the conversation. Returns (length, note); the note says when the length grew.
    """
    largest = max_image_tokens(processor)
    if largest is None or largest + IMAGE_QUESTION_ROOM <= cache_tokens:
        return cache_tokens, ""
    needed = min(-(-(largest + IMAGE_TURN_ROOM) // PREFILL_MULTIPLE) * PREFILL_MULTIPLE, context)
    if needed <= cache_tokens:
        return cache_tokens, ""
    return needed, (f"LLAVA_CACHE_TOKENS={cache_tokens} cannot hold one image of this model (up to {largest} "
                    f"tokens): the cache holds {needed} tokens.")
