"""The app as AppTest drives it through streamlit_app.py, with the tiny LLaVA and espeak-ng."""

import io
import json

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.engines.api import generation
from core.errors import GenerationError
from core.store.session_log import list_session_files, media_path, read_session
from tests.app.conftest import ask, log_records, roles
from tests.conftest import ROOT, png_bytes

pytestmark = pytest.mark.slow


def test_typed_multi_turn_conversation_with_image(app):
    at = ask(app(), "What is in this picture?", png_bytes())
    assert roles(at) == ["user", "assistant"]
    assert at.chat_message[0].markdown[0].value == "What is in this picture?"
    assert len(at.chat_message[0].get("image")) == 1  # the image is shown in the user's message
    audio = at.get("audio")
    assert len(audio) == 1 and not audio[0].proto.autoplay  # the whole reply, to replay
    (queue,) = [c for c in at.get("bidi_component") if c.proto.component_name.endswith("talk_speech_queue")
                ]  # the sentences went to the page's speech queue as they came
    clips = json.loads(queue.proto.json)["clips"]
    assert queue.proto.component_name == "talk_speech_queue" and clips
    assert [c["seq"] for c in clips] == list(range(clips[0]["seq"], clips[0]["seq"] + len(clips)))
    assert all(c["src"].startswith("data:audio/wav;base64,") for c in clips)

    ask(at, "And what colour is it?")
    assert roles(at) == ["user", "assistant", "user", "assistant"]
    assert len(at.get("audio")) == 2 and not any(a.proto.autoplay for a in at.get("audio"))

    records = log_records(app.log_dir)
    assert [r["type"] for r in records] == ["session", "question", "answer", "question", "answer"]
    assert records[1]["image"] and records[3]["image"] is None
    session = at.session_state["chat"]
    streamed = [e.answer.text for e in session.conversation.exchanges]
    assert [r["text"] for r in records if r["type"] == "answer"] == streamed
    assert "Time to first token" in at.sidebar.markdown[-1].value or any(
        "Time to first token" in m.value for m in at.sidebar.markdown
    )


def test_image_from_the_sidebar_is_used_by_the_next_question(app):
    at = app()
    at.sidebar.file_uploader[0].set_value(("cat.png", png_bytes(color="blue"), "image/png")).run()
    assert any(img for img in at.sidebar.get("image"))
    ask(at, "Describe it.")
    assert read_session(list_session_files(app.log_dir)[0]).conversation.exchanges[0].question.image


def test_question_before_any_image_is_answered_as_text_chat(app):
    at = ask(app(), "Hello, who are you?")
    assert roles(at) == ["user", "assistant"]
    assert read_session(list_session_files(app.log_dir)[0]).conversation.exchanges[0].answer.status == "complete"


def test_dollars_in_a_question_are_text_on_both_pages(app):
    """The chat page and History draw an exchange with one renderer: "$" is escaped in both (not LaTeX)."""
    at = ask(app(), "Is it $5 or $10?")
    ask(at, "And $3?")  # the first exchange is now drawn from the conversation, not as the live turn
    assert at.chat_message[0].markdown[0].value == "Is it \\$5 or \\$10?"
    assert at.chat_message[2].markdown[0].value == "And \\$3?"
    at.switch_page("pages/history.py").run()
    at.query_params["session"] = at.session_state["chat"].session_id
    at.run()
    questions = [m.markdown[-1].value for m in at.chat_message if m.name == "user"]
    assert questions == ["Is it \\$5 or \\$10?", "And \\$3?"]


@pytest.mark.parametrize(
    "data,message",
    [
        (b"just some text, not an image", "not an image"),
        (None, "megapixels"),
    ],
)
def test_bad_images_show_a_message_and_the_chat_goes_on(app, data, message):
    if data is None:
        buffer = io.BytesIO()
        Image.new("1", (10_001, 10_001)).save(buffer, "PNG")
        data = buffer.getvalue()
    at = ask(app(), "first question")
    ask(at, "what is this?", data, name="fake.png")
    assert any(message in e.value for e in at.error)
    assert roles(at)[:2] == ["user", "assistant"] and len(at.session_state["chat"].conversation.exchanges) == 1
    ask(at, "still there?")
    assert roles(at).count("user") == 2
    assert any(r["type"] == "notice" and message in r["text"] for r in log_records(app.log_dir))


