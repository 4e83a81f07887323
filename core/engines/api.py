"""The engines' contract: what the chat pipeline asks of a chat model, a transcriber and a speaker,
and the values they exchange. Nothing here loads anything (core.engines.loading does), so every
engine and every caller can import it without importing each other.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from typing import Callable, Generator, Mapping, Protocol, Sequence

import numpy as np
from PIL import Image

from core.conversation import Exchange


@dataclass(frozen=True)
class GenerationOptions:
    temperature: float = 0.2  # 0 means greedy decoding
    top_p: float = 0.9
    max_new_tokens: int = 512
    system_prompt: str = ""


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str  # ISO 639-1 code detected by Whisper (or forced)
    duration_s: float  # length of the audio


@dataclass(frozen=True)
class Speech:
    audio: bytes
    format: str  # "mp3" or "wav"
    engine: str  # which engine produced it
    note: str = ""  # e.g. that a fallback was used

    @property
    def mime(self) -> str:
        return "audio/mpeg" if self.format == "mp3" else "audio/wav"


HEARTBEAT_S = 0.5  # an engine with nothing new yields HEARTBEAT this often, so that Stop can reach the page
HEARTBEAT = ""  # what a stream yields when nothing new has come: the one heartbeat of every layer above the worker


class Interrupt:
    """The one stop of a reply: set once, with the reason, by whoever stops it (the Stop button, the
    user talking over it, a rerun, a failure); every stage of the reply (the wait for the model, the
    model, the speech, the record) looks at the same object. Thread-safe; the first reason is kept."""

    def __init__(self):
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._reason = ""

    def set(self, reason: str = "stopped") -> bool:
        """Stop, saying why; False when it was already stopped (the first reason stays)."""
        with self._lock:
            if self._event.is_set():
                return False
            self._reason = reason
            self._event.set()
            return True

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep until stopped or the timeout passes; True when stopped."""
        return self._event.wait(timeout)

    @property
    def reason(self) -> str:
        """Why it was stopped ("" while it is not)."""
        return self._reason


# Why a reply was interrupted (Interrupt.reason), as the chat pipeline says it.
STOP_PRESSED = "Stop was pressed"
TALKED_OVER = "the user spoke over it"
READER_LEFT = "the page stopped reading it (a rerun, a closed tab)"
FAILED = "the model failed"


@dataclass(frozen=True)
class GenerationInfo:
    """What a generation did, known once it is over (like faster-whisper's TranscriptionInfo or
    llm's Response.usage). None: the engine could not tell."""

    kept_exchanges: int  # of the conversation sent: how many were kept after trimming to fit the context
    prompt_tokens: int | None = None  # the prompt as the model read it (images included)
    completion_tokens: int | None = None  # generated, as the model counted them
    cached_tokens: int | None = None  # of the prompt tokens, those reused from a KV cache
    prefill_s: float | None = None  # time to read the prompt, up to the first generated token
    cut_chars: int | None = None  # the server streamed past the reply's limit (core.limits): the characters kept


class Generation:
    """A reply being generated: iterate it for text chunks (HEARTBEAT while nothing new has come);
    once it is over (exhausted, or stopped through its Interrupt) `.info` holds its GenerationInfo.

    Made from a generator that yields the chunks and returns the info (see `generation`). Closing
    it early ends the generator (the engine stops its work); `.info` then stays None."""

    def __init__(self, chunks: Generator[str, None, GenerationInfo]):
        self._chunks = chunks
        self.info: GenerationInfo | None = None

    def __iter__(self) -> "Generation":
        return self

    def __next__(self) -> str:
        try:
            return next(self._chunks)
        except StopIteration as end:
            self.info = end.value
            raise

    def close(self) -> None:
        self._chunks.close()


def generation(stream: Callable[..., Generator[str, None, GenerationInfo]]) -> Callable[..., Generation]:
    """Make a generator method that yields a reply's chunks and returns its GenerationInfo into a
    ChatModel.stream that returns a Generation."""

    @functools.wraps(stream)
    def wrapped(*args, **kwargs) -> Generation:
        return Generation(stream(*args, **kwargs))

    return wrapped


class ChatModel(Protocol):
    name: str  # shown in the sidebar and the log
    note: str  # how it was loaded, when that differs from what was asked ("" otherwise)
    lock: threading.Lock | None  # held while generating, when the model serves one turn at a time

    def stream(
        self,
        exchanges: Sequence[Exchange],
        images: Mapping[str, Image.Image],
        options: GenerationOptions,
        stop: Interrupt | None = None,
    ) -> Generation:
        """The reply to the last (unanswered) exchange, chunk by chunk, HEARTBEAT every HEARTBEAT_S
        while nothing new has come; it ends early once stop is set. Then its GenerationInfo."""
        ...


class Transcriber(Protocol):
    name: str

    def transcribe(self, samples: np.ndarray, language: str | None = None) -> Transcript:
        """Transcribe float32 mono samples at 16 kHz."""
        ...


class Speaker(Protocol):
    name: str

    def speak(self, text: str, language: str = "en") -> Speech:
        """Synthesise text; raise SpeechError on failure."""
        ...


@dataclass(frozen=True)
class Engines:
    """The loaded models, shared by every session."""

    chat: ChatModel
    transcriber: Transcriber | None = None
    speaker: Speaker | None = None
