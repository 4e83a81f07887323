import json

import pytest

from core import config
from core.config import Settings

# The fields Piper reads from a voice's .onnx.json (piper.config.PiperConfig.from_dict), as a real voice has them
PIPER_CONFIG = {"audio": {"sample_rate": 22050}, "espeak": {"voice": "en-gb"}, "num_symbols": 256, "num_speakers": 1,
                "phoneme_id_map": {"_": [0], "a": [14]}, "language": {"family": "en", "name_english": "English"}}


@pytest.mark.parametrize("cuda", [False, True])
def test_defaults_follow_the_contract(monkeypatch, cuda):
    """The defaults on each kind of machine (what the README promises), whichever this one is."""
    monkeypatch.setattr(config, "cuda_available", lambda: cuda)
    s = Settings.from_env({})
    assert s.tts_engine == "gtts" and str(s.log_dir) == "logs" and s.openai_base_url is None and s.piper_voice is None
    if cuda:
        assert (s.device, s.llava_quant, s.llava_model) == ("cuda", "4bit", config.CUDA_LLAVA_MODEL)
        assert s.stt_engine == "openai-whisper" and s.llava_cache_tokens == config.CUDA_CACHE_TOKENS
    else:
        assert (s.device, s.llava_quant, s.llava_model) == ("cpu", "int8", config.CPU_LLAVA_MODEL)
        assert s.stt_engine == "faster-whisper" and s.llava_cache_tokens is None
        assert "onevision" in s.llava_model


def test_bad_values_are_refused_with_the_variable_name():
    with pytest.raises(ValueError, match="TTS_ENGINE"):
        Settings.from_env({"TTS_ENGINE": "loud"})


def test_llava_quant_accepts_int8_and_names_itself_when_wrong():
    assert Settings.from_env({"LLAVA_QUANT": "INT8"}).llava_quant == "int8"
    with pytest.raises(ValueError, match=r"LLAVA_QUANT='int4' is not a choice .* one of: 4bit, nf4, 8bit, int8, none"):
        Settings.from_env({"LLAVA_QUANT": "int4"})


def test_api_key_is_masked_in_the_display():
    rows = dict(Settings.from_env({"OPENAI_API_KEY": "sk-secret"}).as_rows())
    assert rows["openai_api_key"] == "set"


def test_a_transcription_server_defaults_to_the_chat_server_and_its_key():
    s = Settings.from_env({"STT_ENGINE": "openai-api", "OPENAI_BASE_URL": "http://gpu:8000/v1", "OPENAI_API_KEY": "k"})
    assert s.stt_engine == "openai-api" and s.stt_base_url == "http://gpu:8000/v1" and s.stt_api_key == "k"
    own = Settings.from_env({"STT_ENGINE": "openai-api", "STT_BASE_URL": "http://gpu:8001/v1", "STT_API_KEY": "s"})
    assert own.stt_base_url == "http://gpu:8001/v1" and own.stt_api_key == "s" and own.openai_base_url is None
    assert Settings.from_env({"OPENAI_BASE_URL": "http://gpu:8000/v1"}).stt_base_url is None  # local Whisper


def test_a_transcription_server_needs_an_address():
    with pytest.raises(ValueError, match="STT_BASE_URL"):
        Settings.from_env({"STT_ENGINE": "openai-api"})


def test_a_base_url_without_a_scheme_is_refused_by_name():
    with pytest.raises(ValueError, match="OPENAI_BASE_URL='localhost:8000/v1'"):
        Settings.from_env({"OPENAI_BASE_URL": "localhost:8000/v1"})
    with pytest.raises(ValueError, match="STT_BASE_URL"):
        Settings.from_env({"STT_ENGINE": "openai-api", "STT_BASE_URL": "gpu:8001"})


def test_every_api_key_is_masked_in_the_display():
    rows = dict(Settings.from_env({"STT_ENGINE": "openai-api", "STT_BASE_URL": "http://x/v1", "STT_API_KEY": "sk-s"}).as_rows())
    assert rows["stt_api_key"] == "set" and "sk-s" not in str(rows)


def test_urls_are_shown_without_their_credentials():
    rows = dict(Settings.from_env({"OPENAI_BASE_URL": "http://user:pa%40ss@gpu:8000/v1", "STT_ENGINE": "openai-api",
                                   "STT_BASE_URL": "https://tok3n@speech.example/v1?key=k3y"}).as_rows())
    assert rows["openai_base_url"] == "http://gpu:8000/v1" and rows["stt_base_url"] == "https://speech.example/v1"
    assert not [value for value in rows.values() if "pa%40ss" in value or "tok3n" in value or "k3y" in value]


def test_masked_url_keeps_the_address():
    from core.config import masked_url

    assert masked_url("http://[::1]:8000/v1/") == "http://[::1]:8000/v1"
    assert masked_url("http://u:p@host/v1") == masked_url("http://host/v1") == "http://host/v1"


def test_piper_voice_must_be_a_voice_file_with_its_configuration_beside_it(tmp_path):
    voice = tmp_path / "en_GB-alan-medium.onnx"
    with pytest.raises(ValueError, match="PIPER_VOICE=.*is not a file"):
        Settings.from_env({"PIPER_VOICE": str(voice)})
    voice.write_bytes(b"onnx")
    with pytest.raises(ValueError, match=r"no en_GB-alan-medium\.onnx\.json beside it"):
        Settings.from_env({"PIPER_VOICE": str(voice)})
    voice.with_name("en_GB-alan-medium.onnx.json").write_text(json.dumps(PIPER_CONFIG))
    assert Settings.from_env({"PIPER_VOICE": str(voice), "TTS_ENGINE": "piper"}).piper_voice == voice
    assert Settings.from_env({}).piper_voice is None  # the bundled voice
    with pytest.raises(ValueError, match="PIPER_VOICE"):
        Settings.from_env({"PIPER_VOICE": str(tmp_path)})  # a folder is not a voice
