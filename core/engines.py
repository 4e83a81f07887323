"""What runs where: the engine protocols, their value types, and the one place that loads them.

    load_engines(settings, progress) -> Loaded(engines, notes)

chat         the in-process LLaVA (core.vlm) or an OpenAI-compatible server (core.remote)
transcriber  Whisper through torch on CUDA (openai-whisper, large-v3-turbo), faster-whisper on the
             CPU, or a transcription server; a CTranslate2 engine that cannot run on the GPU is
             found out by a test transcription at load time and replaced, with a note
speaker      gTTS (falling back to Piper, then espeak-ng), Piper (espeak-ng for the languages its voice
             lacks), espeak-ng, or none

The implementations are imported only when chosen, so that a front end talking to a server never
imports torch, and so that no two engine modules import each other.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from importlib.util import find_spec
from typing import Callable, Iterator, Mapping, Protocol, Sequence

import numpy as np
from PIL import Image

from core.conversation import Exchange
from core.errors import AppError, ModelLoadError
from core.lru import LRU

logger = logging.getLogger(__name__)


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
    speaker: object | None = None  # core.tts.Speaker


@dataclass(frozen=True)
class Loaded:
    engines: Engines
    notes: list[str] = field(default_factory=list)  # for the user: fallbacks taken, parts that are off


Progress = Callable[[str], None]
IN_PROCESS_PACKAGES = ("torch", "transformers")  # the in-process model's (requirements-local.txt)


def load_engines(settings, progress: Progress = logger.info) -> Loaded:
    """Load the configured engines (core.config.Settings), saying what is loaded as it goes.

    Raises ModelLoadError when the chat model cannot be had; a speech part that fails is switched
    off with a note, since typed questions still work.
    """
    notes: list[str] = []
    chat = _chat_model(settings, progress)
    if chat.note:
        notes.append(chat.note)
    transcriber = None
    try:
        transcriber, note = _transcriber(settings, progress)
        if note:
            notes.append(note)
    except AppError as e:
        notes.append(f"Voice input is off: {e}")
    from core.tts import make_speaker

    progress(f"Text to speech: {settings.tts_engine}")
    speaker, note = make_speaker(settings.tts_engine, settings.piper_voice)
    if note:
        notes.append(note)
    return Loaded(Engines(chat, transcriber, speaker), notes)


def _chat_model(settings, progress: Progress) -> ChatModel:
    if settings.openai_base_url:
        from core.config import masked_url
        from core.remote import RemoteChatModel

        progress(f"Chat model: `{settings.llava_remote_model or 'the server’s model'}` at {masked_url(settings.openai_base_url)}")
        return RemoteChatModel.connect(
            settings.openai_base_url, settings.openai_api_key, settings.llava_remote_model, settings.token_timeout_s
        )
    if missing := [name for name in IN_PROCESS_PACKAGES if find_spec(name) is None]:
        raise NothingConfigured(missing)
    from core.vlm import LlavaModel

    progress(f"Chat model: `{settings.llava_model}` ({settings.llava_quant}, {settings.device})")
    return LlavaModel.load(
        settings.llava_model, settings.llava_quant, settings.device, settings.token_timeout_s,
        cache_tokens=settings.llava_cache_tokens, progress=progress,
    )


class NothingConfigured(ModelLoadError):
    """No chat model can be had: no OPENAI_BASE_URL, and the in-process model is not installed (the
    front end of requirements.txt alone, e.g. on Streamlit Community Cloud)."""

    def __init__(self, missing: Sequence[str]):
        super().__init__(
            f"No chat model is configured: OPENAI_BASE_URL is not set, and this install has no in-process "
            f"model ({' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed).",
            "Set OPENAI_BASE_URL to an OpenAI-compatible server (e.g. vLLM; on Streamlit Community Cloud as a "
            "secret) and restart the app, or install the in-process model with `bash scripts/install.sh` "
            "(README, Deployment).",
        )
        self.missing = tuple(missing)


def _transcriber(settings, progress: Progress) -> tuple[Transcriber, str]:
    from core.stt import load_transcriber

    progress(f"Speech recognition: {settings.stt_engine} `{settings.whisper_model or 'default size'}`")
    return load_transcriber(
        settings.stt_engine, settings.whisper_model, settings.device, settings.stt_base_url, settings.stt_api_key
    )
