import io

import numpy as np
import pytest
from PIL import Image

from core.errors import InvalidAudio, InvalidImage
from core.media import is_silent, load_audio, load_image
from tests.conftest import png_bytes
from tests.fakes import tone, wav_bytes

LIMITS = dict(max_pixels=40_000_000, max_bytes=25 * 2**20)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP"])
def test_images_are_decoded_to_rgb(fmt):
    image = load_image(png_bytes((30, 20), "blue", fmt), **LIMITS)
    assert image.image.mode == "RGB" and image.image.size == (30, 20)
    assert len(image.digest) == 32


def test_rgba_and_palette_images_become_rgb():
    buffer = io.BytesIO()
    Image.new("RGBA", (8, 8), (1, 2, 3, 0)).save(buffer, "PNG")
    assert load_image(buffer.getvalue(), **LIMITS).image.mode == "RGB"


@pytest.mark.parametrize("data", [b"hello, this is text", b"", b"%PDF-1.4 not an image"])
def test_non_images_are_refused(data):
    with pytest.raises(InvalidImage):
        load_image(data, **LIMITS)


def test_truncated_image_is_refused():
    data = png_bytes((200, 200), "green", "JPEG")
    with pytest.raises(InvalidImage, match="damaged"):
        load_image(data[: len(data) // 2], **LIMITS)


def test_100_megapixel_image_is_refused_before_decoding():
    buffer = io.BytesIO()
    Image.new("1", (10_001, 10_001)).save(buffer, "PNG")  # small file, 100 megapixels
    with pytest.raises(InvalidImage, match="megapixels"):
        load_image(buffer.getvalue(), **LIMITS)


def test_pillow_bomb_guard_is_the_last_line(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow raises above twice this
    with pytest.raises(InvalidImage, match="megapixels"):
        load_image(png_bytes((100, 100)), max_pixels=10**9, max_bytes=10**9)


def test_too_many_bytes_is_refused():
    with pytest.raises(InvalidImage, match="MiB"):
        load_image(png_bytes(), max_pixels=10**8, max_bytes=10)


def test_speech_like_audio_is_decoded_at_16k():
    audio = load_audio(wav_bytes(tone(1.0, rate=44100), rate=44100), max_seconds=60)
    assert audio.samples.dtype == np.float32
    assert abs(audio.duration_s - 1.0) < 0.05


def test_silent_and_empty_recordings_are_refused():
    with pytest.raises(InvalidAudio, match="heard nothing"):
        load_audio(wav_bytes(np.zeros(16000, dtype=np.float32)), max_seconds=60)
    with pytest.raises(InvalidAudio, match="heard nothing"):
        load_audio(b"", max_seconds=60)
    assert is_silent(tone(1.0, amplitude=0.001))
    assert not is_silent(tone(1.0, amplitude=0.05))


def test_long_recordings_are_refused():
    with pytest.raises(InvalidAudio, match="limit is 5 s"):
        load_audio(wav_bytes(tone(6.0)), max_seconds=5)


def test_undecodable_audio_is_refused():
    with pytest.raises(InvalidAudio, match="decoded"):
        load_audio(b"RIFF....garbage" * 10, max_seconds=60)
