"""Errors meant for the user: each says what went wrong and what to do next."""

from __future__ import annotations


class AppError(Exception):
    """Base class of every error whose message is shown to the user as is."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}".strip()


class InvalidImage(AppError):
    """The upload is not an image we can read, or is too large."""


class InvalidAudio(AppError):
    """The recording cannot be decoded, is silent, or is too long."""


class ModelLoadError(AppError):
    """A model (LLaVA, Whisper) could not be loaded."""


class GenerationError(AppError):
    """The model failed while writing a reply."""


class SpeechError(AppError):
    """Text-to-speech failed; the text reply is still there."""


class TranscriptionError(AppError):
    """The speech server could not transcribe the recording."""
