"""The engines' contract: what the chat pipeline asks of a chat model, a transcriber and a speaker,
and the values they exchange. Nothing here loads anything (core.engines.loading does), so every
engine and every caller can import it without importing each other.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Iterator, Mapping, Protocol, Sequence

import numpy as np
from PIL import Image

from core.conversation import Exchange
from core.lru import LRU


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


HEARTBEAT_S = 0.5  # an engine with nothing new yields "" this often, so that Stop can reach the page


class ChatModel(Protocol):
    name: str  # shown in the sidebar and the log
    note: str  # how it was loaded, when that differs from what was asked ("" otherwise)
    lock: threading.Lock | None  # held while generating, when the model serves one turn at a time

    def stream(
        self,
        exchanges: Sequence[Exchange],
        images: Mapping[str, Image.Image],
        options: GenerationOptions,
        stop: threading.Event | None = None,
    ) -> Iterator[str]:
        """Yield the reply to the last (unanswered) exchange, chunk by chunk; "" (a heartbeat)
        every HEARTBEAT_S while nothing new has come."""
        ...

    def count_tokens(self, text: str) -> int:
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


class TokenCounts(LRU[str, int]):
    """Tokens of recent replies as they were generated, for tokens/s: re-tokenizing a reply can
    count differently (and a server's tokenizer is not at hand). Thread-safe, the newest kept."""

    def __init__(self, size: int = 256):
        super().__init__(size)

    def remember(self, text: str, tokens: int) -> None:
        self.put(text, tokens)


@dataclass(frozen=True)
class Engines:
    """The loaded models, shared by every session."""

    chat: ChatModel
    transcriber: Transcriber | None = None
    speaker: Speaker | None = None
