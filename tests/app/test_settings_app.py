"""The app started (AppTest through streamlit_app.py) with hostile settings, a representative subset of
tests/unit/test_settings_fuzz.py (the red team's findings among them): no exception, the page says
which variable is wrong, with its value (a key never) and the fix, and starts no model."""

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.config import VARIABLES
from tests.conftest import ROOT
from tests.unit.test_settings_fuzz import PIPER_CONFIG, TEN_TO_THE_30

SERVER = {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}  # never reached: the page stops at the settings
SPEECH_SERVER = {"STT_ENGINE": "openai-api", "STT_BASE_URL": "http://127.0.0.1:9/v1"}


def files(root: Path) -> dict[str, str]:
    (root / "a-file.txt").write_text("not a folder")
    listed, language = root / "listed.onnx", root / "language.onnx"
    for voice, content in ((listed, [PIPER_CONFIG]), (language, {**PIPER_CONFIG, "language": "en"})):
        voice.write_bytes(b"onnx")
        Path(f"{voice}.json").write_text(json.dumps(content))
    return {"file": str(root / "a-file.txt"), "missing": str(root / "missing"), "listed": str(listed),
            "language": str(language)}


# (variable, value or a key of files(), other variables): a value the settings must refuse
CASES = [
    ("LLAVA_CACHE_TOKENS", "²⁵⁶", {}),
    ("LLAVA_CACHE_TOKENS", TEN_TO_THE_30, {}),
    ("LLAVA_CACHE_TOKENS", "NaN", {}),
    ("LLAVA_QUANT", "-1", {}),
    ("OPENAI_BASE_URL", "http://[::1/v1", {}),
    ("OPENAI_BASE_URL", "http://127.0.0.1:99999/v1", {}),
    ("OPENAI_BASE_URL", "localhost:8000/v1", {}),
    ("OPENAI_API_KEY", "sk-clé-secrète", SERVER),
    ("OPENAI_API_KEY", "sk-secret\nX-Evil: 1", SERVER),
    ("STT_API_KEY", "sk-ключ", SPEECH_SERVER),
    ("STT_BASE_URL", "http://gpu:port/v1", {"STT_ENGINE": "openai-api"}),
    ("LLAVA_REMOTE_MODEL", "model\nname", SERVER),
    ("LLAVA_MODEL", "missing", {}),
    ("LLAVA_MODEL", "file", {}),
    ("WHISPER_MODEL", "file", {"STT_ENGINE": "faster-whisper"}),
    ("STT_ENGINE", "٢", {}),
    ("TTS_ENGINE", "   loud ", {}),
    ("PIPER_VOICE", "listed", {}),
    ("PIPER_VOICE", "language", {}),
    ("LOG_DIR", "file", {}),
]


@pytest.fixture
def start(tmp_path, monkeypatch):
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    paths = files(tmp_path)

    def run(env: dict[str, str]) -> AppTest:
        for name, value in env.items():
            monkeypatch.setenv(name, paths.get(value, value))
        monkeypatch.setenv("LOG_DIR", paths.get(env.get("LOG_DIR", ""), str(tmp_path / "logs")))
        monkeypatch.setenv("TTS_ENGINE", env.get("TTS_ENGINE", "none"))
        at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
        at.run()
        return at

    return run


def page_text(at: AppTest) -> str:
    return "\n".join(str(e.value) for kind in (at.error, at.warning, at.info, at.markdown, at.title) for e in kind)


@pytest.mark.parametrize("variable, value, others", CASES, ids=[f"{v}={x!r}"[:40] for v, x, _ in CASES])
def test_a_hostile_setting_is_named_on_the_page_without_a_traceback(start, variable, value, others):
    at = start({**others, variable: value})
    assert not at.exception, at.exception
    (error,) = [e.value for e in at.error if "Configuration error" in e.value]
    assert f"{variable}=" in error
    assert "Set it to" in error or "Set " in error  # the fix
    assert not at.chat_input and not at.status  # stopped before any model is loaded
    text = page_text(at)
    if variable.endswith("_API_KEY"):
        assert value.strip() not in text and "secret" not in text and "not shown" in error
    for library_words in ("invalid literal", "Repo id", "has no attribute", "Invalid IPv6", "Traceback"):
        assert library_words not in text


def test_every_bad_variable_is_on_the_page_at_once(start):
    at = start({"LLAVA_CACHE_TOKENS": "²⁵⁶", "OPENAI_BASE_URL": "http://[::1/v1", "PIPER_VOICE": "listed",
                "LLAVA_MODEL": "missing", "STT_ENGINE": "NaN"})
    assert not at.exception
    errors = [e.value for e in at.error if "Configuration error" in e.value]
    named = {v for v in ("LLAVA_CACHE_TOKENS", "OPENAI_BASE_URL", "PIPER_VOICE", "LLAVA_MODEL", "STT_ENGINE")
             if any(f"{v}=" in e for e in errors)}
    assert len(errors) == 5 and len(named) == 5


def test_the_history_page_says_the_same(start):
    at = start({"LLAVA_CACHE_TOKENS": "²⁵⁶"})
    at.switch_page("pages/history.py").run()
    assert not at.exception
    assert any("LLAVA_CACHE_TOKENS='²⁵⁶'" in e.value for e in at.error)


def test_a_hub_id_that_cannot_be_had_offline_is_named_by_the_model_load(start):
    """A value of a hub id's shape is taken (the hub's rule allows "NaN"); offline, the load says which variable."""
    at = start({"LLAVA_MODEL": "NaN"})
    assert not at.exception, at.exception
    assert not [e for e in at.error if "Configuration error" in e.value]
    assert any("LLAVA_MODEL='NaN'" in e.value for e in at.error)
