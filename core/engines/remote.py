"""OpenAI-compatible servers: a ChatModel over /v1/chat/completions and a Transcriber over
/v1/audio/transcriptions (vLLM, TGI, Ollama, LM Studio, `transformers serve`, OpenAI).

The server holds the model and batches requests, so these engines have no lock: turns from
different sessions run at the same time. Talking HTTP is the openai SDK's job; what is here is
the translation: exchanges and PIL images -> chat messages with data URLs, the streamed chunks
-> text, and every failure of the server -> an AppError that names the server and says what to fix.

The client, its budgets and retries, and what each failure means are core.engines.openai_client's: the
start-up check (/v1/models) is one attempt of PROBE_TIMEOUT_S; a reply's first chunk must come
within FIRST_CHUNK_TIMEOUT_S, a transcription within TRANSCRIBE_TIMEOUT_S, retries included. A
reply is read in a worker thread: the caller's thread waits on a queue; both watch the reply's Interrupt.
"""

from __future__ import annotations

import base64
import io
import logging
import queue
import threading
import time
from typing import Iterator, Mapping, Sequence

import numpy as np
import openai
from PIL import Image

from core.conversation import Exchange, build_messages, image_digests, trimmings
from core.engines.api import (
    HEARTBEAT,
    HEARTBEAT_S,
    GenerationInfo,
    GenerationOptions,
    Interrupt,
    Transcript,
    generation,
)
from core.engines.openai_client import (
    MALFORMED,
    MAX_RETRIES,
    PROBE_TIMEOUT_S,
    UnexpectedAnswer,
    budget,
    detail,
    explain,
    malformed,
    open_server,
    pick_model,
    retry_wait,
    served_models,
    shown_url,
)
from core.errors import GenerationError, TranscriptionError
from core.limits import max_reply_chars, max_reply_chunks
from core.lru import LRU
from core.media import SAMPLE_RATE, wav_bytes

logger = logging.getLogger(__name__)

