"""The transcript made at each pause (the whole turn so far, the default way) against one pass over
the whole turn, on the bundled Whisper base (the CPU default) and the turn test set's espeak-ng
questions: the same words. (The pieces way loses words: bench/turn_end.py measures how many.)"""

import pytest

from core.engines.stt import load_transcriber
from core.listening.listener import Listener, TurnEnded
from core.listening.speech import FRAME, SileroDetector
from core.listening.turn_end import SilenceRule
from tests.turn_audio import make_set, word_errors

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base():
    transcriber, _ = load_transcriber("faster-whisper", None, "cpu")
    assert transcriber.name == "faster-whisper base (bundled)"
    return transcriber


def turns(stream, transcriber) -> list[TurnEnded]:
    """The stream's turns, a 1 s silence ending each: every pause of the set stays inside its question."""
    listener = Listener(SileroDetector(), SilenceRule(1.0), transcriber)
    heard = [event for at in range(0, len(stream.samples) - FRAME + 1, FRAME)
             for event in listener.feed(stream.samples[at:at + FRAME]) if isinstance(event, TurnEnded)]
    listener.close()
    return heard


def test_the_incremental_transcript_is_the_one_pass_transcript(base):
    (stream,) = make_set(("espeak",), count=3)  # a pause of 0.5 s, none, a pause of 0.7 s
    heard = turns(stream, base)
    assert len(heard) == 3
    for turn, question in zip(heard, stream.questions):
        incremental, single = turn.transcript.result(timeout=300), base.transcribe(turn.audio)
        assert incremental == single  # made at the pause that ended the turn, on the same samples
        errors, count = word_errors(question.text, single.text)
        assert errors <= count // 2, single.text  # Whisper heard the question (this is no test of its accuracy)
