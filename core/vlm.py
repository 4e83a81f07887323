"""Chat models: the ChatModel protocol and the in-process transformers LLaVA.

A model takes the exchanges of the current visual context and yields the reply in chunks.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterator, Mapping, Protocol, Sequence

from PIL import Image

from core.conversation import Exchange, build_messages, image_digests, trim
from core.errors import GenerationError, ModelLoadError

logger = logging.getLogger(__name__)

MIN_REPLY_TOKENS = 32  # a conversation is trimmed until at least this much room is left for the reply


@dataclass(frozen=True)
class GenerationOptions:
    temperature: float = 0.2  # 0 means greedy decoding
    top_p: float = 0.9
    max_new_tokens: int = 512
    system_prompt: str = ""


class ChatModel(Protocol):
    name: str  # shown in the sidebar and the log
    lock: threading.Lock | None  # held while generating, when the model serves one turn at a time

    def stream(
        self,
        exchanges: Sequence[Exchange],
        images: Mapping[str, Image.Image],
        options: GenerationOptions,
        stop: threading.Event | None = None,
    ) -> Iterator[str]:
        """Yield the reply to the last (unanswered) exchange, chunk by chunk."""
        ...

    def count_tokens(self, text: str) -> int:
        ...


class TokenCounts:
    """Tokens of recent replies as they were generated, for tokens/s: re-tokenizing a reply can
    count differently (and a server's tokenizer is not at hand). Thread-safe, the newest kept."""

    def __init__(self, size: int = 256):
        self.size = size
        self._counts: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, text: str, tokens: int) -> None:
        with self._lock:
            self._counts[text] = tokens
            self._counts.move_to_end(text)
            while len(self._counts) > self.size:
                self._counts.popitem(last=False)

    def get(self, text: str) -> int | None:
        with self._lock:
            return self._counts.get(text)


