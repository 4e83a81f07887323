"""The session log when its folder fails (a file in its place, removed mid-session), two ChatSession
objects continuing one session, and the length limit of a question: real files, no mocks."""

import shutil
import threading

from core.chat.session import MAX_QUESTION_CHARS, ChatSession
from core.conversation import Answer, Notice, Question
from core.store.session_log import LogFolderError, SessionLog, media_path, read_session, save_media, session_path


def questions(path) -> list[str]:
    return [e.question.text for e in read_session(path).conversation.exchanges]


def chat(settings) -> ChatSession:
    return ChatSession(settings, meta={"model": "fake"})


def test_a_file_where_the_log_folder_should_be_keeps_the_records_until_it_is_a_folder(settings):
    settings.log_dir.write_text("not a folder")
    session = chat(settings)
    for number in range(2):
        index = session.ask(Question(f"question {number}"))
        session.answer(index, Answer(f"answer {number}"))
    save_media(settings.log_dir, b"RIFF-ish", "c" * 32, "wav")  # a recording: kept in memory too
    problem = session.save_problem
    assert isinstance(problem, LogFolderError) and str(settings.log_dir) in problem.message and problem.hint
    assert session.log.waiting == 5  # header, two questions, two answers

    settings.log_dir.unlink()  # fixed by the user
    index = session.ask(Question("question 2"))
    assert session.save_problem is None and session.log.waiting == 0
    assert questions(session.log.path) == ["question 0", "question 1", "question 2"]
    assert read_session(session.log.path).header["model"] == "fake"
    assert session.turn_number(index) == 2
    assert media_path(settings.log_dir, "c" * 32).read_bytes() == b"RIFF-ish"


def test_a_log_folder_removed_mid_session_is_made_again_with_every_record(settings):
    session = chat(settings)
    index = session.ask(Question("before"))
    session.answer(index, Answer("first answer"))
    shutil.rmtree(settings.log_dir)
    index = session.ask(Question("after"))
    session.answer(index, Answer("second answer"))
    assert session.save_problem is None
    logged = read_session(session.log.path)
    assert [e.question.text for e in logged.conversation.exchanges] == ["before", "after"]
    assert [e.answer.text for e in logged.conversation.exchanges] == ["first answer", "second answer"]
    assert logged.header["id"] == session.session_id and logged.notes == []


def test_a_removed_log_of_a_continued_session_is_written_again_whole(settings):
    first = chat(settings)
    first.answer(first.ask(Question("old question")), Answer("old answer"))
    resumed = ChatSession.resume(settings, first.session_id)
    session_path(settings.log_dir, first.session_id).unlink()
    resumed.ask(Question("new question"))
    assert questions(resumed.log.path) == ["old question", "new question"]


def test_two_sessions_continuing_one_log_never_share_a_turn_number(settings):
    original = chat(settings)
    original.answer(original.ask(Question("turn zero")), Answer("zero"))
    tab_a = ChatSession.resume(settings, original.session_id)
    tab_b = ChatSession.resume(settings, original.session_id)
    a = tab_a.ask(Question("from tab A"))
    b = tab_b.ask(Question("from tab B"))
    tab_b.answer(b, Answer("answer B"))
    tab_a.answer(a, Answer("answer A"))
    exchanges = read_session(original.log.path).conversation.exchanges
    assert [e.question.text for e in exchanges] == ["turn zero", "from tab A", "from tab B"]
    assert [e.answer.text for e in exchanges] == ["zero", "answer A", "answer B"]
    assert {tab_a.turn_number(a), tab_b.turn_number(b)} == {1, 2}


def test_many_threads_continuing_one_log_lose_no_question(settings):
    original = chat(settings)
    original.ask(Question("start"))
    tabs = [ChatSession.resume(settings, original.session_id) for _ in range(6)]
    barrier = threading.Barrier(len(tabs))

    def talk(number, tab):
        barrier.wait()
        for repeat in range(5):
            tab.answer(tab.ask(Question(f"tab {number} question {repeat}")), Answer(f"tab {number} answer {repeat}"))

    threads = [threading.Thread(target=talk, args=item) for item in enumerate(tabs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    exchanges = read_session(original.log.path).conversation.exchanges
    asked = {f"tab {n} question {r}" for n in range(6) for r in range(5)}
    assert {e.question.text for e in exchanges} == asked | {"start"} and len(exchanges) == 31
    assert all(e.answer.text == e.question.text.replace("question", "answer") for e in exchanges[1:])


def test_an_edit_keeps_its_turn_number(settings):
    session = chat(settings)
    session.ask(Question("first"))
    index = session.ask(Question("second"))
    session.edit(index, "second, edited")
    assert questions(session.log.path) == ["first", "second, edited"]


def test_a_question_longer_than_the_limit_is_cut_with_a_notice(settings):
    session = chat(settings)
    index = session.ask(Question("x" * (MAX_QUESTION_CHARS + 500)))
    assert len(session.conversation.items[index].question.text) == MAX_QUESTION_CHARS
    notices = [i for i in session.conversation.items if isinstance(i, Notice)]
    assert len(notices) == 1 and f"{MAX_QUESTION_CHARS:,}" in notices[0].text
    logged = read_session(session.log.path)
    assert len(logged.conversation.exchanges[0].question.text) == MAX_QUESTION_CHARS


def test_session_log_create_in_an_unwritable_place_does_not_raise(tmp_path):
    (tmp_path / "logs").write_text("a file")
    log = SessionLog.create(tmp_path / "logs", model="fake")
    log.question(0, Question("kept"))
    assert log.problem is not None and log.waiting == 2
    (tmp_path / "logs").unlink()
    assert log.flush() and questions(log.path) == ["kept"]
