"""Validate and normalise what the user uploads: images (Pillow) and recordings (PyAV).

Every image is normalised once, at upload: decoded within a pixel budget, made 8-bit RGB (16-bit
and float greys scaled, transparency flattened on white, CMYK and 1-bit converted), turned upright
(EXIF orientation), scaled down to MAX_SIDE and padded to MAX_ASPECT at most. That normalised image
is what the model sees, what the log stores and what every preview is drawn from.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import warnings
import wave
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from core.errors import InvalidAudio, InvalidImage

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # Hz; what Whisper expects and what st.chat_input records
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
SILENCE_DBFS = -45.0  # a recording whose loudest 30 ms frame is quieter than this is "silent"
FRAME = SAMPLE_RATE * 30 // 1000  # 480 samples in a 30 ms frame

MAX_SIDE = 2048  # pixels; the longest side of a normalised image (4.2 megapixels at most)
MAX_ASPECT = 20  # a side longer than 20 times the other is padded: a strip stays drawable and cheap
PAD_COLOR = (128, 128, 128)  # the bands added to an extreme strip
BACKGROUND = (255, 255, 255)  # what transparent pixels become
JPEG_QUALITY = 92  # a JPEG upload that had to be changed is stored as JPEG again; all others as PNG
PREVIEW_QUALITY = 85
PREVIEW_MAX_PIXELS = 40_000_000  # previews of files from older logs (stored before normalisation)
UPRIGHT = {  # EXIF orientation -> the transpose that shows the picture as the camera saw it
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
EIGHT_BIT = {  # Pillow mode -> the 8-bit mode it is scaled down in (alpha kept); others go to "RGB"
    "1": "L", "L": "L", "LA": "LA", "La": "LA", "PA": "RGBA", "RGBA": "RGBA", "RGBa": "RGBA",
}


def digest(data: bytes) -> str:
    """Content hash used to store each image or clip once."""
    return hashlib.sha256(data).hexdigest()[:32]


@dataclass(frozen=True, eq=False)
class ImageInput:
    image: Image.Image  # normalised: 8-bit RGB, upright, longest side <= MAX_SIDE, aspect <= 1:MAX_ASPECT
    data: bytes  # that image as stored in the log (the upload itself when it was already normal)
    format: str  # "png" or "jpeg": the format of data
    digest: str  # of data

    @property
    def megapixels(self) -> float:
        return self.image.width * self.image.height / 1e6


def load_image(data: bytes, *, max_pixels: int, max_bytes: int) -> ImageInput:
    """Decode and normalise an upload, refusing non-images, corrupt files and decompression bombs."""
    if not data:
        raise InvalidImage("The file is empty.", "Choose a PNG, JPEG, WebP, GIF or BMP image.")
    if len(data) > max_bytes:
        raise InvalidImage(
            f"The image is {len(data) / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:.0f} MiB.",
            "Send a smaller or more compressed image.",
        )
    image, fmt, normal = _decode(data, max_pixels=max_pixels, max_side=MAX_SIDE)
    if normal:  # already what normalising would make: stored as uploaded, no quality lost
        stored, ext = data, fmt
    else:
        ext = "jpeg" if fmt == "jpeg" else "png"
        stored = encode(image, ext)
    return ImageInput(image=image, data=stored, format=ext, digest=digest(stored))


def preview(data: bytes, max_side: int) -> bytes:
    """A JPEG of at most max_side×max_side pixels for the page, from any stored image (older logs
    hold uploads as they came). Raises InvalidImage when the file cannot be read as an image."""
    image, _, _ = _decode(data, max_pixels=PREVIEW_MAX_PIXELS, max_side=max_side)
    return encode(image, "jpeg", PREVIEW_QUALITY)


def encode(image: Image.Image, fmt: str, quality: int = JPEG_QUALITY) -> bytes:
    out = io.BytesIO()
    if fmt == "jpeg":
        image.save(out, "JPEG", quality=quality)
    else:
        image.save(out, "PNG")
    return out.getvalue()


def _decode(data: bytes, *, max_pixels: int, max_side: int) -> tuple[Image.Image, str, bool]:
    """(the normalised image, the upload's format, whether the upload was already normal)."""
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
                orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
                normal = _is_normal(img, orientation, max_side)
                if img.format == "JPEG":  # decode at 1/2, 1/4 or 1/8 scale when that is still large enough
                    img.draft(None, _fit(img.size, 2 * max_side))
                img.load()
                image = normalise(img, max_side=max_side, orientation=orientation)
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
    return image, fmt, normal


def _is_normal(img: Image.Image, orientation: int, max_side: int) -> bool:
    """True for an 8-bit RGB PNG or JPEG, upright, small enough, not a strip: stored as it is."""
    raw_mode = img.tile[0].args if img.tile else None
    width, height = img.size
    return (
        img.format in ("PNG", "JPEG")
        and img.mode == "RGB"
        and raw_mode in ("RGB", ("RGB", ""))  # not 16 bits per channel
        and getattr(img, "n_frames", 1) == 1
        and orientation in (0, 1)
        and max(width, height) <= max_side
        and max(width, height) <= MAX_ASPECT * min(width, height)
    )


def normalise(img: Image.Image, *, max_side: int = MAX_SIDE, orientation: int = 1) -> Image.Image:
    """A new 8-bit RGB image: scaled down to fit max_side (in the cheapest mode that keeps the
    picture), made upright, and padded so that neither side is over MAX_ASPECT times the other."""
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):  # deep greys: scaled down as they are
        img = img.resize(_fit(img.size, max_side), Image.Resampling.LANCZOS) if max(img.size) > max_side else img
        img = _grey_to_8bit(img)
    else:
        transparent = img.mode == "P" and "transparency" in img.info
        img = img.convert("RGBA" if transparent else EIGHT_BIT.get(img.mode, "RGB"))  # a copy
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    if img.mode in ("LA", "RGBA"):  # transparency shown on white, as a browser does
        img = Image.alpha_composite(Image.new("RGBA", img.size, BACKGROUND + (255,)), img.convert("RGBA"))
    img = img.convert("RGB") if img.mode != "RGB" else img
    if orientation in UPRIGHT:
        img = img.transpose(UPRIGHT[orientation])
    return _padded(img)


