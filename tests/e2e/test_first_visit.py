"""What a new user meets first (issue 21): a quiet server log, the demo model's notice, speech offline."""

from __future__ import annotations

import socket
import time

import pytest

from core.store.session_log import list_session_files, read_session
from tests.e2e.conftest import app_process, free_port
from tests.e2e.test_browser import open_chat, type_question, wait_for_reply

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
DEMO = "Demo model: its answers are random"


def test_a_page_visit_logs_no_traceback(server, browser_with_mic):
    """Streamlit's file watcher walked transformers' lazy modules at every session: ~100 tracebacks."""
    url, log_dir = server
    log = log_dir / "server.log"
    start = log.stat().st_size
    page = browser_with_mic()
    open_chat(page, url)
    page.goto(f"{url}/history")
    page.wait_for_selector("h1:has-text('History')")
    open_chat(page, url)
    time.sleep(2)  # what the visit makes the server write
    written = log.read_bytes()[start:].decode(errors="replace")
    assert "Traceback" not in written and "Error" not in written, written[-3000:]


def test_the_demo_model_says_so_before_and_after_it_answers(server, browser_with_mic, tmp_path):
    url, _ = server
    page = browser_with_mic()
    open_chat(page, url)
    notice = page.get_by_text(DEMO)
    assert notice.count() == 1 and notice.is_visible()
    assert "LLAVA_MODEL" in page.locator("[data-testid=stAlert]").filter(has_text=DEMO).inner_text()
    type_question(page, "What is in the picture?")
    wait_for_reply(page, 1)
    assert page.get_by_text(DEMO).count() == 1


def google_reachable() -> bool:
    try:
        socket.create_connection(("translate.google.com", 443), timeout=5).close()
        return True
    except OSError:
        return False


def test_offline_the_first_reply_is_spoken_by_piper_without_trying_gtts(tiny_llava, browser_with_mic, tmp_path):
    """scripts/app.sh finds Google's voice unreachable and starts the chain at Piper (TTS_ENGINE unset)."""
    if google_reachable():
        pytest.skip("Google's voice can be reached from here: the app rightly keeps gTTS first")
    port, log_dir = free_port(), tmp_path / "logs"
    url = f"http://127.0.0.1:{port}"
    command = ["bash", "scripts/app.sh", "--server.port", str(port), "--server.address", "127.0.0.1"]
    env = {"LLAVA_MODEL": str(tiny_llava), "LOG_DIR": str(log_dir), "TTS_ENGINE": ""}  # "": unset, for app.sh too
    log = tmp_path / "server.log"
    with app_process(command, env, log, url):
        page = browser_with_mic()
        open_chat(page, url)
        type_question(page, "What is in the picture?")
        wait_for_reply(page, 1)
        page.wait_for_function("window.__talkSpeech && window.__talkSpeech.log.length >= 1")
    (session,) = [read_session(p) for p in list_session_files(log_dir)]
    answer = session.conversation.exchanges[0].answer
    server_log = log.read_text()
    assert "spoken offline (TTS_ENGINE=piper)" in server_log
    assert "gTTS did not speak" not in server_log  # never tried, so nothing waited for it
    assert answer.audio is not None and "Google" not in answer.note and "gTTS" not in answer.note
    assert answer.timings["first_audio_s"] < answer.timings["total_s"]
