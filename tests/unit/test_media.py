import io
import re
import subprocess
import sys
import time
import tracemalloc

import av
import numpy as np
import pytest
from PIL import ExifTags, Image

from core.errors import InvalidAudio, InvalidImage
from core.media import (
    BACKGROUND,
    MAX_ASPECT,
    MAX_SIDE,
    PAD_COLOR,
    digest,
    is_silent,
    load_audio,
    load_image,
    normalise,
    preview,
)
from tests.conftest import ROOT, png_bytes
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


# ---- images that pass validation but used to break later: each is normalised once, at upload


def encoded(image: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def assert_normalised(result) -> Image.Image:
    """The invariants of every accepted image: the model's image and the stored file agree, both
    8-bit RGB, bounded, and drawable (no side under 1/MAX_ASPECT of the other)."""
    image = result.image
    assert image.mode == "RGB" and max(image.size) <= MAX_SIDE
    assert max(image.size) <= MAX_ASPECT * min(image.size)
    stored = Image.open(io.BytesIO(result.data))
    assert stored.format.lower() == result.format and stored.mode == "RGB" and stored.size == image.size
    assert result.digest == digest(result.data)
    return image


def test_16_bit_grey_png_is_scaled_not_clipped_to_white():
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (16, 1))  # black to white, left to right
    data = encoded(Image.fromarray(ramp))
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    image = assert_normalised(load_image(data, **LIMITS))
    grey = np.asarray(image)[..., 0].astype(int)
    assert grey[:, 0].max() <= 2 and grey[:, -1].min() >= 253  # the ends stay black and white
    assert abs(grey[:, 128].mean() - 128) <= 3  # the middle is mid grey, not clipped to 255
    assert (np.diff(grey[0]) >= 0).all()


@pytest.mark.parametrize("mode,values,expected", [
    ("I", np.full((8, 8), 32768, np.int32), 128),  # a 16-bit value held in 32 bits
    ("I", np.full((8, 8), -5, np.int32), 0),  # outside 0..65535: stretched from darkest to brightest
    ("F", np.full((8, 8), 0.5, np.float32), 128),  # floats in 0..1
    ("F", np.full((8, 8), 200.0, np.float32), 200),  # floats already in 0..255
])
def test_deep_and_float_greys_are_scaled_to_8_bits(mode, values, expected):
    image = normalise(Image.fromarray(values, mode))
    assert image.mode == "RGB" and image.size == (8, 8)
    assert abs(int(np.asarray(image).mean()) - expected) <= 1


def test_float_grey_with_any_range_is_stretched():
    values = np.linspace(-1000, 3000, 64, dtype=np.float32).reshape(8, 8)
    grey = np.asarray(normalise(Image.fromarray(values, "F")))[..., 0]
    assert grey.min() == 0 and grey.max() == 255


def test_big_1_bit_png_is_bounded_while_decoding(tmp_path):
    """A 6300×6300 1-bit PNG is a few KB; decoded as RGB it was 119 MB kept, +540 MB at peak."""
    path = tmp_path / "bits.png"
    Image.new("1", (6300, 6300), 1).save(path)
    assert path.stat().st_size < 20_000
    image = assert_normalised(load_image(path.read_bytes(), **LIMITS))
    assert image.size == (MAX_SIDE, MAX_SIDE) and np.asarray(image).min() == 255
    script = (
        "import re, sys; from core.media import load_image; "
        f"load_image(open(sys.argv[1], 'rb').read(), max_pixels={LIMITS['max_pixels']}, max_bytes=10**8); "
        # VmHWM: this process's peak (ru_maxrss can start from the forking parent's, pytest's, size)
        "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))"
    )
    peak_kib = int(subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                                  check=True, cwd=ROOT).stdout)
    assert peak_kib < 300 * 1024  # the interpreter, numpy and Pillow take ~60 MB of it


@pytest.mark.parametrize("size", [(10_000, 10), (40_000, 1), (1, 40_000)])
def test_extreme_strips_are_bounded_and_padded(size):
    data = encoded(Image.new("RGB", size, "blue"))
    assert len(data) < 2_000
    image = assert_normalised(load_image(data, **LIMITS))
    assert max(image.size) == MAX_SIDE
    shown = preview(load_image(data, **LIMITS).data, 240)
    width, height = Image.open(io.BytesIO(shown)).size
    assert int(height * 240 / width) > 0 and int(width * 240 / height) > 0  # st.image(width=240) can scale it
    pixels = np.asarray(image).reshape(-1, 3)
    assert (pixels == (0, 0, 255)).all(axis=1).any() and (pixels == PAD_COLOR).all(axis=1).any()


def test_exif_orientation_is_applied():
    """Stored sideways (left half red, right half blue) with orientation 6: the camera saw it
    turned 90° clockwise, so upright it is tall, red on top and blue below."""
    stored = Image.new("RGB", (80, 40), "blue")
    stored.paste((255, 0, 0), (0, 0, 40, 40))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    image = assert_normalised(load_image(encoded(stored, "JPEG", exif=exif, quality=95), **LIMITS))
    assert image.size == (40, 80)
    top, bottom = np.asarray(image)[10, 20].astype(int), np.asarray(image)[70, 20].astype(int)
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60
    assert ExifTags.Base.Orientation not in Image.open(io.BytesIO(load_image(
        encoded(stored, "JPEG", exif=exif), **LIMITS).data)).getexif()


