"""OpenAI-compatible servers: a ChatModel over /v1/chat/completions and a Transcriber over
/v1/audio/transcriptions (vLLM, TGI, Ollama, LM Studio, `transformers serve`, OpenAI).

The server holds the model and batches requests, so these engines have no lock: turns from
different sessions run at the same time. Talking HTTP is the openai SDK's job; what is here is
the translation: exchanges and PIL images -> chat messages with data URLs, the streamed chunks
-> text, and every failure of the server (an HTTP error, no answer in time, a body that is not
the JSON or the event stream expected) -> an AppError that names the server and says what to fix.

Waits are budgets for the whole request, retries included, so that a hanging server costs a
page at most that long: the start-up check (/v1/models) one attempt of PROBE_TIMEOUT_S; a
reply's first chunk FIRST_CHUNK_TIMEOUT_S; a transcription TRANSCRIBE_TIMEOUT_S. Retries
(408/409/429/5xx and lost connections, backoff doubling from RETRY_BACKOFF_S, honouring
Retry-After) are done here, not by the SDK, so that they stay within those budgets. A reply is
read in a worker thread: the caller's thread waits on a queue and watches the Stop event.

Credentials in a base URL (http://user:password@host/v1) never reach a message, a log line or
the Authorization header as Basic auth: the client is made with the URL without them, and the
password is sent as the bearer API key when no API key is set.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import queue
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
from urllib.parse import unquote, urlsplit, urlunsplit

import numpy as np
import openai
from PIL import Image

from core.config import masked_url
from core.conversation import Exchange, build_messages, image_digests, trim
from core.engines import HEARTBEAT_S, GenerationOptions, TokenCounts, Transcript
from core.errors import AppError, GenerationError, ModelLoadError
from core.media import SAMPLE_RATE

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0  # to open a connection; the read timeout is the longest wait for one chunk
PROBE_TIMEOUT_S = 10.0  # the start-up check (GET /v1/models): one attempt, no retries, all of it
FIRST_CHUNK_TIMEOUT_S = 60.0  # a reply's first text: the whole request, retries included
TRANSCRIBE_TIMEOUT_S = 60.0  # a transcription: the whole request, retries included
STOP_POLL_S = 0.1  # a reply being waited for checks the Stop event this often
MAX_RETRIES = 3  # retries of one request (408, 409, 429, 5xx, connection errors), within its budget
RETRY_BACKOFF_S = 0.5  # the first wait before a retry; it doubles, up to MAX_BACKOFF_S
MAX_BACKOFF_S = 8.0
MAX_IMAGE_SIDE = 2048  # pixels; larger images are scaled down before sending (LLaVA sees <= 1344)
JPEG_QUALITY = 90  # photos go as JPEG; images with transparency as PNG
NO_KEY = "EMPTY"  # sent when no API key is set: local servers ignore it, the SDK requires one
DETAIL_CHARS = 300  # longest server message quoted to the user
# How servers say that the prompt and max_tokens do not fit (vLLM, OpenAI, TGI); the oldest exchanges are then dropped.
CONTEXT_WORDS = ("maximum context", "context length", "context window", "too long", "max_model_len", "must be <=")
# What the SDK raises when a body is not the JSON it expects: json.JSONDecodeError and pydantic's
# ValidationError are ValueErrors; a body of the wrong type (HTML, a list) fails as attribute or type errors.
MALFORMED = (ValueError, TypeError, AttributeError, KeyError)


class TranscriptionError(AppError):
    """The speech server could not transcribe the recording."""


class UnexpectedAnswer(ValueError):
    """The server answered, but not with what an OpenAI-compatible server sends."""


def without_credentials(base_url: str) -> tuple[str, str | None]:
    """(the URL without its user:password part, the password or None)."""
    parts = urlsplit(base_url)
    if "@" not in parts.netloc:
        return base_url, None
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=host)), unquote(parts.password) if parts.password else None


def make_client(base_url: str, api_key: str | None, timeout_s: float, max_retries: int = MAX_RETRIES) -> openai.OpenAI:
    """A client of the server at base_url. A password in the URL (http://user:password@host/v1) is
    sent as the bearer API key when api_key is not set; the URL itself goes without it."""
    url, password = without_credentials(base_url)
    return openai.OpenAI(
        base_url=url,
        api_key=api_key or password or NO_KEY,
        timeout=openai.Timeout(timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s)),
        max_retries=max_retries,
    )


def shown_url(base_url: str) -> str:
    """The base URL without any user:password part (or query), for messages and logs."""
    return masked_url(base_url)


def budget(client: openai.OpenAI, seconds: float) -> openai.OpenAI:
    """The client for one attempt that waits at most about `seconds` (no retries of its own)."""
    return client.with_options(max_retries=0, timeout=openai.Timeout(seconds, connect=min(CONNECT_TIMEOUT_S, seconds)))


def retry_wait(error: openai.APIError, attempt: int, max_retries: int, deadline: float) -> float | None:
    """Seconds to wait before retrying a failed attempt; None: do not retry (the error is final,
    the retries are spent, or the wait would pass the request's deadline)."""
    if attempt >= max_retries:
        return None
    if isinstance(error, openai.APIStatusError):
        if error.status_code not in (408, 409, 429) and error.status_code < 500:
            return None
        wait = retry_after(error.response.headers) or min(RETRY_BACKOFF_S * 2**attempt, MAX_BACKOFF_S)
    elif isinstance(error, openai.APIConnectionError):
        wait = min(RETRY_BACKOFF_S * 2**attempt, MAX_BACKOFF_S)
    else:
        return None
    return wait if time.monotonic() + wait < deadline else None


def retry_after(headers: Mapping[str, str]) -> float | None:
    """The wait a 429/503 asks for (Retry-After in seconds, or retry-after-ms), if any and sane."""
    for name, divisor in (("retry-after-ms", 1000), ("retry-after", 1)):
        try:
            seconds = float(headers.get(name, "")) / divisor
        except ValueError:
            continue
        if 0 < seconds <= MAX_BACKOFF_S * 8:
            return seconds
    return None


def malformed(error: Exception) -> str:
    """What was wrong with a body the server sent, in a few words."""
    if isinstance(error, json.JSONDecodeError):
        return f"invalid JSON: {error.msg} at character {error.pos}"
    if isinstance(error, UnexpectedAnswer):
        return str(error)
    return f"unexpected content: {type(error).__name__}: {' '.join(str(error).split())[:DETAIL_CHARS]}"


def served_models(client: openai.OpenAI) -> list[str] | None:
    """Model ids the server lists at /v1/models; None when it has no such endpoint.
    Raises UnexpectedAnswer (or another of MALFORMED) when the listing is not one."""
    try:
        data = client.models.list().data
    except openai.NotFoundError:
        return None
    if not isinstance(data, list) or not all(isinstance(getattr(m, "id", None), str) for m in data):
        raise UnexpectedAnswer(f"/models did not list models: {str(data)[:80]}")
    return [model.id for model in data]


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
                model: str | None, variables: tuple[str, str, str],
                probe_timeout_s: float = PROBE_TIMEOUT_S) -> tuple[openai.OpenAI, str, list[str] | None]:
    """A client for the server, its URL as shown to users, and the models it serves.
    The check is one attempt of at most probe_timeout_s: a page waits no longer for a dead server.
    variables: the (base URL, API key, model) settings the user would fix; a failure names them."""
    url_variable, key_variable, model_variable = variables
    client = make_client(base_url, api_key, timeout_s, max_retries)
    where = shown_url(base_url)
    try:
        return client, where, served_models(budget(client, probe_timeout_s))
    except openai.APITimeoutError as e:
        raise ModelLoadError(f"The {what} server at {where} did not answer within {probe_timeout_s:.0f} s.",
                             f"Check that it is running and that {url_variable} is right.") from e
    except openai.APIError as e:
        message, hint = explain(e, where, what, model or "", key_variable, model_variable)
        raise ModelLoadError(message, hint or f"Check {url_variable}.") from e
    except MALFORMED as e:
        logger.warning("%s server at %s: unexpected answer to /models: %r", what, where, e)
        raise ModelLoadError(f"The {what} server at {where} did not answer like an OpenAI-compatible server "
                             f"({malformed(e)}).", f"Check {url_variable}: the server's base URL, usually ending in /v1.") from e


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

    def __init__(self, client: openai.OpenAI, model: str, base_url: str, note: str = "", extra_body: dict | None = None,
                 max_retries: int = MAX_RETRIES, first_chunk_timeout_s: float = FIRST_CHUNK_TIMEOUT_S):
        self.client = client.with_options(max_retries=0)  # retried here, within the reply's deadline
        self.model = model
        self.extra_body = extra_body  # server-specific request fields (vLLM's ignore_eos, a logit_bias, ...)
        self.max_retries = max_retries
        self.first_chunk_timeout_s = first_chunk_timeout_s  # the whole wait for a reply's first text
        self.where = shown_url(base_url)
        self.name = f"{model} (OpenAI-compatible server at {self.where})"
        self.note = note
        self._usage_in_stream = True  # ask for the token count in the last chunk until the server refuses
        self.generated = TokenCounts()  # reply text -> tokens, as the server counted them
        self._images: OrderedDict[str, str] = OrderedDict()  # image digest -> data URL
        self._images_lock = threading.Lock()

    @classmethod
    def connect(cls, base_url: str, api_key: str | None, model: str | None, token_timeout_s: float = 300.0,
                max_retries: int = MAX_RETRIES, extra_body: dict | None = None,
                first_chunk_timeout_s: float = FIRST_CHUNK_TIMEOUT_S,
                probe_timeout_s: float = PROBE_TIMEOUT_S) -> "RemoteChatModel":
        """Check that the server answers and serves the model; pick its only model when none is named.
        token_timeout_s: the longest wait for one chunk once the reply has started."""
        client, where, served = open_server(base_url, api_key, token_timeout_s, max_retries, "chat", model,
                                            ("OPENAI_BASE_URL", "OPENAI_API_KEY", "LLAVA_REMOTE_MODEL"), probe_timeout_s)
        return cls(client, pick_model(model, served, where, "LLAVA_REMOTE_MODEL"), base_url, extra_body=extra_body,
                   max_retries=max_retries, first_chunk_timeout_s=first_chunk_timeout_s)

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

    def _open_retrying(self, exchanges, images, options: GenerationOptions, cancel: threading.Event, deadline: float):
        """_open, retried on 408/409/429/5xx and lost connections while the deadline allows."""
        attempt = 0
        while True:
            try:
                return self._open(exchanges, images, options)
            except openai.APIError as e:
                wait = retry_wait(e, attempt, self.max_retries, deadline)
                if wait is None or cancel.wait(wait):
                    raise
                logger.info("chat server at %s: %s; retrying in %.1f s", self.where, type(e).__name__, wait)
                attempt += 1

    def _read(self, exchanges, images, options: GenerationOptions, out: queue.Queue, cancel: threading.Event,
              deadline: float) -> None:
        """The worker: open the stream and put ("text", str), ("tokens", int), ("end", None) or
        ("error", exception) on out. When cancelled it closes the stream at its next chunk (the
        server then cancels the generation)."""
        chunks = None
        try:
            chunks = self._open_retrying(exchanges, images, options, cancel, deadline)
            received = False
            for chunk in chunks:
                if cancel.is_set():
                    return
                received = True
                for kind, value in chunk_parts(chunk):
                    out.put((kind, value))
            if not received:
                raise UnexpectedAnswer("its answer was not a stream of chat completion chunks")
            out.put(("end", None))
        except Exception as e:  # a thread boundary: the reader's thread raises (or translates) it
            out.put(("error", e))
        finally:
            if chunks is not None:
                chunks.close()

    def stream(self, exchanges, images, options: GenerationOptions, stop: threading.Event | None = None) -> Iterator[str]:
        """Yield the reply chunk by chunk. The first text must come within first_chunk_timeout_s
        (retries included). Stop (checked every STOP_POLL_S, also while waiting) or closing this
        generator ends the wait at once; the worker then closes the HTTP stream, which makes the
        server cancel the generation."""
        stop = stop or threading.Event()
        out: queue.Queue = queue.Queue()
        cancel = threading.Event()
        deadline = time.monotonic() + self.first_chunk_timeout_s
        threading.Thread(target=self._read, args=(exchanges, images, options, out, cancel, deadline),
                         name="chat-stream", daemon=True).start()
        text, tokens, beat = "", None, time.monotonic()
        try:
            while not stop.is_set():
                try:
                    kind, value = out.get(timeout=STOP_POLL_S)
                except queue.Empty:
                    if not text and time.monotonic() > deadline:
                        logger.warning("chat server at %s: no reply within %.0f s", self.where, self.first_chunk_timeout_s)
                        raise GenerationError(
                            f"The chat server at {self.where} did not start answering within {self.first_chunk_timeout_s:.0f} s.",
                            "Try again; it may be overloaded. Check that it is running.") from None
                    if time.monotonic() - beat >= HEARTBEAT_S:
                        beat = time.monotonic()
                        yield ""  # nothing yet: the page gets a moment to act on Stop
                    continue
                if kind == "text":
                    text += value
                    yield value
                elif kind == "tokens":
                    tokens = value
                elif kind == "error":
                    raise self._failure(value, started=bool(text)) from value
                else:
                    break
        finally:
            cancel.set()
        if tokens is not None and not stop.is_set():
            self.generated.remember(text, tokens)

    def _failure(self, error: Exception, started: bool = False) -> GenerationError:
        """The user's message for what went wrong; an error that is none of the server's is raised as is (a bug)."""
        if isinstance(error, openai.APIError):
            return self._api_failure(error, started)
        if not isinstance(error, MALFORMED):
            raise error
        logger.warning("chat server at %s: unexpected answer: %r", self.where, error)
        if started:
            return GenerationError(f"The chat server at {self.where} sent a broken stream while it was writing "
                                   f"({malformed(error)}).", "Try again.")
        return GenerationError(f"The chat server at {self.where} did not answer like an OpenAI-compatible server "
                               f"({malformed(error)}).", "Check OPENAI_BASE_URL: the server's base URL, usually ending in /v1.")

    def _api_failure(self, error: openai.APIError, started: bool) -> GenerationError:
        served = None
        if isinstance(error, (openai.NotFoundError, openai.BadRequestError, openai.UnprocessableEntityError)):
            try:  # is it the model name?
                served = served_models(budget(self.client, PROBE_TIMEOUT_S))
            except (openai.APIError, *MALFORMED):
                pass
        message, hint = explain(error, self.where, "chat", self.model, "OPENAI_API_KEY", "LLAVA_REMOTE_MODEL", served)
        if started and isinstance(error, openai.APIConnectionError) and not isinstance(error, openai.APITimeoutError):
            message = f"The connection to the chat server at {self.where} broke while it was writing."
        logger.warning("chat server error: %s", error)
        return GenerationError(message, hint)


def chunk_parts(chunk) -> Iterator[tuple[str, object]]:
    """("text", piece) and ("tokens", count) of one streamed chunk; UnexpectedAnswer if it is not one."""
    choices = getattr(chunk, "choices", None)
    if not isinstance(choices, list):
        raise UnexpectedAnswer(f"a chunk without choices: {str(chunk)[:80]}")
    usage = getattr(chunk, "usage", None)
    if usage is not None and isinstance(usage.completion_tokens, int):
        yield "tokens", usage.completion_tokens
    for choice in choices:
        piece = choice.delta.content if choice.delta else None
        if piece is not None and not isinstance(piece, str):
            raise UnexpectedAnswer(f"a chunk whose content is not text: {str(piece)[:80]}")
        if piece:
            yield "text", piece


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

    def __init__(self, client: openai.OpenAI, model: str, base_url: str, timeout_s: float = TRANSCRIBE_TIMEOUT_S,
                 max_retries: int = MAX_RETRIES):
        self.client = client
        self.model = model
        self.timeout_s = timeout_s  # the whole wait for one transcription, retries included
        self.max_retries = max_retries
        self.where = shown_url(base_url)
        self.name = f"{model} (OpenAI-compatible server at {self.where})"
        self._verbose = True  # verbose_json reports the language; some servers only do json

    @classmethod
    def connect(cls, base_url: str, api_key: str | None, model: str | None, timeout_s: float = TRANSCRIBE_TIMEOUT_S,
                max_retries: int = MAX_RETRIES, probe_timeout_s: float = PROBE_TIMEOUT_S) -> "RemoteTranscriber":
        """timeout_s: the whole wait for one transcription, retries included."""
        client, where, served = open_server(base_url, api_key, timeout_s, max_retries, "speech", model,
                                            ("STT_BASE_URL", "STT_API_KEY", "WHISPER_MODEL"), probe_timeout_s)
        if not model and not any("whisper" in m.lower() for m in served or []):
            model = "whisper-1"  # OpenAI's name; servers without a listing usually take any
        return cls(client, pick_model(model, served, where, "WHISPER_MODEL", prefer="whisper"), base_url,
                   timeout_s, max_retries)

    def transcribe(self, samples: np.ndarray, language: str | None = None) -> Transcript:
        request: dict = dict(model=self.model, file=("question.wav", wav_bytes(samples), "audio/wav"))
        if language:
            request["language"] = language
        try:
            result = self._request_retrying(request)
            text, said = getattr(result, "text", None), getattr(result, "language", None)
            if not isinstance(text, str) or not isinstance(said, (str, type(None))):
                raise UnexpectedAnswer(f"not a transcription: {str(result)[:80]}")
        except openai.APITimeoutError as e:
            logger.warning("speech server at %s: no answer within %.0f s", self.where, self.timeout_s)
            raise TranscriptionError(f"The speech server at {self.where} did not answer within {self.timeout_s:.0f} s.",
                                     "Try again, or type your question.") from e
        except openai.APIError as e:
            message, hint = explain(e, self.where, "speech", self.model, "STT_API_KEY", "WHISPER_MODEL")
            raise TranscriptionError(message, hint or "Type your question instead.") from e
        except MALFORMED as e:
            logger.warning("speech server at %s: unexpected answer: %r", self.where, e)
            raise TranscriptionError(f"The speech server at {self.where} did not answer like an OpenAI-compatible "
                                     f"server ({malformed(e)}).", "Check STT_BASE_URL, or type your question.") from e
        detected = language_code(said)
        return Transcript(text=text.strip(), language=detected or language or "en", duration_s=len(samples) / SAMPLE_RATE)

    def _request_retrying(self, request: dict):
        """_request within the deadline: each attempt waits at most the time left, retries included."""
        deadline = time.monotonic() + self.timeout_s
        attempt = 0
        while True:
            try:
                return self._request(budget(self.client, max(deadline - time.monotonic(), 0.01)), request)
            except openai.APIError as e:
                wait = retry_wait(e, attempt, self.max_retries, deadline)
                if wait is None:
                    raise
                logger.info("speech server at %s: %s; retrying in %.1f s", self.where, type(e).__name__, wait)
                time.sleep(wait)
                attempt += 1

    def _request(self, client: openai.OpenAI, request: dict):
        if self._verbose:
            try:
                return client.audio.transcriptions.create(response_format="verbose_json", **request)
            except (openai.BadRequestError, openai.UnprocessableEntityError) as e:
                if "format" not in detail(e).lower():
                    raise
                self._verbose = False  # e.g. gpt-4o-transcribe: json only, no language
        return client.audio.transcriptions.create(response_format="json", **request)


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
