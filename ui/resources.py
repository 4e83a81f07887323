"""The engines, loaded once per process (st.cache_resource) and shared by every browser session.

What runs where is core.engines.loading.load_engines' business; this module caches its result and draws
its progress. st.cache_resource computes a value under a per-key lock: sessions that start at the
same moment wait for the one load instead of loading the model again.

A chat engine that cannot start (a server down, a model that will not load) does not take the
page with it: the error is shown, typed questions are still taken and logged (their answer says
why there is none), and the start is tried again after RETRY_AFTER_S, not at every click.
"""

from __future__ import annotations

import logging
import threading
import time

import streamlit as st

from core.config import Settings
from core.engines.api import Engines, generation
from core.engines.loading import Loaded, NothingConfigured, load_engines
from core.errors import AppError, GenerationError

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 30.0  # a failed start is remembered this long before the next try

class Unavailable:
    """Stands in for a chat engine that could not start: every reply is this error."""

    lock = None
    note = ""

    def __init__(self, error: AppError):
        self.error = error
        self.name = "unavailable"

    @generation
    def stream(self, exchanges, images, options, stop=None):
        raise GenerationError(f"No model can answer: {self.error.message}", self.error.hint or "Try again later.")
        yield  # a generator, like every engine's stream()


class _Slot:
    """One configuration's engines: loaded once, under a lock, by the first session that asks."""

    def __init__(self):
        self.lock = threading.Lock()
        self.loaded: Loaded | None = None
        self.failure: tuple[float, AppError] | None = None  # when and why the last start failed


@st.cache_resource(show_spinner=False)
def _slot(settings: Settings) -> _Slot:
    return _Slot()


def shared_engines(settings: Settings, progress) -> Loaded:
    """The process's engines for these settings, loaded by the first caller while the others wait.
    (Loading happens outside st.cache_resource so that progress can be drawn as it goes.)
    A failed start raises its error again, without retrying, for RETRY_AFTER_S."""
    slot = _slot(settings)
    with slot.lock:
        if slot.loaded is None:
            if slot.failure and time.monotonic() - slot.failure[0] < RETRY_AFTER_S:
                raise slot.failure[1]
            try:
                slot.loaded = load_engines(settings, progress)
            except AppError as e:
                slot.failure = (time.monotonic(), e)
                raise
        return slot.loaded


def engines_for(settings: Settings) -> tuple[Engines, list[str]]:
    """The shared engines and notes for the user. The first session of a process shows a status
    box while models load; later ones find them loaded at once."""
    slot = _slot(settings)
    box = None
    if slot.loaded is None and slot.failure is None:
        box = st.status("Getting the models ready (the first start may download them)…", expanded=True)
    try:
        loaded = shared_engines(settings, box.write if box else logger.info)
    except AppError as e:
        if box:
            box.update(label="The chat model could not be started", state="error", expanded=True)
        again = "" if isinstance(e, NothingConfigured) else f" (tried again after {RETRY_AFTER_S:.0f} s)"
        st.error(f"{e}{again}", icon=":material/cloud_off:")
        return Engines(Unavailable(e)), []
    if box:
        box.update(label="Models ready", state="complete", expanded=False)
    live = getattr(loaded.engines.chat, "status_note", None)  # e.g. answering more slowly while the GPU warms up
    return loaded.engines, loaded.notes + [note for note in [live() if live else ""] if note]