def test_cmyk_jpeg_is_stored_as_rgb():
    data = encoded(Image.new("CMYK", (32, 32), (255, 0, 0, 0)), "JPEG", quality=95)  # pure cyan ink
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    result = load_image(data, **LIMITS)
    red, green, blue = np.asarray(assert_normalised(result))[16, 16].astype(int)
    assert result.format == "jpeg" and red < 40 and green > 215 and blue > 215


def test_palette_png_transparency_becomes_white_not_black():
    image = Image.new("P", (20, 20), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)  # index 0 black (transparent), 1 red
    image.paste(1, (0, 0, 10, 20))
    normal = np.asarray(assert_normalised(load_image(encoded(image, transparency=0), **LIMITS)))
    assert (normal[5, 5] == (255, 0, 0)).all() and (normal[5, 15] == BACKGROUND).all()


def test_grey_with_alpha_and_1_bit_become_rgb():
    grey = Image.new("LA", (10, 10), (100, 255))
    assert (np.asarray(assert_normalised(load_image(encoded(grey), **LIMITS))) == 100).all()
    assert (np.asarray(assert_normalised(load_image(encoded(Image.new("1", (10, 10), 1)), **LIMITS))) == 255).all()


def test_normal_images_are_stored_as_uploaded():
    data = png_bytes((64, 48), "red", "JPEG")
    result = load_image(data, **LIMITS)
    assert result.data == data and result.format == "jpeg"


def test_the_same_upload_is_normalised_to_the_same_file():
    data = encoded(Image.fromarray(np.full((8, 300), 40000, np.uint16)))
    assert load_image(data, **LIMITS).digest == load_image(data, **LIMITS).digest


def test_previews_of_files_that_are_not_images_are_refused():
    with pytest.raises(InvalidImage):
        preview(b"not an image at all", 96)


# ---- audio: the length is known before decoding, and decoding stops at the limit

LONG_HOURS = 7


def mp3_stream(seconds: float, rate: int = 8000) -> bytes:
    """Bare MP3 frames (no header that states a length) of a tone, 8 kbit/s mono."""
    codec = av.CodecContext.create("libmp3lame", "w")
    codec.sample_rate, codec.layout, codec.format, codec.bit_rate = rate, "mono", "s16p", 8000
    codec.open()
    signal = (np.sin(np.arange(int(seconds * rate)) * 2 * np.pi * 440 / rate) * 8000).astype(np.int16)
    out = bytearray()
    for start in range(0, signal.size - codec.frame_size + 1, codec.frame_size):
        frame = av.AudioFrame.from_ndarray(signal[None, start:start + codec.frame_size], format="s16p", layout="mono")
        frame.sample_rate, frame.pts = rate, start
        out += b"".join(bytes(p) for p in codec.encode(frame))
    out += b"".join(bytes(p) for p in codec.encode(None))
    return bytes(out)


def test_seven_hour_mp3_is_refused_from_its_length_at_once():
    piece = mp3_stream(10.0)
    data = piece * (LONG_HOURS * 360)  # 7 hours in ~24 MiB, as in the issue
    assert len(data) > 20 * 2**20
    start = time.perf_counter()
    with pytest.raises(InvalidAudio, match="limit is 60 s") as refused:
        load_audio(data, max_seconds=60)
    assert time.perf_counter() - start < 2.0
    seconds = int(re.search(r"is (\d+) s long", refused.value.message).group(1))
    assert abs(seconds - LONG_HOURS * 3600) < 0.02 * LONG_HOURS * 3600


def test_decoding_stops_at_the_limit_when_no_length_is_declared(monkeypatch):
    """A stream that states no length (a live recording, a pipe): decoding stops at the limit."""
    monkeypatch.setattr("core.media._declared_seconds", lambda container, stream: None)
    data = mp3_stream(10.0) * (LONG_HOURS * 360)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(InvalidAudio, match="limit is 60 s"):
            load_audio(data, max_seconds=60)
        elapsed, (_, peak) = time.perf_counter() - start, tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 2.0
    assert peak < 64 * 2**20  # a minute at 16 kHz is 3.8 MB of float32; 7 hours would be 1.6 GB


def test_short_mp3_is_decoded_whole():
    audio = load_audio(mp3_stream(3.0), max_seconds=60)
    assert audio.samples.dtype == np.float32 and abs(audio.duration_s - 3.0) < 0.1


def test_the_browsers_wav_is_read_without_a_decoder_and_equals_pyav(monkeypatch):
    """16 kHz mono 16-bit WAV (what st.chat_input records) takes the wave-module path; the samples
    are the ones PyAV decodes, and its length limit holds there too."""
    import numpy as np

    from core import media
    from tests.fakes import tone, wav_bytes

    clip = wav_bytes(tone(1.5))
    fast = media.load_audio(clip, max_seconds=60).samples
    assert media._browser_wav(clip, 60) is not None
    monkeypatch.setattr(media, "_browser_wav", lambda data, limit: None)
    decoded = media.load_audio(clip, max_seconds=60).samples
    assert fast.shape == decoded.shape and np.allclose(fast, decoded, atol=1e-4)
    monkeypatch.undo()
    with pytest.raises(media.InvalidAudio, match="limit"):
        media.load_audio(wav_bytes(tone(3.0)), max_seconds=2)
