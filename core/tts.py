"""Text to speech: the Speaker protocol, gTTS (online) and espeak-ng (offline) engines."""

from __future__ import annotations

import io
import logging
import subprocess
import tempfile
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

from core.errors import SpeechError
from core.lru import LRU

logger = logging.getLogger(__name__)

GTTS_TIMEOUT_S = 8.0  # longest wait for Google's TTS endpoint per sentence
ESPEAK_TIMEOUT_S = 30.0
CACHE_SIZE = 256  # (text, language) pairs kept per speaker
GTTS_LANGS = {"zh": "zh-CN", "he": "iw", "jw": "jw"}  # Whisper code -> gTTS code, where they differ


@dataclass(frozen=True)
class Speech:
    audio: bytes
    format: str  # "mp3" or "wav"
    engine: str  # which engine produced it
    note: str = ""  # e.g. that a fallback was used

    @property
    def mime(self) -> str:
        return "audio/mpeg" if self.format == "mp3" else "audio/wav"


class Speaker(Protocol):
    name: str

    def speak(self, text: str, language: str = "en") -> Speech:
        """Synthesise text; raise SpeechError on failure."""
        ...


class CachedSpeaker:
    """A speaker that says each (text, language) once: a sentence repeated (a greeting, a regenerated
    reply) comes from memory."""

    def __init__(self, speaker: Speaker, size: int = CACHE_SIZE):
        self.speaker = speaker
        self.name = speaker.name
        self._cache: LRU[tuple[str, str], Speech] = LRU(size)

    def speak(self, text: str, language: str = "en") -> Speech:
        if cached := self._cache.get((text, language)):
            return cached
        speech = self.speaker.speak(text, language)
        self._cache.put((text, language), speech)
        return speech


class GTTSSpeaker:
    """Google Translate's TTS through gTTS, written to memory (save() leaves 0-byte files on error)."""

    name = "gTTS"

    def __init__(self, timeout_s: float = GTTS_TIMEOUT_S):
        self.timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="gtts")

    def _synthesise(self, text: str, language: str) -> bytes:
        from gtts import gTTS

        buffer = io.BytesIO()
        gTTS(text, lang=GTTS_LANGS.get(language, language), lang_check=False).write_to_fp(buffer)
        return buffer.getvalue()

    def speak(self, text: str, language: str = "en") -> Speech:
        from gtts.tts import gTTSError

        # gTTS has no timeout of its own: wait for it in a pool, give up after timeout_s.
        future = self._pool.submit(self._synthesise, text, language)
        try:
            audio = future.result(timeout=self.timeout_s)
        except FutureTimeout as e:
            raise SpeechError(f"gTTS did not answer within {self.timeout_s:.0f} s.") from e
        except (gTTSError, ValueError, AssertionError) as e:
            # offline, HTTP 429, ...; a language it lacks; nothing left to say after its own cleaning
            raise SpeechError(f"gTTS failed: {e}") from e
        if not audio:
            raise SpeechError("gTTS returned no audio.")
        return Speech(audio, "mp3", self.name)


class EspeakSpeaker:
    """espeak-ng, offline and fast; robotic but always there (apt package espeak-ng)."""

    name = "espeak-ng"

    def __init__(self, words_per_minute: int = 165):
        self.words_per_minute = words_per_minute

    def _run(self, text: str, voice: str) -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "speech.wav"  # -w writes a correct header; --stdout does not
            subprocess.run(
                ["espeak-ng", "-v", voice, "-s", str(self.words_per_minute), "-w", str(out), "--stdin"],
                input=text.encode(),
                capture_output=True,
                timeout=ESPEAK_TIMEOUT_S,
                check=True,
            )
            return out.read_bytes()

    def speak(self, text: str, language: str = "en") -> Speech:
        try:
            try:
                audio = self._run(text, language)
            except subprocess.CalledProcessError:  # no voice for this language
                audio = self._run(text, "en")
        except FileNotFoundError as e:
            raise SpeechError("espeak-ng is not installed (apt-get install espeak-ng).") from e
        except (subprocess.SubprocessError, OSError) as e:
            raise SpeechError(f"espeak-ng failed: {e}") from e
        return Speech(audio, "wav", self.name)


class FallbackSpeaker:
    """Try the primary engine; on failure use the fallback and say so (once) in Speech.note.

    After a failure the primary is left alone for retry_after_s, so that an offline machine or a
    rate limit (HTTP 429) does not cost a timeout per sentence. When the fallback fails too, the
    SpeechError holds both reasons, each once, and is the same for every sentence while the
    primary rests (so that a reply can say it once).
    """

    def __init__(self, primary: Speaker, fallback: Speaker, retry_after_s: float = 300.0):
        self.primary, self.fallback = primary, fallback
        self.retry_after_s = retry_after_s
        self.name = f"{primary.name} (falls back to {fallback.name})"
        self._primary_down_until = 0.0
        self._primary_error = ""  # why the primary failed last, for the message when the fallback fails too

    def speak(self, text: str, language: str = "en") -> Speech:
        note = ""
        if time.monotonic() >= self._primary_down_until:
            try:
                return self.primary.speak(text, language)
            except SpeechError as e:
                logger.warning("%s failed, using %s: %s", self.primary.name, self.fallback.name, e)
                self._primary_down_until = time.monotonic() + self.retry_after_s
                self._primary_error = str(e)
                note = f"{e} Spoken offline by {self.fallback.name}."
        try:
            speech = self.fallback.speak(text, language)
        except SpeechError as e:
            if not self._primary_error:
                raise
            raise SpeechError(f"{self._primary_error} {e.message}", e.hint) from e
        return Speech(speech.audio, speech.format, speech.engine, note) if note else speech


def make_speaker(engine: str) -> Speaker | None:
    """The speaker for TTS_ENGINE: "gtts" (with espeak-ng fallback), "espeak" or "none"."""
    if engine == "none":
        return None
    if engine == "espeak":
        return CachedSpeaker(EspeakSpeaker())
    return FallbackSpeaker(CachedSpeaker(GTTSSpeaker()), CachedSpeaker(EspeakSpeaker()))


def join_speech(parts: Sequence[Speech]) -> Speech:
    """One audio file from the per-sentence pieces (MP3 frames concatenate; WAV is re-framed)."""
    if not parts:
        raise ValueError("nothing to join")
    formats = {p.format for p in parts}
    if len(formats) > 1:
        raise ValueError(f"cannot join {sorted(formats)} audio")
    note = next((p.note for p in parts if p.note), "")
    if parts[0].format == "mp3":
        return Speech(b"".join(p.audio for p in parts), "mp3", parts[0].engine, note)
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        for i, part in enumerate(parts):
            with wave.open(io.BytesIO(part.audio), "rb") as reader:
                if i == 0:
                    writer.setparams(reader.getparams())
                writer.writeframes(reader.readframes(reader.getnframes()))
    return Speech(out.getvalue(), "wav", parts[0].engine, note)
