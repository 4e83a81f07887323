"""One exchange as both pages draw it: the question (new image, recording, text) and the reply (text,
why it is partial, its spoken audio), from the files in the log folder.

The chat page and History share this renderer; what differs is passed in: `numbered` puts History's
"Turn n · Transcript · en" over the question, and `under_reply` draws the page's own controls under
the reply (the chat page's feedback, Regenerate and Edit; History's read-only feedback and timings).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import streamlit as st

from core.conversation import Answer, Exchange, Notice, Question
from core.errors import InvalidImage
from core.markup import safe_markdown
from core.media import preview
from core.store.session_log import media_path

log = logging.getLogger(__name__)

PREVIEW_SIDE = 480  # pixels; images in messages are shown 240 wide, twice that for sharp screens
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
MIME = {"mp3": "audio/mpeg", "wav": "audio/wav"}  # the formats the app stores and plays
# Every chat message holds exactly this many elements, some of them empty. Streamlit matches a run's elements
# to the last run's by position and keeps the last run's extra ones, faded, until the run ends: a message drawn
# where another one was (a reply redrawn after it streamed, a question where a reply was, Regenerate) would
# show a stale copy of the text or live-looking buttons for the whole turn. With the same count, each
# element replaces one.
SLOTS = 6  # reply: status, text, note, audio, controls, the speech queue's mount; question: image, recording, caption, text


def audio_mime(audio_format: str | None) -> str:
    """The MIME type of audio the app made or recorded ("mp3", "wav"); WAV for anything else
    (recordings are WAV, and so is every engine's audio but gTTS's)."""
    return MIME.get(audio_format or "wav", "audio/wav")


def timing(key: str, seconds: float) -> str:
    """One stage's figure as shown: "0.52 s", or "31.20" for tokens per second."""
    return f"{seconds:.2f}{'' if key == 'tokens_per_s' else ' s'}"


def escape(text: str) -> str:
    """Question or reply text as markdown, without "$" turning prices into LaTeX."""
    return text.replace("$", "\\$")


@lru_cache(maxsize=256)
def _read(path: Path) -> bytes:
    """Media files never change (named by content hash): read each once per process."""
    return path.read_bytes()


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


def pad(drawn: int) -> None:
    """Empty elements after the drawn ones, up to SLOTS."""
    for _ in range(SLOTS - drawn):
        st.empty()


def draw_notice(notice: Notice) -> None:
    with st.chat_message("assistant", avatar=":material/warning:"):
        getattr(st, notice.level)(notice.text)
        pad(1)


def draw_question(log_dir: Path, exchange: Exchange, numbered: bool = False) -> None:
    """The user's message: a new image, the recording, and the text (a voice question's transcript)."""
    question: Question = exchange.question
    with st.chat_message("user"):
        if question.image:
            draw_image(log_dir, question.image, caption="New image")
        else:
            st.empty()
        if audio := stored(log_dir, question.audio):
            st.audio(audio, format=audio_mime("wav"))  # recordings are stored as WAV
        else:
            st.empty()
        label = "Transcript" if question.source == "voice" else "Typed"
        caption = st.empty()
        if numbered:
            caption.caption(f"Turn {exchange.turn.number + 1} · {label} · {question.language}")
        st.markdown(safe_markdown(escape(question.text)))
        pad(4)


def draw_reply_media(log_dir: Path, answer: Answer, note_slot=None, audio_slot=None) -> None:
    """Under the reply's text, in two slots (new ones by default): why it is partial or stopped (or its
    note), and its spoken audio."""
    note_slot = st.empty() if note_slot is None else note_slot
    audio_slot = st.empty() if audio_slot is None else audio_slot
    if answer.status != "complete":
        note_slot.warning(answer.note or f"This reply is {answer.status}.", icon=":material/content_cut:")
    elif answer.note:
        note_slot.caption(answer.note)
    if audio := stored(log_dir, answer.audio):
        audio_slot.audio(audio, format=audio_mime(answer.audio_format))


def reply_text(answer: Answer) -> str:
    return safe_markdown(escape(answer.text)) or "*(no text)*"


def draw_exchange(log_dir: Path, exchange: Exchange, under_reply: Callable[[Answer], None] | None = None,
                  numbered: bool = False) -> None:
    """The question and, when there is one, the reply with the page's controls under it."""
    draw_question(log_dir, exchange, numbered)
    if (answer := exchange.answer) is None:
        return
    with st.chat_message("assistant"):
        st.empty()  # where a reply being written shows "Thinking…"
        st.markdown(reply_text(answer))
        draw_reply_media(log_dir, answer)
        with st.container():  # one element whatever the page draws under the reply
            if under_reply is not None:
                under_reply(answer)
        st.empty()  # where a reply being written mounts the speech queue


def read_only(answer: Answer) -> None:
    """History's line under a reply: the feedback it was given and its timings."""
    extras = []
    if answer.feedback is not None:
        extras.append(":material/thumb_up:" if answer.feedback else ":material/thumb_down:")
    timings = [f"{label} {timing(key, answer.timings[key])}" for key, label in STAGES.items() if key in answer.timings]
    if timings:
        extras.append(" · ".join(timings))
    if extras:
        st.caption("  ".join(extras))
