"""Models loaded once per process (st.cache_resource) and shared by every browser session.

st.cache_resource computes a value under a per-key lock: sessions that start at the same moment
wait for the one load instead of loading the model again. With OPENAI_BASE_URL set, the chat model
is a client of that server (no weights here); STT_ENGINE=openai-api does the same for speech.
"""

from __future__ import annotations

import logging

import streamlit as st

from core.config import Settings
from core.errors import AppError
from core.stt import load_transcriber
from core.tts import make_speaker
from core.turn import Engines
from core.vlm import LlavaModel

logger = logging.getLogger(__name__)


@st.cache_resource(show_spinner=False)
def _chat_model(model_id: str, quant: str, device: str, token_timeout_s: float) -> LlavaModel:
    return LlavaModel.load(model_id, quant, device, token_timeout_s)


@st.cache_resource(show_spinner=False)
def _remote_chat_model(base_url: str, api_key: str | None, model: str | None, token_timeout_s: float):
    from core.remote import RemoteChatModel  # the openai SDK is only imported when a server is used

    return RemoteChatModel.connect(base_url, api_key, model, token_timeout_s)


@st.cache_resource(show_spinner=False)
def _transcriber(engine: str, whisper_model: str | None, device: str, base_url: str | None = None,
                 api_key: str | None = None):
    return load_transcriber(engine, whisper_model, device, base_url, api_key)


@st.cache_resource(show_spinner=False)
def _speaker(engine: str):
    return make_speaker(engine)


def load_engines(settings: Settings) -> tuple[Engines, list[str]]:
    """The shared engines and notes for the user. Stops the page if the chat model cannot load.

    The first session of a process shows a status box while models load; later ones find them
    in the cache at once.
    """
    notes: list[str] = []
    first = "engines_loaded" not in st.session_state
    box = st.status("Loading models (the first start may download them)…", expanded=True) if first else None
    try:
        if settings.openai_base_url:
            if box:
                box.write(f"Chat model: `{settings.llava_remote_model or 'the server’s model'}` at {settings.openai_base_url}")
            chat = _remote_chat_model(
                settings.openai_base_url, settings.openai_api_key, settings.llava_remote_model, settings.token_timeout_s
            )
        else:
            if box:
                box.write(f"Chat model: `{settings.llava_model}`")
            chat = _chat_model(settings.llava_model, settings.llava_quant, settings.device, settings.token_timeout_s)
        if chat.note:
            notes.append(chat.note)
        transcriber = None
        if box:
            box.write(f"Speech recognition: {settings.stt_engine} `{settings.whisper_model or 'default size'}`")
        try:
            transcriber, note = _transcriber(
                settings.stt_engine, settings.whisper_model, settings.device, settings.stt_base_url, settings.stt_api_key
            )
            if note:
                notes.append(note)
        except AppError as e:  # typed questions still work
            notes.append(f"Voice input is off: {e}")
        speaker = _speaker(settings.tts_engine)
    except AppError as e:
        if box:
            box.update(label="A model could not be loaded", state="error", expanded=True)
        st.error(str(e))
        st.stop()
    if box:
        box.update(label="Models ready", state="complete", expanded=False)
        st.session_state.engines_loaded = True
    return Engines(chat, transcriber, speaker), notes
