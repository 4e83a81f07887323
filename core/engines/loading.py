"""What runs where: the one place that loads the engines (their contract is core.engines.api).

    load_engines(settings, progress) -> Loaded(engines, notes)

chat         the in-process LLaVA (core.engines.vlm) or an OpenAI-compatible server (core.engines.remote)
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
from dataclasses import dataclass, field
from importlib.util import find_spec
from typing import Callable, Sequence

from core.engines.api import ChatModel, Engines, Transcriber
from core.errors import AppError, ModelLoadError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Loaded:
    engines: Engines
    notes: list[str] = field(default_factory=list)  # for the user: fallbacks taken, parts that are off


Progress = Callable[[str], None]
IN_PROCESS_PACKAGES = ("torch", "transformers")  # the in-process model's (requirements-local.txt)


# The loading panel's words for the settings' values (README, Configuration)
QUANT_WORDS = {"none": "full precision", "int8": "made smaller (8-bit)", "4bit": "made smaller (4-bit)",
               "8bit": "made smaller (8-bit)", "nf4": "made smaller (4-bit NF4)"}
SPEAKERS = {"gtts": "Google's voice (gTTS), with offline voices as fallback", "piper": "Piper (offline)",
            "espeak": "espeak-ng (offline)", "none": "none (replies are not spoken)"}


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
    from core.engines.tts import make_speaker

    progress(f"Voice for the replies: {SPEAKERS.get(settings.tts_engine, settings.tts_engine)}")
    speaker, note = make_speaker(settings.tts_engine, settings.piper_voice)
    if note:
        notes.append(note)
    return Loaded(Engines(chat, transcriber, speaker), notes)


def _chat_model(settings, progress: Progress) -> ChatModel:
    if settings.openai_base_url:
        from core.config import masked_url
        from core.engines.remote import RemoteChatModel

        progress(f"Chat model: `{settings.llava_remote_model or 'the server’s model'}` at {masked_url(settings.openai_base_url)}")
        return RemoteChatModel.connect(
            settings.openai_base_url, settings.openai_api_key, settings.llava_remote_model, settings.token_timeout_s
        )
    if missing := [name for name in IN_PROCESS_PACKAGES if find_spec(name) is None]:
        raise NothingConfigured(missing)
    from core.engines.vlm import LlavaModel

    progress(f"Chat model: `{settings.llava_model}`, {QUANT_WORDS.get(settings.llava_quant, settings.llava_quant)}, "
             f"on the {'GPU' if settings.device == 'cuda' else 'CPU'}")
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
    size = f"`{settings.whisper_model}`" if settings.whisper_model else "the usual size for this machine"
    progress(f"Speech recognition: {settings.stt_engine}, {size}")
    if settings.stt_engine == "openai-api":  # a transcription server (whisper_model: its model name)
        from core.engines.remote import RemoteTranscriber

        if not settings.stt_base_url:
            raise ModelLoadError("STT_ENGINE=openai-api needs a server.", "Set STT_BASE_URL (or OPENAI_BASE_URL).")
        return RemoteTranscriber.connect(settings.stt_base_url, settings.stt_api_key, settings.whisper_model), ""
    from core.engines.stt import load_transcriber

    return load_transcriber(settings.stt_engine, settings.whisper_model, settings.device)
