"""A session's log is bounded (issue 24): past MAX_SESSION_LOG_BYTES nothing more is written, its last
line says so, the page is told, and the conversation goes on; a traceback is kept to its first part."""

import pytest

from core.chat.session import ChatSession
from core.conversation import Answer, Question
from core.limits import MAX_LOGGED_DETAIL_CHARS
from core.store import session_log
from core.store.session_log import LOG_FULL, read_session

LIMIT = 8 * 1024


@pytest.fixture
def small_limit(monkeypatch):
    monkeypatch.setattr(session_log, "MAX_SESSION_LOG_BYTES", LIMIT)


def test_past_its_limit_a_log_stops_growing_says_so_and_the_conversation_goes_on(settings, small_limit):
    session = ChatSession(settings)
    for number in range(40):
        index = session.ask(Question(f"question {number} " + "word " * 40))
        session.answer(index, Answer("answer " * 40))
    size = session.log.path.stat().st_size
    assert size <= LIMIT  # before: about 40 x 500 bytes
    assert len(session.conversation.exchanges) == 40  # the conversation in memory goes on
    assert sum(getattr(item, "text", "") == LOG_FULL for item in session.conversation.items) == 1  # told once
    logged = read_session(session.log.path)
    assert logged.conversation.items[-1].text == LOG_FULL and logged.notes == []
    assert all(e.answer is not None for e in logged.conversation.exchanges[:-1])
    session.ask(Question("one more"))
    assert session.log.path.stat().st_size == size and session.save_problem is None


def test_an_error_record_keeps_the_first_part_of_its_traceback(settings):
    session = ChatSession(settings)
    index = session.ask(Question("hi"))
    session.error(index, "boom", "Traceback\n" + "  frame\n" * 500_000)
    (error,) = read_session(session.log.path).errors
    assert len(error["detail"]) == MAX_LOGGED_DETAIL_CHARS  # before: 4 MB in one line