FIRST_CHUNK_TIMEOUT_S = 60.0  # a reply's first text: the whole request, retries included
TRANSCRIBE_TIMEOUT_S = 60.0  # a transcription: the whole request, retries included
STOP_POLL_S = 0.1  # a reply being waited for checks its Interrupt this often
MAX_IMAGE_SIDE = 2048  # pixels; larger images are scaled down before sending (llava-v1.6 tiles up to 1008, OneVision 2304)
JPEG_QUALITY = 90  # photos go as JPEG; images with transparency as PNG
# How servers say that the prompt and max_tokens do not fit (vLLM, OpenAI, TGI); the oldest exchanges are then dropped.
CONTEXT_WORDS = ("maximum context", "context length", "context window", "too long", "max_model_len", "must be <=")


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
        self._images: LRU[str, str] = LRU(32)  # image digest -> data URL

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

    def _image_url(self, key: str, image: Image.Image) -> str:
        """Encode each image once (key: its content digest): every turn of its visual context sends it again."""
        if (url := self._images.get(key)) is None:
            url = image_data_url(image)
            self._images.put(key, url)
        return url

    def messages(self, exchanges: Sequence[Exchange], images: Mapping[str, Image.Image], system_prompt: str = "") -> list[dict]:
        urls = [self._image_url(d, images[d]) for d in image_digests(exchanges)]
        return openai_messages(exchanges, urls, system_prompt)

    def _open(self, exchanges: Sequence[Exchange], images, options: GenerationOptions):
        """Start a streamed completion; on "context too long" drop the oldest exchanges and retry.
        Returns the stream and how many exchanges were kept."""
        for kept in trimmings(exchanges):  # raises GenerationError after the shortest
            try:
                opened = self._request(self.messages(kept, images, options.system_prompt), options)
            except openai.BadRequestError as e:
                if any(word in detail(e).lower() for word in CONTEXT_WORDS) and len(kept) > 1:
                    continue
                raise
            if len(kept) < len(exchanges):
                logger.info("trimmed %d old exchanges to fit the server's context", len(exchanges) - len(kept))
            return opened, len(kept)
        raise AssertionError("unreachable: trimmings() raises when nothing is left to drop")

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

    def _open_retrying(self, exchanges, images, options: GenerationOptions, stop: Interrupt, deadline: float):
        """_open, retried on 408/409/429/5xx and lost connections while the deadline allows."""
        attempt = 0
        while True:
            try:
                return self._open(exchanges, images, options)
            except openai.APIError as e:
                wait = retry_wait(e, attempt, self.max_retries, deadline)
                if wait is None or stop.wait(wait):
                    raise
                logger.info("chat server at %s: %s; retrying in %.1f s", self.where, type(e).__name__, wait)
                attempt += 1

    def _read(self, exchanges, images, options: GenerationOptions, out: queue.Queue, stop: Interrupt,
              deadline: float) -> None:
        """The worker: open the stream and put ("kept", int), ("text", str), ("usage", dict), ("end", None)
        or ("error", exception) on out. Once stopped it closes the stream at its next chunk (the
        server then cancels the generation)."""
        chunks = None
        try:
            chunks, kept = self._open_retrying(exchanges, images, options, stop, deadline)
            out.put(("kept", kept))
            if not self._pass_on(chunks, out, stop, options.max_new_tokens):
                raise UnexpectedAnswer("its answer was not a stream of chat completion chunks")
            out.put(("end", None))
        except Exception as e:  # noqa: BLE001  (a thread boundary: the reader's thread raises or translates it)
            out.put(("error", e))
        finally:
            if chunks is not None:
                chunks.close()

    def _pass_on(self, chunks, out: queue.Queue, stop: Interrupt, max_new_tokens: int) -> bool:
        """Put the chunks' parts on out until the stream ends, stop, or the reply passes its limits
        (core.limits: max_new_tokens and a margin, whatever the server streams): then ("cut", the
        characters kept). False when the stream held no chunk at all."""
        most_chars, most_chunks = max_reply_chars(max_new_tokens), max_reply_chunks(max_new_tokens)
        chars = number = 0
        for number, chunk in enumerate(chunks, start=1):
            if stop.is_set():
                return True
            for kind, value in chunk_parts(chunk):
                if kind == "text":
                    value = value[: most_chars - chars]
                    chars += len(value)
                if value:
                    out.put((kind, value))
            if chars >= most_chars or number >= most_chunks:
                logger.warning("chat server at %s sent more than %d tokens' worth; the reply is cut at %d characters",
                               self.where, max_new_tokens, chars)
                out.put(("cut", chars))
                return True
        return number > 0

    @generation
    def stream(self, exchanges, images, options: GenerationOptions, stop: Interrupt | None = None):
        """Yield the reply chunk by chunk, then return its GenerationInfo. The first text must come
        within first_chunk_timeout_s (retries included). Stop (checked every STOP_POLL_S, also while
        waiting) or closing this generator ends the wait at once; the worker then closes the HTTP
        stream, which makes the server cancel the generation."""
        stop = stop or Interrupt()
        out: queue.Queue = queue.Queue()
        deadline = time.monotonic() + self.first_chunk_timeout_s
        threading.Thread(target=self._read, args=(exchanges, images, options, out, stop, deadline),
                         name="chat-stream", daemon=True).start()
        facts: dict = {"kept_exchanges": len(exchanges)}
        text, ended = "", False
        try:
            for kind, value in self._parts(out, stop, deadline):
                if kind == "text":
                    text += value
                elif kind == "usage":
                    facts.update(value)
                elif kind == "kept":
                    facts["kept_exchanges"] = value
                elif kind == "cut":
                    facts["cut_chars"] = value
                if kind in ("text", "beat"):
                    yield value
            ended = True
        finally:
            if not ended:  # closed early, or failed: the worker closes the HTTP stream
                stop.set("the reply ended early")
        if facts.get("completion_tokens") is None:  # an older server does not say: about 4 characters a token
            facts["completion_tokens"] = -(-len(text) // 4)
        return GenerationInfo(**facts)

    def _parts(self, out: queue.Queue, stop: Interrupt, deadline: float) -> Iterator[tuple[str, object]]:
        """What the worker puts on out, until the end or stop; ("beat", HEARTBEAT) every HEARTBEAT_S
        while nothing comes. Raises the user's GenerationError for a failure or a server that never starts."""
        beat, started = time.monotonic(), False
        while not stop.is_set():
            try:
                kind, value = out.get(timeout=STOP_POLL_S)
            except queue.Empty:
                if not started and time.monotonic() > deadline:
                    logger.warning("chat server at %s: no reply within %.0f s", self.where, self.first_chunk_timeout_s)
                    raise GenerationError(
                        f"The chat server at {self.where} did not start answering within {self.first_chunk_timeout_s:.0f} s.",
                        "Try again; it may be overloaded. Check that it is running.") from None
                if time.monotonic() - beat >= HEARTBEAT_S:
                    beat = time.monotonic()
                    yield "beat", HEARTBEAT  # nothing yet: the page gets a moment to act on Stop
                continue
            if kind == "error":
                raise self._failure(value, started=started) from value
            if kind == "end":
                return
            started = started or kind == "text"
            yield kind, value

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
    """("text", piece) and ("usage", {prompt_tokens, completion_tokens, cached_tokens}) of one streamed
    chunk; UnexpectedAnswer if it is not one."""
    choices = getattr(chunk, "choices", None)
    if not isinstance(choices, list):
        raise UnexpectedAnswer(f"a chunk without choices: {str(chunk)[:80]}")
    usage = getattr(chunk, "usage", None)
    if usage is not None and isinstance(usage.completion_tokens, int):
        yield "usage", usage_facts(usage)
    for choice in choices:
        piece = choice.delta.content if choice.delta else None
        if piece is not None and not isinstance(piece, str):
            raise UnexpectedAnswer(f"a chunk whose content is not text: {str(piece)[:80]}")
        if piece:
            yield "text", piece


def usage_facts(usage) -> dict[str, int | None]:
    """The token counts of a chunk's usage (cached_tokens: what vLLM and OpenAI report as reused
    from their prefix cache, when they do)."""
    details = getattr(usage, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None)
    prompt = getattr(usage, "prompt_tokens", None)
    return {"completion_tokens": usage.completion_tokens, "prompt_tokens": prompt if isinstance(prompt, int) else None,
            "cached_tokens": cached if isinstance(cached, int) else None}


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
