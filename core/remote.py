"""OpenAI-compatible servers: a ChatModel over /v1/chat/completions and a Transcriber over
/v1/audio/transcriptions (vLLM, TGI, Ollama, LM Studio, `transformers serve`, OpenAI).

The server holds the model and batches requests, so these engines have no lock: turns from
different sessions run at the same time. Talking HTTP is the openai SDK's job (retries with
exponential backoff on 408/409/429/5xx and lost connections, honouring Retry-After); what is
here is the translation: exchanges and PIL images -> chat messages with data URLs, the
streamed chunks -> text, and the SDK's exceptions -> messages that say what to fix.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import wave
from collections import OrderedDict
from pathlib import Path
from typing import Iterator, Mapping, Sequence
from urllib.parse import urlsplit

import numpy as np
import openai
from PIL import Image

from core.conversation import Exchange, build_messages, image_digests, trim
from core.errors import AppError, GenerationError, ModelLoadError
from core.media import SAMPLE_RATE
from core.stt import Transcript
from core.vlm import GenerationOptions, TokenCounts

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0  # to open a connection; the read timeout is the longest wait for one chunk
MAX_RETRIES = 3  # retries of one request (429, 5xx, connection errors), backoff 0.5 s doubling to 8 s
MAX_IMAGE_SIDE = 2048  # pixels; larger images are scaled down before sending (LLaVA sees <= 1344)
JPEG_QUALITY = 90  # photos go as JPEG; images with transparency as PNG
NO_KEY = "EMPTY"  # sent when no API key is set: local servers ignore it, the SDK requires one
DETAIL_CHARS = 300  # longest server message quoted to the user
# How servers say that the prompt and max_tokens do not fit (vLLM, OpenAI, TGI); the oldest exchanges are then dropped.
CONTEXT_WORDS = ("maximum context", "context length", "context window", "too long", "max_model_len", "must be <=")


class TranscriptionError(AppError):
    """The speech server could not transcribe the recording."""


def make_client(base_url: str, api_key: str | None, timeout_s: float, max_retries: int = MAX_RETRIES) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=base_url,
        api_key=api_key or NO_KEY,
        timeout=openai.Timeout(timeout_s, connect=CONNECT_TIMEOUT_S),
        max_retries=max_retries,
    )


def shown_url(base_url: str) -> str:
    """The base URL without any user:password part, for messages and the sidebar."""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}".rstrip("/")


def served_models(client: openai.OpenAI) -> list[str] | None:
    """Model ids the server lists at /v1/models; None when it has no such endpoint."""
    try:
        return [model.id for model in client.models.list().data]
    except openai.NotFoundError:
        return None


def pick_model(requested: str | None, served: list[str] | None, where: str, variable: str, prefer: str = "") -> str:
    """The model name to send: the one asked for, checked against the server's list, or the
    server's only model (or its only one whose id contains prefer)."""
    if requested:
        if served is None or requested in served or f"{requested}:latest" in served:  # Ollama's default tag
            return requested
        raise ModelLoadError(
            f"The server at {where} has no model named {requested!r} (it serves: {', '.join(served) or 'nothing'}).",
            f"Set {variable} to one of them.",
        )
    candidates = [m for m in served or [] if prefer.lower() in m.lower()] if prefer else list(served or [])
    if len(candidates) == 1:
        return candidates[0]
    listed = f" (it serves: {', '.join(served)})" if served else ""
    raise ModelLoadError(f"Which model of the server at {where} should answer{listed}?", f"Set {variable}.")


def detail(error: openai.APIError) -> str:
    """The server's own words from an error body, whatever its shape (OpenAI, vLLM, FastAPI, Ollama)."""
    body = error.body
    for _ in range(3):
        if isinstance(body, Mapping):
            body = next((body[k] for k in ("message", "detail", "error") if body.get(k)), None)
    text = body if isinstance(body, str) and body else error.message
    return " ".join(str(text).split())[:DETAIL_CHARS]


def open_server(base_url: str, api_key: str | None, timeout_s: float, max_retries: int, what: str,
                model: str | None, variables: tuple[str, str, str]) -> tuple[openai.OpenAI, str, list[str] | None]:
    """A client for the server, its URL as shown to users, and the models it serves.
    variables: the (base URL, API key, model) settings the user would fix; a failure names them."""
    url_variable, key_variable, model_variable = variables
    client = make_client(base_url, api_key, timeout_s, max_retries)
    where = shown_url(base_url)
    try:
        return client, where, served_models(client)
    except openai.APIError as e:
        message, hint = explain(e, where, what, model or "", key_variable, model_variable)
        raise ModelLoadError(message, hint or f"Check {url_variable}.") from e


