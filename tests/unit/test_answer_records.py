"""Every question ends with an answer record, whatever interrupts it (issue 24 finding 4, issue 21 item 4,
issue 26 item 3); speech that comes while a question only waits is a second question whose answer
covers both, not a barge-in that drops the first."""

import random

import pytest

from core.chat import turn
from core.chat.fair_queue import queue_for
from core.chat.session import BEFORE_REPLY, JOINED, ChatSession
from core.engines.api import GenerationOptions
from core.store.session_log import read_session
from tests.fakes import FakeChatModel, FakeSpeaker, FakeTranscriber, tone, wav_bytes

OPTIONS = GenerationOptions(temperature=0)
WAV = wav_bytes(tone(1.0))


@pytest.fixture
def engines():
    return turn.Engines(FakeChatModel(), FakeTranscriber(), FakeSpeaker())


def logged_answers(session):
    return [e.answer for e in read_session(session.log.path).conversation.exchanges]


def spoken(session, engines, text="what is in the picture"):
    engines.transcriber.text = text
    return turn.ask(session, engines, turn.TurnInput(audio=WAV))


def test_a_reply_closed_before_its_first_event_is_recorded(settings, engines):
    session = ChatSession(settings)
    asked = turn.ask(session, engines, turn.TurnInput(text="hi"))
    turn.answer(session, engines, asked.index, OPTIONS).close()  # a rerun cut in before the page read it
    (answer,) = logged_answers(session)  # before: no answer record at all
    assert answer.status == "stopped" and answer.text == "" and answer.note == BEFORE_REPLY


def test_a_question_that_only_waits_is_answered_together_with_the_next(settings, engines):
    session = ChatSession(settings)
    first = spoken(session, engines, "what is in the picture")  # its reply never began (a rerun, the next utterance)
    second = spoken(session, engines, "and what colour is it")
    assert second.joined == (first.index,)  # the page shows it with the answer that covers it
    reply = list(turn.answer(session, engines, second.index, OPTIONS))
    seen, _ = engines.chat.calls[-1]
    assert [e.question.text for e in seen] == ["what is in the picture", "and what colour is it"]  # one answer, both
    first_answer, second_answer = logged_answers(session)  # before: the first had no answer record
    assert first_answer.status == "stopped" and first_answer.note == JOINED
    assert second_answer == reply[-1].answer and second_answer.status == "complete"
    assert session.awaits_answer(first.index) is False and session.awaits_answer(second.index) is False


def test_settle_gives_an_unanswered_question_a_record_that_is_still_to_come(settings, engines):
    session = ChatSession(settings)
    asked = turn.ask(session, engines, turn.TurnInput(text="hi"))
    session.settle(asked.index)
    assert session.awaits_answer(asked.index)  # the next run answers it
    list(turn.answer(session, engines, asked.index, OPTIONS))
    session.settle(asked.index)  # an answered question is left as it is
    assert logged_answers(session)[0].status == "complete" and not session.awaits_answer(asked.index)


def test_talking_while_the_question_waits_for_the_model_does_not_drop_it(settings, engines):
    session = ChatSession(settings)
    other = queue_for(engines.chat.lock).join()  # another person's turn holds the model
    try:
        asked = spoken(session, engines)
        reply = turn.answer(session, engines, asked.index, OPTIONS)
        session.replying(reply.interrupt, heard=1)
        assert isinstance(next(reply), turn.Waiting)
        session.talked_over(1)  # the person speaks again while it waits
        list(reply)
    finally:
        other.leave()
    assert session.exchange(asked.index).answer.note == BEFORE_REPLY and session.awaits_answer(asked.index)


def test_a_question_talked_over_before_its_reply_waits_for_the_one_being_said(settings, engines):
    """Answered again by a later run it would speak over the person; it stays to be answered with the next question."""
    session = ChatSession(settings)
    asked = spoken(session, engines, "what is in the picture")
    session.replying(turn.answer(session, engines, asked.index, OPTIONS).interrupt, heard=1, index=asked.index)
    session.talked_over(1)  # the person starts speaking again before the reply began (a barge-in)
    session.settle(asked.index)  # the run ends
    again = turn.answer(session, engines, asked.index, OPTIONS)  # what the page's next run tries
    session.replying(again.interrupt, session.heard_of(asked.index), asked.index)
    assert [type(e) for e in again] == [turn.Done] and session.awaits_answer(asked.index)
    assert engines.chat.calls == []  # the model never started on it
    second = spoken(session, engines, "the red thing on the left")
    list(turn.answer(session, engines, second.index, OPTIONS))
    assert [e.question.text for e in engines.chat.calls[-1][0]] == ["what is in the picture", "the red thing on the left"]
    assert session.exchange(asked.index).answer.note == JOINED


