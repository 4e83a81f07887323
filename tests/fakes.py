"""Fakes registered like the real engines, for fast unit tests."""

from __future__ import annotations

import threading
import time

import numpy as np

from core.engines.api import GenerationInfo, Speech, Transcript, generation
from core.errors import GenerationError, SpeechError
from core.media import wav_bytes  # noqa: F401  (tests make WAVs as the app sends them)


class FakeChatModel:
    """Streams the queued replies word by word; can fail after n chunks."""

    name = "fake"
    note = ""

    def __init__(self, *replies: str, delay_s: float = 0.0, fail_after: int | None = None, lock: bool = True):
        self.replies = list(replies)
        self.delay_s = delay_s
        self.fail_after = fail_after
        self.lock = threading.Lock() if lock else None
        self.calls: list = []  # (exchanges, options) of each stream() call

    def enqueue(self, *replies: str) -> None:
        self.replies.extend(replies)

    @generation
    def stream(self, exchanges, images, options, stop=None):
        self.calls.append((list(exchanges), options))
        reply = self.replies.pop(0) if self.replies else "ok."
        words, written = reply.split(" "), 0
        for i, word in enumerate(words):
            if self.fail_after is not None and i == self.fail_after:
                raise GenerationError("The model crashed (fake).")
            if stop is not None and stop.is_set():
                break
            time.sleep(self.delay_s)
            yield word if i == len(words) - 1 else word + " "
            written += 1
        return GenerationInfo(len(exchanges), prompt_tokens=sum(len(e.question.text.split()) for e in exchanges),
                              completion_tokens=written)  # a token a word


class FakeTranscriber:
    name = "fake-stt"

    def __init__(self, text: str = "what is in the picture", language: str = "en"):
        self.text, self.language = text, language

    def transcribe(self, samples: np.ndarray, language: str | None = None) -> Transcript:
        return Transcript(self.text, language or self.language, len(samples) / 16000)


class FakeSpeaker:
    """Returns a tiny valid WAV per sentence; records what it was asked to say."""

    name = "fake-tts"

    def __init__(self, fail: bool = False, delay_s: float = 0.0):
        self.fail, self.delay_s = fail, delay_s
        self.said: list[tuple[str, str]] = []

    def speak(self, text: str, language: str = "en") -> Speech:
        if self.fail:
            raise SpeechError("fake TTS is down.")
        time.sleep(self.delay_s)
        self.said.append((text, language))
        return Speech(wav_bytes(np.zeros(160, dtype=np.float32)), "wav", self.name)


def tone(seconds: float, amplitude: float = 0.3, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
