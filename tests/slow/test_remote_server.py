"""The remote engine against a real OpenAI-compatible server: `transformers serve` on the tiny LLaVA.

One server for the module (it takes a while to start on a small CPU). The last test kills it.
Random weights: the replies are noise, so the tests compare the server with the in-process model
(same folder, greedy: the same prompt gives the same text) and check structure, never wording.
"""

import threading
import time

import pytest

from core.chat import turn
from core.chat.session import ChatSession
from core.conversation import Exchange, Question
from core.engines.remote import RemoteChatModel
from core.engines.vlm import GenerationOptions, LlavaModel
from core.errors import GenerationError, ModelLoadError
from core.store.session_log import read_session
from tests.conftest import png_bytes
from tests.local_server import LocalServer

pytestmark = pytest.mark.slow
OPTIONS = GenerationOptions(temperature=0, max_new_tokens=16)
# White survives the JPEG of the data URL unchanged, so both models see the same pixels.
IMAGE = png_bytes((50, 40), "white")
SESSIONS = 8


@pytest.fixture(scope="module")
def server(tiny_llava):
    with LocalServer(tiny_llava) as running:
        yield running


@pytest.fixture(scope="module")
def remote(server):
    return RemoteChatModel.connect(server.base_url, None, server.model, token_timeout_s=60)


@pytest.fixture(scope="module")
def local(tiny_llava):
    return LlavaModel.load(str(tiny_llava))


def converse(settings, chat, questions, options=OPTIONS):
    """Ask the questions in one session (the first with the image); return (session, events per turn)."""
    session, engines, turns = ChatSession(settings), turn.Engines(chat), []
    for i, question in enumerate(questions):
        asked = turn.ask(session, engines, turn.TurnInput(text=question, image=IMAGE if i == 0 else None))
        turns.append(list(turn.answer(session, engines, asked.index, options)))
    return session, turns


def done(events):
    return [e for e in events if isinstance(e, turn.Done)][0].answer


def test_multi_turn_with_an_image_is_what_the_in_process_model_says(settings, remote, local):
    questions = ["What is in the picture?", "What colour is it?", "Is it day or night?"]
    session, remote_turns = converse(settings, remote, questions)
    _, local_turns = converse(settings, local, questions)

    for events, reference in zip(remote_turns, local_turns):
        answer = done(events)
        assert answer.status == "complete", answer.note
        assert "".join(e.text for e in events if isinstance(e, turn.Token)) == answer.text
        # Same prompt (chat template, history, image) on both sides, greedy: the same text, the same tokens.
        assert answer.text == done(reference).text
        assert answer.timings["completion_tokens"] == done(reference).timings["completion_tokens"] <= OPTIONS.max_new_tokens
    assert any(done(events).text for events in remote_turns)
    logged = read_session(session.log.path).conversation.exchanges
    assert [e.answer.text for e in logged] == [done(events).text for events in remote_turns]


def test_reply_streams_in_chunks_and_counts_tokens(remote):
    chunks, times = [], []
    start = time.perf_counter()
    hello = [Exchange(Question("Hello, who are you?"))]
    generation = remote.stream(hello, {}, GenerationOptions(temperature=0, max_new_tokens=24))
    for chunk in generation:
        chunks.append(chunk)
        times.append(time.perf_counter() - start)
    assert len(chunks) > 1 and times[0] < times[-1]
    assert 0 < generation.info.completion_tokens <= 24  # the server's own count
    assert generation.info.prompt_tokens > 0 and generation.info.kept_exchanges == 1


@pytest.fixture(scope="module")
def endless(server, tiny_llava):
    """The remote model with end-of-sequence forbidden: it writes until max_tokens."""
    from transformers import AutoTokenizer

    eos = AutoTokenizer.from_pretrained(str(tiny_llava)).eos_token_id
    return RemoteChatModel.connect(server.base_url, None, server.model, extra_body={"logit_bias": {str(eos): -100.0}})


LONG = GenerationOptions(temperature=0, max_new_tokens=1500)