def test_stop_while_waiting_is_a_stop(settings, engines):
    session = ChatSession(settings)
    other = queue_for(engines.chat.lock).join()
    try:
        asked = turn.ask(session, engines, turn.TurnInput(text="hi"))
        reply = turn.answer(session, engines, asked.index, OPTIONS)
        session.replying(reply.interrupt)
        next(reply)
        session.stop()
        list(reply)
    finally:
        other.leave()
    assert not session.awaits_answer(asked.index) and "waiting" in session.exchange(asked.index).answer.note


def test_a_spoken_question_that_waits_hears_it_and_a_typed_one_sees_it(settings, engines):
    session = ChatSession(settings)
    other = queue_for(engines.chat.lock).join()
    try:
        waits = [next(turn.answer(session, engines, asked.index, OPTIONS))
                 for asked in (spoken(session, engines), turn.ask(session, engines, turn.TurnInput(text="hi")))]
    finally:
        other.leave()
    voice, typed = waits
    assert isinstance(voice, turn.Waiting) and voice.speech is not None and voice.speech.audio
    assert engines.speaker.said[0][0] == voice.message and "ahead" in voice.message or "next" in voice.message
    assert isinstance(typed, turn.Waiting) and typed.speech is None


def page_turn(session, engines, utterance_id: int, cut: str, rng: random.Random) -> None:
    """One utterance as pages/chat.py's ask() takes it, cut where a rerun or a barge-in can cut it:
    before the reply began, with the reply made but never read, while it waits for the model (another
    person's turn holds it), or while it is written."""
    engines.transcriber.text = f"question {utterance_id}"
    asked = turn.ask(session, engines, turn.TurnInput(audio=WAV))
    other = queue_for(engines.chat.lock).join() if cut == "waiting" else None
    try:
        if cut == "before":
            return
        reply = turn.answer(session, engines, asked.index, OPTIONS)
        session.replying(reply.interrupt, utterance_id)
        try:
            if cut == "unread":
                session.talked_over(utterance_id)
                return
            for number, event in enumerate(reply):
                if (cut == "waiting" and isinstance(event, turn.Waiting)) or (cut == "written" and number == 2):
                    session.talked_over(utterance_id)  # the barge-in: the person speaks over it
                    if rng.random() < 0.5:
                        return  # and the rerun it causes ends the page's loop
        finally:
            reply.close()
            session.barge_in(asked.index if cut == "written" else None)
    finally:
        if other is not None:
            other.leave()
        session.settle(asked.index)  # the page's finally


def test_after_a_burst_of_barge_ins_every_question_has_an_answer_record(settings):
    rng = random.Random(21)
    engines = turn.Engines(FakeChatModel(*["One two three four five six."] * 200), FakeTranscriber(), FakeSpeaker())
    session = ChatSession(settings)
    cuts = [rng.choice(["before", "unread", "waiting", "written", "none"]) for _ in range(40)] + ["none"]
    for utterance_id, cut in enumerate(cuts, start=1):
        page_turn(session, engines, utterance_id, cut, rng)
    answers = logged_answers(session)
    assert len(answers) == len(cuts) and all(a is not None for a in answers)  # a record for every question
    assert answers[-1].status == "complete"
    for answer, cut in zip(answers[:-1], cuts):
        if cut in ("before", "unread", "waiting"):  # only waited: the next question's answer covers it
            assert (answer.note, answer.text) == (JOINED, "")
        else:
            assert answer.status in ("complete", "stopped") and answer.text  # answered, or cut while written
    asked_together = [len(exchanges) for exchanges, _ in engines.chat.calls]
    assert max(asked_together) > 1  # a question that waited went to the model with the next one