def _fit(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """size scaled to a longest side of max_side (never up), each side at least 1 pixel."""
    scale = min(1.0, max_side / max(size))
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _grey_to_8bit(img: Image.Image) -> Image.Image:
    """An "I;16", "I" or "F" image as "L": 16-bit values by full scale (65535 -> 255), floats in
    0..1 by 255, anything else stretched from its darkest to its brightest value."""
    values = np.asarray(img).astype(np.float32)
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if img.mode == "F" and 0.0 <= low and high <= 1.0:
        scale, offset = 255.0, 0.0
    elif img.mode != "F" and 0.0 <= low and high <= 65535.0:
        scale, offset = 255.0 / 65535.0, 0.0
    elif 0.0 <= low and high <= 255.0:
        scale, offset = 1.0, 0.0
    else:
        scale, offset = 255.0 / max(high - low, 1e-12), low
    out = np.clip(np.rint((values - offset) * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(out, "L")


def _padded(img: Image.Image) -> Image.Image:
    """img centred on PAD_COLOR bands when one side is over MAX_ASPECT times the other."""
    width, height = img.size
    target = (max(width, math.ceil(height / MAX_ASPECT)), max(height, math.ceil(width / MAX_ASPECT)))
    if target == img.size:
        return img
    out = Image.new("RGB", target, PAD_COLOR)
    out.paste(img, ((target[0] - width) // 2, (target[1] - height) // 2))
    return out


@dataclass(frozen=True, eq=False)
class AudioInput:
    samples: np.ndarray  # float32 mono at SAMPLE_RATE
    data: bytes  # the recording as received, kept for the log and replay
    digest: str

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def load_audio(data: bytes, *, max_seconds: float) -> AudioInput:
    """Decode any format PyAV reads to 16 kHz mono; refuse empty, silent or too long clips.

    The length is checked from the container before anything is decoded, and decoding stops as
    soon as max_seconds have come out, so a long file costs neither time nor memory."""
    if not data:
        raise InvalidAudio("I heard nothing — the recording is empty.", "Try again.")
    samples = _browser_wav(data, max_seconds)
    if samples is None:
        import av  # PyAV: every other format

        try:
            samples = _decode_audio(data, max_seconds)
        except (av.FFmpegError, IndexError) as e:  # not a media file, or one without an audio stream
            raise InvalidAudio("The recording could not be decoded.", "Record again or send a WAV file.") from e
    audio = AudioInput(samples=samples, data=data, digest=digest(data))
    if audio.duration_s > max_seconds:
        raise _too_long(f"{audio.duration_s:.0f} s", max_seconds)
    if is_silent(audio.samples):
        raise InvalidAudio("I heard nothing — try again.", "Check that the right microphone is selected.")
    return audio


def wav_bytes(samples: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """16-bit PCM WAV of float32 mono samples (16 kHz: what every transcription server reads)."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm)
    return buffer.getvalue()


def _too_long(length: str, max_seconds: float) -> InvalidAudio:
    return InvalidAudio(f"The recording is {length} long; the limit is {max_seconds:.0f} s.", "Ask a shorter question.")


def _browser_wav(data: bytes, max_seconds: float) -> np.ndarray | None:
    """What the browser records (st.chat_input: 16 kHz mono 16-bit PCM WAV), read without a
    decoder; None for anything else."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    try:
        with wave.open(io.BytesIO(data)) as clip:
            if (clip.getframerate(), clip.getnchannels(), clip.getsampwidth()) != (SAMPLE_RATE, 1, 2):
                return None
            if clip.getnframes() > max_seconds * SAMPLE_RATE:
                raise _too_long(f"{clip.getnframes() / SAMPLE_RATE:.0f} s", max_seconds)
            pcm = clip.readframes(clip.getnframes())
    except (wave.Error, EOFError):
        return None  # PyAV gets a go at it
    return np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0


def _decode_audio(data: bytes, max_seconds: float) -> np.ndarray:
    import av

    """Frame by frame through a resampler to SAMPLE_RATE mono float32, stopping one frame past
    max_seconds (the caller then refuses it). Frames that fail to decode are skipped."""
    limit = int(max_seconds * SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    total = 0
    with av.open(io.BytesIO(data), metadata_errors="ignore") as container:
        stream = container.streams.audio[0]
        declared = _declared_seconds(container, stream)
        if declared is not None and declared > max_seconds:
            raise _too_long(f"{declared:.0f} s", max_seconds)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        for frame in _frames(container, stream):
            for out in resampler.resample(frame):
                chunk = out.to_ndarray().reshape(-1)
                chunks.append(chunk)
                total += chunk.size
            if total > limit:
                log.info("stopped decoding a recording past its %.0f s limit", max_seconds)
                break
        else:
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    return np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)


def _declared_seconds(container, stream) -> float | None:
    """The length the file says it has (its header or an estimate from its bitrate), if any."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        import av

        return container.duration / av.time_base
    return None


def _frames(container, stream):
    """The decoded frames of stream; a packet that cannot be decoded is skipped, as Whisper does."""
    import av

    for packet in container.demux(stream):
        try:
            yield from packet.decode()
        except av.InvalidDataError:
            continue


def is_silent(samples: np.ndarray, threshold_dbfs: float = SILENCE_DBFS) -> bool:
    """True when no 30 ms frame is louder than threshold_dbfs (RMS, full scale = 1.0)."""
    if samples.size < FRAME:
        return True
    frames = samples[: samples.size // FRAME * FRAME].reshape(-1, FRAME)
    loudest = float(np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1)).max())
    return loudest <= 10 ** (threshold_dbfs / 20)
