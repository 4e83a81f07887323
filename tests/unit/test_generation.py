"""The engines' contract: one Interrupt per reply, one Generation that streams and then holds its facts."""

import threading

from core.chat import turn
from core.chat.session import ChatSession
from core.conversation import Exchange, Question
from core.engines.api import HEARTBEAT, TALKED_OVER, Generation, GenerationInfo, GenerationOptions, Interrupt, generation
from tests.fakes import FakeChatModel


def test_an_interrupt_keeps_its_first_reason_whoever_sets_it_and_from_any_thread():
    interrupt = Interrupt()
    assert not interrupt.is_set() and interrupt.reason == "" and not interrupt.wait(0)
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append((i, interrupt.set(f"reason {i}")))) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [i for i, won in results if won]
    assert len(winners) == 1 and interrupt.reason == f"reason {winners[0]}"
    assert interrupt.is_set() and interrupt.wait(0)
    assert not interrupt.set("later") and interrupt.reason == f"reason {winners[0]}"


def test_a_generation_streams_text_and_heartbeats_of_one_type_then_holds_its_facts():
    @generation
    def stream():
        yield "Hello"
        yield HEARTBEAT
        yield " world"
        return GenerationInfo(kept_exchanges=2, prompt_tokens=10, completion_tokens=2, cached_tokens=8, prefill_s=0.01)

    result = stream()
    assert isinstance(result, Generation) and result.info is None
    assert list(result) == ["Hello", "", " world"]
    assert result.info == GenerationInfo(2, 10, 2, 8, 0.01)


def test_a_generation_closed_early_stops_its_engine_and_has_no_facts():
    closed = []

    @generation
    def stream():
        try:
            yield "a"
            yield "b"
        finally:
            closed.append(True)
        return GenerationInfo(1)

    result = stream()
    assert next(result) == "a"
    result.close()
    assert closed == [True] and result.info is None


def test_a_fake_model_stops_at_the_interrupt_and_says_what_it_wrote():
    model, interrupt = FakeChatModel("one two three four"), Interrupt()
    result = model.stream([Exchange(Question("Count."))], {}, GenerationOptions(), interrupt)
    assert next(result) == "one "
    interrupt.set("enough")
    assert list(result) == []
    assert result.info == GenerationInfo(kept_exchanges=1, prompt_tokens=1, completion_tokens=1)


def reply_to(settings, model, text: str, **kwargs):
    """A session with one typed question; its Reply (not yet iterated) and the engines."""
    engines = turn.Engines(model)
    session = ChatSession(settings)
    asked = turn.ask(session, engines, turn.TurnInput(text=text))
    return turn.answer(session, engines, asked.index, GenerationOptions(), speak=False, **kwargs), engines


def test_the_answer_keeps_the_generation_facts_with_its_timings(settings):
    reply, _ = reply_to(settings, FakeChatModel("A red car on a road."), "What is it?")
    list(reply)
    timings = reply.answer.timings
    assert timings["completion_tokens"] == 6 and timings["prompt_tokens"] == 3
    assert "cached_tokens" not in timings and "prefill_s" not in timings  # the engine did not say
    assert timings["tokens_per_s"] == round(6 / timings["generate_s"], 2)


def test_an_interrupted_reply_says_why_and_reaches_the_model(settings):
    interrupt = Interrupt()
    reply, _ = reply_to(settings, FakeChatModel("one two three four five six", delay_s=0.01), "Count.", interrupt=interrupt)
    tokens = []
    for event in reply:
        if isinstance(event, turn.Token):
            tokens.append(event.text)
            interrupt.set(TALKED_OVER)
    assert tokens == ["one "] and reply.answer.text == "one " and reply.answer.status == "stopped"
    assert interrupt.reason == TALKED_OVER and reply.answer.timings["completion_tokens"] == 1


def test_closing_a_reply_sets_its_interrupt(settings):
    reply, engines = reply_to(settings, FakeChatModel("one two three"), "Count.")
    next(reply)
    reply.close()
    assert reply.interrupt.is_set() and reply.answer.status == "stopped"
    assert not engines.chat.lock.locked()