def test_stop_mid_stream_keeps_the_partial_reply_and_frees_the_server(settings, remote, endless):
    # How long the whole reply takes when nobody stops it (end-of-sequence is forbidden).
    start = time.perf_counter()
    generation = endless.stream([Exchange(Question("Count to a thousand."))], {}, LONG)
    whole = "".join(generation)
    whole_s = time.perf_counter() - start
    assert whole and generation.info.completion_tokens == LONG.max_new_tokens

    session, engines = ChatSession(settings), turn.Engines(endless)
    asked = turn.ask(session, engines, turn.TurnInput(text="Count to a thousand."))
    stream = turn.answer(session, engines, asked.index, LONG)
    tokens = []
    for event in stream:
        if isinstance(event, turn.Token):
            tokens.append(event.text)
            if len(tokens) == 3:
                break
    stream.close()  # what the Stop button does (a rerun closes the page's generator)
    answer = session.conversation.exchanges[0].answer
    assert answer.status == "stopped" and answer.text == "".join(tokens)
    assert read_session(session.log.path).conversation.exchanges[0].answer.status == "stopped"

    # The server answers one request at a time: had it gone on writing the 1500 tokens, this
    # request would wait for them. Closing the stream cancelled the generation.
    start = time.perf_counter()
    next(iter(remote.stream([Exchange(Question("Hi"))], {}, GenerationOptions(temperature=0, max_new_tokens=4))))
    assert time.perf_counter() - start < whole_s / 4, whole_s


def test_wrong_model_name_is_named_with_what_the_server_has(remote, server):
    """At start when the server lists its models (transformers >= 5.2x lists the folder it serves),
    and at the first request in any case (5.17 lists none and refuses another name with a 400)."""
    from core.engines.openai_client import served_models

    if served_models(remote.client):
        with pytest.raises(ModelLoadError, match="LLAVA_REMOTE_MODEL") as caught:
            RemoteChatModel.connect(server.base_url, None, "llava-hf/no-such-model")
        assert "no-such-model" in str(caught.value) and remote.model in str(caught.value)

    misnamed = RemoteChatModel(remote.client, "llava-hf/no-such-model", server.base_url)
    with pytest.raises(GenerationError, match="LLAVA_REMOTE_MODEL"):
        list(misnamed.stream([Exchange(Question("Hi"))], {}, OPTIONS))


def run_sessions(settings, chat, questions):
    """One thread per session, all asking at once through core.chat.turn; return (session, events) of each."""
    start, results = threading.Barrier(len(questions)), [None] * len(questions)

    def one(i: int) -> None:
        start.wait()
        session, turns = converse(settings, chat, [questions[i]])
        results[i] = session, turns[0]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(questions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return results


def check_all_answered(results, alone):
    """Every session completed, logged its reply, and got the reply its question gets when asked
    alone (greedy): no turn lost, none mixed up with another session's."""
    answers = [done(events) for _, events in results]
    assert all(a.status == "complete" for a in answers), [a.note for a in answers]
    assert [a.text for a in answers] == alone
    assert [read_session(s.log.path).conversation.exchanges[0].answer.text for s, _ in results] == alone


QUESTIONS = [f"Question number {i}: what is in the picture?" for i in range(SESSIONS)]


def asked_alone(settings, chat):
    """Each question's greedy reply, asked alone in its own session, one after the other."""
    return [done(converse(settings, chat, [q])[1][0]).text for q in QUESTIONS]


def test_eight_sessions_in_process_are_queued_fifo_and_told_their_place(settings, local):
    results = run_sessions(settings, local, QUESTIONS)
    check_all_answered(results, asked_alone(settings, local))
    places = [[e.ahead for e in events if isinstance(e, turn.Waiting)] for _, events in results]
    assert sum(1 for p in places if p and p[0] >= 1) >= SESSIONS // 2, places  # most waited, and were told
    assert all(p == sorted(p, reverse=True) for p in places)  # a place in the line only gets better
    assert max(max(p, default=0) for p in places) <= SESSIONS - 1


def test_eight_sessions_against_the_server_run_without_a_queue(settings, remote):
    results = run_sessions(settings, remote, QUESTIONS)
    check_all_answered(results, asked_alone(settings, remote))
    assert not any(isinstance(e, turn.Waiting) for _, events in results for e in events)


def test_server_killed_mid_stream_gives_a_clear_error_and_keeps_the_partial_reply(settings, server, endless):
    """Runs last: it kills the module's server."""
    session, engines = ChatSession(settings), turn.Engines(endless)
    asked = turn.ask(session, engines, turn.TurnInput(text="Count to a thousand."))
    events, tokens = [], []
    for event in turn.answer(session, engines, asked.index, LONG):
        events.append(event)
        if isinstance(event, turn.Token):
            tokens.append(event.text)
            if len(tokens) == 3:
                server.kill()
    answer = done(events)
    assert answer.status == "partial" and answer.text == "".join(tokens) and len(tokens) >= 3
    assert "broke" in answer.note and "incomplete" in answer.note
    logged = read_session(session.log.path)
    assert logged.conversation.exchanges[0].answer.text == answer.text
    assert logged.errors and "chat server" in logged.errors[0]["message"]

    with pytest.raises(ModelLoadError, match="Cannot reach"):
        RemoteChatModel.connect(server.base_url, None, None, max_retries=0)
