import io
import json
import zipfile
from dataclasses import replace

import pytest

from core.chat.session import ChatSession
from core.conversation import Answer, Notice, Question
from core.media import load_image
from core.store.export import export_zip, session_from_json, session_to_json, session_to_markdown
from core.store.session_log import SessionLog, read_session, save_media
from tests.conftest import png_bytes
from tests.fakes import tone, wav_bytes


def logged_session(log_dir):
    image = load_image(png_bytes(), max_pixels=10**7, max_bytes=10**7)
    save_media(log_dir, image.data, image.digest, image.format)
    save_media(log_dir, wav_bytes(tone(0.2)), "c" * 32, "wav")
    log = SessionLog.create(log_dir, model="fake")
    log.question(0, Question("What is it? *bold* $5", image=image.digest))
    log.answer(0, Answer("A car.", timings={"ttft_s": 0.1, "total_s": 1.25}, audio="c" * 32, audio_format="wav"))
    log.feedback(0, 1)
    log.notice(Notice("That file is not an image."))
    log.question(1, Question("Colour? «ünïcode»", source="voice", language="fr", audio="c" * 32))
    log.answer(1, Answer("Rouge", status="partial", note="stopped by a timeout"))
    log.error("The model timed out.", turn=1)
    return log, image.digest


def test_json_export_round_trips(tmp_path):
    log, _ = logged_session(tmp_path)
    logged = read_session(log.path)
    text = session_to_json(logged)
    assert json.loads(text)["id"] == log.session_id
    assert session_from_json(text) == logged


def test_exports_keep_the_logged_turn_numbers(tmp_path):
    log, _ = logged_session(tmp_path)
    log.question(4, Question("Asked from another tab"))  # the log's numbers need not be consecutive
    logged = read_session(log.path)
    assert [e.turn.number for e in session_from_json(session_to_json(logged)).conversation.exchanges] == [0, 1, 4]
    older = json.loads(session_to_json(logged))
    for item in older["items"]:
        item.pop("turn", None)  # an export from before turns were written: counted on import
    assert [e.turn.number for e in session_from_json(json.dumps(older)).conversation.exchanges] == [0, 1, 2]
    text = session_to_markdown(logged, tmp_path)
    assert [line for line in text.splitlines() if line.startswith("## Turn")] == ["## Turn 1", "## Turn 2", "## Turn 5"]


def test_json_import_refuses_other_files():
    with pytest.raises(ValueError):
        session_from_json('{"some": "thing"}')


def test_markdown_has_every_turn_and_an_embedded_image(tmp_path):
    log, _ = logged_session(tmp_path)
    text = session_to_markdown(read_session(log.path), tmp_path)
    assert text.count("## Turn ") == 2
    assert "data:image/jpeg;base64," in text and "> What is it? *bold* $5" in text
    assert "Rouge" in text and "partial" in text and "The model timed out." in text and "not an image" in text


def test_zip_holds_logs_json_markdown_and_media(tmp_path):
    log, digest = logged_session(tmp_path)
    other = SessionLog.create(tmp_path, model="fake")
    other.question(0, Question("Hello"))
    archive = zipfile.ZipFile(io.BytesIO(export_zip(tmp_path, [log.session_id, other.session_id])))
    names = set(archive.namelist())
    assert {f"logs/{log.session_id}.jsonl", f"json/{other.session_id}.json", f"markdown/{log.session_id}.md",
            f"media/{digest}.png", f"media/{'c' * 32}.wav"} <= names
    markdown = archive.read(f"markdown/{log.session_id}.md").decode()
    assert f"](../media/{digest}.png)" in markdown and f"](../media/{'c' * 32}.wav)" in markdown
    assert session_from_json(archive.read(f"json/{log.session_id}.json").decode()) == read_session(log.path)


def test_resume_restores_conversation_and_image_and_keeps_logging(tmp_path, settings):
    settings = replace(settings, log_dir=tmp_path)
    log, digest = logged_session(tmp_path)
    session = ChatSession.resume(settings, log.session_id)
    assert session.session_id == log.session_id
    assert session.conversation == read_session(log.path).conversation
    assert session.conversation.current_image == digest and digest in session.images
    index = session.ask(Question("And now?"))
    session.answer(index, Answer("Still a car."))
    exchanges = read_session(log.path).conversation.exchanges
    assert [e.question.text for e in exchanges][-1] == "And now?" and exchanges[-1].answer.text == "Still a car."


def test_markdown_export_keeps_no_tag_of_the_text_and_reads_the_same(tmp_path):
    import html as entities
    import re

    from markdown_it import MarkdownIt

    attack = '<svg onload="alert(1)"></svg> look <img src="https://tracker.example/q.png">'
    log = SessionLog.create(tmp_path, model="<b>fake</b>")
    log.question(0, Question(f"What? {attack}"))
    log.answer(0, Answer(f"It is ![a chart](https://tracker.example/r.png) {attack}", status="partial",
                         note="<script>alert(2)</script>"))
    log.notice(Notice(f"Bad file {attack}"))
    log.error(f"Server said {attack}", turn=0)
    html = MarkdownIt("commonmark", {"html": True}).render(session_to_markdown(read_session(log.path), tmp_path))
    assert set(re.findall(r"<(\w+)", html)) <= {"h1", "h2", "p", "ul", "li", "blockquote", "strong", "em", "a"}
    shown = entities.unescape(re.sub(r"<[^>]+>", "", html)).replace("\u200b", "")
    assert shown.count(attack) == 4 and "<script>alert(2)</script>" in shown and "<b>fake</b>" in shown
