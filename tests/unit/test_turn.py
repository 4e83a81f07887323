import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from core.chat import turn
from core.chat.session import ChatSession
from core.conversation import Question
from core.engines.api import HEARTBEAT, GenerationInfo, GenerationOptions, Interrupt, generation
from core.store.session_log import media_path, read_session
from tests.conftest import png_bytes
from tests.fakes import FakeChatModel, FakeSpeaker, FakeTranscriber, tone, wav_bytes

OPTIONS = GenerationOptions(temperature=0)


def run(session, engines, turn_input, **kwargs):
    """Ask, then answer; return all events."""
    asked = turn.ask(session, engines, turn_input)
    if not isinstance(asked, turn.Asked):
        return [asked] if asked else []
    reply = turn.answer(session, engines, asked.index, OPTIONS, timings=asked.timings, **kwargs)
    events = [asked, *reply]
    assert reply.answer == events[-1].answer  # read after iterating: what Done carried
    return events


def of(events, kind):
    return [e for e in events if isinstance(e, kind)]


@pytest.fixture
def engines():
    return turn.Engines(FakeChatModel(), FakeTranscriber(), FakeSpeaker())


def test_typed_turn_with_image_streams_speaks_and_logs(settings, engines):
    engines.chat.enqueue("A red square. It is on white. Nothing else.")
    session = ChatSession(settings)
    events = run(session, engines, turn.TurnInput(text="What is it?", image=png_bytes()))

    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "Asked" and kinds[-1] == "Done"
    streamed = "".join(e.text for e in of(events, turn.Token))
    answer = of(events, turn.Done)[0].answer
    assert streamed == answer.text == "A red square. It is on white. Nothing else."
    assert "".join(e.text for e in of(events, turn.Sentence)) == answer.text
    assert [s for s, _ in engines.speaker.said] == ["A red square.", "It is on white.", "Nothing else."]
    assert answer.status == "complete" and answer.audio and media_path(settings.log_dir, answer.audio)
    assert {"ttft_s", "generate_s", "tokens_per_s", "first_audio_s", "total_s"} <= answer.timings.keys()

    exchanges, _ = engines.chat.calls[0]
    assert exchanges[0].question.image is not None  # the model saw the image turn
    logged = read_session(session.log.path).conversation.exchanges
    assert logged[0].answer.text == streamed and logged[0].question.image == exchanges[0].question.image


def test_first_audio_comes_before_the_last_token(settings):
    engines = turn.Engines(FakeChatModel("One. Two. Three. Four. Five. Six.", delay_s=0.05), None, FakeSpeaker())
    events = run(ChatSession(settings), engines, turn.TurnInput(text="count"))
    positions = [i for i, e in enumerate(events) if isinstance(e, turn.Spoken)]
    last_token = max(i for i, e in enumerate(events) if isinstance(e, turn.Token))
    assert positions and positions[0] < last_token
    assert len(positions) == 6


def test_voice_turn_uses_the_transcript_and_its_language(settings):
    engines = turn.Engines(FakeChatModel("Bonjour."), FakeTranscriber("qu'est-ce que c'est", "fr"), FakeSpeaker())
    session = ChatSession(settings)
    events = run(session, engines, turn.TurnInput(audio=wav_bytes(tone(1.0))))
    asked = of(events, turn.Asked)[0]
    assert asked.question.text == "qu'est-ce que c'est" and asked.question.source == "voice"
    assert asked.question.language == "fr" and "stt_s" in asked.timings
    assert media_path(settings.log_dir, asked.question.audio) is not None
    assert engines.speaker.said == [("Bonjour.", "fr")]
    assert "stt_s" in of(events, turn.Done)[0].answer.timings


@pytest.mark.parametrize(
    "turn_input,message",
    [
        (turn.TurnInput(text="look", image=b"this is a text file"), "not an image"),
        (turn.TurnInput(audio=wav_bytes(np.zeros(16000, dtype=np.float32))), "heard nothing"),
        (turn.TurnInput(audio=wav_bytes(tone(61.0))), "limit is 60 s"),
    ],
)
def test_bad_input_is_a_notice_and_nothing_is_lost(settings, engines, turn_input, message):
    session = ChatSession(settings)
    run(session, engines, turn.TurnInput(text="first"))
    events = run(session, engines, turn_input)
    assert [type(e) for e in events] == [turn.Rejected] and message in events[0].notice.text
    assert len(session.conversation.exchanges) == 1
    logged = read_session(session.log.path).conversation.items
    assert logged[-1].text == events[0].notice.text and logged[0].answer is not None
    run(session, engines, turn.TurnInput(text="again"))  # the conversation goes on
    assert len(session.conversation.exchanges) == 2


