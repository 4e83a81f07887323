"""Start the app as the README does and drive it in Debian's Chromium through Playwright."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import ROOT

CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_healthy(url: str, process: subprocess.Popen, log: Path, timeout_s: float) -> None:
    """Until Streamlit's health check answers; the test fails with the end of the log if the
    process ends or the time is up."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGTERM)
            pytest.fail("the app did not start:\n" + log.read_text()[-3000:])
        time.sleep(0.5)


@contextmanager
def app_process(command: list[str], env: dict, log: Path, url: str, timeout_s: float = 180):
    """The app started by command (in the repository, its own process group, output to log); yields
    once Streamlit's health check answers at url; stopped (TERM, then KILL) afterwards."""
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
                                                           **env},
                                   stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until_healthy(url, process, log, timeout_s)
            yield process
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def server(tiny_llava, tmp_path_factory):
    """`bash scripts/app.sh` on a free loopback port, with a temporary LOG_DIR and the tiny model."""
    log_dir = tmp_path_factory.mktemp("e2e-logs")
    port = free_port()
    env = {"LLAVA_MODEL": str(tiny_llava), "LOG_DIR": str(log_dir), "TTS_ENGINE": "espeak"}
    url = f"http://127.0.0.1:{port}"
    command = ["bash", "scripts/app.sh", "--server.port", str(port), "--server.address", "127.0.0.1"]
    with app_process(command, env, log_dir / "server.log", url):
        yield url, log_dir


@pytest.fixture(scope="session")
def playwright_instance():
    from playwright.sync_api import sync_playwright

    if not shutil.which("chromium"):
        pytest.fail("chromium is required (packages.txt)")
    with sync_playwright() as p:
        yield p


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    setattr(item, f"rep_{call.when}", outcome.get_result())


@pytest.fixture
def browser_with_mic(playwright_instance, request, tmp_path):
    """browser_with_mic(wav) -> a page whose fake microphone plays wav once.

    A failing test leaves a screenshot of each page in its tmp_path (failure-N.png).
    """
    pages = []

    def launch(wav: Path | None = None):
        flags = CHROMIUM_FLAGS + ([f"--use-file-for-fake-audio-capture={wav}%noloop"] if wav else [])
        browser = playwright_instance.chromium.launch(executable_path=shutil.which("chromium"), args=flags)
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.set_default_timeout(90_000)
        pages.append((browser, page))
        return page

    yield launch
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for number, (browser, page) in enumerate(pages):
        if failed:
            page.screenshot(path=tmp_path / f"failure-{number}.png", full_page=True)
            print(f"screenshot: {tmp_path / f'failure-{number}.png'}")
        browser.close()
