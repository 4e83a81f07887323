"""The History page as AppTest drives it, over sessions made through the chat page."""

import io
import re

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.conversation import Answer, Question
from core.media import digest
from core.store.history_index import HistoryIndex
from core.store.session_log import SessionLog, list_session_files, read_session, save_media, user_log_dir
from tests.app.conftest import ask, roles
from tests.conftest import ROOT, png_bytes
from tests.fakes import tone, wav_bytes

pytestmark = pytest.mark.slow


def history(at: AppTest) -> AppTest:
    at.switch_page("pages/history.py").run()
    assert not at.exception, at.exception
    return at


def open_buttons(at: AppTest) -> list[str]:
    return [b.key for b in at.button if b.key and b.key.startswith("open-")]


def a_word_of(text: str) -> str:
    return max(re.findall(r"[^\W\d_]{3,}", text), key=len)


def voice_session(log_dir) -> SessionLog:
    """A logged voice turn with its recording and spoken reply, as the chat page writes it."""
    save_media(log_dir, wav_bytes(tone(0.3)), "a" * 32, "wav")
    save_media(log_dir, wav_bytes(tone(0.5)), "b" * 32, "wav")
    log = SessionLog.create(log_dir, model="tiny")
    log.question(0, Question("What colour is the car?", source="voice", audio="a" * 32))
    log.answer(0, Answer("It is red.", audio="b" * 32, audio_format="wav", timings={"stt_s": 0.5, "total_s": 2.0}))
    log.error("Speech failed for one sentence.", turn=0)
    return log


def test_chat_sessions_are_listed_and_a_reply_word_is_found(app):
    at = ask(app(), "What is in this picture?", png_bytes())
    at.sidebar.button[0].click().run()  # New session
    ask(at, "Second session question")
    history(at)
    files = list_session_files(app.log_dir)
    assert open_buttons(at) == [f"open-{path.stem}" for path in files]  # newest first
    assert any("Second session question" in m.value for m in at.markdown)

    # the session with the picture (two sessions started in the same second sort by their random suffix)
    (pictured,) = [f for f in files if read_session(f).conversation.exchanges[0].question.image]
    reply = read_session(pictured).conversation.exchanges[0].answer.text
    at.text_input(key="query").set_value(a_word_of(reply)).run()
    hits = [b.key for b in at.button if b.key and b.key.startswith("hit-")]
    assert f"hit-{pictured.stem}-0" in hits
    assert any("orange-background" in m.value for m in at.markdown)

    at.button(key=f"hit-{pictured.stem}-0").click().run()
    assert at.query_params["session"] == pictured.stem and at.query_params["turn"] == "0"
    assert any("Search match" in c.value for c in at.caption)
    assert roles(at) == ["user", "assistant"] and len(at.get("image")) == 1


def test_open_shows_turns_recording_spoken_reply_timings_and_errors(app):
    at = app()
    log = voice_session(app.log_dir)
    at.query_params["session"] = log.session_id
    history(at)
    assert roles(at) == ["user", "assistant"]
    assert len(at.get("audio")) == 2  # the user's recording and the spoken reply
    assert any("Transcript" in c.value for c in at.caption)
    assert any("Speech to text 0.50 s" in c.value for c in at.caption)
    assert any("Speech failed" in e.value for e in at.error)
    assert len(at.get("download_button")) == 2  # Markdown and JSON


def test_delete_removes_files_and_index_rows(app):
    at = app()
    log = voice_session(app.log_dir)
    at.query_params["session"] = log.session_id
    history(at)
    at.button(key="confirm-delete").click().run()
    assert not at.exception
    assert not log.path.exists() and not list((app.log_dir / "media").iterdir())
    assert HistoryIndex(app.log_dir).count() == 0 and "session" not in at.query_params
    assert any("Deleted the session" in s.value for s in at.success)


