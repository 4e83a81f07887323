"""The OpenAI-compatible engines over real HTTP (the openai SDK) against a small scripted server.

The scripted server plays what real servers answer (vLLM's error bodies, 429 with Retry-After, an
error event mid-stream, a stall); tests/slow/test_remote_server.py runs against `transformers serve`.
"""

import base64
import io
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from core.chat import turn
from core.chat.session import ChatSession
from core.conversation import Answer, Exchange, Question
from core.engines.api import GenerationInfo, GenerationOptions, Interrupt, Transcript
from core.engines.remote import (
    MAX_IMAGE_SIDE,
    RemoteChatModel,
    RemoteTranscriber,
    image_data_url,
    language_code,
    openai_messages,
)
from core.errors import GenerationError, ModelLoadError, TranscriptionError
from tests.conftest import png_bytes
from tests.fakes import tone, wav_bytes

MODEL = "llava-hf/llava-1.5-7b-hf"
OPTIONS = GenerationOptions(temperature=0, max_new_tokens=32)


def chunk(content=None, usage=None):
    data = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": MODEL,
            "choices": [] if content is None else [{"index": 0, "delta": {"content": content}, "finish_reason": None}]}
    if usage is not None:
        data["usage"] = {"prompt_tokens": 10, "completion_tokens": usage, "total_tokens": 10 + usage}
    return data


def sse(*pieces, usage=None, stall_s=0.0, error=None, done=True):
    """A streamed reply: one chunk per piece, then a usage chunk, an error event or [DONE]."""
    events = [chunk(p) for p in pieces]
    if usage is not None:
        events.append(chunk(usage=usage))
    if error is not None:
        events.append({"error": error})
    return ("sse", events, stall_s, done)


def status(code, body, headers=None):
    return ("json", code, body, headers or {})


