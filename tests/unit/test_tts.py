import io
import wave

import pytest

from core.errors import SpeechError
from core.tts import CachedSpeaker, EspeakSpeaker, FallbackSpeaker, GTTSSpeaker, Speech, join_speech, make_speaker
from tests.fakes import FakeSpeaker


class Flaky:
    name = "flaky"

    def __init__(self):
        self.calls = 0

    def speak(self, text, language="en"):
        self.calls += 1
        raise SpeechError("HTTP 429 Too Many Requests.")


def test_fallback_says_so_once_and_rests_the_primary():
    primary, fallback = Flaky(), FakeSpeaker()
    speaker = FallbackSpeaker(primary, fallback)
    first, second = speaker.speak("One.", "en"), speaker.speak("Two.", "en")
    assert "429" in first.note and second.note == ""
    assert primary.calls == 1 and [t for t, _ in fallback.said] == ["One.", "Two."]


def test_gtts_timeout_becomes_a_speech_error(monkeypatch):
    import time

    speaker = GTTSSpeaker(timeout_s=0.2)
    monkeypatch.setattr(speaker, "_synthesise", lambda text, lang: time.sleep(2) or b"x")
    with pytest.raises(SpeechError, match="did not answer"):
        speaker.speak("Hello.", "en")


def test_gtts_responses_are_cached(monkeypatch):
    gtts, calls = GTTSSpeaker(), []
    monkeypatch.setattr(gtts, "_synthesise", lambda text, lang: calls.append(text) or b"mp3")
    speaker = CachedSpeaker(gtts)
    said = [speaker.speak("Hi.", "en"), speaker.speak("Hi.", "en"), speaker.speak("Hi.", "fr")]
    assert calls == ["Hi.", "Hi."] and said[0] is said[1] and said[2].audio == b"mp3"
    assert speaker.name == "gTTS"


def test_the_app_speakers_cache_both_engines():
    for speaker in (make_speaker("gtts").primary, make_speaker("gtts").fallback, make_speaker("espeak")):
        assert isinstance(speaker, CachedSpeaker)
    assert make_speaker("none") is None


def test_a_failure_is_not_cached():
    inner = Flaky()
    speaker = CachedSpeaker(inner)
    for _ in range(2):
        with pytest.raises(SpeechError):
            speaker.speak("One.", "en")
    assert inner.calls == 2


def test_espeak_makes_wav_and_survives_unknown_languages():
    speech = EspeakSpeaker().speak("Hello there.", "xx")
    with wave.open(io.BytesIO(speech.audio)) as w:
        assert w.getnframes() > 1000


def test_join_wav_keeps_all_frames():
    a, b = EspeakSpeaker().speak("one", "en"), EspeakSpeaker().speak("two", "en")
    def frames(speech: Speech) -> int:
        with wave.open(io.BytesIO(speech.audio)) as reader:
            return reader.getnframes()

    assert frames(join_speech([a, b])) == frames(a) + frames(b)
    assert join_speech([Speech(b"ab", "mp3", "g"), Speech(b"cd", "mp3", "g")]).audio == b"abcd"


def test_gtts_http_429_falls_back_for_the_rest_of_the_reply_and_says_so_once(monkeypatch):
    """gTTS itself meets a 429 at the HTTP layer (no network needed); the fallback takes over."""
    import requests

    sent = []

    def too_many_requests(adapter, request, **kwargs):
        sent.append(request.url)
        response = requests.Response()
        response.status_code, response.reason, response.url, response.request = 429, "Too Many Requests", request.url, request
        response._content = b""
        return response

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", too_many_requests)
    fallback = FakeSpeaker()
    speaker = FallbackSpeaker(GTTSSpeaker(timeout_s=5), fallback)
    first = speaker.speak("One.", "en")
    tried = len(sent)
    second, third = speaker.speak("Two.", "en"), speaker.speak("Three.", "en")
    assert tried >= 1 and "429" in first.note and second.note == third.note == ""
    assert first.engine == fallback.name and [t for t, _ in fallback.said] == ["One.", "Two.", "Three."]
    assert len(sent) == tried  # the rest of the reply did not wait for gTTS again


def test_when_both_engines_fail_the_error_holds_both_reasons_once_and_is_the_same_each_sentence():
    class NoEspeak:
        name = "espeak-ng"

        def speak(self, text, language="en"):
            raise SpeechError("espeak-ng is not installed (apt-get install espeak-ng).")

    speaker = FallbackSpeaker(Flaky(), NoEspeak())
    errors = []
    for sentence in ("One.", "Two.", "Three."):
        with pytest.raises(SpeechError) as failed:
            speaker.speak(sentence, "en")
        errors.append(str(failed.value))
    assert errors[0].count("429") == 1 and errors[0].count("espeak-ng is not installed") == 1
    assert len(set(errors)) == 1  # what the turn needs to say it once
