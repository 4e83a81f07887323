"""The picture and question the benchmarks ask about (made at run time; nothing is committed)."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw

QUESTION = "What colour is the car in the picture?"
# The spoken questions of the latency benchmarks (espeak-ng speaks them).
QUESTIONS = [
    "What colour is the car in the picture?",
    "How many people can you see?",
    "What is written on the sign?",
    "Is it sunny or cloudy in this photo?",
    "What is the dog doing on the grass?",
    "Describe the picture in one sentence.",
    "Where could this photo have been taken?",
    "Is there anything unusual in this image?",
]


def picture() -> bytes:
    """A 640x480 PNG: sky, grass, a red car, a sign."""
    image = Image.new("RGB", (640, 480), (120, 180, 240))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 380, 640, 480], fill=(60, 160, 60))
    draw.rectangle([100, 280, 400, 390], fill="red")
    draw.rectangle([450, 100, 600, 160], fill="white")
    draw.text((470, 120), "STOP", fill="black")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
