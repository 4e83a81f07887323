"""A loopback chat server that misbehaves without end, for the bound tests: test_remote's ScriptedServer
answering every POST /v1/chat/completions with whatever `body` yields (a million characters ignoring
max_tokens, random bytes, random lines), and listing one model at GET /v1/models."""

from __future__ import annotations

import json
from typing import Callable, Iterator

from tests.unit.test_remote import ScriptedServer

MODEL = "flood"


def sse(data: dict | str) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


def text_chunk(content: str) -> bytes:
    return sse({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": MODEL,
                "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]})


class FloodServer(ScriptedServer):
    def __init__(self, body: Callable[[], Iterator[bytes]]):
        super().__init__(("raw", body), models=(MODEL,))

    def __enter__(self) -> "FloodServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
