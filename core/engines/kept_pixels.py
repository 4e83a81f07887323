"""A picture's pixel tensors, made once per picture rather than once per turn.

Every turn hands the processor the whole prompt with its picture: the processor expands each
<image> into as many tokens as the picture gives and its image processor resizes, tiles and
normalises the picture again. For llava-1.5 that is one 336-px square; for llava-v1.6 and OneVision
a 640x480 photo is five tiles, 50-90 ms on this 2-core CPU and about 0.3 s of every OneVision
turn's 0.33 s to the first token on the H200 (bench/first_answer.py), while the prefill of a
follow-up took 10 ms. KeptPixels stands in for the processor's image processor and keeps its
output for the last few pictures, so a follow-up pays for its words only.
"""

from __future__ import annotations

from typing import Any

from core.lru import LRU

KEPT_PICTURES = 4  # a conversation's picture, the one before it, a second person's (a 2048x1536 OneVision photo: 25 MB)


class KeptPixels:
    """The image processor, with its output kept per picture (the same PIL images, the same options).

    A picture is known by the identity of its PIL image objects: the app keeps each picture as one
    object for the life of its conversation and never draws on it, and an entry holds those objects,
    so no other picture can take their identity while the entry lives. Everything else (sizes,
    the grid, fetch_images) is the image processor's own; setting an attribute sets it there and
    forgets what was kept (a new grid gives other tiles)."""

    def __init__(self, image_processor, size: int = KEPT_PICTURES):
        object.__setattr__(self, "_inner", image_processor)
        object.__setattr__(self, "_kept", LRU(size))

    def __call__(self, images, **kwargs):
        pictures = _flat(images)
        key = (tuple(id(p) for p in pictures), repr(sorted(kwargs.items())))
        kept = self._kept.get(key)
        if kept is not None:
            return kept[1]
        out = self._inner(images, **kwargs)
        self._kept.put(key, (pictures, out))  # the pictures themselves: their ids stay theirs while kept
        return out

    def __deepcopy__(self, memo):  # the processor's to_dict and repr copy their parts: a copy keeps nothing
        import copy

        return copy.deepcopy(self._inner, memo)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._inner, name, value)
        object.__setattr__(self, "_kept", LRU(self._kept.size))


def _flat(images) -> list:
    """The pictures of a processor's images argument (one, a list, or a list of lists)."""
    if isinstance(images, (list, tuple)):
        return [p for item in images for p in _flat(item)]
    return [images]


def keep_pixels(processor) -> None:
    """Make the processor's image processor a KeptPixels (once)."""
    inner = getattr(processor, "image_processor", None)
    if inner is not None and not isinstance(inner, KeptPixels):
        processor.image_processor = KeptPixels(inner)