def test_resume_continues_the_session_in_the_chat(app):
    at = ask(app(), "What is in this picture?", png_bytes())
    first = at.session_state["chat"].session_id
    at.sidebar.button[0].click().run()  # New session: the first one is only in the log now
    at.query_params["session"] = first
    history(at)
    at.button[1].click().run()  # Continue in chat
    assert not at.exception
    assert roles(at) == ["user", "assistant"] and at.chat_message[0].markdown[-1].value == "What is in this picture?"
    assert len(at.chat_message[0].get("image")) == 1
    at.switch_page("pages/chat.py")  # AppTest's next run would otherwise go back to the page it last set
    ask(at, "And what else?")
    assert roles(at) == ["user", "assistant", "user", "assistant"]
    (path,) = list_session_files(app.log_dir)  # nothing new was created: the old log goes on
    exchanges = read_session(path).conversation.exchanges
    assert path.stem == first and [e.question.text for e in exchanges] == ["What is in this picture?", "And what else?"]
    assert all(e.answer for e in exchanges)


@pytest.mark.parametrize("bad", ["../../etc/passwd", "/etc/passwd", "20260101-000000-abcdef/../x", "x" * 300])
def test_a_session_id_from_the_url_never_leaves_log_dir(app, bad):
    at = app()
    at.query_params["session"] = bad
    history(at)
    assert any("does not name a session" in e.value for e in at.error)


def test_an_unknown_session_id_says_so(app):
    at = app()
    at.query_params["session"] = "20200101-000000-abcdef"
    history(at)
    assert any("not in the log folder" in w.value for w in at.warning)


def test_signed_in_users_see_only_their_own_sessions(app):
    alice = app()
    alice.user = {"is_logged_in": True, "email": "alice@example.com", "sub": "alice", "iss": "https://id.example"}
    ask(alice, "Alice's secret question")
    bob = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120)
    bob.user = {"is_logged_in": True, "email": "bob@example.com", "sub": "bob", "iss": "https://id.example"}
    bob.run()
    history(bob)
    assert open_buttons(bob) == [] and any("No sessions yet" in i.value for i in bob.info)

    history(alice)
    assert len(open_buttons(alice)) == 1
    alice_dir = user_log_dir(app.log_dir, "https://id.example|alice")
    assert len(list_session_files(alice_dir)) == 1 and list_session_files(app.log_dir) == []


def test_sign_in_is_required_when_configured(app):
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120)
    at.user = {"is_logged_in": False}
    at.run()
    assert not at.exception and not at.chat_input
    assert any(b.label == "Sign in" for b in at.button)


def old_session_with_bad_images(log_dir) -> SessionLog:
    """A log from before uploads were normalised: its media are a 40000×1 strip, a file that is no
    image at all, and a 16-bit grey PNG, each stored as it came."""
    strip, grey = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (40_000, 1), "blue").save(strip, "PNG")
    Image.fromarray(np.full((60, 80), 40_000, np.uint16)).save(grey, "PNG")
    media = {"strip": strip.getvalue(), "broken": b"\x89PNG\r\n\x1a\n not really", "grey": grey.getvalue()}
    for data in media.values():
        save_media(log_dir, data, digest(data), "png")
    log = SessionLog.create(log_dir, model="tiny")
    for turn, (name, data) in enumerate(media.items()):
        log.question(turn, Question(f"What is the {name} picture?", image=digest(data)))
        log.answer(turn, Answer(f"It is a {name} picture."))
    return log


def test_a_session_whose_images_are_bad_is_listed_opened_and_continued(app):
    at = app()
    log = old_session_with_bad_images(app.log_dir)
    history(at)
    assert open_buttons(at) == [f"open-{log.session_id}"]
    assert at.get("image")  # the row's thumbnails: the strip and the grey one; the broken one left out
    at.button(key=f"open-{log.session_id}").click().run()
    assert not at.exception, at.exception
    assert roles(at) == ["user", "assistant"] * 3 and len(at.get("image")) == 2
    assert any("cannot be shown" in c.value for c in at.caption)
    at.button[1].click().run()  # Continue in chat
    assert not at.exception, at.exception
    assert not at.error and roles(at) == ["user", "assistant"] * 3
    assert any("cannot be shown" in c.value for c in at.caption)
    at.switch_page("pages/chat.py")
    ask(at, "And the grey one, once more?")  # the model sees the last (grey) picture, normalised
    (path,) = list_session_files(app.log_dir)
    exchanges = read_session(path).conversation.exchanges
    assert path.stem == log.session_id and len(exchanges) == 4 and exchanges[-1].answer.status == "complete"
