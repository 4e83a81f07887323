"""The light install (requirements.txt alone, what Streamlit Community Cloud installs) serves a
conversation: a fresh virtual environment made from requirements.txt has no torch and stays under
1.5 GB, and the app run from it (`streamlit run`) against a real `transformers serve` on loopback
(from the test environment, on the tiny LLaVA) answers a spoken and a typed turn with an image in
Chromium, logs them, and History lists them. Prints the environment's size, how long it took to
build, and the front end's resident memory after the turns (README, Streamlit Community Cloud)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.store.session_log import list_session_files, read_session
from tests.conftest import ROOT
from tests.e2e.conftest import free_port, wait_until_healthy
from tests.e2e.test_browser import MESSAGES, three_mixed_turns
from tests.local_server import LocalServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
MAX_ENVIRONMENT_BYTES = 1.5e9
IN_PROCESS = ("torch", "transformers", "accelerate", "whisper", "triton")
APP_ENV_DROPPED = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "LLAVA_MODEL", "OPENAI_BASE_URL", "STT_ENGINE",
                   "WHISPER_MODEL", "TORCH_SPEC")


def size_bytes(folder: Path) -> int:
    return sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def light(tmp_path_factory) -> Path:
    """A fresh virtual environment with requirements.txt and nothing else (pip from the package index)."""
    venv = tmp_path_factory.mktemp("light") / "venv"
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    done = subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                           "-r", str(ROOT / "requirements.txt")], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    print(f"\nlight environment: built in {time.monotonic() - start:.0f} s, {size_bytes(venv) / 1e9:.2f} GB")
    return venv


def app_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in APP_ENV_DROPPED}
    return {**env, "TTS_ENGINE": "espeak", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **extra}


def test_the_light_environment_has_no_torch_and_is_small(light):
    for name in IN_PROCESS:
        done = subprocess.run([str(light / "bin/python"), "-c", f"import {name}"], capture_output=True, text=True)
        assert done.returncode != 0 and f"No module named '{name}'" in done.stderr, name
    installed = subprocess.run([str(light / "bin/python"), "-m", "pip", "list", "--format=json"],
                               capture_output=True, text=True, check=True).stdout
    assert not [p["name"] for p in json.loads(installed) if p["name"].lower().startswith(("nvidia-", "cuda-"))]
    size = size_bytes(light)
    print(f"\nlight environment: {size / 1e9:.2f} GB ({size / 2**20:.0f} MiB)")
    assert size < MAX_ENVIRONMENT_BYTES


def test_the_light_app_without_a_server_says_what_to_set(light, tmp_path):
    done = subprocess.run([str(light / "bin/python"), str(ROOT / "tests/light_driver.py")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env=app_env(LOG_DIR=str(tmp_path / "logs")))
    assert done.returncode == 0, done.stderr[-3000:]
    shown = json.loads(done.stdout.splitlines()[-1])
    assert shown["exceptions"] == [] and shown["loaded"] == []
    (message,) = shown["start_errors"]
    assert "OPENAI_BASE_URL" in message and "bash scripts/install.sh" in message and "No module named" not in message


@pytest.fixture
def light_app(light, tiny_llava, tmp_path):
    """`streamlit run` from the light environment, answering through `transformers serve` on loopback."""
    log_dir = tmp_path / "logs"
    with LocalServer(tiny_llava) as chat_server:
        port = free_port()
        output = open(tmp_path / "app.log", "wb")  # noqa: SIM115  (the app's log while it runs; closed below)
        process = subprocess.Popen(
            [str(light / "bin/streamlit"), "run", "streamlit_app.py", "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true"],
            cwd=ROOT, env=app_env(OPENAI_BASE_URL=chat_server.base_url, LLAVA_REMOTE_MODEL=chat_server.model,
                                  LOG_DIR=str(log_dir)),
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        wait_until_healthy(url, process, tmp_path / "app.log", 120)
        try:
            yield url, log_dir, process
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=15)
            output.close()


def test_the_light_app_serves_a_voice_and_an_image_turn(light_app, browser_with_mic, speak_wav, tmp_path):
    url, log_dir, process = light_app
    page = browser_with_mic(speak_wav("What colour is the big red car?", lead_s=1.0))
    three_mixed_turns(page, url, tmp_path, "white")
    messages = page.locator(MESSAGES)
    assert messages.count() == 6 and messages.nth(2).locator("img").count() == 1
    page.screenshot(path=tmp_path / "light-chat.png", full_page=True)
    rss = rss_bytes(process.pid)
    print(f"\nlight front end (streamlit run) resident memory after 3 turns: {rss / 2**20:.0f} MiB")

    (path,) = list_session_files(log_dir)
    exchanges = read_session(path).conversation.exchanges
    assert [e.question.source for e in exchanges] == ["voice", "text", "text"]
    assert "car" in exchanges[0].question.text.lower() and exchanges[0].question.audio
    assert exchanges[1].question.image is not None
    assert all(e.answer and e.answer.status == "complete" and e.answer.text for e in exchanges)
    assert all(e.answer.audio for e in exchanges)  # each reply spoken (espeak-ng) and kept

    page.goto(f"{url}/history")
    page.wait_for_selector("text=newest first")
    page.get_by_role("button", name="Open").first.wait_for(timeout=30_000)  # the rows draw after the count
    assert page.get_by_role("button", name="Open").count() == 1
    assert "big red car" in page.locator("body").inner_text().lower()  # the session's first question
    page.screenshot(path=tmp_path / "light-history.png", full_page=True)
    assert rss < 2**30  # a front end: no model weights in the process
