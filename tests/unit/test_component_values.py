"""Every value the page's components send is checked in one place (issue 24, finding 1): a bad one is
dropped with a log line, never a traceback; a recording over the limit is cut and marked."""

import base64
import io
import logging
import random
import wave
from types import SimpleNamespace

import numpy as np
import pytest
import streamlit as st

from core.limits import MAX_RECORDING_S
from tests.fakes import tone, wav_bytes
from ui import call_mode, component_values, state
from ui.speech_queue import ReplyId

GOOD_WAV = base64.b64encode(wav_bytes(tone(0.5))).decode()


@pytest.fixture
def page(monkeypatch):
    """call mode's callbacks as a run calls them, outside a run (Streamlit's bare mode), with values set here."""
    for key in ("utterances", "heard", "barge", "chat"):
        st.session_state.pop(key, None)
    sent = SimpleNamespace(utterance=None, barge=None)
    monkeypatch.setattr(call_mode, "_events", lambda: sent)
    yield sent
    for key in ("utterances", "heard", "barge", "chat"):
        st.session_state.pop(key, None)


@pytest.mark.parametrize("bad_id", ["2.5", "abc", [1, 2], 2.5, True, -3, 2**40, None, {"x": 1}])
def test_an_utterance_with_a_bad_id_is_dropped_with_a_log_line(page, caplog, bad_id):
    page.utterance = {"id": bad_id, "wav": GOOD_WAV}
    with caplog.at_level(logging.WARNING, logger="ui.component_values"):
        call_mode._on_utterance()  # before: ValueError / TypeError from int(), shown on the page
    assert state.waiting_utterances() == 0 and "dropped an utterance value" in caplog.text


@pytest.mark.parametrize("barge", [{"turn": "x", "spoken": "yes", "upto": "2.5"}, {"upto": [1]}, "barge", 7,
                                   {"turn": {"index": "1", "heard": 0, "hex": "a"}, "spoken": True, "upto": 1.5}])
def test_a_bad_barge_is_dropped(page, barge):
    page.barge = barge
    call_mode._on_barge()  # before: ValueError / TypeError from int()
    assert state.take_barge() is None


def test_good_values_go_through(page):
    page.utterance = {"id": 1, "wav": GOOD_WAV}
    call_mode._on_utterance()
    call_mode._on_utterance()  # the same value again (a rerun): taken once
    assert state.waiting_utterances() == 1 and state.heard() == 1
    page.barge = {"turn": {"index": 3, "heard": 1, "hex": "abc123"}, "spoken": True, "upto": 1}
    call_mode._on_barge()
    assert state.take_barge() == (ReplyId(3, 1, "abc123"), True)


def test_a_recording_over_the_limit_is_cut_to_it_and_marked(page, settings):
    from core.chat.session import ChatSession

    st.session_state.chat = ChatSession(settings)
    long = wav_bytes(np.zeros(int((MAX_RECORDING_S + 5) * 16000), np.float32))
    page.utterance = {"id": 1, "wav": base64.b64encode(long).decode()}
    call_mode._on_utterance()
    (_, kept), = st.session_state.utterances
    with wave.open(io.BytesIO(kept)) as clip:
        assert clip.getnframes() == MAX_RECORDING_S * 16000
    assert "only the first 60 s" in st.session_state.chat.conversation.items[-1].text


def random_value(rng: random.Random, depth: int = 0):
    """Anything JSON can hold, biased toward what the fields expect."""
    kinds = ["int", "float", "str", "bool", "none", "list", "dict", "wav", "b64"]
    kind = rng.choice(kinds if depth < 2 else kinds[:5] + kinds[7:])
    if kind == "int":
        return rng.choice([0, 1, -1, 2**31, 2**63, rng.randrange(-10**6, 10**6)])
    if kind == "float":
        return rng.choice([0.5, float("nan"), float("inf"), 1e308, rng.uniform(-1e6, 1e6)])
    if kind == "str":
        return "".join(chr(rng.randrange(0x110000)) for _ in range(rng.randrange(0, 20)))
    if kind in ("bool", "none"):
        return rng.random() < 0.5 if kind == "bool" else None
    if kind == "list":
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    if kind == "dict":
        keys = ["id", "wav", "turn", "spoken", "upto", "index", "heard", "hex", "x"]
        return {rng.choice(keys): random_value(rng, depth + 1) for _ in range(rng.randrange(0, 5))}
    return random_wav(rng) if kind == "wav" else base64.b64encode(rng.randbytes(rng.randrange(0, 200))).decode()


def random_wav(rng: random.Random) -> str:
    """A WAV of random format, sometimes cut, sometimes with its bytes changed, in base64."""
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(rng.choice([1, 2, 3]))
        writer.setsampwidth(rng.choice([1, 2, 4]))
        writer.setframerate(rng.choice([1, 8000, 16000, 44100, 96000, 2**24]))
        writer.writeframes(rng.randbytes(rng.randrange(0, 4000)))
    data = bytearray(out.getvalue())
    for _ in range(rng.randrange(0, 3)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    return base64.b64encode(bytes(data[: rng.randrange(len(data) + 1)] if rng.random() < 0.3 else data)).decode()


def test_thousands_of_random_component_values_raise_nothing(page):
    rng = random.Random(24)
    for n in range(3000):
        value = random_value(rng)
        if isinstance(value, dict) and rng.random() < 0.5:  # now and then the right fields, hostile contents
            value = {"id": rng.choice([n + 1, random_value(rng)]), "wav": rng.choice([random_wav(rng), random_value(rng)]),
                     "turn": random_value(rng), "spoken": random_value(rng), "upto": random_value(rng)}
        page.utterance, page.barge = value, value
        call_mode._on_utterance()
        call_mode._on_barge()
        for _, wav in st.session_state.get("utterances", []):
            with wave.open(io.BytesIO(wav)) as clip:  # what is let through is a WAV the app reads
                assert clip.getsampwidth() == 2 and clip.getnframes() > 0
        st.session_state.utterances = []
        barge = state.take_barge()
        assert barge is None or isinstance(barge[1], bool)
    assert component_values.count(True) is None and component_values.count(7) == 7
