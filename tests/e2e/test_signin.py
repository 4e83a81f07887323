"""Sign-in for real: the app with an [auth] section, a real OpenID Connect provider on loopback
(tests/oidc_provider.py), Streamlit's own st.login / st.logout flow, driven in Chromium.

Screenshots of each step go to $SIGNIN_SCREENSHOTS (or the test's tmp_path).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from core.store.session_log import list_session_files, read_session, user_log_dir
from tests.conftest import png_bytes
from tests.e2e.conftest import app_process, free_port
from tests.e2e.test_browser import MESSAGES, type_question, wait_for_reply
from tests.oidc_provider import auth_secrets, confirm_sign_out, oidc_provider, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SIGN_IN_TEXT = "Sign in to talk with your pictures"


@pytest.fixture(scope="module")
def provider():
    with oidc_provider() as url:
        yield url


@pytest.fixture(scope="module")
def signin_server(tiny_llava, tmp_path_factory, provider):
    """The app with sign-in configured: its secrets.toml lives in a temporary folder (never in the
    repository), named by --secrets.files; it runs in the repository, so .streamlit/config.toml applies."""
    work = tmp_path_factory.mktemp("signin")
    log_dir, secrets = work / "logs", work / "secrets.toml"
    port = free_port()
    secrets.write_text(auth_secrets(provider, port))
    env = {"LLAVA_MODEL": str(tiny_llava), "LOG_DIR": str(log_dir), "TTS_ENGINE": "none"}
    command = [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", str(port),
               "--server.address", "localhost", "--secrets.files", str(secrets)]
    url = f"http://localhost:{port}"
    with app_process(command, env, work / "server.log", url, 120):
        yield url, log_dir


@pytest.fixture
def shots(tmp_path):
    folder = Path(os.environ.get("SIGNIN_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return lambda page, name: page.screenshot(path=folder / f"{name}.png", full_page=True)


def assert_sign_in_page(page):
    page.wait_for_selector(f"text={SIGN_IN_TEXT}")
    assert page.get_by_role("button", name="Sign in").count() == 1
    assert page.locator("[data-testid=stChatInput]").count() == 0
    assert page.locator("text=newest first").count() == 0


def sign_in_as(page, url, subject):
    page.goto(url)
    page.get_by_role("button", name="Sign in").click()
    sign_in(page, subject)
    page.wait_for_selector("[data-testid=stChatInput]")
    page.wait_for_selector(f"text=Signed in as {subject}")


def sign_out(page):
    page.get_by_role("button", name="Sign out").click()
    confirm_sign_out(page)
    page.wait_for_selector(f"text={SIGN_IN_TEXT}")


def search(page, words):
    """Search History for words; the count of matching turns (the page shows it once the search ran)."""
    box = page.get_by_placeholder("A word from a question")
    box.fill(words)
    box.press("Enter")
    count = page.locator("text=matching turn")
    count.wait_for()
    return int(count.inner_text().split()[0].rstrip("+"))


def sessions_of(log_dir, provider, subject):
    folder = user_log_dir(log_dir, f"{provider}|{subject}")
    return [read_session(p) for p in list_session_files(folder)]


def test_without_a_sign_in_cookie_both_pages_ask_to_sign_in(signin_server, browser_with_mic, shots):
    url, _ = signin_server
    page = browser_with_mic()
    for name, address in (("chat", url), ("history", f"{url}/history")):
        page.goto(address)
        assert_sign_in_page(page)
        shots(page, f"0-signed-out-{name}")


def test_each_user_sees_only_their_own_sessions(signin_server, provider, browser_with_mic, shots, tmp_path):
    url, log_dir = signin_server
    page = browser_with_mic()
    image = tmp_path / "zebra.png"
    image.write_bytes(png_bytes((160, 120), "orange"))

    sign_in_as(page, url, "alice@example.com")
    shots(page, "1-alice-signed-in")
    type_question(page, "Is the zebra asleep?", image)
    wait_for_reply(page, 1)
    shots(page, "2-alice-conversation")
    (alice,) = sessions_of(log_dir, provider, "alice@example.com")  # in her folder, named by the real issuer
    assert "zebra" in alice.conversation.exchanges[0].question.text
    sign_out(page)
    shots(page, "3-alice-signed-out")
    page.goto(f"{url}/history?session={alice.session_id}")  # her link, signed out: the sign-in page only
    assert_sign_in_page(page)
    assert "zebra" not in page.locator("[data-testid=stMain]").inner_text().lower()

    sign_in_as(page, url, "bob@example.com")
    assert page.locator(MESSAGES).count() == 0  # the same browser: none of her conversation is on his page
    type_question(page, "Where is the lighthouse?")
    wait_for_reply(page, 1)
    (bob,) = sessions_of(log_dir, provider, "bob@example.com")
    assert bob.session_id != alice.session_id
    page.goto(f"{url}/history")
    page.wait_for_selector("text=newest first")
    page.get_by_role("button", name="Open").first.wait_for()
    assert page.get_by_role("button", name="Open").count() == 1  # his own session only
    assert "zebra" not in page.locator("[data-testid=stMain]").inner_text().lower()
    shots(page, "4-bob-history")
    assert search(page, "zebra") == 0
    shots(page, "5-bob-searches-zebra")
    page.goto(f"{url}/history")  # his own words are found: the search itself works
    assert search(page, "lighthouse") == 1
    page.locator(f".st-key-hit-{bob.session_id}-0").wait_for()
    page.goto(f"{url}/history?session={alice.session_id}")
    page.wait_for_selector("text=Session not found")
    assert "zebra" not in page.locator("[data-testid=stMain]").inner_text().lower()
    shots(page, "6-bob-opens-alices-link")
    sign_out(page)

    sign_in_as(page, url, "alice@example.com")
    page.goto(f"{url}/history?session={alice.session_id}")
    page.wait_for_selector("text=Session of")
    page.wait_for_function(f"document.querySelectorAll('{MESSAGES}').length >= 2")
    assert "zebra" in page.locator(MESSAGES).first.inner_text()
    shots(page, "7-alice-again-opens-her-session")
    page.get_by_role("button", name="Continue in chat").click()  # and goes on with it in her own folder
    page.wait_for_selector("[data-testid=stChatInput]")
    page.wait_for_function(f"document.querySelectorAll('{MESSAGES}').length >= 2")
    assert "zebra" in page.locator(MESSAGES).first.inner_text()
    shots(page, "8-alice-continues-in-chat")
    assert not list_session_files(log_dir)  # nothing signed in lands in the shared folder