def test_generation_failure_keeps_the_partial_reply(app, monkeypatch):
    @generation
    def failing(self, exchanges, images, options, stop=None):
        yield "The beginning "
        yield "of a reply "
        raise GenerationError("The model ran out of memory (simulated).")

    monkeypatch.setattr("core.engines.vlm.LlavaModel.stream", failing)
    at = ask(app(), "Tell me everything.")
    assert "The beginning of a reply" in at.chat_message[1].markdown[0].value
    assert any("out of memory" in w.value for w in at.warning)
    records = log_records(app.log_dir)
    answer = next(r for r in records if r["type"] == "answer")
    assert answer["status"] == "partial" and answer["text"] == "The beginning of a reply "
    assert any(r["type"] == "error" for r in records)


def test_model_that_cannot_load_says_which_variable_to_set(app, monkeypatch, tmp_path):
    monkeypatch.setenv("LLAVA_MODEL", str(tmp_path / "no-such-model"))
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    at.run()
    assert any("LLAVA_MODEL" in e.value for e in at.error)


def test_bad_configuration_value_is_named(app, monkeypatch):
    monkeypatch.setenv("STT_ENGINE", "whisper.cpp")
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    at.run()
    assert not at.exception and any("STT_ENGINE" in e.value for e in at.error)


def test_feedback_regenerate_and_edit_are_logged(app):
    at = ask(app(), "What is it?", png_bytes())
    at.feedback[0].set_value(1).run()
    at.button(key="regen-0").click().run()
    assert roles(at) == ["user", "assistant"]
    at.text_area(key="edit-0").set_value("What is it, exactly?")
    at.button(key="resend-0").click().run()
    assert not at.exception
    assert at.chat_message[0].markdown[-1].value == "What is it, exactly?"
    records = log_records(app.log_dir)
    kinds = [r["type"] for r in records]
    assert kinds == ["session", "question", "answer", "feedback", "answer", "question", "answer"]
    assert records[3]["score"] == 1
    session = read_session(list_session_files(app.log_dir)[0])
    assert len(session.conversation.exchanges) == 1
    assert session.conversation.exchanges[0].question.text == "What is it, exactly?"


def test_new_session_starts_a_new_log(app):
    at = ask(app(), "one")
    at.sidebar.button[0].click().run()
    assert roles(at) == []
    ask(at, "two")
    assert len(list_session_files(app.log_dir)) == 2


def grey_16_bit_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.tile(np.linspace(0, 65535, 320).astype(np.uint16), (200, 1))).save(buffer, "PNG")
    return buffer.getvalue()


def strip_png(size=(40_000, 1)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, "blue").save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("name,make", [("grey16.png", grey_16_bit_png), ("strip.png", strip_png)])
def test_images_that_used_to_break_the_page_give_a_working_turn(app, name, make):
    """A 16-bit grey PNG ("cannot write mode I;16 as JPEG") and a 40000×1 strip ("height and width
    must be > 0") used to fail on the page, and on every rerun after."""
    at = ask(app(), "What is in this picture?", make(), name=name)
    assert roles(at) == ["user", "assistant"] and not at.error
    assert len(at.chat_message[0].get("image")) == 1
    question = next(r for r in log_records(app.log_dir) if r["type"] == "question")
    assert question["text"] == "What is in this picture?" and question["image"]
    with Image.open(media_path(app.log_dir, question["image"])) as stored:  # the normalised image is what is kept
        assert stored.mode == "RGB" and max(stored.size) <= 20 * min(stored.size)
    ask(at, "And what colour is it?")
    assert roles(at) == ["user", "assistant", "user", "assistant"] and len(at.sidebar.get("image")) == 1
    assert [r["text"] for r in log_records(app.log_dir) if r["type"] == "question"] == [
        "What is in this picture?", "And what colour is it?"]
    assert all(e.answer and e.answer.status == "complete" for e in at.session_state["chat"].conversation.exchanges)
