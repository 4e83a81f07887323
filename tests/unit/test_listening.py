"""The Listener on made-up audio: where a turn starts (the 60 ms barge-in), when it ends (a fixed
silence, smart-turn's verdict, the fallback silence, the hard limit), what it keeps, and the
incremental transcript's pieces. The detectors are the real ones (energy; Silero on typing)."""

from concurrent.futures import Future

import numpy as np
import pytest

from core.engines.api import Transcript
from core.errors import ModelLoadError
from core.listening import turn_end
from core.listening.incremental import joined
from core.listening.listener import Listener, SpeechStarted, TurnEnded
from core.listening.speech import FRAME, EnergyDetector, SileroDetector
from core.listening.turn_end import SilenceRule, SmartTurn, SmartTurnRule, sounds_unfinished
from core.media import SAMPLE_RATE
from tests.fakes import FakeTranscriber, tone
from tests.turn_audio import add_clicks


def quiet(seconds: float) -> np.ndarray:
    return np.random.default_rng(1).normal(0, 1e-3, int(seconds * SAMPLE_RATE)).astype(np.float32)  # -60 dBFS


def feed(listener: Listener, samples: np.ndarray) -> list:
    """Every event, each with the sample count at which it came."""
    out = []
    for at in range(0, len(samples) - FRAME + 1, FRAME):
        out += [(event, at + FRAME) for event in listener.feed(samples[at:at + FRAME])]
    return out


def ended(events) -> list[TurnEnded]:
    return [event for event, _ in events if isinstance(event, TurnEnded)]


class Verdicts:
    """smart-turn's place: says what it is told, and records what it heard."""

    def __init__(self, *probabilities: float):
        self.probabilities, self.heard = list(probabilities), []

    def probability(self, samples: np.ndarray) -> float:
        self.heard.append(len(samples))
        return self.probabilities.pop(0)


