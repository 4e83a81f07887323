"""Engine choice in one place (core.engines.load_engines, core.stt.load_transcriber), with fakes."""

import pytest

from core import engines as core_engines
from core import stt, vlm
from core.config import Settings
from core.errors import ModelLoadError
from tests.fakes import FakeChatModel


class FakeCT2:
    """Stands in for faster-whisper: on "cuda" it fails like CTranslate2 without CUDA 12 libraries."""

    loaded: list = []

    def __init__(self, model_path, device="cpu", name=None):
        self.model_path, self.device = model_path, device
        self.name = name or f"faster-whisper {model_path} (int8, {device})"
        FakeCT2.loaded.append(device)

    def transcribe(self, samples, language=None):
        if self.device == "cuda":
            raise RuntimeError("Library libcublas.so.12 is not found or cannot be loaded")
        return stt.Transcript("", "en", len(samples) / 16000)


def test_defaults_by_device():
    assert stt.default_size("cuda") == "turbo" and stt.default_size("cpu") == "base"
    cpu = Settings.from_env({})
    if cpu.device == "cpu":
        assert cpu.stt_engine == "faster-whisper" and cpu.llava_cache_tokens is None


def test_faster_whisper_failing_its_gpu_probe_falls_back_to_the_cpu_with_a_note(monkeypatch):
    FakeCT2.loaded = []
    monkeypatch.setattr(stt, "FasterWhisperTranscriber", FakeCT2)
    transcriber, note = stt.load_transcriber("faster-whisper", "/models/whisper-small", "cuda")
    assert FakeCT2.loaded == ["cuda", "cpu"] and transcriber.device == "cpu"
    assert "cannot use this GPU" in note and "libcublas" in note and "STT_ENGINE=openai-whisper" in note
    assert transcriber.transcribe(stt.PROBE).language == "en"  # the fallback works


def test_faster_whisper_passing_its_gpu_probe_stays_on_the_gpu(monkeypatch):
    class Works(FakeCT2):
        def transcribe(self, samples, language=None):
            return stt.Transcript("", "en", 1.0)

    monkeypatch.setattr(stt, "FasterWhisperTranscriber", Works)
    transcriber, note = stt.load_transcriber("faster-whisper", "/models/whisper-small", "cuda")
    assert transcriber.device == "cuda" and note == ""


def test_no_probe_on_the_cpu(monkeypatch):
    FakeCT2.loaded = []
    monkeypatch.setattr(stt, "FasterWhisperTranscriber", FakeCT2)
    monkeypatch.setattr(FakeCT2, "transcribe", lambda self, s, language=None: pytest.fail("probed on the CPU"))
    stt.load_transcriber("faster-whisper", "/models/whisper-small", "cpu")
    assert FakeCT2.loaded == ["cpu"]


def test_load_engines_loads_the_configured_model_and_turns_off_a_broken_speech_part(monkeypatch):
    calls, said = [], []

    def load(model_id, quant, device, token_timeout_s, cache_tokens=None, progress=None):
        calls.append((model_id, quant, device, cache_tokens))
        return FakeChatModel()

    def no_speech(*args, **kwargs):
        raise ModelLoadError("Could not load the speech model.", "Set WHISPER_MODEL.")

    monkeypatch.setattr(vlm.LlavaModel, "load", load)
    monkeypatch.setattr(stt, "load_transcriber", no_speech)
    settings = Settings.from_env({"LLAVA_MODEL": "some/llava", "TTS_ENGINE": "none", "LLAVA_CACHE_TOKENS": "1024"})
    loaded = core_engines.load_engines(settings, said.append)
    assert calls == [("some/llava", settings.llava_quant, settings.device, 1024)]
    assert loaded.engines.transcriber is None and loaded.engines.speaker is None
    assert loaded.notes == ["Voice input is off: Could not load the speech model. Set WHISPER_MODEL."]
    assert any("some/llava" in line for line in said)


def test_a_chat_model_that_cannot_load_is_an_error_for_the_page(monkeypatch):
    def fail(*args, **kwargs):
        raise ModelLoadError("Could not load the model LLAVA_MODEL='x'.", "Set LLAVA_MODEL.")

    monkeypatch.setattr(vlm.LlavaModel, "load", fail)
    with pytest.raises(ModelLoadError, match="LLAVA_MODEL"):
        core_engines.load_engines(Settings.from_env({"LLAVA_MODEL": "x", "TTS_ENGINE": "none"}))


@pytest.mark.parametrize("value", ["12", "many", "-5"])
def test_cache_tokens_must_be_a_sensible_number(value):
    with pytest.raises(ValueError, match="LLAVA_CACHE_TOKENS"):
        Settings.from_env({"LLAVA_CACHE_TOKENS": value})
