"""The front end without the in-process packages (requirements.txt alone, e.g. Streamlit Community Cloud):
both pages run with torch, transformers and openai-whisper made unimportable (tests/light_driver.py
hides them in a subprocess), answer through a server, and say what to set when nothing is configured.
tests/e2e/test_light_install.py does the same from a real virtual environment made from requirements.txt."""

import json
import os
import subprocess
import sys

import pytest

from core.config import Settings
from core.engines.loading import NothingConfigured, load_engines
from tests.conftest import ROOT
from tests.unit.test_remote import ScriptedServer, sse

HIDDEN = "torch,torchvision,transformers,accelerate,whisper,hqq,gemlite,bitsandbytes,triton"
REPLY = ("A white square.", " Nothing else is in it.")


def drive(tmp_path, *args, **env) -> dict:
    """Run the app with AppTest in a subprocess where the in-process packages are hidden."""
    base = {key: value for key, value in os.environ.items()
            if key not in ("OPENAI_BASE_URL", "LLAVA_MODEL", "STT_ENGINE", "WHISPER_MODEL")}
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests/light_driver.py"), "--hide", HIDDEN, *args], cwd=tmp_path,
        capture_output=True, text=True, timeout=300,
        env={**base, "LOG_DIR": str(tmp_path / "logs"), "TTS_ENGINE": "espeak", "HF_HUB_OFFLINE": "1", **env},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_without_the_in_process_packages_and_a_server_the_page_says_what_to_set_or_install(tmp_path):
    shown = drive(tmp_path, "--ask", "What is in the picture?", "--image")
    assert shown["exceptions"] == [] and shown["loaded"] == []
    (message,) = shown["start_errors"]  # one message, when the page opens
    assert "OPENAI_BASE_URL" in message and "bash scripts/install.sh" in message
    assert "torch" in message and "transformers" in message  # what is missing
    everything = json.dumps(shown)
    assert "ImportError" not in everything and "No module named" not in everything
    reply = shown["messages"][-1]
    assert reply["role"] == "assistant" and any("OPENAI_BASE_URL" in text for text in reply["texts"])


def test_the_front_end_answers_through_a_server_without_the_in_process_packages(tmp_path):
    server = ScriptedServer(sse(*REPLY, usage=9))
    try:
        shown = drive(tmp_path, "--ask", "What is in the picture?", "--image", OPENAI_BASE_URL=server.base_url)
    finally:
        server.close()
    assert shown["exceptions"] == [] and shown["start_errors"] == [] and shown["errors"] == []
    assert shown["loaded"] == []  # neither page nor engine imported torch, transformers or whisper
    assert [m["role"] for m in shown["messages"]] == ["user", "assistant"]
    assert "".join(REPLY) in shown["messages"][1]["texts"]
    (request,) = server.posts()
    content = request["body"]["messages"][-1]["content"]
    assert any(part.get("type") == "image_url" for part in content)  # the picture went to the server
    assert any("What is in the picture?" in text for text in shown["history"])  # History lists the session


def test_load_engines_names_what_is_missing(monkeypatch, tmp_path):
    import core.engines.loading

    monkeypatch.setattr(core.engines.loading, "find_spec", lambda name: None if name == "transformers" else object())
    settings = Settings.from_env({"LOG_DIR": str(tmp_path), "TTS_ENGINE": "none"})
    with pytest.raises(NothingConfigured) as raised:
        load_engines(settings)
    assert raised.value.missing == ("transformers",)
    assert "transformers is not installed" in raised.value.message and "OPENAI_BASE_URL" in raised.value.hint
