"""A session taken elsewhere: JSON (lossless, re-importable), Markdown (to read), and a zip of all.

JSON holds the conversation exactly as read_session() returns it; session_from_json() gives it
back. Markdown embeds small JPEG previews of the images so that one file reads anywhere; in the
zip, Markdown links to the original media files stored beside it instead.
"""

from __future__ import annotations

import base64
import io
import json
import zipfile
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Iterable, Literal

from core.conversation import Answer, Conversation, Exchange, Notice, Question, Turn
from core.errors import InvalidImage
from core.markup import safe_markdown
from core.media import preview
from core.store.session_log import FORMAT_VERSION, LoggedSession, media_path, read_session, session_path

JSON_FORMAT = "talk-with-a-picture/session"
PREVIEW_PIXELS = 512  # longest side of an image embedded in Markdown


def session_to_dict(logged: LoggedSession) -> dict:
    items = []
    for item in logged.conversation.items:
        if isinstance(item, Notice):
            items.append({"type": "notice", **asdict(item)})
        else:
            items.append({"type": "exchange", "turn": item.turn.number, "question": asdict(item.question),
                          "answer": asdict(item.answer) if item.answer else None})
    return {"format": JSON_FORMAT, "version": FORMAT_VERSION, "id": logged.session_id, "header": logged.header,
            "updated": logged.updated, "items": items, "errors": logged.errors, "notes": logged.notes}


def session_to_json(logged: LoggedSession) -> str:
    return json.dumps(session_to_dict(logged), ensure_ascii=False, indent=2)


def session_from_json(text: str) -> LoggedSession:
    """Read an exported session back. Raises ValueError when it is not one."""
    data = json.loads(text)
    if not isinstance(data, dict) or data.get("format") != JSON_FORMAT:
        raise ValueError("not a session exported by this app")
    items: list = []
    for item in data["items"]:
        if item["type"] == "notice":
            items.append(Notice(item["text"], item.get("level", "error")))
        else:
            answer = item.get("answer")
            number = item.get("turn", len([i for i in items if isinstance(i, Exchange)]))  # older exports: counted
            items.append(Exchange(Question(**item["question"]), Answer(**answer) if answer else None, Turn(number)))
    return LoggedSession(data["id"], data["header"], Conversation(items), data.get("errors", []),
                         data.get("notes", []), data.get("version", FORMAT_VERSION), data.get("updated", ""))


def session_to_markdown(logged: LoggedSession, log_dir: Path, images: Literal["embed", "link"] = "embed",
                        media_prefix: str = "media/") -> str:
    """The session to read: each turn with its image, question (or transcript), reply and timings.
    images="link" refers to media files as media_prefix + file name (used in the zip).
    Text from users, models and servers goes through safe_markdown: in a viewer no HTML tag of it
    runs and no image of it loads."""
    created = _when(logged.created)
    lines = [f"# Session {logged.session_id}", "",
             f"- Started: {created}",
             f"- Model: {safe_markdown(str(logged.header.get('model', 'unknown')))}",
             f"- Turns: {len(logged.conversation.exchanges)}", ""]
    for note in logged.notes:
        lines.append(f"> Note: {safe_markdown(note)}")
    for item in logged.conversation.items:
        if isinstance(item, Notice):
            lines += [f"> **{item.level.title()}:** {safe_markdown(item.text)}", ""]
            continue
        lines += _exchange(item, log_dir, images, media_prefix)
    if logged.errors:
        lines += ["## Errors", ""]
        lines += [f"- {e.get('ts', '')}: {safe_markdown(str(e.get('message', '')))}" for e in logged.errors]
    return "\n".join(lines).rstrip() + "\n"


def _exchange(exchange: Exchange, log_dir: Path, images: str, media_prefix: str) -> list[str]:
    """One turn as Markdown lines: its image, recording, question, reply, note, spoken reply, timings."""
    question, answer = exchange.question, exchange.answer
    lines = [f"## Turn {exchange.turn.number + 1}", ""]
    if question.image:
        lines += [_image(log_dir, question.image, images, media_prefix), ""]
    if question.audio and images == "link" and (path := media_path(log_dir, question.audio)):
        lines += [f"[Recording]({media_prefix}{path.name})", ""]
    said = "said" if question.source == "voice" else "wrote"
    lines += [f"**You** ({said}, {question.language}):", "", _quote(safe_markdown(question.text)), ""]
    if answer is None:
        lines += ["*(no reply)*", ""]
    else:
        lines += ["**Assistant:**", "", safe_markdown(answer.text) or "*(no text)*", ""]
        if answer.status != "complete":
            lines += [f"*Reply {answer.status}{': ' + safe_markdown(answer.note) if answer.note else ''}*", ""]
        if answer.audio and images == "link" and (path := media_path(log_dir, answer.audio)):
            lines += [f"[Spoken reply]({media_prefix}{path.name})", ""]
        if answer.timings:
            lines += ["Timings: " + ", ".join(f"{k} {v:.2f}" for k, v in answer.timings.items()), ""]
    return lines


def export_zip(log_dir: Path, session_ids: Iterable[str]) -> bytes:
    """All the given sessions: for each its original log, JSON and Markdown, plus the media they use."""
    buffer = io.BytesIO()
    media: set[Path] = set()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for session_id in session_ids:
            path = session_path(log_dir, session_id)
            try:
                logged = read_session(path)
            except OSError:
                continue  # deleted meanwhile
            archive.write(path, f"logs/{path.name}")
            archive.writestr(f"json/{session_id}.json", session_to_json(logged))
            archive.writestr(f"markdown/{session_id}.md",
                             session_to_markdown(logged, log_dir, images="link", media_prefix="../media/"))
            media.update(p for d in logged.media() if (p := media_path(log_dir, d)))
        for path in sorted(media):
            archive.write(path, f"media/{path.name}", compress_type=zipfile.ZIP_STORED)  # already compressed
    return buffer.getvalue()


def _image(log_dir: Path, digest: str, mode: str, prefix: str) -> str:
    path = media_path(log_dir, digest)
    if path is None:
        return "*(image missing)*"
    if mode == "link":
        return f"![image]({prefix}{path.name})"
    try:
        small = preview(path.read_bytes(), PREVIEW_PIXELS)  # the page's previews are made the same way
    except (InvalidImage, OSError):
        return "*(image unreadable)*"
    return f"![image](data:image/jpeg;base64,{base64.b64encode(small).decode()})"


def _quote(text: str) -> str:
    return "\n".join("> " + line for line in (text or "(empty)").splitlines())


def _when(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return iso or "unknown"
