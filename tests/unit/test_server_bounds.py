"""A chat server that streams without end, or streams junk, costs a bounded reply, memory and disk
(issue 24, finding 2): the reply is cut at max_new_tokens and a margin, marked, spoken up to the
audio limit, and logged; the turn ends with an answer whatever the server sends."""

import random
import time
import tracemalloc
from pathlib import Path

import pytest

from core.chat import turn
from core.chat.session import ChatSession
from core.engines.api import GenerationOptions
from core.engines.remote import RemoteChatModel
from core.engines.tts import make_speaker
from core.limits import MAX_REPLY_AUDIO_BYTES, MAX_RESPONSE_BYTES, max_reply_chars
from core.store.session_log import read_session
from tests.fakes import FakeSpeaker
from tests.flood_server import MODEL, FloodServer, sse, text_chunk

OPTIONS = GenerationOptions(temperature=0, max_new_tokens=512)
MILLION = 1_000_000


def million_characters():
    """What a server ignoring max_tokens sends: a million characters of words and sentences, in chunks of 1-40."""
    rng, sent = random.Random(1), 0
    words = ["the", "cat", "sits", "on", "a", "mat.", "It", "is", "red,", "and", "blue!", "Why?"]
    while sent < MILLION:
        piece = " ".join(rng.choice(words) for _ in range(rng.randrange(1, 8))) + " "
        sent += len(piece)
        yield text_chunk(piece)
    yield sse("[DONE]")


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def one_turn(settings, server, speaker):
    """Ask a typed question, answer it through the server; (the Done answer, the log read back)."""
    engines = turn.Engines(RemoteChatModel.connect(server.base_url, None, MODEL, 10.0, max_retries=0,
                                                   first_chunk_timeout_s=10.0), None, speaker)
    session = ChatSession(settings)
    asked = turn.ask(session, engines, turn.TurnInput(text="What is it?"))
    events = list(turn.answer(session, engines, asked.index, OPTIONS))
    assert isinstance(events[-1], turn.Done)
    return events[-1].answer, read_session(session.log.path)


def test_a_million_characters_are_cut_spoken_to_the_limit_and_logged_in_bounded_memory_and_disk(settings):
    speaker, _ = make_speaker("espeak")  # the real speech chain, the fastest engine
    with FloodServer(million_characters) as server:
        tracemalloc.start()
        start = time.perf_counter()
        try:
            answer, logged = one_turn(settings, server, speaker)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        seconds = time.perf_counter() - start
    limit = max_reply_chars(OPTIONS.max_new_tokens)
    assert len(answer.text) == limit and answer.status == "partial"  # before: all 1,000,000 kept
    assert "cut at" in answer.note and logged.conversation.exchanges[0].answer.text == answer.text
    disk = folder_bytes(settings.log_dir)
    print(f"\n1,000,000 characters: kept {len(answer.text):,}, {seconds:.1f} s, Python memory peak "
          f"{peak / 2**20:.1f} MiB, log folder {disk / 2**20:.1f} MiB")
    assert peak < 2 * MAX_REPLY_AUDIO_BYTES + 16 * 2**20  # the reply's audio (its parts, then joined), and little else
    assert disk <= MAX_REPLY_AUDIO_BYTES + 2**20  # the whole reply's audio at most, and a small log
    assert seconds < 120


def random_body(seed: int):
    """Random bytes, random lines and random lengths: what a broken or hostile server may send."""
    rng = random.Random(seed)
    kinds = [lambda: rng.randbytes(rng.randrange(0, 5000)),
             lambda: b"data: " + rng.randbytes(rng.randrange(0, 300)) + b"\n\n",
             lambda: text_chunk("".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(0, 400)))),
             lambda: text_chunk("x" * rng.randrange(0, 200_000)),
             lambda: sse({"choices": rng.choice([None, [], [{"delta": {"content": rng.randrange(9)}}], "x"])}),
             lambda: text_chunk(""),
             lambda: b"\n" * rng.randrange(0, 100)]

    def body():
        for _ in range(rng.randrange(1, 3000)):
            yield rng.choice(kinds)()
        if rng.random() < 0.5:
            yield sse("[DONE]")
    return body


@pytest.mark.parametrize("seed", range(12))
def test_random_streams_end_with_a_bounded_answer_and_no_exception(settings, seed):
    with FloodServer(random_body(seed)) as server:
        answer, logged = one_turn(settings, server, FakeSpeaker())
    assert len(answer.text) <= max_reply_chars(OPTIONS.max_new_tokens)
    assert answer.status in ("complete", "partial", "error") and logged.conversation.exchanges[0].answer == answer
    assert folder_bytes(settings.log_dir) < 2**20


def test_a_server_sending_only_empty_chunks_is_cut_too(settings):
    with FloodServer(lambda: (text_chunk("") for _ in range(10**6))) as server:
        answer, _ = one_turn(settings, server, FakeSpeaker())
    assert answer.text == "" and answer.status == "partial" and "cut at 0 characters" in answer.note


def test_an_endless_line_is_read_up_to_the_byte_limit_only(settings):
    """A body that never ends a line: the SDK's event parser would hold it whole."""
    with FloodServer(lambda: (b"x" * 2**16 for _ in range(4 * MAX_RESPONSE_BYTES // 2**16))) as server:
        tracemalloc.start()
        try:
            answer, _ = one_turn(settings, server, FakeSpeaker())
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert answer.status == "error" and answer.text == ""
    assert peak < 3 * MAX_RESPONSE_BYTES  # before: the whole 64 MiB line, held and copied
