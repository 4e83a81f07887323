"""Drawing a conversation with st.chat_message; the live turn is drawn by pages/chat.py."""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

import streamlit as st

from core.chat.session import ChatSession
from core.conversation import Answer, Exchange, Notice
from core.errors import InvalidImage
from core.markup import safe_markdown
from core.media import preview
from core.store.session_log import media_path

log = logging.getLogger(__name__)

STAGES = {  # timing key -> label, in display order
    "stt_s": "Speech to text",
    "wait_s": "Waiting for the model",
    "ttft_s": "Time to first token",
    "first_sentence_s": "First sentence",
    "first_audio_s": "First audio ready",
    "generate_s": "Generation",
    "tokens_per_s": "Tokens/s",
    "tts_s": "Text to speech",
    "total_s": "Total",
}


PREVIEW_SIDE = 480  # pixels; images in messages are shown 240 wide, twice that for sharp screens
SIDEBAR_SIDE = 640  # pixels; the sidebar is about 300 wide
SHOWN_TURNS = 30  # a long conversation draws its last turns; "Show earlier turns" adds this many more


def first_shown(items: list, turns: int) -> int:
    """Index of the first item to draw so that the last `turns` exchanges (and the notices
    between them) are on the page: what keeps a rerun quick however long the conversation."""
    seen = 0
    for index in range(len(items) - 1, -1, -1):
        if isinstance(items[index], Exchange):
            seen += 1
            if seen == turns:
                return index
    return 0


@lru_cache(maxsize=256)
def _read(path: Path) -> bytes:
    """Media files never change (named by content hash): read each once per process."""
    return path.read_bytes()


def media(session: ChatSession, digest: str | None) -> bytes | None:
    return stored(session.log_dir, digest)


def stored(log_dir: Path, digest: str | None) -> bytes | None:
    """The bytes of a media file in the log folder; None when there is none."""
    path = media_path(log_dir, digest)
    return _read(path) if path else None


@lru_cache(maxsize=512)
def _preview(path: Path, side: int) -> bytes | None:
    """A small JPEG of a stored image, made once per process; None when the file is no image
    (a log from before uploads were normalised may name one)."""
    try:
        return preview(path.read_bytes(), side)
    except (InvalidImage, OSError) as e:
        log.warning("no preview of %s: %s", path.name, e)
        return None


def picture(log_dir: Path, digest: str | None, side: int = PREVIEW_SIDE) -> bytes | None:
    """The preview of a stored image, at most side×side; None when it is missing or unreadable."""
    path = media_path(log_dir, digest)
    return _preview(path, side) if path else None


def draw_image(log_dir: Path, digest: str, caption: str, side: int = PREVIEW_SIDE, width: int | None = 240) -> None:
    """An image from the log folder, or a short caption saying why it cannot be shown."""
    if media_path(log_dir, digest) is None:
        st.caption("(image missing from the log folder)")
    elif (image := picture(log_dir, digest, side)) is None:
        st.caption("(this image cannot be shown: its file is damaged)")
    else:
        st.image(image, width=width or "content", caption=caption)


def escape(text: str) -> str:
    """Model text as markdown, without "$" turning prices into LaTeX."""
    return text.replace("$", "\\$")


def draw_notice(notice: Notice) -> None:
    with st.chat_message("assistant", avatar=":material/warning:"):
        getattr(st, notice.level)(notice.text)


def draw_question(session: ChatSession, exchange: Exchange) -> None:
    question = exchange.question
    with st.chat_message("user"):
        if question.image:
            draw_image(session.log_dir, question.image, caption="New image")
        if audio := media(session, question.audio):
            st.audio(audio, format="audio/wav")
        st.markdown(safe_markdown(question.text))


def draw_answer_extras(session: ChatSession, index: int, answer: Answer) -> None:
    """Everything under the reply text: its note, audio and feedback."""
    draw_note_and_audio(answer, media(session, answer.audio))
    key = f"feedback-{session.session_id}-{index}"
    if key not in st.session_state and answer.feedback is not None:
        st.session_state[key] = answer.feedback
    st.feedback("thumbs", key=key, on_change=_on_feedback, args=(session, index, key))


def draw_note_and_audio(answer: Answer, audio: bytes | None) -> None:
    """Why a reply is partial or stopped (or its note), and the player of its spoken audio."""
    if answer.status != "complete":
        st.warning(answer.note or f"This reply is {answer.status}.", icon=":material/content_cut:")
    elif answer.note:
        st.caption(answer.note)
    if audio:
        st.audio(audio, format="audio/mpeg" if answer.audio_format == "mp3" else "audio/wav")


def _on_feedback(session: ChatSession, index: int, key: str) -> None:
    session.feedback(index, st.session_state[key])


def draw_timings(timings: dict[str, float]) -> None:
    rows = [
        f"| {label} | {timings[key]:.2f}{'' if key == 'tokens_per_s' else ' s'} |"
        for key, label in STAGES.items()
        if key in timings
    ]
    if rows:
        st.markdown("| stage | time |\n|---|---:|\n" + "\n".join(rows))