class ScriptedServer:
    """Answers POSTs from a script (the last entry repeats); GET /v1/models lists self.models."""

    def __init__(self, *script, models=(MODEL,), models_status=200):
        self.script = list(script)
        self.models = list(models)
        self.models_status = models_status
        self.requests: list[dict] = []  # path, headers, body (JSON when it is JSON)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # the body ends when the connection closes: simple SSE

            def log_message(self, *args):
                pass

            def record(self, body):
                headers = {k.lower(): v for k, v in self.headers.items()}
                server.requests.append({"path": self.path, "headers": headers, "body": body})

            def do_GET(self):
                self.record(None)
                if server.models_status != 200:
                    return self.reply("json", server.models_status, {"error": {"message": "Incorrect API key."}}, {})
                self.reply("json", 200, {"object": "list", "data": [{"id": m, "object": "model"} for m in server.models]}, {})

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw
                self.record(body)
                step = server.script.pop(0) if len(server.script) > 1 else server.script[0]
                self.reply(*(step(body) if callable(step) else step))

            def reply(self, kind, *args):
                if kind == "json":
                    code, body, headers = args
                    data = json.dumps(body).encode()
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if kind == "raw":  # whatever bytes the callable yields, as an event stream (tests/flood_server.py)
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    for piece in args[0]():
                        self.wfile.write(piece)
                    return
                events, stall_s, done = args
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for i, event in enumerate(events):
                    if i == 1 and stall_s:
                        time.sleep(stall_s)
                    self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                    self.wfile.flush()
                if done:
                    self.wfile.write(b"data: [DONE]\n\n")

        class Quiet(ThreadingHTTPServer):
            def handle_error(self, request, client_address):  # a client closing a stream early is expected
                pass

        self.httpd = Quiet(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def posts(self):
        return [r for r in self.requests if r["body"] is not None]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(*script, **kwargs):
        servers.append(ScriptedServer(*script, **kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def connect(server, model=MODEL, retries=2, timeout_s=30.0, **kwargs):
    return RemoteChatModel.connect(server.base_url, "sk-test", model, timeout_s, max_retries=retries, **kwargs)


def ask(exchange_text="What is it?"):
    return [Exchange(Question(exchange_text))]


def decode(url: str) -> Image.Image:
    header, data = url.split(",", 1)
    assert header in ("data:image/jpeg;base64", "data:image/png;base64")
    return Image.open(io.BytesIO(base64.b64decode(data)))


# ---- messages


def test_messages_alternate_roles_and_carry_the_image_as_a_data_url():
    exchanges = [
        Exchange(Question("What is it?", image="d1"), Answer("A red car.")),
        Exchange(Question("spoken question", source="voice"), Answer("", status="error")),  # failed: no text
        Exchange(Question("and typed")),
    ]
    image = Image.new("RGB", (120, 80), (200, 30, 60))
    messages = openai_messages(exchanges, [image_data_url(image)], "Be brief.")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    first = messages[1]["content"]
    assert [p["type"] for p in first] == ["image_url", "text"] and first[1]["text"] == "What is it?"
    sent = decode(first[0]["image_url"]["url"])
    assert sent.size == (120, 80) and max(abs(a - b) for a, b in zip(sent.getpixel((60, 40)), (200, 30, 60))) <= 4
    assert messages[2]["content"] == "A red car." and messages[-1]["content"] == "spoken question\n\nand typed"


def test_big_images_are_scaled_down_and_transparent_ones_stay_png():
    big = decode(image_data_url(Image.new("RGB", (4000, 1000), "white")))
    assert max(big.size) == MAX_IMAGE_SIDE and big.size[0] / big.size[1] == pytest.approx(4, rel=0.01)
    clear = image_data_url(Image.new("RGBA", (10, 10), (0, 0, 0, 0)))
    assert clear.startswith("data:image/png") and decode(clear).mode == "RGBA"


# ---- streaming


def test_reply_streams_with_the_request_a_server_expects(serve):
    server = serve(sse("A ", "red ", "car.", usage=7))
    model = connect(server)
    image = Image.new("RGB", (30, 20), "white")
    exchanges = [Exchange(Question("What is it?", image="d"))]
    generation = model.stream(exchanges, {"d": image}, GenerationOptions(temperature=0.5, top_p=0.8, max_new_tokens=40))
    chunks = list(generation)
    assert chunks == ["A ", "red ", "car."]
    assert generation.info == GenerationInfo(kept_exchanges=1, prompt_tokens=10, completion_tokens=7)  # as the server counted
    request = server.posts()[0]
    assert request["path"] == "/v1/chat/completions" and request["headers"]["authorization"] == "Bearer sk-test"
    body = request["body"]
    assert body["model"] == MODEL and body["stream"] is True and body["max_tokens"] == 40
    assert body["temperature"] == 0.5 and body["top_p"] == 0.8
    assert decode(body["messages"][0]["content"][0]["image_url"]["url"]).size == (30, 20)
    assert model.lock is None  # the server batches: no queue in the app


def test_busy_and_failing_servers_are_retried_with_backoff(serve):
    server = serve(status(429, {"error": {"message": "Too many requests"}}, {"Retry-After": "0"}),
                   status(503, {"detail": "loading"}), sse("fine"))
    start = time.perf_counter()
    assert [chunk for chunk in connect(server).stream(ask(), {}, OPTIONS) if chunk] == ["fine"]  # "": heartbeats
    assert len(server.posts()) == 3 and time.perf_counter() - start >= 0.2  # it waited before retrying


def test_a_server_that_keeps_failing_gives_up_with_its_own_words(serve):
    server = serve(status(500, {"object": "error", "message": "CUDA out of memory", "code": 500}))
    with pytest.raises(GenerationError, match="failed \\(500: CUDA out of memory\\)"):
        list(connect(server, retries=1).stream(ask(), {}, OPTIONS))
    assert len(server.posts()) == 2


def test_stop_closes_the_stream(serve):
    server = serve(sse(*[f"w{i} " for i in range(50)]))
    stop, got = Interrupt(), []
    for piece in connect(server).stream(ask(), {}, OPTIONS, stop):
        got.append(piece)
        if len(got) == 2:
            stop.set()
    assert got == ["w0 ", "w1 "]


def test_an_error_event_mid_stream_keeps_the_partial_reply(serve, settings):
    server = serve(sse("one ", "two ", error={"message": "CUDA out of memory", "code": 500}, done=False))
    engines = turn.Engines(connect(server))
    session = ChatSession(settings)
    asked = turn.ask(session, engines, turn.TurnInput(text="count"))
    answer = list(turn.answer(session, engines, asked.index, OPTIONS))[-1].answer
    assert answer.text == "one two " and answer.status == "partial"
    assert "CUDA out of memory" in answer.note and "incomplete" in answer.note


def test_a_stalled_stream_times_out(serve):
    server = serve(sse("one ", "two ", stall_s=1.5))
    got = []
    with pytest.raises(GenerationError, match="in time"):
        for piece in connect(server, timeout_s=0.3).stream(ask(), {}, OPTIONS):
            got.append(piece)
    assert got == ["one "]


def test_a_long_conversation_drops_its_oldest_exchanges_until_it_fits(serve):
    def vllm(body):  # vLLM's words when prompt + max_tokens exceed max_model_len
        if len(body["messages"]) > 3:
            return status(400, {"object": "error", "type": "BadRequestError", "code": 400,
                                "message": "This model's maximum context length is 4096 tokens. However, you "
                                           "requested 5000 tokens. Please reduce the length of the messages."})
        return sse("ok")

    server = serve(vllm)
    exchanges = [Exchange(Question("look", image="d"), Answer("a"))]
    exchanges += [Exchange(Question(f"q{i}"), Answer(f"a{i}")) for i in range(3)] + [Exchange(Question("last"))]
    assert list(connect(server).stream(exchanges, {"d": Image.new("RGB", (8, 8))}, OPTIONS)) == ["ok"]
    sent = server.posts()[-1]["body"]["messages"]
    assert sent[0]["content"][0]["type"] == "image_url" and sent[-1]["content"] == "last"
    assert len(server.posts()) == 4  # 9, 7, 5 messages refused, then 3


def test_a_server_refusing_stream_options_still_streams(serve):
    def old_server(body):
        if "stream_options" in body:
            return status(400, {"detail": "Unexpected field: stream_options"})
        return sse("fine", "!")

    server = serve(old_server)
    model = connect(server)
    assert "".join(model.stream(ask(), {}, OPTIONS)) == "fine!"
    generation = model.stream(ask(), {}, OPTIONS)
    assert "".join(generation) == "fine!"
    assert len(server.posts()) == 3  # refused once, then never asked for again
    assert generation.info.completion_tokens == 2  # estimated: about 4 characters a token
    assert generation.info.prompt_tokens is None  # the server did not say


# ---- clear errors


def test_unreachable_server_says_so_and_names_the_address():
    with pytest.raises(ModelLoadError, match="Cannot reach the chat server at http://127.0.0.1:9/v1"):
        RemoteChatModel.connect("http://127.0.0.1:9/v1", None, MODEL, max_retries=0)


def test_unauthorized_names_the_key_variable(serve):
    with pytest.raises(ModelLoadError, match="refused the API key \\(401.*OPENAI_API_KEY"):
        connect(serve(sse("x"), models_status=401))
    server = serve(status(401, {"error": {"message": "Incorrect API key provided"}}))
    with pytest.raises(GenerationError, match="Incorrect API key provided.*OPENAI_API_KEY"):
        list(connect(server).stream(ask(), {}, OPTIONS))


def test_wrong_model_name_lists_what_the_server_serves(serve):
    server = serve(status(404, {"object": "error", "message": f"The model `{MODEL}-x` does not exist.", "code": 404}),
                   models=[MODEL, "other"])
    with pytest.raises(ModelLoadError, match=f"no model named '{MODEL}-x' \\(it serves: {MODEL}, other\\)"):
        connect(server, model=f"{MODEL}-x")
    misnamed = RemoteChatModel(connect(server).client, f"{MODEL}-x", server.base_url)
    with pytest.raises(GenerationError, match="LLAVA_REMOTE_MODEL"):
        list(misnamed.stream(ask(), {}, OPTIONS))


def test_a_404_for_a_known_model_points_at_the_base_url(serve):
    server = serve(status(404, {"detail": "Not Found"}))
    with pytest.raises(GenerationError, match="/v1"):
        list(connect(server).stream(ask(), {}, OPTIONS))


def test_connect_takes_the_only_model_and_asks_when_there_are_several(serve):
    assert connect(serve(sse("x")), model=None).model == MODEL
    assert connect(serve(sse("x"), models=["llava:latest"]), model="llava").model == "llava"  # Ollama's tag
    with pytest.raises(ModelLoadError, match="Set LLAVA_REMOTE_MODEL"):
        connect(serve(sse("x"), models=["a", "b"]), model=None)


# ---- speech to text


def transcription(text=" Bonjour. ", language="french"):
    return status(200, {"text": text, "language": language, "duration": 1.0})


def test_transcriber_sends_a_wav_and_reads_text_and_language(serve):
    server = serve(transcription(), models=[MODEL, "openai/whisper-large-v3-turbo"])
    transcriber = RemoteTranscriber.connect(server.base_url, "sk-test", None, max_retries=0)
    assert transcriber.model == "openai/whisper-large-v3-turbo"  # the server's only Whisper
    samples = tone(1.5)
    transcript = transcriber.transcribe(samples)
    assert transcript.text == "Bonjour." and transcript.duration_s == pytest.approx(1.5)
    assert transcript.language == "fr"  # the server said "french"
    body = server.posts()[0]["body"]
    assert server.posts()[0]["path"] == "/v1/audio/transcriptions"
    assert b"RIFF" in body and b"WAVE" in body and b"openai/whisper-large-v3-turbo" in body and b"verbose_json" in body


def test_transcriber_falls_back_to_json_when_verbose_json_is_refused(serve):
    server = serve(status(400, {"error": {"message": "response_format 'verbose_json' is not supported"}}),
                   status(200, {"text": "hello"}), models=["gpt-4o-transcribe"])
    transcriber = RemoteTranscriber.connect(server.base_url, None, "gpt-4o-transcribe", max_retries=0)
    assert transcriber.transcribe(tone(1.0), language="de") == Transcript("hello", "de", 1.0)
    assert transcriber.transcribe(tone(1.0)).language == "en"  # nothing detected, nothing asked: English
    assert [b"verbose_json" in r["body"] for r in server.posts()] == [True, False, False]


def test_a_failing_transcription_server_is_a_notice_in_the_chat(serve, settings):
    server = serve(status(503, {"detail": "overloaded"}), models=["whisper-1"])
    transcriber = RemoteTranscriber.connect(server.base_url, None, None, max_retries=0)
    with pytest.raises(TranscriptionError, match="503"):
        transcriber.transcribe(tone(1.0))
    engines = turn.Engines(RemoteChatModel(transcriber.client, MODEL, server.base_url), transcriber)
    rejected = turn.ask(ChatSession(settings), engines, turn.TurnInput(audio=wav_bytes(tone(1.0))))
    assert isinstance(rejected, turn.Rejected) and "speech server" in rejected.notice.text


def test_language_names_become_codes(monkeypatch):
    assert language_code("en") == "en" and language_code(None) is None
    assert language_code("English") == "en" and language_code(" french ") == "fr"  # openai-whisper's table
    assert language_code("Klingon") is None
    monkeypatch.setitem(sys.modules, "whisper.tokenizer", None)  # an install without openai-whisper
    assert language_code("english") is None and language_code("de") == "de"


def test_image_question_through_a_turn_sends_the_uploaded_image(serve, settings):
    server = serve(sse("A square."))
    engines = turn.Engines(connect(server))
    session = ChatSession(settings)
    asked = turn.ask(session, engines, turn.TurnInput(text="What?", image=png_bytes((64, 48), "white")))
    assert list(turn.answer(session, engines, asked.index, OPTIONS))[-1].answer.text == "A square."
    content = server.posts()[0]["body"]["messages"][0]["content"]
    assert np.asarray(decode(content[0]["image_url"]["url"]).convert("RGB")).min() >= 250  # white, as uploaded


def test_the_app_loads_server_engines_when_configured_and_no_local_model(serve, tmp_path, monkeypatch):
    from core.config import Settings
    from core.engines import vlm
    from core.engines.loading import load_engines

    def no_local_model(*args, **kwargs):
        raise AssertionError("the in-process model must not load when OPENAI_BASE_URL is set")

    monkeypatch.setattr(vlm.LlavaModel, "load", no_local_model)
    server = serve(sse("x"), models=[MODEL, "openai/whisper-large-v3-turbo"])
    settings = Settings.from_env({"OPENAI_BASE_URL": server.base_url, "LLAVA_REMOTE_MODEL": MODEL, "STT_ENGINE": "openai-api",
                                  "TTS_ENGINE": "none", "LOG_DIR": str(tmp_path)})
    loaded = load_engines(settings)
    engines, notes = loaded.engines, loaded.notes
    assert isinstance(engines.chat, RemoteChatModel) and engines.chat.model == MODEL and engines.chat.lock is None
    assert isinstance(engines.transcriber, RemoteTranscriber) and engines.transcriber.model == "openai/whisper-large-v3-turbo"
    assert notes == []