def explain(error: openai.APIError, where: str, what: str, model: str, key_variable: str, model_variable: str,
            served: list[str] | None = None) -> tuple[str, str]:
    """(message, hint) for the user about a failed request to the server at where."""
    if isinstance(error, openai.APITimeoutError):
        return f"The {what} server at {where} sent nothing in time.", "Try again; it may be overloaded."
    if isinstance(error, openai.APIConnectionError):
        cause = error.__cause__ or error.__context__
        because = f" ({cause})" if cause and str(cause) else ""
        return f"Cannot reach the {what} server at {where}{because}.", "Check that it is running and the base URL is right."
    if isinstance(error, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return (f"The {what} server at {where} refused the API key ({error.status_code}: {detail(error)}).",
                f"Set {key_variable} to a key it accepts.")
    if isinstance(error, (openai.NotFoundError, openai.BadRequestError, openai.UnprocessableEntityError)):
        if served is not None and model not in served and f"{model}:latest" not in served:
            return (f"The {what} server at {where} has no model named {model!r} (it serves: {', '.join(served)}).",
                    f"Set {model_variable} to one of them.")
        if isinstance(error, openai.NotFoundError):
            return (f"The {what} server at {where} answered 404 ({detail(error)}).",
                    "Check the base URL: it usually ends in /v1.")
        return f"The {what} server at {where} refused the request ({error.status_code}: {detail(error)}).", ""
    if isinstance(error, openai.RateLimitError):
        return f"The {what} server at {where} is busy (429: {detail(error)}), even after retrying.", "Try again in a minute."
    if isinstance(error, openai.APIStatusError):
        return f"The {what} server at {where} failed ({error.status_code}: {detail(error)}).", "Try again."
    return f"The {what} server at {where} failed: {detail(error)}.", "Try again."


def image_data_url(image: Image.Image) -> str:
    """A data URL for an image part: JPEG for photos, PNG when there is transparency."""
    picture = image.copy()
    picture.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))
    buffer = io.BytesIO()
    if picture.mode in ("RGBA", "LA") or "transparency" in picture.info:
        picture.save(buffer, "PNG")
        mime = "image/png"
    else:
        picture.convert("RGB").save(buffer, "JPEG", quality=JPEG_QUALITY)
        mime = "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def openai_messages(exchanges: Sequence[Exchange], image_urls: Sequence[str], system_prompt: str = "") -> list[dict]:
    """Chat-completions messages: the same turns as build_messages, images as image_url parts.

    Consecutive messages of one role (a question whose answer failed, then the next one) are
    merged: LLaVA chat templates on servers (vLLM, TGI) require user/assistant to alternate.
    """
    urls = iter(image_urls)
    merged: list[dict] = []
    for message in build_messages(exchanges, system_prompt):
        parts = [
            {"type": "image_url", "image_url": {"url": next(urls)}} if part["type"] == "image" else dict(part)
            for part in message["content"]
        ]
        if merged and merged[-1]["role"] == message["role"]:
            merged[-1]["content"].extend(parts)
        else:
            merged.append({"role": message["role"], "content": parts})
    for message in merged:
        images = [p for p in message["content"] if p["type"] == "image_url"]
        text = "\n\n".join(p["text"] for p in message["content"] if p["type"] == "text" and p["text"])
        # Images first, as llava templates put <image> before the text; plain strings where there is no image.
        message["content"] = images + [{"type": "text", "text": text}] if images else text
    return merged


