"""A fake microphone's file for Chromium (--use-file-for-fake-audio-capture): questions spoken by
espeak-ng with silences between them, and where each question's speech starts and ends."""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.media import SAMPLE_RATE, load_audio, wav_bytes

SILENT = 1e-3  # a sample this close to zero is silence (espeak-ng's pauses are digital zeros)


@dataclass(frozen=True)
class Spoken:
    text: str
    start_s: float  # first non-silent sample, seconds from the start of the file
    end_s: float  # last non-silent sample


def espeak(text: str, words_per_minute: int = 150) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-s", str(words_per_minute), "-w", str(raw), text], check=True)
        return load_audio(raw.read_bytes(), max_seconds=600).samples


def conversation(path: Path, parts: list[str | float]) -> list[Spoken]:
    """Write parts (a sentence to say, or seconds of silence) to path as a 16 kHz WAV; returns each
    sentence's span in the file."""
    pieces, spoken, at = [], [], 0
    for part in parts:
        if isinstance(part, str):
            samples = espeak(part)
            loud = np.flatnonzero(np.abs(samples) > SILENT)
            spoken.append(Spoken(part, (at + loud[0]) / SAMPLE_RATE, (at + loud[-1]) / SAMPLE_RATE))
        else:
            samples = np.zeros(int(part * SAMPLE_RATE), np.float32)
        pieces.append(samples)
        at += len(samples)
    path.write_bytes(wav_bytes(np.concatenate(pieces)))
    return spoken
