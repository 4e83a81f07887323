"""The demo model: a tiny LLaVA with random weights (tests/tiny_llava.py) that scripts/app.sh builds when no
real model can be had. Its folder carries a marker file, so that the chat page can say that its answers are
noise and how to get real ones, instead of looking broken."""

from __future__ import annotations

from pathlib import Path

MARKER = "RANDOM_WEIGHTS.txt"
MARKER_TEXT = "This model has random weights (tests/tiny_llava.py): its answers are noise. It is for tests and demos.\n"


def mark_random(folder: str | Path) -> None:
    """Mark a model folder as random (its builder calls this)."""
    (Path(folder) / MARKER).write_text(MARKER_TEXT, encoding="utf-8")


def is_random_demo(model: str | Path | None) -> bool:
    """Whether LLAVA_MODEL names a folder marked as random weights (a hub id or a missing folder is not)."""
    return bool(model) and (Path(model) / MARKER).is_file()
