"""Settings from environment variables (the configuration contract in README.md).

Beyond the contract's table, for a speech-to-text server (STT_ENGINE=openai-api):
  STT_BASE_URL   its OpenAI-compatible base URL (.../v1) serving /v1/audio/transcriptions;
                 default OPENAI_BASE_URL
  STT_API_KEY    its API key; default OPENAI_API_KEY
  WHISPER_MODEL  then names the server's model (e.g. openai/whisper-large-v3-turbo, whisper-1);
                 unset: the server's only Whisper model, else whisper-1
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

CUDA_LLAVA_MODEL = "llava-hf/llava-1.5-7b-hf"
CPU_LLAVA_MODEL = "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"
STT_ENGINES = ("faster-whisper", "openai-whisper", "openai-api")
TTS_ENGINES = ("gtts", "piper", "espeak", "none")
# 4bit: HQQ 4-bit + gemlite kernels, compiled (the fast path, bench/gpu_turn.py); nf4: bitsandbytes NF4
# with fp16 compute (the original script's setting); 8bit: bitsandbytes int8; int8: the CPU's torch dynamic
# int8 with a picture read as a whole plus one tile (core.vlm.cpu_grid); none: fp16 (CUDA) / fp32 (CPU)
QUANTS = ("4bit", "nf4", "8bit", "int8", "none")
CUDA_STT_ENGINE = "openai-whisper"  # Whisper through torch: runs with whatever CUDA torch was built for
CPU_STT_ENGINE = "faster-whisper"
CUDA_CACHE_TOKENS = 2048  # static KV cache of the compiled model: prompt + reply; longer talks are trimmed


@lru_cache(maxsize=1)
def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def masked_url(url: str) -> str:
    """A server URL as it may be shown and logged: without user:password (http://user:pw@host/v1
    -> http://host/v1), query or fragment, which can hold credentials."""
    if "://" not in url:  # not a URL (the settings refuse those): still never show what precedes an "@"
        return url.rpartition("@")[2].split("?")[0]
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]  # keeps the port and an IPv6 host's brackets as written
    return f"{parts.scheme}://{host}{parts.path}".rstrip("/")


def _check_piper_voice(path: Path) -> None:
    """PIPER_VOICE names a voice file, and Piper's configuration for it lies beside it."""
    if not path.is_file():
        raise ValueError(f"PIPER_VOICE={str(path)!r} is not a file: set it to a Piper voice's .onnx file "
                         "(e.g. en_GB-alan-medium.onnx, with en_GB-alan-medium.onnx.json beside it)")
    if not Path(f"{path}.json").is_file():
        raise ValueError(f"PIPER_VOICE={str(path)!r} has no {path.name}.json beside it: Piper needs the voice's "
                         "configuration, downloaded with the .onnx file")


@dataclass(frozen=True)
class Settings:
    llava_model: str  # Hugging Face id or local folder of a LLaVA-family model
    llava_quant: str  # "4bit", "8bit" or "none"
    device: str  # "cuda" or "cpu"
    openai_base_url: str | None  # OpenAI-compatible server instead of the in-process model
    openai_api_key: str | None
    llava_remote_model: str | None  # model name on that server
    stt_engine: str  # "faster-whisper", "openai-whisper" or "openai-api" (a transcription server)
    whisper_model: str | None  # size name or local path (openai-api: the server's model); None: pick
    tts_engine: str  # "gtts" (falls back to Piper, then espeak-ng), "piper" (espeak-ng beside it), "espeak" or "none"
    log_dir: Path  # session logs and their media files
    stt_base_url: str | None = None  # transcription server for STT_ENGINE=openai-api
    stt_api_key: str | None = None
    max_image_pixels: int = 40_000_000  # 40 megapixels; bigger uploads are refused
    max_image_bytes: int = 25 * 1024 * 1024  # 25 MiB, also .streamlit/config.toml maxUploadSize
    max_audio_seconds: float = 60.0  # longer recordings are refused
    token_timeout_s: float = 300.0  # longest wait for one generated chunk
    llava_cache_tokens: int | None = None  # LLAVA_CACHE_TOKENS: KV cache length on CUDA; None: the model's context
    piper_voice: Path | None = None  # PIPER_VOICE: a Piper voice's .onnx (its .onnx.json beside it); None: the bundled one

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        cuda = cuda_available()

        def get(name: str, default: str | None = None) -> str | None:
            value = env.get(name, "").strip()
            return value or default

        quant = get("LLAVA_QUANT", "4bit" if cuda else "int8").lower()
        stt = get("STT_ENGINE", CUDA_STT_ENGINE if cuda else CPU_STT_ENGINE).lower()
        tts = get("TTS_ENGINE", "gtts").lower()
        for name, value, allowed in (
            ("LLAVA_QUANT", quant, QUANTS),
            ("STT_ENGINE", stt, STT_ENGINES),
            ("TTS_ENGINE", tts, TTS_ENGINES),
        ):
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not one of {', '.join(allowed)}")
        base_url, stt_base_url = get("OPENAI_BASE_URL"), get("STT_BASE_URL")
        for name, value in (("OPENAI_BASE_URL", base_url), ("STT_BASE_URL", stt_base_url)):
            if value and not value.startswith(("http://", "https://")):
                raise ValueError(f"{name}={value!r} must start with http:// or https:// (e.g. http://localhost:8000/v1)")
        cache_tokens = get("LLAVA_CACHE_TOKENS", str(CUDA_CACHE_TOKENS) if cuda else None)
        if cache_tokens is not None and not (cache_tokens.isdigit() and int(cache_tokens) >= 256):
            raise ValueError(f"LLAVA_CACHE_TOKENS={cache_tokens!r} must be a whole number of tokens, at least 256")
        if stt == "openai-api" and not (stt_base_url or base_url):
            raise ValueError("STT_ENGINE='openai-api' needs STT_BASE_URL (or OPENAI_BASE_URL): the transcription server")
        piper_voice = get("PIPER_VOICE")
        if piper_voice:
            _check_piper_voice(Path(piper_voice).expanduser())
        return cls(
            llava_model=get("LLAVA_MODEL", CUDA_LLAVA_MODEL if cuda else CPU_LLAVA_MODEL),
            llava_quant=quant,
            device="cuda" if cuda else "cpu",
            openai_base_url=base_url,
            openai_api_key=get("OPENAI_API_KEY"),
            llava_remote_model=get("LLAVA_REMOTE_MODEL"),
            stt_engine=stt,
            whisper_model=get("WHISPER_MODEL"),
            tts_engine=tts,
            log_dir=Path(get("LOG_DIR", "logs")),
            stt_base_url=(stt_base_url or base_url) if stt == "openai-api" else stt_base_url,
            stt_api_key=get("STT_API_KEY", get("OPENAI_API_KEY")),
            llava_cache_tokens=int(cache_tokens) if cache_tokens else None,
            piper_voice=Path(piper_voice).expanduser() if piper_voice else None,
        )

    def as_rows(self) -> list[tuple[str, str]]:
        """(name, value) pairs for a read-only display; API keys are masked, URLs shown without credentials."""
        rows = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("api_key") and value:
                value = "set"
            elif f.name.endswith("base_url") and value:
                value = masked_url(value)
            rows.append((f.name, "" if value is None else str(value)))
        return rows

