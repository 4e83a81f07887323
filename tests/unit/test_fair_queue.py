"""First come, first served: the queue itself, turns from many sessions, and loading models once."""

import threading
import time
from dataclasses import replace

import pytest

from core.chat import turn
from core.chat.fair_queue import FairQueue, queue_for
from core.chat.session import ChatSession
from core.engines.api import STOP_PRESSED, GenerationOptions, Interrupt
from tests.fakes import FakeChatModel

OPTIONS = GenerationOptions(temperature=0)
SESSIONS = 8


def test_tickets_are_served_in_the_order_they_were_taken():
    queue = FairQueue()
    first = queue.join()
    assert first.wait(timeout=0) and first.ahead == 0 and queue.lock.locked()
    waiting = [queue.join() for _ in range(SESSIONS - 1)]
    assert [t.ahead for t in waiting] == list(range(1, SESSIONS))
    served, served_lock = [], threading.Lock()

    def take(i: int) -> None:
        assert waiting[i].wait(timeout=10)
        with served_lock:
            served.append(i)
        time.sleep(0.01)
        waiting[i].leave()

    # Start the threads in reverse order: a plain lock would let any of them in first.
    threads = [threading.Thread(target=take, args=(i,)) for i in reversed(range(SESSIONS - 1))]
    for thread in threads:
        thread.start()
    time.sleep(0.05)
    assert served == []  # all wait while the first ticket holds the lock
    first.leave()
    for thread in threads:
        thread.join(timeout=10)
    assert served == list(range(SESSIONS - 1))
    assert len(queue) == 0 and not queue.lock.locked()


def test_giving_up_a_place_moves_the_others_up():
    queue = FairQueue()
    holder, second, third = queue.join(), queue.join(), queue.join()
    assert holder.wait(0) and not third.wait(timeout=0.01)
    assert third.ahead == 2
    second.leave()  # that user pressed Stop while waiting
    assert third.ahead == 1 and not second.holding
    holder.leave()
    assert third.wait(timeout=1) and third.ahead == 0
    third.leave()
    third.leave()  # twice is harmless
    assert not queue.lock.locked()
    with pytest.raises(RuntimeError):
        third.wait(0)


def test_the_head_also_waits_for_whoever_holds_the_lock_directly():
    lock = threading.Lock()
    queue = queue_for(lock)
    assert queue_for(lock) is queue and queue_for(threading.Lock()) is not queue
    lock.acquire()
    ticket = queue.join()
    assert not ticket.wait(timeout=0.05) and ticket.ahead == 0
    lock.release()
    assert ticket.wait(timeout=1) and lock.locked()
    ticket.leave()
    assert not lock.locked()


def ask(settings, engines, text):
    session = ChatSession(settings)
    asked = turn.ask(session, engines, turn.TurnInput(text=text))
    return session, turn.answer(session, engines, asked.index, OPTIONS)


def test_turns_of_eight_sessions_are_answered_in_arrival_order_and_see_their_place(settings):
    model = FakeChatModel(delay_s=0.005)
    engines = turn.Engines(model)
    turns = [ask(settings, engines, f"q{i}") for i in range(SESSIONS)]
    first_events = [next(stream) for _, stream in turns]  # each session asks, in order
    assert isinstance(first_events[0], turn.Token)
    assert [e.ahead for e in first_events[1:]] == list(range(1, SESSIONS))
    assert all(isinstance(e, turn.Waiting) and str(e.ahead) in e.message for e in first_events[2:])
    assert "1 person" in first_events[1].message

    events = [[] for _ in turns]

    def finish(i: int) -> None:
        events[i].extend(turns[i][1])

    threads = [threading.Thread(target=finish, args=(i,)) for i in reversed(range(SESSIONS))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert [calls[0][-1].question.text for calls in model.calls] == [f"q{i}" for i in range(SESSIONS)]
    for i, (session, _) in enumerate(turns):
        assert isinstance(events[i][-1], turn.Done) and events[i][-1].answer.status == "complete"
        assert session.conversation.exchanges[0].answer.text == "ok."
        places = [e.ahead for e in [first_events[i], *events[i]] if isinstance(e, turn.Waiting)]
        assert places == sorted(places, reverse=True) and (i == 0 or places[0] == i)
    assert not model.lock.locked() and len(queue_for(model.lock)) == 0


def test_stop_while_waiting_leaves_the_queue_and_keeps_the_question(settings):
    model = FakeChatModel(delay_s=0.01)
    engines = turn.Engines(model)
    _, first = ask(settings, engines, "first")
    next(first)  # holds the model
    session, second = ask(settings, engines, "second")
    _, third = ask(settings, engines, "third")
    assert next(second).ahead == 1 and next(third).ahead == 2
    second.close()  # Stop (a rerun) while waiting
    assert session.conversation.exchanges[0].answer.status == "stopped"
    assert len(queue_for(model.lock)) == 2  # the holder and the third
    list(first)
    rest = list(third)
    assert rest[-1].answer.status == "complete" and len(model.calls) == 2


def test_stop_event_while_waiting_ends_the_turn_without_asking_the_model(settings):
    model = FakeChatModel()
    engines = turn.Engines(model)
    _, first = ask(settings, engines, "first")
    next(first)
    stop = Interrupt()
    session = ChatSession(settings)
    asked = turn.ask(session, engines, turn.TurnInput(text="second"))
    threading.Timer(0.3, stop.set, args=(STOP_PRESSED,)).start()  # the Stop button's
    events = list(turn.answer(session, engines, asked.index, OPTIONS, interrupt=stop))
    answer = events[-1].answer
    assert answer.status == "stopped" and answer.text == "" and "waiting" in answer.note
    assert len(model.calls) == 1
    list(first)
    assert not model.lock.locked()


def test_models_load_once_when_many_sessions_start_together(monkeypatch):
    """ui/resources.py loads the engines once per process, however many sessions start together."""
    from core.config import Settings
    from core.engines import vlm
    from ui import resources

    loads = []

    def slow_load(model_id, *args, **kwargs):
        loads.append(model_id)
        time.sleep(0.3)
        return FakeChatModel()

    monkeypatch.setattr(vlm.LlavaModel, "load", slow_load)
    settings = replace(Settings.from_env({"LLAVA_MODEL": "same-model", "TTS_ENGINE": "none", "STT_ENGINE": "openai-whisper"}),
                       whisper_model="/nowhere")  # a speech model that fails at once (the settings would refuse it)
    resources._slot.clear()
    start, got = threading.Barrier(SESSIONS), []

    def session():
        start.wait()
        got.append(resources.shared_engines(settings, lambda message: None).engines.chat)

    threads = [threading.Thread(target=session) for _ in range(SESSIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    resources._slot.clear()
    assert loads == ["same-model"] and len(got) == SESSIONS and all(m is got[0] for m in got)
