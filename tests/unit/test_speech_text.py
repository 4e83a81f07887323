"""Text is cleaned once, at the speech chain's entry, before any engine sees it (issue 24, finding 3)."""

import random

import pytest

from core.engines.speech_text import speech_text
from core.engines.tts import CachedSpeaker, EspeakSpeaker, PiperSpeaker, SpeakerChain, make_speaker
from core.errors import SpeechError
from core.limits import MAX_SPOKEN_CHARS, MAX_SPOKEN_WORD_CHARS
from tests.fakes import FakeSpeaker


def test_a_nul_in_the_model_text_reaches_piper_no_more_and_piper_is_not_rested():
    chain = SpeakerChain([CachedSpeaker(PiperSpeaker()), CachedSpeaker(EspeakSpeaker())])
    speech = chain.speak("Hello\x00 there, the\x1b[31m cat sits.", "en")
    assert speech.engine.startswith("Piper") and speech.note == ""  # before: "Piper failed: embedded null character"
    assert chain.speak("And a second sentence.", "en").engine.startswith("Piper")  # not left alone for 5 minutes


def test_the_engines_see_only_cleaned_text():
    engine = FakeSpeaker()
    chain = SpeakerChain([engine])
    chain.speak("**Bold** <script>x()</script> [the link](https://tracker.example/?q=1) `code`\x00 " + "z" * 300)
    (said, _), = engine.said
    assert said == "Bold x() the link code " + "z" * MAX_SPOKEN_WORD_CHARS


def test_nothing_speakable_fails_before_any_engine_and_rests_none():
    engine = FakeSpeaker()
    chain = SpeakerChain([engine, FakeSpeaker()])
    with pytest.raises(SpeechError):
        chain.speak("\x00\x01 ** <br> \u200b")
    assert engine.said == [] and chain.speak("Fine.").engine == engine.name


def test_every_app_speaker_starts_with_the_chain():
    for engine in ("gtts", "piper", "espeak"):
        assert isinstance(make_speaker(engine)[0], SpeakerChain)


def test_random_text_comes_out_printable_bounded_and_stable():
    """A seeded generator of hostile text: every category of character, long runs, markup."""
    rng = random.Random(24)
    pieces = ["\x00", "\x1b", "\ud800", "\u200b", "\ufeff", "\U0001f600", "<b>", "</i>", "**", "`", "#", "\n", "\t",
              "[a](b)", "é", "中", "x" * 100, " ", ".", "<!--", "-->"]
    for _ in range(3000):
        text = "".join(rng.choice(pieces) if rng.random() < 0.5 else chr(rng.randrange(0x110000))
                       for _ in range(rng.randrange(0, 60)))
        clean = speech_text(text)
        assert len(clean) <= MAX_SPOKEN_CHARS
        assert all(c == " " or c.isprintable() for c in clean), repr(clean)
        assert all(len(word) <= MAX_SPOKEN_WORD_CHARS for word in clean.split())
        clean.encode("utf-8")  # no lone surrogate
        assert speech_text(clean) == clean  # once is enough