class LlavaModel:
    """A LLaVA-family model (llava-1.5, llava-v1.6, onevision, ...) in this process."""

    def __init__(self, model, processor, name: str, token_timeout_s: float = 300.0, note: str = ""):
        self.model = model
        self.processor = processor
        self.name = name
        self.note = note  # how it was loaded, when that differs from what was asked
        self.token_timeout_s = token_timeout_s
        self.lock = threading.Lock()  # one turn at a time; core.turn queues turns first come, first served
        self.generated = TokenCounts()
        text_config = getattr(model.config, "text_config", model.config)
        self.context_length: int = getattr(text_config, "max_position_embeddings", 4096)

    @classmethod
    def load(cls, model_id: str, quant: str = "none", device: str = "cpu", token_timeout_s: float = 300.0) -> "LlavaModel":
        """Load LLAVA_MODEL: 4-bit NF4 or 8-bit on CUDA (bitsandbytes), fp16 or fp32 otherwise."""
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        note = ""
        kwargs: dict = {}
        if device == "cuda":
            kwargs["dtype"] = torch.float16
            kwargs["device_map"] = {"": 0}
            if quant != "none":
                try:
                    import bitsandbytes  # noqa: F401  (checked here to say so clearly)
                    from transformers import BitsAndBytesConfig
                except ImportError:
                    note, quant = "bitsandbytes is not installed: loaded in fp16.", "none"
                else:
                    kwargs["quantization_config"] = BitsAndBytesConfig(
                        load_in_4bit=quant == "4bit",
                        load_in_8bit=quant == "8bit",
                        bnb_4bit_quant_type="nf4",
                        bnb_4bit_compute_dtype=torch.float16,
                    )
        else:
            kwargs["dtype"] = torch.float32
            if quant != "none":
                note, quant = f"LLAVA_QUANT={quant} needs a CUDA GPU: loaded in full precision on the CPU.", "none"
        try:
            processor = AutoProcessor.from_pretrained(model_id)
            model = AutoModelForImageTextToText.from_pretrained(model_id, **kwargs).eval()
        except Exception as e:
            raise ModelLoadError(
                f"Could not load the model LLAVA_MODEL={model_id!r}: {e}",
                "Set LLAVA_MODEL to a local model folder (offline, `python -m core.tiny_llava "
                "models/tiny-llava` builds a random test model), or connect to the Hugging Face hub.",
            ) from e
        if note:
            logger.warning(note)
        precision = quant if quant != "none" else str(kwargs["dtype"]).removeprefix("torch.")
        return cls(model, processor, f"{model_id} ({precision}, {device})", token_timeout_s, note)

    def count_tokens(self, text: str) -> int:
        """Tokens generated for this reply, when it is a recent one; else tokens of the text."""
        counted = self.generated.get(text)
        if counted is not None:
            return counted
        return len(self.processor.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt(self, exchanges: Sequence[Exchange], system_prompt: str = "") -> str:
        """The prompt text, formatted by the model's own chat template."""
        messages = build_messages(exchanges, system_prompt)
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def inputs(self, exchanges: Sequence[Exchange], images: Mapping[str, Image.Image], system_prompt: str = ""):
        pictures = [images[d] for d in image_digests(exchanges)]
        inputs = self.processor(images=pictures or None, text=self.prompt(exchanges, system_prompt), return_tensors="pt")
        return inputs.to(self.model.device, self.model.dtype)

    def fit(self, exchanges, images, options: GenerationOptions):
        """Trim the oldest exchanges until the prompt and the reply fit the context.

        Returns (kept exchanges, model inputs, max new tokens). When only the image exchange and the
        question are left and still leave less room than asked for, the reply gets what remains.
        """
        inputs = None

        def fits(budget: int):
            def check(candidate: list[Exchange]) -> bool:
                nonlocal inputs
                inputs = self.inputs(candidate, images, options.system_prompt)
                return inputs["input_ids"].shape[1] + budget <= self.context_length

            return check

        try:
            kept = trim(exchanges, fits(options.max_new_tokens))
        except GenerationError:
            kept = trim(exchanges, fits(MIN_REPLY_TOKENS))
        return kept, inputs, min(options.max_new_tokens, self.context_length - inputs["input_ids"].shape[1])

    def stream(self, exchanges, images, options: GenerationOptions, stop: threading.Event | None = None) -> Iterator[str]:
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        stop = stop or threading.Event()
        kept, inputs, max_new_tokens = self.fit(exchanges, images, options)
        if len(kept) < len(exchanges):
            logger.info("trimmed %d old exchanges to fit the context", len(exchanges) - len(kept))
        streamer = TextIteratorStreamer(
            self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=self.token_timeout_s
        )

        class StopOnEvent(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return stop.is_set()

        sampling = options.temperature > 0
        kwargs = dict(
            **inputs,
            streamer=streamer,
            max_new_tokens=max_new_tokens,
            do_sample=sampling,
            temperature=options.temperature if sampling else None,
            top_p=options.top_p if sampling else None,
            stopping_criteria=StoppingCriteriaList([StopOnEvent()]),
        )
        failure: list[BaseException] = []
        generated: list[int] = []

        def generate() -> None:
            try:
                output = self.model.generate(**kwargs)
                generated.append(output.shape[1] - inputs["input_ids"].shape[1])
            except BaseException as e:  # reported to the reader below, not lost in the thread
                failure.append(e)
                streamer.end()

        worker = threading.Thread(target=generate, name="llava-generate", daemon=True)
        worker.start()
        text = ""
        try:
            for chunk in streamer:
                if chunk:
                    text += chunk
                    yield chunk
        except Exception as e:  # queue.Empty: no token within the timeout
            raise GenerationError(
                f"The model produced nothing for {self.token_timeout_s:.0f} s.", "Try again."
            ) from e
        finally:
            if worker.is_alive():
                stop.set()  # the reader stopped early or went away: end generate() at the next token
            worker.join(timeout=self.token_timeout_s)
        if failure:
            raise GenerationError(f"The model failed while writing: {failure[0]}", "Try again.") from failure[0]
        if generated:
            self.generated.remember(text, generated[0])
