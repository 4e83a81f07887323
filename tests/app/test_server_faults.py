"""The chat page against a chat server that fails, through AppTest (issue 13's fault injection at
the page): no exception reaches the page, the message names the server without its password, the
chat box stays, every question asked is in the log, and once the server is back the next turn works."""

import pytest
from streamlit.testing.v1 import AppTest

from core.store.session_log import list_session_files, read_session
from tests.conftest import ROOT
from tests.unit import test_remote_faults as faults
from tests.unit.test_remote_faults import MODEL, PASSWORD

server = faults.server  # the fixture: a FaultServer on loopback


@pytest.fixture
def page(server, tmp_path, monkeypatch):
    from ui import resources

    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("LLAVA_REMOTE_MODEL", MODEL)
    monkeypatch.setenv("TTS_ENGINE", "none")
    monkeypatch.setenv("STT_ENGINE", "openai-api")
    monkeypatch.setenv("LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setattr(resources, "RETRY_AFTER_S", 0.0)  # a failed start is tried again at the next run
    resources._slot.clear()
    yield tmp_path / "logs"
    resources._slot.clear()


def shown_text(at: AppTest) -> str:
    return " ".join(str(e.value) for kind in (at.error, at.warning, at.info, at.markdown, at.caption, at.code)
                    for e in kind)


def ask(at: AppTest, text: str) -> AppTest:
    at.chat_input[0].set_value(text).run()
    assert not at.exception, at.exception
    return at


def questions(log_dir) -> list[str]:
    (path,) = list_session_files(log_dir)
    return [e.question.text for e in read_session(path).conversation.exchanges]


@pytest.mark.parametrize("fault", ["invalid-json", "not-json", "500", "refused"])
def test_a_server_failing_at_start_leaves_a_working_chat_box(page, server, fault):
    server.fail(fault)
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    text = shown_text(at)
    assert f"127.0.0.1:{server.port}" in text and PASSWORD not in text
    assert at.chat_input, "typed chat must stay usable"
    ask(at, "Are you there?")
    assert "No model can answer" in shown_text(at)

    server.recover(fault)
    ask(at, "And now?")
    assert "Hello" in shown_text(at)
    assert questions(page) == ["Are you there?", "And now?"]


@pytest.mark.parametrize("fault", ["500", "invalid-json", "broken-sse", "wrong-shape"])
def test_a_server_failing_mid_conversation_keeps_the_question_and_the_next_turn_works(page, server, fault):
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    at.run()
    ask(at, "First?")
    server.fail(fault)
    ask(at, "Second?")
    assert f"127.0.0.1:{server.port}" in shown_text(at) and PASSWORD not in shown_text(at)
    server.recover(fault)
    ask(at, "Third?")
    assert questions(page) == ["First?", "Second?", "Third?"]
    assert shown_text(at).count("Hello") >= 2
