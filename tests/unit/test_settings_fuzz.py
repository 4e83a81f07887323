"""Every variable of the README's configuration table, given hostile values, through the settings
module (core.config): a value the app cannot use is refused with a ConfigError (an AppError) whose
message names the variable, quotes its value (a key never) and says what it accepts; a value it can
use is taken as what it means. tests/app/test_settings_app.py starts the app with a subset of these."""

import json
from pathlib import Path

import pytest

from core import config
from core.config import VARIABLES, ConfigError, Settings, shown
from core.errors import AppError

TEN_TO_THE_30 = "1" + "0" * 30
# The fields Piper reads from a voice's .onnx.json, as a real voice (en_US-joe-medium) has them
PIPER_CONFIG = {"audio": {"sample_rate": 22050}, "espeak": {"voice": "en-us"}, "num_symbols": 256, "num_speakers": 1,
                "phoneme_id_map": {"_": [0], "a": [14]}, "inference": {"noise_scale": 0.667, "length_scale": 1},
                "language": {"family": "en", "name_english": "English"}, "phoneme_type": "espeak"}
BLANK = ["", "   ", "\t \n"]  # unset: the default
GARBAGE = ["²⁵⁶", "٢٥٦", "-1", "+1", TEN_TO_THE_30, "NaN", "inf", "0x10", "1e3"]  # refused where a choice or a number is read
URLS_REFUSED = [
    "localhost:8000/v1",  # no scheme
    "ftp://example.com/v1",
    "http://[::1/v1",  # a broken IPv6 host: urllib raises "Invalid IPv6 URL"
    "http://[zz::1]:8000/v1",
    "http://[::1]x/v1",
    "http://127.0.0.1:99999/v1",  # a port that cannot exist
    "http://127.0.0.1:0/v1",
    "http://gpu:-1/v1",
    "http://gpu:٨٠/v1",
    "http://gpu:port/v1",
    "http:///v1",
    "http://:8000/v1",
    "http://exa mple.com/v1",
    "http://ho\nst/v1",
    "http://bad..host/v1",
    "http://-bad.example/v1",
    "http://999.1.1.1/v1",
    "http://user:s3cret@[::1/v1",  # credentials in a broken URL: never shown
    *GARBAGE,
]
URLS_TAKEN = ["http://[::1]:8000/v1", "https://api.example.com/v1", "http://gpu:8000/v1", "http://münchen.example/v1",
              "http://127.0.0.1:65535", "http://user:pw@gpu:8000/v1?key=k"]
KEYS_REFUSED = ["sk-abc\ndef", "sk-abc\r\nX-Evil: 1", "sk-clé", "sk-ключ", "sk abc", "sk-\x7f", "sk-🔑", "sk-\x00x"]
KEYS_TAKEN = ["sk-abc123", "  sk-abc123  ", "Zm9vYmFy+/=_-.~"]
NAMES_REFUSED = ["model\nname", "x" * 300, "\u200bmodel", "mo\x1bdel"]  # a model name on a server
NAMES_TAKEN = ["llava-hf/llava-1.5-7b-hf", "²⁵⁶", "NaN", "whisper-1"]
PIPER_JSON_REFUSED = {
    "a JSON list": [PIPER_CONFIG],
    "a JSON string": "en_US",
    "a JSON number": 5,
    "null": None,
    "language a string": {**PIPER_CONFIG, "language": "en"},
    "language.family a number": {**PIPER_CONFIG, "language": {"family": 1}},
    "no num_symbols": {k: v for k, v in PIPER_CONFIG.items() if k != "num_symbols"},
    "num_symbols a string": {**PIPER_CONFIG, "num_symbols": "256"},
    "num_symbols true": {**PIPER_CONFIG, "num_symbols": True},
    "num_symbols 0": {**PIPER_CONFIG, "num_symbols": 0},
    "audio a list": {**PIPER_CONFIG, "audio": [22050]},
    "sample_rate a string": {**PIPER_CONFIG, "audio": {"sample_rate": "22050"}},
    "sample_rate negative": {**PIPER_CONFIG, "audio": {"sample_rate": -22050}},
    "espeak a string": {**PIPER_CONFIG, "espeak": "en-us"},
    "espeak.voice a number": {**PIPER_CONFIG, "espeak": {"voice": 5}},
    "phoneme_id_map a list": {**PIPER_CONFIG, "phoneme_id_map": [["a", 14]]},
    "phoneme ids not lists": {**PIPER_CONFIG, "phoneme_id_map": {"a": 14}},
    "inference a string": {**PIPER_CONFIG, "inference": "fast"},
    "noise_scale a string": {**PIPER_CONFIG, "inference": {"noise_scale": "0.6"}},
}


