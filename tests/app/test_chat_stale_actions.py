"""Regenerate and Edit act on the last exchange only: a button left on an older reply is not drawn,
and a request for an exchange that is no longer the last one changes nothing.

The app runs through streamlit_app.py against a scripted OpenAI-compatible loopback server (no
model to load), so this is quick."""

import pytest
from streamlit.testing.v1 import AppTest

from tests.app.conftest import ask, log_records
from tests.conftest import ROOT
from tests.unit.test_remote import MODEL, ScriptedServer, sse


@pytest.fixture
def app(tmp_path, monkeypatch):
    server = ScriptedServer(sse("First reply."), sse("Second reply."), sse("Another reply."), models=[MODEL, "whisper-1"])
    for name, value in {"OPENAI_BASE_URL": server.base_url, "LLAVA_REMOTE_MODEL": MODEL, "STT_ENGINE": "openai-api",
                        "TTS_ENGINE": "none", "LOG_DIR": str(tmp_path / "logs")}.items():
        monkeypatch.setenv(name, value)
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    yield at, server
    server.close()


def replies(at: AppTest) -> list[str]:
    return [e.answer.text if e.answer else None for e in at.session_state["chat"].conversation.exchanges]


def test_only_the_last_exchange_has_regenerate_and_a_stale_request_changes_nothing(app, tmp_path):
    at, server = app
    ask(at, "one?")
    ask(at, "two?")  # the first reply's actions were drawn before this question was asked
    assert replies(at) == ["First reply.", "Second reply."]
    regenerate = [b.key for b in at.button if b.key and b.key.startswith("regen-")]
    assert regenerate == ["regen-1"]

    for stale in (("regenerate", 0), ("edit", 0)):  # as a click on a button left from an older run
        at.session_state["action"] = stale
        at.run()
        assert not at.exception, at.exception
        assert replies(at) == ["First reply.", "Second reply."]
        assert at.toast and "no longer the last" in at.toast[0].value
    assert len(server.posts()) == 2  # nothing was regenerated
    assert [r["type"] for r in log_records(tmp_path / "logs")].count("answer") == 2

    at.button(key="regen-1").click().run()  # the last one still works
    assert replies(at) == ["First reply.", "Another reply."]