def test_transcript_empty_is_a_notice(settings):
    engines = turn.Engines(FakeChatModel(), FakeTranscriber(""), None)
    events = run(ChatSession(settings), engines, turn.TurnInput(audio=wav_bytes(tone(1.0))))
    assert isinstance(events[0], turn.Rejected) and "heard nothing" in events[0].notice.text
    assert not list((settings.log_dir / "media").glob("*.wav"))  # no recording no question refers to


def test_question_before_any_image_is_a_text_chat(settings, engines):
    session = ChatSession(settings)
    run(session, engines, turn.TurnInput(text="Hello?"))
    exchanges, _ = engines.chat.calls[0]
    assert [e.question.image for e in exchanges] == [None]
    assert session.conversation.exchanges[0].answer.status == "complete"


def test_image_alone_gets_a_default_question(settings, engines):
    session = ChatSession(settings)
    events = run(session, engines, turn.TurnInput(image=png_bytes()))
    assert of(events, turn.Asked)[0].question.text == turn.DEFAULT_IMAGE_QUESTION


def test_generation_failure_keeps_the_partial_reply(settings):
    engines = turn.Engines(FakeChatModel("one two three four", fail_after=2), None, FakeSpeaker())
    session = ChatSession(settings)
    events = run(session, engines, turn.TurnInput(text="count"))
    answer = of(events, turn.Done)[0].answer
    assert answer.text == "one two " and answer.status == "partial" and "crashed" in answer.note
    logged = read_session(session.log.path)
    assert logged.conversation.exchanges[0].answer.text == "one two "
    assert "crashed" in logged.errors[0]["message"]


def test_stop_mid_reply_keeps_partial_text_in_chat_and_log(settings):
    engines = turn.Engines(FakeChatModel("a b c d e f g h", delay_s=0.01), None, None)
    session = ChatSession(settings)
    asked = turn.ask(session, engines, turn.TurnInput(text="go"))
    stream = turn.answer(session, engines, asked.index, OPTIONS)
    tokens = [next(stream).text for _ in range(3)]
    stream.close()  # what a Streamlit rerun (the Stop button) does to the page's generator
    answer = session.conversation.exchanges[0].answer
    assert answer.text == "".join(tokens) == "a b c " and answer.status == "stopped"
    assert read_session(session.log.path).conversation.exchanges[0].answer.status == "stopped"
    assert not engines.chat.lock.locked()


def test_tts_failure_keeps_the_text(settings):
    engines = turn.Engines(FakeChatModel("Fine. Thanks."), None, FakeSpeaker(fail=True))
    answer = of(run(ChatSession(settings), engines, turn.TurnInput(text="hi")), turn.Done)[0].answer
    assert answer.text == "Fine. Thanks." and answer.status == "complete"
    assert answer.audio is None and "Speech failed" in answer.note


def test_speech_off_speaks_nothing(settings, engines):
    run(ChatSession(settings), engines, turn.TurnInput(text="hi"), speak=False)
    assert engines.speaker.said == []


def test_busy_model_makes_the_turn_wait(settings, engines):
    session = ChatSession(settings)
    asked = turn.ask(session, engines, turn.TurnInput(text="hi"))
    engines.chat.lock.acquire()
    threading.Timer(0.2, engines.chat.lock.release).start()
    events = list(turn.answer(session, engines, asked.index, OPTIONS))
    assert isinstance(events[0], turn.Waiting)
    assert isinstance(events[-1], turn.Done) and events[-1].answer.timings["wait_s"] >= 0.15


def test_new_image_mid_conversation_starts_new_context(settings, engines):
    session = ChatSession(settings)
    run(session, engines, turn.TurnInput(text="q1", image=png_bytes(color="red")))
    run(session, engines, turn.TurnInput(text="q2"))
    run(session, engines, turn.TurnInput(text="q3", image=png_bytes(color="blue")))
    seen, _ = engines.chat.calls[-1]
    assert [e.question.text for e in seen] == ["q3"]
    assert len(read_session(session.log.path).conversation.exchanges) == 3


class BrokenTranscriber:
    """Raises what CTranslate2 raises on a host without its CUDA libraries; fixed by .healed."""

    name = "broken-stt"

    def __init__(self):
        self.healed = False

    def transcribe(self, samples, language=None):
        if not self.healed:
            raise RuntimeError("Library libcublas.so.12 is not found or cannot be loaded")
        return FakeTranscriber("and now it works").transcribe(samples, language)