class RemoteChatModel:
    """A chat model behind an OpenAI-compatible /v1/chat/completions endpoint."""

    lock = None  # the server batches: turns of different sessions run concurrently

    def __init__(self, client: openai.OpenAI, model: str, base_url: str, note: str = "", extra_body: dict | None = None):
        self.client = client
        self.model = model
        self.extra_body = extra_body  # server-specific request fields (vLLM's ignore_eos, a logit_bias, ...)
        self.where = shown_url(base_url)
        self.name = f"{model} (OpenAI-compatible server at {self.where})"
        self.note = note
        self._usage_in_stream = True  # ask for the token count in the last chunk until the server refuses
        self.generated = TokenCounts()  # reply text -> tokens, as the server counted them
        self._images: OrderedDict[str, str] = OrderedDict()  # image digest -> data URL
        self._images_lock = threading.Lock()

    @classmethod
    def connect(cls, base_url: str, api_key: str | None, model: str | None, token_timeout_s: float = 300.0,
                max_retries: int = MAX_RETRIES, extra_body: dict | None = None) -> "RemoteChatModel":
        """Check that the server answers and serves the model; pick its only model when none is named."""
        client, where, served = open_server(base_url, api_key, token_timeout_s, max_retries, "chat", model,
                                            ("OPENAI_BASE_URL", "OPENAI_API_KEY", "LLAVA_REMOTE_MODEL"))
        return cls(client, pick_model(model, served, where, "LLAVA_REMOTE_MODEL"), base_url, extra_body=extra_body)

    def count_tokens(self, text: str) -> int:
        """Tokens of a reply as the server counted them; about 4 characters a token otherwise."""
        counted = self.generated.get(text)
        return counted if counted is not None else -(-len(text) // 4)

    def _image_url(self, key: str, image: Image.Image) -> str:
        """Encode each image once (key: its content digest): every turn of its visual context sends it again."""
        with self._images_lock:
            if key in self._images:
                self._images.move_to_end(key)
                return self._images[key]
        url = image_data_url(image)
        with self._images_lock:
            self._images[key] = url
            while len(self._images) > 32:
                self._images.popitem(last=False)
        return url

    def messages(self, exchanges: Sequence[Exchange], images: Mapping[str, Image.Image], system_prompt: str = "") -> list[dict]:
        urls = [self._image_url(d, images[d]) for d in image_digests(exchanges)]
        return openai_messages(exchanges, urls, system_prompt)

    def _open(self, exchanges: Sequence[Exchange], images, options: GenerationOptions):
        """Start a streamed completion; on "context too long" drop the oldest exchanges and retry."""
        opened = None

        def fits(candidate: list[Exchange]) -> bool:
            nonlocal opened
            try:
                opened = self._request(self.messages(candidate, images, options.system_prompt), options)
                return True
            except openai.BadRequestError as e:
                if any(word in detail(e).lower() for word in CONTEXT_WORDS) and len(candidate) > 1:
                    return False
                raise

        kept = trim(exchanges, fits)
        if len(kept) < len(exchanges):
            logger.info("trimmed %d old exchanges to fit the server's context", len(exchanges) - len(kept))
        return opened

    def _request(self, messages: list[dict], options: GenerationOptions):
        request: dict = dict(model=self.model, messages=messages, stream=True, max_tokens=options.max_new_tokens,
                             temperature=options.temperature)
        if options.temperature > 0:
            request["top_p"] = options.top_p
        if self._usage_in_stream:
            request["stream_options"] = {"include_usage": True}
        if self.extra_body:
            request["extra_body"] = self.extra_body
        try:
            return self.client.chat.completions.create(**request)
        except (openai.BadRequestError, openai.UnprocessableEntityError) as e:
            if not self._usage_in_stream or "stream_options" not in detail(e):
                raise
            self._usage_in_stream = False  # an older server: count tokens approximately
            request.pop("stream_options")
            return self.client.chat.completions.create(**request)

    def stream(self, exchanges, images, options: GenerationOptions, stop: threading.Event | None = None) -> Iterator[str]:
        """Yield the reply chunk by chunk. Stop (or closing this generator) closes the HTTP stream,
        which makes the server cancel the generation."""
        text, tokens = "", None
        try:
            chunks = self._open(exchanges, images, options)
        except openai.APIError as e:
            raise self._failure(e) from e
        try:
            for chunk in chunks:
                if chunk.usage is not None:
                    tokens = chunk.usage.completion_tokens
                for choice in chunk.choices:
                    piece = choice.delta.content if choice.delta else None
                    if piece:
                        text += piece
                        yield piece
                if stop is not None and stop.is_set():
                    return
        except openai.APIError as e:
            raise self._failure(e, started=bool(text)) from e
        finally:
            chunks.close()
        if tokens is not None:
            self.generated.remember(text, tokens)

    def _failure(self, error: openai.APIError, started: bool = False) -> GenerationError:
        served = None
        if isinstance(error, (openai.NotFoundError, openai.BadRequestError, openai.UnprocessableEntityError)):
            try:  # is it the model name?
                served = served_models(self.client.with_options(max_retries=0, timeout=CONNECT_TIMEOUT_S))
            except openai.APIError:
                pass
        message, hint = explain(error, self.where, "chat", self.model, "OPENAI_API_KEY", "LLAVA_REMOTE_MODEL", served)
        if started and isinstance(error, openai.APIConnectionError) and not isinstance(error, openai.APITimeoutError):
            message = f"The connection to the chat server at {self.where} broke while it was writing."
        logger.warning("chat server error: %s", error)
        return GenerationError(message, hint)


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


def language_code(name: str | None) -> str | None:
    """ISO 639-1 code of a language that a server reports as a code ("en") or a name ("english")."""
    if not name:
        return None
    name = name.strip().lower()
    if len(name) <= 3:
        return name
    try:
        from whisper.tokenizer import TO_LANGUAGE_CODE  # openai-whisper's table, when installed
    except ImportError:
        return None
    return TO_LANGUAGE_CODE.get(name)


class RemoteTranscriber:
    """Speech to text through an OpenAI-compatible /v1/audio/transcriptions endpoint."""

    def __init__(self, client: openai.OpenAI, model: str, base_url: str):
        self.client = client
        self.model = model
        self.where = shown_url(base_url)
        self.name = f"{model} (OpenAI-compatible server at {self.where})"
        self._verbose = True  # verbose_json reports the language; some servers only do json

    @classmethod
    def connect(cls, base_url: str, api_key: str | None, model: str | None, timeout_s: float = 120.0,
                max_retries: int = MAX_RETRIES) -> "RemoteTranscriber":
        client, where, served = open_server(base_url, api_key, timeout_s, max_retries, "speech", model,
                                            ("STT_BASE_URL", "STT_API_KEY", "WHISPER_MODEL"))
        if not model and not any("whisper" in m.lower() for m in served or []):
            model = "whisper-1"  # OpenAI's name; servers without a listing usually take any
        return cls(client, pick_model(model, served, where, "WHISPER_MODEL", prefer="whisper"), base_url)

    def transcribe(self, samples: np.ndarray, language: str | None = None) -> Transcript:
        request: dict = dict(model=self.model, file=("question.wav", wav_bytes(samples), "audio/wav"))
        if language:
            request["language"] = language
        try:
            result = self._request(request)
        except openai.APIError as e:
            message, hint = explain(e, self.where, "speech", self.model, "STT_API_KEY", "WHISPER_MODEL")
            raise TranscriptionError(message, hint or "Type your question instead.") from e
        text = (getattr(result, "text", None) or "").strip()
        detected = language_code(getattr(result, "language", None))
        return Transcript(text=text, language=detected or language or "en", duration_s=len(samples) / SAMPLE_RATE)

    def _request(self, request: dict):
        if self._verbose:
            try:
                return self.client.audio.transcriptions.create(response_format="verbose_json", **request)
            except (openai.BadRequestError, openai.UnprocessableEntityError) as e:
                if "format" not in detail(e).lower():
                    raise
                self._verbose = False  # e.g. gpt-4o-transcribe: json only, no language
        return self.client.audio.transcriptions.create(response_format="json", **request)


class LocalServer:
    """`transformers serve MODEL_DIR` on a free loopback port, for tests and benchmarks:

        with LocalServer(folder) as server:
            model = RemoteChatModel.connect(server.base_url, None, None)
    """

    def __init__(self, model_dir: str, continuous_batching: bool = False, start_timeout_s: float = 180.0):
        self.model_dir = str(model_dir)
        self.continuous_batching = continuous_batching
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen | None = None
        self.log = tempfile.TemporaryFile()  # its stdout and stderr, for the error message and notes
        self.base_url = ""

    def __enter__(self) -> "LocalServer":
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        command = [str(Path(sys.executable).with_name("transformers")), "serve", self.model_dir,
                   "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
        if self.continuous_batching:
            command.append("--continuous-batching")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT,
                                        env={**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")})
        self.base_url = f"http://127.0.0.1:{port}/v1"
        client = make_client(self.base_url, None, 5.0, max_retries=0)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if served_models(client):
                    return self
            except openai.APIError:
                time.sleep(0.5)
        self.__exit__()
        raise RuntimeError(f"transformers serve did not start: {self.output()[-2000:]}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def kill(self) -> None:
        """End the server at once (SIGKILL), as a crash would."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def __exit__(self, *exc) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
