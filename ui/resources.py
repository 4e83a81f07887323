"""The engines, loaded once per process (st.cache_resource) and shared by every browser session.

What runs where is core.engines.load_engines' business; this module caches its result and draws
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
from core.engines import Engines, Loaded, load_engines
from core.errors import AppError, GenerationError

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 30.0  # a failed start is remembered this long before the next try

_failures: dict[Settings, tuple[float, AppError]] = {}  # settings -> (when, why) of the last failed start
_failures_lock = threading.Lock()


class Unavailable:
    """Stands in for a chat engine that could not start: every reply is this error."""

    lock = None
    note = ""

    def __init__(self, error: AppError):
        self.error = error
        self.name = "unavailable"

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def stream(self, exchanges, images, options, stop=None):
        raise GenerationError(f"No model can answer: {self.error.message}", self.error.hint or "Try again later.")
        yield  # a generator, like every engine's stream()


@st.cache_resource(show_spinner=False)
def _loaded(settings: Settings, _progress) -> Loaded:
    return load_engines(settings, _progress)


def _recent_failure(settings: Settings) -> AppError | None:
    with _failures_lock:
        when, error = _failures.get(settings, (0.0, None))
    return error if time.monotonic() - when < RETRY_AFTER_S else None


def engines_for(settings: Settings) -> tuple[Engines, list[str]]:
    """The shared engines and notes for the user. The first session of a process shows a status
    box while models load; later ones find them in the cache at once."""
    if error := _recent_failure(settings):
        st.error(f"{error} (tried again in {RETRY_AFTER_S:.0f} s)", icon=":material/cloud_off:")
        return Engines(Unavailable(error)), []
    first = "engines_loaded" not in st.session_state
    box = st.status("Loading models (the first start may download them)…", expanded=True) if first else None
    try:
        loaded = _loaded(settings, box.write if box else logger.info)
    except AppError as e:
        with _failures_lock:
            _failures[settings] = (time.monotonic(), e)
        if box:
            box.update(label="The chat model could not be started", state="error", expanded=True)
        st.error(str(e), icon=":material/cloud_off:")
        return Engines(Unavailable(e)), []
    if box:
        box.update(label="Models ready", state="complete", expanded=False)
        st.session_state.engines_loaded = True
    return loaded.engines, loaded.notes
