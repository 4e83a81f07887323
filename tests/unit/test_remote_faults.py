"""What a broken server does to the app: every failure is an AppError naming the server (never its
credentials), within a time budget, and the next request works once the server is back.

FaultServer is a real loopback HTTP server whose behaviour is switched between requests: it
answers well, refuses connections (its port closed), fails with 500, sends invalid JSON, a body
that is not JSON, JSON of the wrong shape, a broken event stream, or hangs.
"""

import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from core.chat import turn
from core.chat.session import ChatSession
from core.conversation import Exchange, Question
from core.engines.api import GenerationOptions, Interrupt
from core.engines.remote import RemoteChatModel, RemoteTranscriber
from core.errors import GenerationError, ModelLoadError, TranscriptionError
from tests.fakes import tone, wav_bytes

MODEL = "llava-test"
PASSWORD = "s3cret-pw"
OPTIONS = GenerationOptions(temperature=0, max_new_tokens=16)
GOOD_CHUNK = b'data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"m",' \
             b'"choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]}\n\n'
BODIES = {  # mode -> (content type, body) of a 200 answer that is not what an OpenAI-compatible server sends
    "invalid-json": ("application/json", b'{"data": [{"id": '),
    "not-json": ("text/html", b"<html><body>Welcome to nginx!</body></html>"),
    "wrong-shape": ("application/json", b'{"unexpected": true}'),
}
FAULTS = ["refused", "500", *BODIES]


