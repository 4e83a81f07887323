"""Validate and normalise what the user uploads: images (Pillow) and recordings (PyAV)."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from core.errors import InvalidAudio, InvalidImage

SAMPLE_RATE = 16000  # Hz; what Whisper expects and what st.chat_input records
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
SILENCE_DBFS = -45.0  # a recording whose loudest 30 ms frame is quieter than this is "silent"
FRAME = SAMPLE_RATE * 30 // 1000  # 480 samples in a 30 ms frame


def digest(data: bytes) -> str:
    """Content hash used to store each image or clip once."""
    return hashlib.sha256(data).hexdigest()[:32]


@dataclass(frozen=True, eq=False)
class ImageInput:
    image: Image.Image  # decoded, RGB
    data: bytes  # the bytes as uploaded, kept for the log
    format: str  # "png", "jpeg", ...
    digest: str

    @property
    def megapixels(self) -> float:
        return self.image.width * self.image.height / 1e6


def load_image(data: bytes, *, max_pixels: int, max_bytes: int) -> ImageInput:
    """Decode an uploaded image, refusing non-images, corrupt files and decompression bombs."""
    if not data:
        raise InvalidImage("The file is empty.", "Choose a PNG, JPEG, WebP, GIF or BMP image.")
    if len(data) > max_bytes:
        raise InvalidImage(
            f"The image is {len(data) / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:.0f} MiB.",
            "Send a smaller or more compressed image.",
        )
    with warnings.catch_warnings():
        # Pillow warns above its own pixel limit and raises above twice that; our own, lower
        # limit is checked first from the header, and the error below is the last guard.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img:
                width, height = img.size  # read from the header, nothing decoded yet
                if width * height > max_pixels:
                    raise InvalidImage(
                        f"The image is {width}×{height} ({width * height / 1e6:.0f} megapixels); "
                        f"the limit is {max_pixels / 1e6:.0f} megapixels.",
                        "Resize it and send it again.",
                    )
                fmt = (img.format or "png").lower()
                img.load()
                rgb = img.convert("RGB")
        except InvalidImage:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise InvalidImage(
                f"The image has too many pixels (the limit is {max_pixels / 1e6:.0f} megapixels).",
                "Resize it and send it again.",
            ) from e
        except UnidentifiedImageError as e:
            raise InvalidImage(
                "This file is not an image I can read.",
                "Choose a PNG, JPEG, WebP, GIF or BMP image.",
            ) from e
        except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt data
            raise InvalidImage(f"The image is damaged and cannot be decoded ({e}).", "Try another file.") from e
    return ImageInput(image=rgb, data=data, format=fmt, digest=digest(data))


@dataclass(frozen=True, eq=False)
class AudioInput:
    samples: np.ndarray  # float32 mono at SAMPLE_RATE
    data: bytes  # the recording as received, kept for the log and replay
    digest: str

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def load_audio(data: bytes, *, max_seconds: float) -> AudioInput:
    """Decode any format PyAV reads to 16 kHz mono; refuse empty, silent or too long clips."""
    from faster_whisper.audio import decode_audio  # PyAV underneath; imported on first use

    if not data:
        raise InvalidAudio("I heard nothing — the recording is empty.", "Try again.")
    try:
        samples = decode_audio(io.BytesIO(data), sampling_rate=SAMPLE_RATE)
    except Exception as e:  # PyAV raises a family of av.error.* types for undecodable input
        raise InvalidAudio("The recording could not be decoded.", "Record again or send a WAV file.") from e
    audio = AudioInput(samples=samples.astype(np.float32), data=data, digest=digest(data))
    if audio.duration_s > max_seconds:
        raise InvalidAudio(
            f"The recording is {audio.duration_s:.0f} s long; the limit is {max_seconds:.0f} s.",
            "Ask a shorter question.",
        )
    if is_silent(audio.samples):
        raise InvalidAudio("I heard nothing — try again.", "Check that the right microphone is selected.")
    return audio


def is_silent(samples: np.ndarray, threshold_dbfs: float = SILENCE_DBFS) -> bool:
    """True when no 30 ms frame is louder than threshold_dbfs (RMS, full scale = 1.0)."""
    if samples.size < FRAME:
        return True
    frames = samples[: samples.size // FRAME * FRAME].reshape(-1, FRAME)
    loudest = float(np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1)).max())
    return loudest <= 10 ** (threshold_dbfs / 20)
