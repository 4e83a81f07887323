import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever downloaded by the tests


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory) -> Path:
    """A tiny random LLaVA-1.5 built by the project's own builder (tests/tiny_llava.py)."""
    from tests.tiny_llava import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("models") / "tiny-llava")


@pytest.fixture
def settings(tmp_path):
    from core.config import Settings

    return Settings.from_env({"LOG_DIR": str(tmp_path / "logs"), "TTS_ENGINE": "espeak", "LLAVA_MODEL": "unused"})


def png_bytes(size=(64, 48), color="red", fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture
def speak_wav(tmp_path):
    """Make a WAV of a sentence with espeak-ng (16 kHz mono, as the browser records)."""
    if not shutil.which("espeak-ng"):
        pytest.fail("espeak-ng is required (packages.txt)")

    def make(text: str, name: str = "speech.wav", lead_s: float = 0.0) -> Path:
        """lead_s of silence first: a browser's recorder starts a moment after the (fake) device."""
        raw, out = tmp_path / f"raw-{name}", tmp_path / name
        subprocess.run(["espeak-ng", "-s", "150", "-w", str(raw), text], check=True)
        import numpy as np

        from core.media import load_audio
        from tests.fakes import wav_bytes

        samples = load_audio(raw.read_bytes(), max_seconds=600).samples
        out.write_bytes(wav_bytes(np.concatenate([np.zeros(int(lead_s * 16000), np.float32), samples])))
        return out

    return make
