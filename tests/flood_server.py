"""A loopback chat server that misbehaves without end, for the bound tests: it streams whatever its
`body` callable yields for each POST /v1/chat/completions (a million characters ignoring max_tokens,
random bytes, random lines), and lists one model at GET /v1/models. Bytes it could not send (the
client closed the stream, as it should once a reply is cut) are counted in `unsent`."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator

MODEL = "flood"


def sse(data: dict | str) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


def text_chunk(content: str) -> bytes:
    return sse({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": MODEL,
                "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]})


class FloodServer:
    def __init__(self, body: Callable[[], Iterator[bytes]]):
        self.body = body
        self.sent = 0  # bytes written to clients
        self.closed_early = 0  # streams the client closed before the end
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args):
                pass

            def do_GET(self):
                data = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                try:
                    for piece in server.body():
                        self.wfile.write(piece)
                        server.sent += len(piece)
                except (BrokenPipeError, ConnectionResetError):
                    server.closed_early += 1

        class Quiet(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass

        self.httpd = Quiet(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def __enter__(self) -> "FloodServer":
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