def babble(seconds: float) -> np.ndarray:
    """Speech that never pauses: a tone swelling 4 times a second (a steady tone becomes the noise floor)."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (tone(seconds) * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)


class Inline:
    """A worker that runs what it is given at once: the transcript's timing out of the test's way."""

    def submit(self, function, *args) -> Future:
        future = Future()
        future.set_result(function(*args))
        return future

    def shutdown(self, **_):
        pass


def question_with_pause(pause_s: float) -> np.ndarray:
    return np.concatenate([quiet(1.0), tone(1.0), quiet(pause_s), tone(0.8), quiet(2.0)])


def test_speech_start_comes_three_frames_after_the_speech_does():
    events = feed(Listener(EnergyDetector(), SilenceRule()), np.concatenate([quiet(1.0), tone(1.0), quiet(1.0)]))
    started = [event for event, _ in events if isinstance(event, SpeechStarted)]
    assert len(started) == 1
    assert started[0].start_sample == SAMPLE_RATE  # the first loud frame
    assert started[0].heard_sample - started[0].start_sample == 3 * FRAME  # 60 ms: the barge-in


def test_a_fixed_silence_ends_a_turn_after_it_and_a_longer_pause_cuts_the_question():
    audio = question_with_pause(0.5)
    whole = ended(feed(Listener(EnergyDetector(), SilenceRule(0.7)), audio))
    assert len(whole) == 1 and whole[0].reason == "silence"
    assert whole[0].end_sample == pytest.approx(3.3 * SAMPLE_RATE, abs=FRAME)
    assert whole[0].decided_sample - whole[0].end_sample == pytest.approx(0.7 * SAMPLE_RATE, abs=FRAME)
    assert len(ended(feed(Listener(EnergyDetector(), SilenceRule(0.3)), audio))) == 2  # the 0.5 s pause cut it


def test_the_turn_keeps_the_preroll_and_a_fifth_of_a_second_after_the_last_speech():
    """300 ms of frames kept before the onset is heard, 60 ms of them its own (as in the page)."""
    turn = ended(feed(Listener(EnergyDetector(), SilenceRule(0.7)), np.concatenate([quiet(1.0), tone(1.0), quiet(1.0)])))[0]
    assert len(turn.audio) == pytest.approx((0.24 + 1.0 + 0.2) * SAMPLE_RATE, abs=FRAME)
    assert turn.transcript is None  # no transcriber


def test_a_finished_turn_ends_at_the_short_silence():
    model = Verdicts(0.9)
    turn = ended(feed(Listener(EnergyDetector(), SmartTurnRule(model)), np.concatenate([quiet(1.0), tone(1.0), quiet(2.0)])))
    assert [t.reason for t in turn] == ["meaning"]
    assert turn[0].decided_sample - turn[0].end_sample == pytest.approx(0.24 * SAMPLE_RATE, abs=FRAME)
    assert model.heard == [pytest.approx((0.24 + 1.0 + 0.24) * SAMPLE_RATE, abs=FRAME)]  # the turn so far, once


def test_an_unfinished_turn_waits_for_more_speech_and_the_fallback_still_ends_it():
    model = Verdicts(0.1, 0.1)  # at the pause, then after the second part
    turns = ended(feed(Listener(EnergyDetector(), SmartTurnRule(model, fallback_s=1.2)), question_with_pause(0.6)))
    assert [t.reason for t in turns] == ["silence"]  # one turn, the pause inside it
    assert turns[0].decided_sample - turns[0].end_sample == pytest.approx(1.2 * SAMPLE_RATE, abs=FRAME)
    assert len(model.heard) == 2


def test_a_pause_longer_than_the_fallback_ends_even_an_unfinished_turn():
    turns = ended(feed(Listener(EnergyDetector(), SmartTurnRule(Verdicts(0.1, 0.1), fallback_s=1.2)),
                       question_with_pause(1.5)))
    assert [t.reason for t in turns] == ["silence", "silence"]


def test_the_hard_limit_ends_an_endless_utterance():
    listener = Listener(EnergyDetector(), SmartTurnRule(Verdicts()), max_turn_s=3.0)
    events = feed(listener, np.concatenate([quiet(1.0), babble(7.0)]))  # never a pause: the model is never asked
    turns = ended(events)
    assert [t.reason for t in turns] == ["limit", "limit"]
    assert turns[0].decided_sample - turns[0].start_sample == pytest.approx(3.0 * SAMPLE_RATE, abs=FRAME)
    assert sum(isinstance(event, SpeechStarted) for event, _ in events) == 3  # and listening goes on


def test_a_burst_shorter_than_a_quarter_second_is_no_turn():
    events = feed(Listener(EnergyDetector(), SilenceRule()), np.concatenate([quiet(1.0), tone(0.12), quiet(1.5)]))
    assert not ended(events)


def test_silero_hears_no_speech_in_typing_where_the_energy_detector_does():
    clicks = quiet(6.0)
    add_clicks(clicks, 0, len(clicks), np.random.default_rng(0))
    heard = feed(Listener(EnergyDetector(), SilenceRule()), clicks)
    assert isinstance(heard[0][0], SpeechStarted) and not ended(heard)  # a false barge-in, kept open by the clicks
    assert feed(Listener(SileroDetector(), SilenceRule()), clicks) == []


class Recording(FakeTranscriber):
    """Notes the seconds of audio it is given."""

    def __init__(self, text: str = "part"):
        super().__init__(text)
        self.heard: list[float] = []

    def transcribe(self, samples, language=None):
        self.heard.append(len(samples) / SAMPLE_RATE)
        return super().transcribe(samples, language)


def test_the_whole_turn_so_far_is_transcribed_at_each_pause_and_the_last_one_is_the_transcript():
    transcriber = Recording()
    listener = Listener(EnergyDetector(), SilenceRule(1.0), transcriber, worker=Inline())
    turn = ended(feed(listener, question_with_pause(0.6)))[0]
    assert turn.transcript.result(timeout=10).text == "part"  # one transcript, not two joined
    # the second was made at the pause that then ended the turn: nothing was left at its end
    assert transcriber.heard == [pytest.approx(0.24 + 1.0 + 0.2, abs=0.001),
                                 pytest.approx(len(turn.audio) / SAMPLE_RATE, abs=0.001)]  # the turn as kept


def test_in_pieces_each_pause_transcribes_what_came_since_the_last():
    transcriber = Recording()
    listener = Listener(EnergyDetector(), SilenceRule(1.0), transcriber, worker=Inline(), transcript_way="pieces")
    turn = ended(feed(listener, question_with_pause(0.6)))[0]
    assert turn.transcript.result(timeout=10).text == "part part"
    assert transcriber.heard == [pytest.approx(0.24 + 1.0 + 0.2, abs=0.001), pytest.approx(0.4 + 0.8 + 0.2, abs=0.001)]


@pytest.mark.parametrize("way", ["whole", "pieces"])
def test_speech_after_the_last_pause_is_transcribed_at_the_end(way):
    """The hard limit ends a turn mid-speech: what came after the last pause is left at its end."""
    transcriber = Recording()
    listener = Listener(EnergyDetector(), SilenceRule(), transcriber, max_turn_s=2.5, transcript_way=way)
    turn = ended(feed(listener, np.concatenate([quiet(1.0), tone(1.0), quiet(0.5), babble(3.0)])))[0]
    assert turn.reason == "limit" and isinstance(turn.transcript, Future)
    assert turn.transcript.result(timeout=10).text == {"whole": "part", "pieces": "part part"}[way]
    seconds = len(turn.audio) / SAMPLE_RATE
    if way == "whole":
        assert transcriber.heard[-1] == pytest.approx(seconds, abs=0.001)  # one pass over the turn
    else:
        assert sum(transcriber.heard) == pytest.approx(seconds, abs=0.001)  # every sample once
    listener.close()


def test_the_words_of_the_pause_keep_an_unfinished_question_open():
    said = ["what colour is the", "what colour is the car"]

    class Words(FakeTranscriber):
        def transcribe(self, samples, language=None):
            return Transcript(said.pop(0), "en", len(samples) / SAMPLE_RATE)

    listener = Listener(EnergyDetector(), SmartTurnRule(Verdicts(0.9, 0.9), check_words=True), Words(), worker=Inline())
    turns = ended(feed(listener, question_with_pause(0.6)))
    assert [t.reason for t in turns] == ["meaning"]  # "...the" waited; "...car" ended it
    assert turns[0].transcript.result(timeout=10).text == "what colour is the car"
    listener.close()


@pytest.mark.parametrize("text, language, unfinished", [
    ("What colour is the", "en", True), ("Is there a dog, um,", "en", True), ("What is he looking at?", "en", False),
    ("What is this?", "en", False), ("", "en", False), ("Was ist das", "de", False)])
def test_words_that_leave_a_question_unfinished(text, language, unfinished):
    assert sounds_unfinished(text, language) is unfinished


def test_pieces_join_in_order_in_the_language_of_the_longest():
    assert joined([Transcript("Um.", "fr", 0.4), Transcript("", "en", 0.2), Transcript("What is it?", "en", 1.5)]) \
        == Transcript("Um. What is it?", "en", pytest.approx(2.1))


def test_smart_turn_hears_a_probability_in_any_length_of_audio():
    model = SmartTurn()
    for seconds in (0.5, 8.0, 12.0):
        assert 0.0 <= model.probability(tone(seconds)) <= 1.0
    assert len(model.cpu_s) == 3


def test_a_missing_smart_turn_model_says_how_to_install_it(monkeypatch):
    def missing(name):
        raise turn_end.PackageNotFoundError(name)

    monkeypatch.setattr(turn_end, "distribution", missing)
    with pytest.raises(ModelLoadError) as error:
        turn_end.smart_turn_path()
    assert "pipecat-ai" in error.value.hint
