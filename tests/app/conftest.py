"""The app as AppTest drives it through streamlit_app.py, with the tiny LLaVA and espeak-ng."""

import json

import pytest
from streamlit.testing.v1 import AppTest

from core.store.session_log import list_session_files
from tests.conftest import ROOT


@pytest.fixture
def app(tiny_llava, tmp_path, monkeypatch):
    monkeypatch.setenv("LLAVA_MODEL", str(tiny_llava))
    monkeypatch.setenv("TTS_ENGINE", "espeak")
    monkeypatch.setenv("LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def start() -> AppTest:
        at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120)
        at.run()
        assert not at.exception, at.exception
        return at

    start.log_dir = tmp_path / "logs"
    return start


def ask(at: AppTest, text: str, image: bytes | None = None, name: str = "photo.png") -> AppTest:
    box = at.chat_input[0]
    if image is not None:
        box.upload(name, image, "image/png")
    box.set_value(text).run()
    assert not at.exception, at.exception
    return at


def roles(at):
    return [m.name for m in at.chat_message]


def log_records(log_dir):
    (path,) = list_session_files(log_dir)
    return [json.loads(line) for line in path.read_text().splitlines()]
