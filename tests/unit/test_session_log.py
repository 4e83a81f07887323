import json

import pytest

from core.conversation import Answer, Notice, Question
from core.store.session_log import FORMAT_VERSION, SessionLog, media_path, read_session, save_media, session_path


def write_session(log_dir):
    log = SessionLog.create(log_dir, model="fake")
    log.question(0, Question("What is it?", image="a" * 32))
    log.answer(0, Answer("A car.", timings={"ttft_s": 0.1}))
    log.notice(Notice("That file is not an image."))
    log.question(1, Question("Colour?", source="voice", audio="b" * 32))
    log.answer(1, Answer("Red", status="partial", note="cut"))
    log.feedback(1, 1)
    return log


def test_round_trip(tmp_path):
    log = write_session(tmp_path)
    session = read_session(log.path)
    assert session.notes == [] and session.version == FORMAT_VERSION
    assert session.session_id == log.session_id and session.header["model"] == "fake"
    items = session.conversation.items
    assert items[0].question == Question("What is it?", image="a" * 32)
    assert items[0].answer == Answer("A car.", timings={"ttft_s": 0.1})
    assert items[1] == Notice("That file is not an image.")
    assert items[2].answer == Answer("Red", status="partial", note="cut", feedback=1)


def test_each_exchange_carries_the_turn_number_of_its_log_lines(tmp_path):
    log = write_session(tmp_path)
    log.question(5, Question("Numbered by another tab"))  # numbers need not be consecutive
    with open(log.path, "a") as f:
        f.write(json.dumps({"type": "question", "turn": "7", "text": "a number as text"}) + "\n")
    session = read_session(log.path)
    assert [e.turn.number for e in session.conversation.exchanges] == [0, 1, 5]
    assert any("could not be used" in note and "'7'" in note for note in session.notes)


def test_regenerated_answer_and_edited_question_replace_the_old_ones(tmp_path):
    log = write_session(tmp_path)
    log.answer(1, Answer("Blue"))
    assert read_session(log.path).conversation.exchanges[1].answer.text == "Blue"
    log.question(1, Question("Which colour?"))
    exchanges = read_session(log.path).conversation.exchanges
    assert len(exchanges) == 2 and exchanges[1].question.text == "Which colour?" and exchanges[1].answer is None


def test_truncated_last_line_is_ignored_with_a_note(tmp_path):
    log = write_session(tmp_path)
    with open(log.path, "a") as f:
        f.write('{"type": "answer", "turn": 1, "text": "Gre')  # crash mid-write
    session = read_session(log.path)
    assert len(session.conversation.exchanges) == 2
    assert session.conversation.exchanges[1].answer.text == "Red"
    assert any("cut off" in note for note in session.notes)
    log.answer(1, Answer("Green"))  # appending after a crash starts a fresh line
    assert read_session(log.path).conversation.exchanges[1].answer.text == "Green"


def test_garbage_line_in_the_middle_is_skipped(tmp_path):
    log = write_session(tmp_path)
    lines = log.path.read_text().splitlines()
    lines.insert(2, "\x00\x01 not json")
    log.path.write_text("\n".join(lines) + "\n")
    session = read_session(log.path)
    assert len(session.conversation.exchanges) == 2
    assert any("not valid JSON" in note for note in session.notes)