@pytest.fixture(autouse=True)
def cpu(monkeypatch):
    monkeypatch.setattr(config, "cuda_available", lambda: False)


class Files:
    """Things on disk that a value can name."""

    def __init__(self, root: Path):
        self.root = root
        (root / "a-file.txt").write_text("not a folder")
        (root / "empty-folder").mkdir()
        (root / "llava").mkdir()
        (root / "llava" / "config.json").write_text("{}")
        (root / "whisper-ct2").mkdir()
        (root / "whisper-ct2" / "model.bin").write_bytes(b"ct2")
        (root / "tiny.pt").write_bytes(b"pt")
        (root / "no-json.onnx").write_bytes(b"onnx")

    def path(self, name: str) -> str:
        return str(self.root / name)

    def voice(self, name: str, content) -> str:
        onnx = self.root / f"{name.replace(' ', '-')}.onnx"
        onnx.write_bytes(b"onnx")
        text = content if isinstance(content, str) and content.startswith("RAW:") else json.dumps(content)
        Path(f"{onnx}.json").write_text(text.removeprefix("RAW:"), encoding="utf-8")
        return str(onnx)


@pytest.fixture
def files(tmp_path) -> Files:
    return Files(tmp_path)


def refused(variable: str, value: str, **others: str) -> ConfigError:
    """Assert that the value is refused with a message that names the variable and quotes the value (keys masked)."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value, **others})
    error = caught.value
    text = str(error)
    assert isinstance(error, AppError) and error.variables == [variable], text
    (problem,) = error.problems
    assert problem.message.startswith(f"{variable}=") or variable in problem.message, text
    assert problem.fix and problem.fix[0].isupper() and problem.fix.endswith("."), text  # a sentence saying what to do
    if variable.endswith("_API_KEY"):
        assert value.strip() not in text and "not shown" in text
    elif not variable.endswith("_BASE_URL"):
        assert shown(variable, value.strip()) in text
    for library_words in ("invalid literal", "Repo id", "Traceback", "has no attribute", "Invalid IPv6", "Port out of range"):
        assert library_words not in text
    return error


def taken(variable: str, value: str, **others: str) -> Settings:
    return Settings.from_env({variable: value, **others})


@pytest.mark.parametrize("variable", VARIABLES)
@pytest.mark.parametrize("value", BLANK, ids=["empty", "spaces", "whitespace"])
def test_an_empty_value_is_the_default(variable, value):
    others = {"STT_BASE_URL": "http://gpu:8001/v1"} if variable == "STT_ENGINE" else {}
    assert taken(variable, value, **others) == Settings.from_env(others)


@pytest.mark.parametrize("variable", ["LLAVA_QUANT", "STT_ENGINE", "TTS_ENGINE"])
@pytest.mark.parametrize("value", [*GARBAGE, "4 bit", "fp16", "whisper.cpp", "g tts", "loud"])
def test_a_choice_must_be_one_of_the_list(variable, value):
    error = refused(variable, value)
    assert ", ".join({"LLAVA_QUANT": config.QUANTS, "STT_ENGINE": config.STT_ENGINES,
                      "TTS_ENGINE": config.TTS_ENGINES}[variable]) in error.problems[0].fix


def test_a_choice_is_read_whatever_its_case():
    s = Settings.from_env({"LLAVA_QUANT": " NF4 ", "TTS_ENGINE": "ESPEAK", "STT_ENGINE": "OpenAI-API",
                           "STT_BASE_URL": "http://gpu:8001/v1"})
    assert (s.llava_quant, s.tts_engine, s.stt_engine) == ("nf4", "espeak", "openai-api")


@pytest.mark.parametrize("value", [*GARBAGE, "２０４８", "2048.0", "2_048", "2,048", "0", "255", "131073", "9" * 5000,
                                   "−2048", "2048 tokens"])
def test_cache_tokens_are_digits_within_bounds(value):
    error = refused("LLAVA_CACHE_TOKENS", value)
    assert "256 to 131,072" in error.problems[0].fix


@pytest.mark.parametrize("value, tokens", [("256", 256), (" 2048 ", 2048), ("131072", 131_072), ("00512", 512)])
def test_cache_tokens_in_bounds_are_taken(value, tokens):
    assert taken("LLAVA_CACHE_TOKENS", value).llava_cache_tokens == tokens


@pytest.mark.parametrize("variable", ["OPENAI_BASE_URL", "STT_BASE_URL"])
@pytest.mark.parametrize("value", URLS_REFUSED)
def test_a_server_url_needs_a_scheme_a_host_and_a_port_that_can_exist(variable, value):
    others = {"STT_ENGINE": "openai-api", "OPENAI_BASE_URL": "http://gpu:8000/v1"} if variable == "STT_BASE_URL" else {}
    error = refused(variable, value, **others)
    assert "s3cret" not in str(error)
    if "99999" in value:
        assert "99999" in str(error) and "1 to 65535" in str(error)


@pytest.mark.parametrize("value", URLS_TAKEN)
def test_server_urls_that_a_client_can_reach_are_taken(value):
    assert taken("OPENAI_BASE_URL", value).openai_base_url == value


@pytest.mark.parametrize("variable", ["OPENAI_API_KEY", "STT_API_KEY"])
@pytest.mark.parametrize("value", KEYS_REFUSED)
def test_an_api_key_must_fit_in_an_http_header(variable, value):
    error = refused(variable, value, OPENAI_BASE_URL="http://gpu:8000/v1")
    assert "HTTP header" in error.problems[0].message


@pytest.mark.parametrize("value", KEYS_TAKEN)
def test_api_keys_that_fit_in_a_header_are_taken(value):
    s = taken("OPENAI_API_KEY", value)
    assert s.openai_api_key == value.strip() and s.stt_api_key == value.strip()


@pytest.mark.parametrize("variable", ["LLAVA_REMOTE_MODEL"])
@pytest.mark.parametrize("value", NAMES_REFUSED)
def test_a_server_model_name_is_one_line_of_text(variable, value):
    refused(variable, value)


@pytest.mark.parametrize("value", NAMES_TAKEN)
def test_server_model_names_are_taken_as_written(value):
    assert taken("LLAVA_REMOTE_MODEL", value).llava_remote_model == value
    assert taken("WHISPER_MODEL", value, STT_ENGINE="openai-api", STT_BASE_URL="http://g:1/v1").whisper_model == value


@pytest.mark.parametrize("name", ["missing", "a-file.txt", "empty-folder", "~missing", "./missing", "x" * 5000])
def test_llava_model_a_path_must_be_a_model_folder(files, name):
    value = files.path(name) if name[0] not in "~." else name
    error = refused("LLAVA_MODEL", value)
    assert "config.json" in error.problems[0].fix


@pytest.mark.parametrize("value", ["a/b/c", "owner/na me", "llava hf", "owner--name", "name.git", "-name", "C:\\models\\llava",
                                   "http://example.com/model", "x" * 200, "x" * 5000, "²⁵⁶", "+1", "-1", "owner/"])
def test_llava_model_otherwise_must_be_a_hub_id(value):
    error = refused("LLAVA_MODEL", value)
    assert "Hugging Face model id" in error.problems[0].message


def test_llava_model_a_model_folder_or_a_hub_id_is_taken(files, monkeypatch):
    assert taken("LLAVA_MODEL", files.path("llava")).llava_model == files.path("llava")
    monkeypatch.setenv("HOME", str(files.root))
    assert taken("LLAVA_MODEL", "~/llava").llava_model == files.path("llava")  # ~ made absolute for the loader
    for hub_id in ("llava-hf/llava-1.5-7b-hf", "NaN", TEN_TO_THE_30, "model_1.5"):  # odd, but ids the hub allows
        assert taken("LLAVA_MODEL", hub_id).llava_model == hub_id


@pytest.mark.parametrize("name", ["missing", "a-file.txt", "empty-folder", "tiny.pt"])
def test_whisper_model_a_path_for_faster_whisper_must_be_a_ct2_folder(files, name):
    error = refused("WHISPER_MODEL", files.path(name), STT_ENGINE="faster-whisper")
    assert "model.bin" in error.problems[0].fix


@pytest.mark.parametrize("value", [*GARBAGE, "huge", "a/b/c", "owner/na me", "Base"])
def test_whisper_model_a_name_for_faster_whisper_is_a_size_or_a_hub_id(value):
    refused("WHISPER_MODEL", value, STT_ENGINE="faster-whisper")


@pytest.mark.parametrize("name", ["missing", "empty-folder", "whisper-ct2"])
def test_whisper_model_a_path_for_openai_whisper_must_be_a_checkpoint_file(files, name):
    refused("WHISPER_MODEL", files.path(name), STT_ENGINE="openai-whisper")


@pytest.mark.parametrize("value", [*GARBAGE, "huge", "Systran/faster-whisper-small", "distil-large-v3"])
def test_whisper_model_a_name_for_openai_whisper_is_one_of_its_sizes(value):
    refused("WHISPER_MODEL", value, STT_ENGINE="openai-whisper")


def test_whisper_models_each_engine_can_load_are_taken(files):
    for engine, values in {"faster-whisper": ["base", "tiny.en", "distil-large-v3", "Systran/faster-whisper-small",
                                              files.path("whisper-ct2")],
                           "openai-whisper": ["turbo", "large-v3", files.path("tiny.pt")]}.items():
        for value in values:
            assert taken("WHISPER_MODEL", value, STT_ENGINE=engine).whisper_model == value


def test_whisper_model_for_a_server_is_one_line_of_text():
    for value in NAMES_REFUSED:
        refused("WHISPER_MODEL", value, STT_ENGINE="openai-api", STT_BASE_URL="http://gpu:8001/v1")


@pytest.mark.parametrize("case", list(PIPER_JSON_REFUSED))
def test_piper_voice_json_of_the_wrong_shape_is_refused_by_field(files, case):
    error = refused("PIPER_VOICE", files.voice(case, PIPER_JSON_REFUSED[case]))
    assert "Piper cannot read it" in error.problems[0].message


def test_piper_voice_json_says_which_field_and_what_it_should_be(files):
    listed = refused("PIPER_VOICE", files.voice("listed", [PIPER_CONFIG])).problems[0].message
    assert "holds a list, where Piper's format has an object" in listed
    language = refused("PIPER_VOICE", files.voice("language", {**PIPER_CONFIG, "language": "en"})).problems[0].message
    assert "'language' is a string (\"en\"), where Piper's format has an object" in language


@pytest.mark.parametrize("content", ["RAW:", "RAW:{not json", "RAW:\ufeff{}"], ids=["empty", "broken", "bom"])
def test_piper_voice_json_that_is_not_json_is_refused(files, content):
    refused("PIPER_VOICE", files.voice("broken", content))


@pytest.mark.parametrize("name", ["missing.onnx", "empty-folder", "no-json.onnx", "a-file.txt", "x" * 5000])
def test_piper_voice_must_be_a_file_with_its_json(files, name):
    refused("PIPER_VOICE", files.path(name))


def test_piper_voice_as_piper_reads_it_is_taken(files):
    assert taken("PIPER_VOICE", files.voice("good", PIPER_CONFIG)).piper_voice == Path(files.voice("good", PIPER_CONFIG))


def test_piper_voice_the_bundled_one_passes_the_check():
    from core.engines.tts import bundled_piper_voice

    voice = bundled_piper_voice()
    if voice is None:
        pytest.skip("no bundled voice in this install")
    assert taken("PIPER_VOICE", str(voice)).piper_voice == voice


@pytest.mark.parametrize("name", ["a-file.txt", "a-file.txt/logs", "x" * 5000])
def test_log_dir_must_be_a_folder_or_one_that_can_be_made(files, name):
    refused("LOG_DIR", files.path(name))


def test_log_dir_a_new_folder_is_taken_and_not_made_yet(files):
    s = taken("LOG_DIR", files.path("new/logs"))
    assert s.log_dir == Path(files.path("new/logs")) and not s.log_dir.exists()


def test_every_bad_variable_is_named_at_once(files):
    env = {"LLAVA_CACHE_TOKENS": "²⁵⁶", "OPENAI_BASE_URL": "http://[::1/v1", "OPENAI_API_KEY": "sk-\nx",
           "TTS_ENGINE": "NaN", "PIPER_VOICE": files.voice("listed", []), "LLAVA_MODEL": files.path("a-file.txt")}
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert sorted(caught.value.variables) == sorted(env)


def test_settings_from_the_environment_are_checked_again_until_they_are_good(files, monkeypatch):
    """A value fixed on disk (a voice's JSON) is seen at the next run; good settings are kept, not re-read."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    voice = files.voice("fixed-later", [])
    monkeypatch.setenv("PIPER_VOICE", voice)
    with pytest.raises(ConfigError):
        Settings.from_env()
    Path(f"{voice}.json").write_text(json.dumps(PIPER_CONFIG))
    first = Settings.from_env()
    Path(f"{voice}.json").write_text("[]")  # broken while the app runs: the speaker says so then
    assert Settings.from_env() is first
