"""Engine choice in one place (core.engines.loading.load_engines, core.engines.stt.load_transcriber), with fakes."""

import pytest

from core.config import Settings
from core.engines import loading as core_engines
from core.engines import stt, vlm
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


def test_a_failed_start_is_remembered_then_tried_again(monkeypatch):
    """ui/resources: a chat server that is down costs one attempt per RETRY_AFTER_S, not one per click."""
    from ui import resources

    attempts, clock = [], [1000.0]

    def load(settings, progress):
        attempts.append(clock[0])
        if len(attempts) < 3:
            raise ModelLoadError("Cannot reach the chat server at http://127.0.0.1:9/v1.", "Check that it is running.")
        return core_engines.Loaded(core_engines.Engines(FakeChatModel()))

    monkeypatch.setattr(resources, "load_engines", load)
    monkeypatch.setattr(resources.time, "monotonic", lambda: clock[0])
    settings = Settings.from_env({"LLAVA_MODEL": "down", "TTS_ENGINE": "none"})
    resources._slot.clear()
    for _ in range(3):
        with pytest.raises(ModelLoadError, match="Cannot reach"):
            resources.shared_engines(settings, print)
    assert attempts == [1000.0]
    clock[0] += resources.RETRY_AFTER_S + 1
    with pytest.raises(ModelLoadError):
        resources.shared_engines(settings, print)
    clock[0] += resources.RETRY_AFTER_S + 1
    assert isinstance(resources.shared_engines(settings, print).engines.chat, FakeChatModel)
    assert len(attempts) == 3
    resources._slot.clear()


def test_an_unavailable_chat_engine_answers_with_its_reason_and_the_question_is_logged(settings):
    from core.chat import turn
    from core.chat.session import ChatSession
    from core.engines.api import GenerationOptions
    from core.store.session_log import read_session
    from ui.resources import Unavailable

    engines = core_engines.Engines(Unavailable(ModelLoadError("The chat server did not answer within 10 s.", "Try later.")))
    session = ChatSession(settings)
    asked = turn.ask(session, engines, turn.TurnInput(text="Are you there?"))
    done = list(turn.answer(session, engines, asked.index, GenerationOptions()))[-1]
    assert done.answer.status == "error" and "did not answer within 10 s" in done.answer.note
    assert read_session(session.log.path).conversation.exchanges[0].question.text == "Are you there?"


@pytest.mark.parametrize("error,falls_back", [(OSError("Network is unreachable"), True),
                                              (ValueError("a bug in the loader"), False)])
def test_only_a_failed_download_falls_back_to_the_bundled_whisper(monkeypatch, error, falls_back):
    class Loader:
        def __init__(self, size, device, name=None):
            if size == "base":
                raise error
            self.size, self.name = size, name or size

    monkeypatch.setattr(stt, "FasterWhisperTranscriber", Loader)
    monkeypatch.setattr(stt, "bundled_tiny_en", lambda: "/bundled/tiny.en")
    monkeypatch.setattr(stt, "bundled_base", lambda: None)  # else the CPU's base is the installed copy: no download
    monkeypatch.setattr(stt, "hub_offline", lambda: False)
    if falls_back:
        transcriber, note = stt.load_transcriber("faster-whisper", None, "cpu")
        assert transcriber.size == "/bundled/tiny.en" and "could not be downloaded" in note
    else:
        with pytest.raises(ModelLoadError, match="a bug in the loader"):
            stt.load_transcriber("faster-whisper", None, "cpu")
