"""The end-of-turn test set (tests/turn_audio.py) is what bench/turn_end.py says it is: 24 questions by
Piper and espeak-ng, ten paused mid-sentence for 0.4-0.8 s, some ending in "um", some typed over,
with the truth taken from the audio; and the word error count it is scored with."""

import numpy as np
import pytest

from core.media import SAMPLE_RATE
from tests.turn_audio import SCRIPT, make_set, speech_slices, word_errors

pytestmark = pytest.mark.slow  # Piper speaks 12 questions (seconds; a minute on a loaded 2-core machine)


@pytest.fixture(scope="module")
def streams():
    return make_set()


def test_the_set_has_its_questions_pauses_fillers_and_typing(streams):
    questions = [q for stream in streams for q in stream.questions]
    assert [s.voice for s in streams] == ["piper", "espeak"] and len(questions) == 2 * len(SCRIPT) == 24
    paused = [q.longest_pause_s for q in questions if len(q.parts) > 1]
    assert len(paused) == 10 and all(0.38 <= p <= 0.85 for p in paused), paused
    assert sum(q.text.endswith("Um") for q in questions) == 4 and sum(q.clicks for q in questions) == 6


def test_the_truth_is_where_the_speech_is(streams):
    for stream in streams:
        loud = speech_slices(stream.samples)
        for question, after in zip(stream.questions, stream.questions[1:] + (None,)):
            assert question.start_s < question.end_s
            assert loud[round(question.start_s * 100)] and loud[round(question.end_s * 100) - 1]
            if after and not (question.clicks or after.clicks):  # typing runs from 0.5 s before a typed question
                # the stream's 10 ms slices need not line up with the question's (pauses are whole samples, not
                # whole slices): the slice at each boundary may hold both speech and silence
                gap = slice(round(question.end_s * 100) + 1, round(after.start_s * 100) - 1)
                assert not loud[gap].any() and after.start_s - question.end_s > 1.49  # silence between questions
        assert len(stream.samples) / SAMPLE_RATE > stream.questions[-1].end_s + 2
        assert np.max(np.abs(stream.samples)) <= 1.0


@pytest.mark.parametrize("reference, hypothesis, errors", [
    ("What is the man holding?", "what is the man holding", 0), ("What is the man holding?", "What is the mind holding", 1),
    ("a b c", "a c", 1), ("a b", "a b c d", 2), ("a b c", "x b y", 2)])
def test_word_errors_count_substitutions_deletions_and_insertions(reference, hypothesis, errors):
    assert word_errors(reference, hypothesis)[0] == errors
