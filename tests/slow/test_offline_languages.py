"""Every language offline: the bundled multilingual Whisper base (the CPU and offline default) hears a
question spoken by espeak-ng in English, German or Spanish, detects its language, and the reply is
spoken in that language. One real voice turn per language through core.chat.turn: the real transcriber
as load_transcriber picks it offline, a fake chat model, the app's TTS_ENGINE=piper speaker chain
(Piper for English, espeak-ng for the languages its English voice lacks) recorded."""

import pytest

from bench.speech_engines import samples_of
from core.chat import turn
from core.chat.session import ChatSession
from core.engines.api import GenerationOptions
from core.engines.stt import load_transcriber
from core.engines.tts import EspeakSpeaker, make_speaker
from core.media import wav_bytes
from core.store.session_log import read_session
from tests.fakes import FakeChatModel

pytestmark = pytest.mark.slow

# The same question in each language, 4-5 s as espeak-ng says it: Whisper base took espeak-ng's German
# for English or Polish in clips under 3.5 s (bench/speech_engines.py, README "Voices and languages offline").
QUESTIONS = {
    "en": ("I would like to know how many people are in the photo and what they are doing.",
           "There are two people. They are walking."),
    "de": ("Ich möchte wissen, wie viele Menschen auf dem Foto zu sehen sind und was sie gerade machen.",
           "Es sind zwei Menschen. Sie gehen spazieren."),
    "es": ("Quiero saber cuántas personas hay en la foto y qué están haciendo.",
           "Hay dos personas. Están caminando."),
}


class Recording:
    """The app's speaker, with what it was asked to say, in which language, and who spoke."""

    def __init__(self, speaker):
        self.speaker, self.name = speaker, speaker.name
        self.said: list[tuple[str, str, str]] = []

    def speak(self, text, language="en"):
        speech = self.speaker.speak(text, language)
        self.said.append((text, language, speech.engine))
        return speech


@pytest.fixture(scope="module")
def transcriber():
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    try:
        transcriber, note = load_transcriber("faster-whisper", None, "cpu")
    finally:
        mp.undo()
    assert transcriber.name == "faster-whisper base (bundled)" and note == "", (transcriber.name, note)
    return transcriber


@pytest.fixture(scope="module")
def speaker():
    speaker, note = make_speaker("piper")
    assert note == "", note
    return speaker


@pytest.mark.parametrize("language", QUESTIONS)
def test_a_spoken_question_is_answered_aloud_in_its_own_language(language, transcriber, speaker, settings):
    question, reply = QUESTIONS[language]
    recording = wav_bytes(samples_of(EspeakSpeaker().speak(question, language)))
    engines = turn.Engines(FakeChatModel(reply), transcriber, Recording(speaker))
    session = ChatSession(settings)

    asked = turn.ask(session, engines, turn.TurnInput(audio=recording, language="en"))
    assert isinstance(asked, turn.Asked), asked
    assert asked.question.language == language and asked.question.source == "voice"
    assert asked.question.text.strip()
    answer = turn.answer(session, engines, asked.index, GenerationOptions(temperature=0))
    spoken = [event.speech for event in answer if isinstance(event, turn.Spoken)]

    said = engines.speaker.said
    assert " ".join(text for text, _, _ in said) == reply and len(said) == len(spoken) == 2
    assert {lang for _, lang, _ in said} == {language}  # the reply is spoken in the detected language
    engines_used = {engine for _, _, engine in said}
    assert engines_used == ({"Piper en_US-joe-medium"} if language == "en" else {"espeak-ng"})
    assert answer.answer.status == "complete" and answer.answer.audio  # the whole reply's audio, logged
    logged = read_session(session.log.path).conversation.exchanges[0]
    assert logged.question.language == language and logged.answer.text == reply


def test_detecting_on_the_decoders_encoder_output_gives_what_faster_whisper_gives(transcriber):
    """The transcriber detects the language in its one encoder pass (multilingual=True); faster-whisper
    with language=None encodes the window once more for the detection: same language, same words."""
    for language, (question, _) in QUESTIONS.items():
        samples = samples_of(EspeakSpeaker().speak(question, language))
        ours = transcriber.transcribe(samples)
        segments, info = transcriber.model.transcribe(samples, beam_size=1, vad_filter=False,
                                                      condition_on_previous_text=False)
        assert (ours.language, ours.text) == (info.language, "".join(s.text for s in segments).strip())
        assert ours.language == language
