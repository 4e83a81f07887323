"""Talking to an OpenAI-compatible server (vLLM, TGI, Ollama, LM Studio, `transformers serve`,
OpenAI) through the openai SDK: the client and its budgets, retries, the start-up check, and what
each failure means to the user (an AppError message that names the server and says what to fix).

Waits are budgets for the whole request, retries included, so that a hanging server costs a page
at most that long. Retries (408/409/429/5xx and lost connections, backoff doubling from
RETRY_BACKOFF_S, honouring Retry-After) are decided here, not by the SDK, so that they stay within
those budgets.

Credentials in a base URL (http://user:password@host/v1) never reach a message, a log line or the
Authorization header as Basic auth: the client is made with the URL without them, and the password
is sent as the bearer API key when no API key is set.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from typing import Iterator, Mapping
from urllib.parse import unquote, urlsplit, urlunsplit

import openai

from core.config import masked_url
from core.errors import ModelLoadError
from core.limits import MAX_RESPONSE_BYTES

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0  # to open a connection; the read timeout is the longest wait for one chunk
PROBE_TIMEOUT_S = 10.0  # the start-up check (GET /v1/models): one attempt, no retries, all of it
MAX_RETRIES = 3  # retries of one request (408, 409, 429, 5xx, connection errors), within its budget
RETRY_BACKOFF_S = 0.5  # the first wait before a retry; it doubles, up to MAX_BACKOFF_S
MAX_BACKOFF_S = 8.0
NO_KEY = "EMPTY"  # sent when no API key is set: local servers ignore it, the SDK requires one
DETAIL_CHARS = 300  # longest server message quoted to the user
# What the SDK raises when a body is not the JSON it expects: json.JSONDecodeError and pydantic's
# ValidationError are ValueErrors; a body of the wrong type (HTML, a list) fails as attribute or type errors.
MALFORMED = (ValueError, TypeError, AttributeError, KeyError)


class UnexpectedAnswer(ValueError):
    """The server answered, but not with what an OpenAI-compatible server sends."""


def without_credentials(base_url: str) -> tuple[str, str | None]:
    """(the URL without its user:password part, the password or None)."""
    parts = urlsplit(base_url)
    if "@" not in parts.netloc:
        return base_url, None
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=host)), unquote(parts.password) if parts.password else None


# The HTTP library the installed SDK is built on: httpx before openai 3, its fork httpx2 since.
http = importlib.import_module(openai.DefaultHttpxClient.__mro__[1].__module__.partition(".")[0])


class _CappedBody(http.SyncByteStream):
    """An answer's body that ends after MAX_RESPONSE_BYTES: the SDK then sees the end of the stream."""

    def __init__(self, body: http.SyncByteStream, url: http.URL):
        self.body, self.url = body, url

    def __iter__(self) -> Iterator[bytes]:
        read = 0
        for part in self.body:
            read += len(part)
            if read > MAX_RESPONSE_BYTES:
                logger.warning("%s sent more than %d bytes; the rest is not read", masked_url(str(self.url)), MAX_RESPONSE_BYTES)
                return
            yield part

    def close(self) -> None:
        self.body.close()


class CappedTransport(http.HTTPTransport):
    """HTTP whose answers are read up to MAX_RESPONSE_BYTES (core.limits), whatever a server sends."""

    def handle_request(self, request: http.Request) -> http.Response:
        response = super().handle_request(request)
        response.stream = _CappedBody(response.stream, request.url)
        return response


def make_client(base_url: str, api_key: str | None, timeout_s: float, max_retries: int = MAX_RETRIES) -> openai.OpenAI:
    """A client of the server at base_url. A password in the URL (http://user:password@host/v1) is
    sent as the bearer API key when api_key is not set; the URL itself goes without it."""
    url, password = without_credentials(base_url)
    return openai.OpenAI(
        base_url=url,
        api_key=api_key or password or NO_KEY,
        timeout=openai.Timeout(timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s)),
        max_retries=max_retries,
        http_client=openai.DefaultHttpxClient(transport=CappedTransport()),
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
    server's only model (or its only one whose id contains prefer). A server that lists nothing
    (`transformers serve MODEL` 5.17 lists only the hub cache) is taken at its word for the name."""
    if requested:
        if not served or requested in served or f"{requested}:latest" in served:  # Ollama's default tag
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
        if served and model not in served and f"{model}:latest" not in served:
            return (f"The {what} server at {where} has no model named {model!r} (it serves: {', '.join(served)}).",
                    f"Set {model_variable} to one of them.")
        if not served and isinstance(error, openai.BadRequestError):  # it lists nothing: the name may be the cause
            return (f"The {what} server at {where} refused the request ({error.status_code}: {detail(error)}).",
                    f"Check {model_variable}: the server lists no models to check it against.")
        if isinstance(error, openai.NotFoundError):
            return (f"The {what} server at {where} answered 404 ({detail(error)}).",
                    "Check the base URL: it usually ends in /v1.")
        return f"The {what} server at {where} refused the request ({error.status_code}: {detail(error)}).", ""
    if isinstance(error, openai.RateLimitError):
        return f"The {what} server at {where} is busy (429: {detail(error)}), even after retrying.", "Try again in a minute."
    if isinstance(error, openai.APIStatusError):
        return f"The {what} server at {where} failed ({error.status_code}: {detail(error)}).", "Try again."
    return f"The {what} server at {where} failed: {detail(error)}.", "Try again."