class FaultServer:
    """GET /v1/models, POST /v1/chat/completions and /v1/audio/transcriptions, misbehaving as self.mode says."""

    def __init__(self):
        self.mode = "ok"
        self.requests: list[dict] = []  # path and headers of each request
        self.release = threading.Event()  # set at the end: hanging handlers return
        self.port = 0
        self.start()

    @property
    def url(self) -> str:  # with credentials, as a user might set OPENAI_BASE_URL
        return f"http://user:{PASSWORD}@127.0.0.1:{self.port}/v1"

    @property
    def shown(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append({"path": self.path, "headers": dict(self.headers)})
                self.answer(b'{"object":"list","data":[{"id":"%s","object":"model"},{"id":"whisper-1","object":"model"}]}'
                            % MODEL.encode())

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.requests.append({"path": self.path, "headers": dict(self.headers)})
                if self.path.endswith("/chat/completions"):
                    self.chat()
                else:
                    self.answer(b'{"text": " hello ", "language": "en"}')

            def chat(self):
                if server.mode in ("ok", "broken-sse", "wrong-shape"):
                    self.send(200, "text/event-stream")
                    if server.mode == "wrong-shape":
                        return self.wfile.write(b'data: {"unexpected": true}\n\n')
                    self.wfile.write(GOOD_CHUNK)
                    self.wfile.flush()
                    self.wfile.write(b'data: {"choices": [{"delta": {"content": "wor\n\n' if server.mode == "broken-sse"
                                     else b"data: [DONE]\n\n")
                else:
                    self.answer(b"")

            def answer(self, ok_body: bytes):
                if server.mode == "hang":
                    server.release.wait(30)
                    return
                if server.mode == "500":
                    return self.send(500, "application/json", b'{"error": {"message": "boom"}}')
                content_type, body = BODIES.get(server.mode, ("application/json", ok_body))
                self.send(200, content_type, body)

            def send(self, code, content_type, body=None):
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                if body is not None:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if body is not None:
                    self.wfile.write(body)

        class Quiet(ThreadingHTTPServer):
            def handle_error(self, request, client_address):  # clients leaving a hanging request are expected
                pass

        self.httpd = Quiet(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def fail(self, mode: str) -> None:
        if mode == "refused":
            self.stop()  # nothing listens on the port
        else:
            self.mode = mode

    def recover(self, mode: str) -> None:
        if mode == "refused":
            self.start()  # the same port again
        self.mode = "ok"


@pytest.fixture
def server():
    fault = FaultServer()
    yield fault
    fault.release.set()
    fault.stop()


def chat(server, **kwargs):
    kwargs = {"max_retries": 0, "probe_timeout_s": 2.0, **kwargs}
    return RemoteChatModel.connect(server.url, None, MODEL, 30.0, **kwargs)


def speech(server, **kwargs):
    kwargs = {"max_retries": 0, "probe_timeout_s": 2.0, **kwargs}
    return RemoteTranscriber.connect(server.url, None, "whisper-1", **kwargs)


def reply(model, stop=None) -> str:
    return "".join(model.stream([Exchange(Question("Hi?"))], {}, OPTIONS, stop))


def assert_names_the_server(error: Exception, server: FaultServer) -> None:
    assert server.shown in str(error) and PASSWORD not in str(error) and "user:" not in str(error)


class Timer:
    def __enter__(self):
        self.start = time.monotonic()
        return self

    def __exit__(self, *exc):
        self.s = time.monotonic() - self.start


# ---- at start: the /v1/models check


@pytest.mark.parametrize("connect", [chat, speech], ids=["chat", "speech"])
@pytest.mark.parametrize("fault", FAULTS)
def test_a_failing_server_at_start_is_a_model_load_error_naming_it(server, connect, fault):
    server.fail(fault)
    with Timer() as took, pytest.raises(ModelLoadError) as failed:
        connect(server)
    assert_names_the_server(failed.value, server)
    assert took.s < 2.0
    server.recover(fault)
    assert connect(server).model in (MODEL, "whisper-1")


def test_a_hanging_server_at_start_gives_up_after_10_s_and_says_so(server):
    server.fail("hang")
    with Timer() as took, pytest.raises(ModelLoadError, match="did not answer within 10 s") as failed:
        RemoteChatModel.connect(server.url, None, MODEL)  # the app's defaults: 4 attempts x 60 s before
    assert_names_the_server(failed.value, server)
    assert 9.0 < took.s < 15.0
    server.recover("hang")
    assert reply(RemoteChatModel.connect(server.url, None, MODEL)) == "Hello"


def test_a_hanging_speech_server_at_start_is_bounded_too(server):
    server.fail("hang")
    with Timer() as took, pytest.raises(ModelLoadError, match="did not answer within 1 s"):
        speech(server, probe_timeout_s=1.0)
    assert took.s < 3.0


# ---- per turn: a reply


@pytest.mark.parametrize("fault", [*FAULTS, "broken-sse"])
def test_a_failing_server_mid_turn_is_a_generation_error_naming_it(server, fault):
    model = chat(server)
    server.fail(fault)
    got = []
    with Timer() as took, pytest.raises(GenerationError) as failed:
        for piece in model.stream([Exchange(Question("Hi?"))], {}, OPTIONS):
            got.append(piece)
    assert_names_the_server(failed.value, server)
    assert took.s < 3.0
    assert got == (["Hello"] if fault == "broken-sse" else [])
    if fault == "broken-sse":
        assert "while it was writing" in str(failed.value)
    server.recover(fault)
    assert reply(model) == "Hello"


def test_a_hanging_reply_ends_at_its_first_chunk_deadline_not_after_every_retry(server):
    model = chat(server, max_retries=3, first_chunk_timeout_s=1.0)
    server.fail("hang")
    with Timer() as took, pytest.raises(GenerationError, match="did not start answering within 1 s") as failed:
        reply(model)
    assert_names_the_server(failed.value, server)
    assert took.s < 2.5
    server.recover("hang")
    assert reply(model) == "Hello"


def test_stop_ends_a_reply_that_is_still_waiting_for_the_server(server):
    model = chat(server)
    server.fail("hang")
    stop = Interrupt()
    threading.Timer(0.3, stop.set).start()
    with Timer() as took:
        assert reply(model, stop) == ""
    assert took.s < 1.5  # not the 30 s read timeout
    server.recover("hang")
    assert reply(model) == "Hello"


# ---- per turn: a transcription


@pytest.mark.parametrize("fault", FAULTS)
def test_a_failing_transcription_is_a_transcription_error_naming_the_server(server, fault):
    transcriber = speech(server)
    server.fail(fault)
    with Timer() as took, pytest.raises(TranscriptionError) as failed:
        transcriber.transcribe(tone(0.5))
    assert_names_the_server(failed.value, server)
    assert took.s < 2.0
    server.recover(fault)
    assert transcriber.transcribe(tone(0.5)).text == "hello"


def test_a_hanging_transcription_ends_at_its_deadline(server):
    transcriber = speech(server, timeout_s=1.0, max_retries=3)
    server.fail("hang")
    with Timer() as took, pytest.raises(TranscriptionError, match="did not answer within 1 s"):
        transcriber.transcribe(tone(0.5))
    assert took.s < 2.5
    server.recover("hang")
    assert transcriber.transcribe(tone(0.5)).text == "hello"


def test_invalid_json_from_the_speech_server_is_a_logged_notice_and_the_chat_goes_on(server, settings):
    transcriber = speech(server)
    engines = turn.Engines(chat(server), transcriber)
    session = ChatSession(settings)
    server.fail("invalid-json")
    rejected = turn.ask(session, engines, turn.TurnInput(audio=wav_bytes(tone(1.0))))
    assert isinstance(rejected, turn.Rejected) and server.shown in rejected.notice.text
    assert session.conversation.items == [rejected.notice]  # kept in the conversation and its log
    server.recover("invalid-json")
    asked = turn.ask(session, engines, turn.TurnInput(text="typed"))
    assert list(turn.answer(session, engines, asked.index, OPTIONS))[-1].answer.text == "Hello"


# ---- credentials in the base URL


def test_a_password_in_the_url_is_the_bearer_key_and_is_never_shown_or_logged(server, caplog):
    caplog.set_level(logging.DEBUG)
    model = chat(server)
    assert reply(model) == "Hello"
    server.fail("500")
    with pytest.raises(GenerationError):
        reply(model)
    assert PASSWORD not in model.name and model.where == server.shown
    for request in server.requests:
        authorization = {k.lower(): v for k, v in request["headers"].items()}["authorization"]
        assert authorization == f"Bearer {PASSWORD}"  # not Basic auth of user:password
    logged = [r.getMessage() for r in caplog.records]
    assert logged and not [line for line in logged if PASSWORD in line]


def test_an_api_key_wins_over_a_password_in_the_url(server):
    model = RemoteChatModel.connect(server.url, "sk-key", MODEL, max_retries=0)
    assert reply(model) == "Hello"
    assert {k.lower(): v for k, v in server.requests[-1]["headers"].items()}["authorization"] == "Bearer sk-key"