def test_version_1_logs_are_upgraded(tmp_path):
    path = session_path(tmp_path, "20250101-120000-abcdef")
    path.parent.mkdir(parents=True)
    records = [
        {"type": "session", "v": 1, "id": "20250101-120000-abcdef", "created": "2025-01-01T12:00:00"},
        {"type": "user", "text": "What is it?", "image": "c" * 32},
        {"type": "assistant", "text": "A boat.", "ttft_s": 0.5, "total_s": 2.0},
        {"type": "user", "text": "Where?", "audio": "d" * 32, "language": "fr"},
        {"type": "assistant", "text": "At sea."},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    session = read_session(path)
    assert session.version == 1 and "upgraded from format version 1" in session.notes
    first, second = session.conversation.exchanges
    assert first.question == Question("What is it?", image="c" * 32)
    assert first.answer.timings == {"ttft_s": 0.5, "total_s": 2.0}
    assert second.question.source == "voice" and second.question.language == "fr"
    assert second.answer.text == "At sea."


def test_blank_log_reads_as_empty(tmp_path):
    path = session_path(tmp_path, "20250101-120000-abcdef")
    path.parent.mkdir(parents=True)
    path.write_text("")
    assert read_session(path).conversation.items == []


def test_media_is_stored_once_by_digest(tmp_path):
    first = save_media(tmp_path, b"abc", "e" * 32, "png")
    mtime = first.stat().st_mtime_ns
    assert save_media(tmp_path, b"abc", "e" * 32, "png") == first
    assert first.stat().st_mtime_ns == mtime
    assert media_path(tmp_path, "e" * 32) == first
    assert media_path(tmp_path, "../../etc/passwd") is None


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "20250101-120000-abcdef/../../x", ""])
def test_session_ids_cannot_escape_the_log_dir(tmp_path, bad):
    with pytest.raises(ValueError):
        session_path(tmp_path, bad)


def test_sessions_created_in_the_same_second_never_share_a_file(tmp_path, monkeypatch):
    ids = iter(["20260101-000000-aaaaaa", "20260101-000000-aaaaaa", "20260101-000000-bbbbbb"])
    monkeypatch.setattr("core.store.session_log.new_session_id", lambda: next(ids))
    first, second = SessionLog.create(tmp_path), SessionLog.create(tmp_path)
    assert (first.session_id, second.session_id) == ("20260101-000000-aaaaaa", "20260101-000000-bbbbbb")
    assert read_session(first.path).session_id == first.session_id


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "..", "a/b", "20260101-000000-abcdef/../x", "", None, 3])
def test_session_path_refuses_anything_but_a_session_id(tmp_path, bad):
    with pytest.raises(ValueError):
        session_path(tmp_path, bad)


def test_media_path_ignores_links_leading_outside(tmp_path):
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"x")
    (tmp_path / "logs" / "media").mkdir(parents=True)
    (tmp_path / "logs" / "media" / f"{'d' * 32}.png").symlink_to(outside)
    assert media_path(tmp_path / "logs", "d" * 32) is None


def test_a_live_session_and_its_log_read_back_are_the_same_conversation(settings):
    """ChatSession applies each record with the function that read_session applies it with again:
    edits, regenerated answers, feedback, notices and a cut-off reply come back as they were."""
    from core.chat.session import ChatSession

    session = ChatSession(settings)
    first = session.ask(Question("What is it?"))
    session.answer(first, Answer("A car."))
    session.feedback(first, 0)
    session.notify(Notice("That file is not an image.", level="warning"))
    second = session.ask(Question("Colour?", source="voice", audio="b" * 32))
    session.answer(second, Answer("Red."))
    session.edit(second, "Which colour?")
    session.answer(second, Answer("Dark red."))
    session.cut_off(second)
    session.feedback(second, 1)
    back = read_session(session.log.path).conversation
    assert back.items == session.conversation.items
    assert [e.turn.number for e in back.exchanges] == [e.turn.number for e in session.conversation.exchanges] == [0, 1]
    assert back.items[2].question.text == "Which colour?" and back.items[2].answer.status == "stopped"
    assert back.items[2].answer.feedback == 1 and back.items[0].answer.feedback == 0


def test_a_record_that_does_not_fit_is_refused_by_the_one_apply():
    from core.conversation import Conversation
    from core.store.session_log import answer_record, apply, question_record

    conversation = Conversation()
    with pytest.raises(KeyError):
        apply(conversation, answer_record(3, Answer("No question.")))
    with pytest.raises(TypeError):
        apply(conversation, {**question_record(0, Question("Hi?")), "turn": "zero"})
    apply(conversation, {"type": "error", "turn": None, "message": "boom"})  # changes nothing
    assert conversation.items == []