def test_a_transcriber_that_raises_gives_a_notice_the_log_keeps_it_and_the_next_turn_works(settings):
    engines = turn.Engines(FakeChatModel("Fine."), BrokenTranscriber(), FakeSpeaker())
    session = ChatSession(settings)
    events = run(session, engines, turn.TurnInput(audio=wav_bytes(tone(1.0))))
    (rejected,) = of(events, turn.Rejected)
    assert "Speech recognition failed" in rejected.notice.text and "libcublas" in rejected.notice.text
    assert "Type your question" in rejected.notice.text and not of(events, turn.Asked)
    logged = read_session(session.log.path)
    assert [n.text for n in logged.conversation.items if not hasattr(n, "question")] == [rejected.notice.text]
    assert any("libcublas" in e["message"] for e in logged.errors)
    assert not list((settings.log_dir / "media").glob("*.wav"))  # no recording kept without its question

    typed = run(session, engines, turn.TurnInput(text="Then I type."))
    assert of(typed, turn.Done)[0].answer.text == "Fine."
    engines.transcriber.healed = True
    spoken = run(session, engines, turn.TurnInput(audio=wav_bytes(tone(1.0))))
    assert of(spoken, turn.Asked)[0].question.text == "and now it works"
    assert [e.question.text for e in read_session(session.log.path).conversation.exchanges] == [
        "Then I type.", "and now it works"]


def test_speech_failure_is_noted_once_however_many_sentences_fail(settings):
    engines = turn.Engines(FakeChatModel("One. Two. Three. Four."), FakeTranscriber(), FakeSpeaker(fail=True))
    done = of(run(ChatSession(settings), engines, turn.TurnInput(text="Count.")), turn.Done)[0]
    assert done.answer.note.count("Speech failed") == 1 and done.answer.text == "One. Two. Three. Four."


class SilentModel(FakeChatModel):
    """A model (a hanging server, a long prompt) that sends only heartbeats until stopped."""

    @generation
    def stream(self, exchanges, images, options, stop=None):
        while not stop.is_set():
            time.sleep(0.01)
            yield HEARTBEAT
        return GenerationInfo(len(exchanges), completion_tokens=0)


def test_heartbeats_let_stop_end_a_reply_that_has_not_started(settings):
    engines = turn.Engines(SilentModel(), None, FakeSpeaker())
    session = ChatSession(settings)
    asked = turn.ask(session, engines, turn.TurnInput(text="Hello?"))
    stop, beats = Interrupt(), 0
    for event in turn.answer(session, engines, asked.index, OPTIONS, interrupt=stop):
        assert not isinstance(event, turn.Token)  # a heartbeat is no text
        if isinstance(event, turn.Working):
            beats += 1
            if beats == 3:
                stop.set()  # what the page's Stop does, which it can only do at such a moment
    answer = read_session(session.log.path).conversation.exchanges[0].answer
    assert beats == 3 and answer.status == "stopped" and answer.text == "" and "ttft_s" not in answer.timings


def test_the_second_of_two_identical_unanswered_questions_is_answered_with_its_whole_context(settings, engines):
    """A session resumed after a crash can hold the same question twice, neither answered (a log of a
    version before every question got an answer record): the reply to the second is found by its
    place, not by value, so the model sees every exchange up to it."""
    crashed = ChatSession(settings)
    run(crashed, engines, turn.TurnInput(text="What is it?", image=png_bytes()))
    for number in (1, 2):  # the app died before answering; asked again after a reload
        crashed.log.question(number, Question("And the colour?"))
    session = ChatSession.resume(settings, crashed.session_id)
    items = session.conversation.items
    first, second = SimpleNamespace(index=1), SimpleNamespace(index=2)
    assert items[first.index] == items[second.index] and items[first.index].answer is None  # equal by value

    reply = turn.answer(session, engines, second.index, OPTIONS)
    list(reply)
    seen, _ = engines.chat.calls[-1]
    assert [e.question.text for e in seen] == ["What is it?", "And the colour?", "And the colour?"]
    assert seen[0].question.image is not None
    assert session.exchange(first.index).answer is None and session.exchange(second.index).answer == reply.answer
    logged = read_session(session.log.path).conversation.exchanges
    assert [e.turn.number for e in logged] == [0, 1, 2]
    assert logged[1].answer is None and logged[2].answer.text == reply.answer.text


def test_regenerate_drops_the_answer_and_the_new_one_replaces_it_under_the_same_turn(settings, engines):
    engines.chat.enqueue("First try.", "Second try.")
    session = ChatSession(settings)
    asked = turn.ask(session, engines, turn.TurnInput(text="Say something."))
    list(turn.answer(session, engines, asked.index, OPTIONS))
    session.regenerate(asked.index)
    assert session.exchange(asked.index).answer is None and session.turn_number(asked.index) == 0
    list(turn.answer(session, engines, asked.index, OPTIONS))
    logged = read_session(session.log.path).conversation.exchanges
    assert [(e.turn.number, e.answer.text) for e in logged] == [(0, "Second try.")]
