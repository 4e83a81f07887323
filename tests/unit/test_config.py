import pytest

from core.config import Settings


def test_defaults_follow_the_contract():
    s = Settings.from_env({})
    assert s.stt_engine == "faster-whisper" and s.tts_engine == "gtts"
    assert str(s.log_dir) == "logs"
    if s.device == "cpu":
        assert s.llava_quant == "none" and "onevision" in s.llava_model


def test_bad_values_are_refused_with_the_variable_name():
    with pytest.raises(ValueError, match="TTS_ENGINE"):
        Settings.from_env({"TTS_ENGINE": "loud"})


def test_api_key_is_masked_in_the_display():
    rows = dict(Settings.from_env({"OPENAI_API_KEY": "sk-secret"}).as_rows())
    assert rows["openai_api_key"] == "set"
