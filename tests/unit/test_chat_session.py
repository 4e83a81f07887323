"""ChatSession's rules for what stops a reply and what a stale button may change (the page only asks)."""

from core.chat import turn
from core.chat.session import BEFORE_REPLY, ChatSession
from core.conversation import Question
from core.engines.api import STOP_PRESSED, TALKED_OVER, GenerationOptions, Interrupt
from core.store.session_log import read_session
from tests.fakes import FakeChatModel

OPTIONS = GenerationOptions(max_new_tokens=16)


def answered(settings, *questions: str) -> tuple[ChatSession, turn.Engines]:
    engines = turn.Engines(FakeChatModel(*[f"Reply to {q}" for q in questions]))
    session = ChatSession(settings)
    for question in questions:
        asked = turn.ask(session, engines, turn.TurnInput(text=question))
        list(turn.answer(session, engines, asked.index, OPTIONS, speak=False))
    return session, engines


def test_a_stale_button_changes_nothing(settings):
    session, _ = answered(settings, "one", "two")
    first, last = 0, session.conversation.last_exchange_index()
    assert not session.redo("regenerate", first) and not session.redo("edit", first, "changed")
    assert session.exchange(first).answer.text == "Reply to one" and session.exchange(first).question.text == "one"
    asked = session.ask(Question("three"))  # a reply still being written: no answer yet
    assert not session.redo("regenerate", asked) and session.exchange(last).answer is not None


def test_redo_on_the_last_answered_exchange_drops_its_answer_and_edits_the_question(settings):
    session, _ = answered(settings, "one", "two")
    last = session.conversation.last_exchange_index()
    assert session.redo("edit", last, "  two, edited  ")
    assert session.exchange(last).question.text == "two, edited" and session.exchange(last).answer is None
    session, _ = answered(settings, "one")
    assert session.redo("edit", 0, "   ") and session.exchange(0).question.text == "one"  # blank: the question stays
    session, _ = answered(settings, "one")
    assert session.redo("regenerate", 0) and session.exchange(0).answer is None


def test_stop_reaches_the_reply_being_written_through_its_interrupt(settings):
    session = ChatSession(settings)
    session.stop()  # nothing being written: nothing happens
    interrupt = Interrupt()
    session.replying(interrupt)
    session.stop()
    assert interrupt.reason == STOP_PRESSED


def test_talking_over_stops_replies_to_that_utterance_and_earlier_ones_only(settings):
    session = ChatSession(settings)
    later, typed = Interrupt(), Interrupt()
    session.replying(later, heard=3)
    session.talked_over(2)
    assert not later.is_set()  # a reply to a later utterance goes on
    session.talked_over(3)
    assert later.reason == TALKED_OVER
    session.replying(typed, heard=0)
    session.talked_over(5)
    assert not typed.is_set()  # a typed question's reply is ended by the rerun, not by this rule
    late = Interrupt()
    session.replying(late, heard=4)  # its utterance was talked over before its reply began
    assert late.reason == TALKED_OVER and session.talked_over_upto == 5
    session.talked_over(1)
    assert session.talked_over_upto == 5  # never goes back


def test_a_barge_in_before_the_reply_began_leaves_the_question_unanswered_and_marked(settings):
    session, _ = answered(settings, "one")
    index = session.ask(Question("two"))
    session.barge_in(playing=None)
    answer = session.exchange(index).answer
    assert answer.status == "stopped" and answer.text == "" and answer.note == BEFORE_REPLY
    assert read_session(session.log.path).conversation.exchanges[-1].answer == answer  # logged


def test_a_barge_in_over_a_spoken_reply_marks_it_stopped_and_keeps_its_text(settings):
    session, _ = answered(settings, "one", "two")
    last = session.conversation.last_exchange_index()
    session.barge_in(playing=0)  # the voice playing was an older reply's: the last one is left as it is
    assert session.exchange(last).answer.status == "complete"
    session.barge_in(playing=last)
    answer = session.exchange(last).answer
    assert answer.status == "stopped" and answer.text == "Reply to two"
    assert answer.note.startswith("Interrupted while it was being spoken.")
    session.barge_in(playing=last)  # again: nothing more to mark
    assert session.exchange(last).answer == answer
    assert read_session(session.log.path).conversation.exchanges[-1].answer == answer


def test_a_barge_in_on_an_empty_conversation_does_nothing(settings):
    session = ChatSession(settings)
    session.barge_in(playing=None)
    assert session.conversation.items == [] and session.session_id is None
