"""Faults of the storage under the running app (AppTest through streamlit_app.py, the tiny LLaVA):
LOG_DIR a file, LOG_DIR removed mid-session, a damaged History index. In every case the page raises
nothing, says what is wrong and what to do, the session log ends up holding every question asked,
and the next turn works. (Tests run as root, which ignores permissions: a file where the folder
should be stands in for an unwritable folder.)"""

import os
import shutil
import sqlite3

import pytest

from core.chat.session import MAX_QUESTION_CHARS
from core.store.session_log import list_session_files, media_path, read_session
from tests.app.conftest import ask, roles
from tests.conftest import png_bytes

pytestmark = pytest.mark.slow


def logged_questions(log_dir) -> list[str]:
    (path,) = list_session_files(log_dir)
    return [e.question.text for e in read_session(path).conversation.exchanges]


def not_saving(at) -> list[str]:
    return [w.value for w in at.warning if "not being saved" in w.value]


def history(at):
    at.switch_page("pages/history.py").run()
    assert not at.exception, at.exception
    return at


def chat(at):
    at.switch_page("pages/chat.py").run()
    assert not at.exception, at.exception
    return at


def test_log_dir_a_file_the_chat_goes_on_and_everything_is_saved_once_it_is_a_folder(app):
    at = ask(app(), "first question, saved")
    app.log_dir.rename(app.log_dir.with_name("moved-away"))
    app.log_dir.write_text("someone put a file here")

    ask(at, "second question, with an image", png_bytes())  # no exception: ask() checks
    assert roles(at) == ["user", "assistant"] * 2
    (warning,) = not_saving(at)
    assert str(app.log_dir) in warning and "is a file" in warning and "LOG_DIR" in warning
    ask(at, "third question")
    assert roles(at).count("assistant") == 3 and not_saving(at)

    history(at)  # History says what is wrong instead of a traceback
    assert any(str(app.log_dir) in e.value and "cannot be shown" in e.value for e in at.error)

    app.log_dir.unlink()  # fixed
    shutil.copytree(app.log_dir.with_name("moved-away"), app.log_dir)
    chat(at)
    assert not not_saving(at)
    ask(at, "fourth question, all saved")
    assert logged_questions(app.log_dir) == ["first question, saved", "second question, with an image",
                                             "third question", "fourth question, all saved"]
    exchanges = read_session(list_session_files(app.log_dir)[0]).conversation.exchanges
    assert all(e.answer is not None for e in exchanges)
    assert media_path(app.log_dir, exchanges[1].question.image)  # the image waited in memory too


def test_log_dir_removed_mid_session_is_made_again_with_every_question(app):
    at = ask(app(), "before the folder went away")
    shutil.rmtree(app.log_dir)
    ask(at, "after it went away")
    assert not not_saving(at)  # made again at once: nothing to warn about
    ask(at, "and one more")
    assert roles(at).count("assistant") == 3
    assert logged_questions(app.log_dir) == ["before the folder went away", "after it went away", "and one more"]
    history(at)
    assert len([b for b in at.button if b.key and b.key.startswith("open-")]) == 1


@pytest.mark.parametrize("damage", ["random bytes", "cut in half"])
def test_a_damaged_index_is_rebuilt_and_history_lists_every_session(app, damage):
    at = ask(app(), "a question about a crimson umbrella")
    history(at)
    index = app.log_dir / "index.sqlite3"
    with sqlite3.connect(index) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = index.read_bytes()
    index.write_bytes(os.urandom(len(data)) if damage == "random bytes" else data[: len(data) // 2])

    history(at)
    assert [b.key for b in at.button if b.key and b.key.startswith("open-")] == \
        [f"open-{p.stem}" for p in list_session_files(app.log_dir)]
    at.text_input(key="query").set_value("crimson").run()
    assert not at.exception and any(b.key and b.key.startswith("hit-") for b in at.button)

    chat(at)
    ask(at, "the next turn works")
    assert logged_questions(app.log_dir) == ["a question about a crimson umbrella", "the next turn works"]


def test_the_chat_box_takes_at_most_the_question_limit(app):
    at = app()
    assert at.chat_input[0].proto.max_chars == MAX_QUESTION_CHARS
