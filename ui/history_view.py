"""Drawing past sessions: list rows, search hits, and one session as it was."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import streamlit as st

from core.conversation import Notice
from core.markup import safe_markdown
from core.store.history_index import MARK_END, MARK_START, SearchHit, SessionSummary
from core.store.session_log import LoggedSession
from ui.exchange_view import _preview as _thumbnail  # noqa: F401  (the cache bench/history_bench.py clears)
from ui.exchange_view import draw_exchange, draw_notice, escape, picture, read_only

MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|>~:$<])")
MARKED = re.compile(f"({MARK_START}[^{MARK_START}{MARK_END}]*{MARK_END})")  # one matched word, marks included
HIGHLIGHT_CHARS = 2_000  # of a snippet drawn as a search hit
MATCH_KEY = "search-match"  # the opened search hit's turn: the page scrolls to it (ui/js/scroll_to.js)
_scroll_to = st.components.v2.component("talk_scroll_to", js=(Path(__file__).parent / "js" / "scroll_to.js").read_text())


def when(iso: str) -> str:
    """An ISO time (UTC) as local-looking "2026-11-25 14:03"."""
    try:
        return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return iso or "?"


def duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def highlighted(snippet: str) -> str:
    """An index snippet as markdown: its text escaped, the matched words highlighted. Linear in
    the snippet's length, and cut at HIGHLIGHT_CHARS (a snippet is a few words; one "word" may be
    a whole pasted file)."""
    if len(snippet) > HIGHLIGHT_CHARS:
        snippet = snippet[:HIGHLIGHT_CHARS] + "…"
    out = []
    for part in MARKED.split(snippet):
        if part.startswith(MARK_START) and part.endswith(MARK_END):
            out.append(":orange-background[" + _literal(part[1:-1]) + "]")
        else:  # a mark cut in two by the limit is dropped
            out.append(_literal(part.replace(MARK_START, "").replace(MARK_END, "").replace("\n", " ")))
    return "".join(out)


def _literal(text: str) -> str:
    """Text shown as is in markdown (every markup character backslash-escaped)."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", text)


def thumbnail(log_dir: Path, digest: str, size: int = 96) -> bytes | None:
    """A list row's small picture; None for a missing or unreadable file (the row is drawn without it)."""
    return picture(log_dir, digest, size)


def turns(count: int) -> str:
    """ "1 turn", "2 turns"."""
    return f"{count} turn{'s' if count != 1 else ''}"


def summary_row(log_dir: Path, summary: SessionSummary, on_open) -> None:
    with st.container(border=True):
        left, middle, right = st.columns([1, 6, 1], vertical_alignment="center")
        pictures = [t for d in summary.images[:3] if (t := thumbnail(log_dir, d))]
        if pictures:
            left.image(pictures, width=64)
        else:
            left.markdown(":material/chat:")
        middle.markdown(f"**{when(summary.created)}** · "
                        f"{safe_markdown(escape(summary.first_question[:120])) or '*(no question)*'}")
        details = [turns(summary.turns), duration(summary.duration_s),
                   summary.model or "unknown model"]
        if summary.errors:
            details.append(f":red[{summary.errors} error{'s' if summary.errors != 1 else ''}]")
        middle.caption(" · ".join(details))
        right.button("Open", key=f"open-{summary.session_id}", on_click=on_open, args=(summary.session_id,))


def search_hit(hit: SearchHit, on_open) -> None:
    with st.container(border=True):
        left, right = st.columns([7, 1], vertical_alignment="center")
        left.markdown(f"**{when(hit.created)}** · turn {hit.turn + 1}")
        if MARK_START in hit.question:
            left.markdown(f"You: {highlighted(hit.question)}")
        if MARK_START in hit.answer or MARK_START not in hit.question:
            left.markdown(f"Assistant: {highlighted(hit.answer)}")
        right.button("Open", key=f"hit-{hit.session_id}-{hit.turn}", on_click=on_open, args=(hit.session_id, hit.turn))


def session(log_dir: Path, logged: LoggedSession, highlight: int | None = None) -> None:
    """The whole session: images, each turn with its transcript, recordings, reply audio and timings."""
    for note in logged.notes:
        st.info(note, icon=":material/info:")
    for item in logged.conversation.items:
        if isinstance(item, Notice):
            draw_notice(item)
            continue
        matched = item.turn.number == highlight  # the number the log, the index and the link share
        with st.container(border=True, key=MATCH_KEY) if matched else st.container():
            if matched:
                st.caption(":orange-background[Search match]")
            draw_exchange(log_dir, item, under_reply=read_only, numbered=True)
            if item.answer is None:
                st.caption("No reply was recorded for this question.")
    for error in logged.errors:
        st.error(f"{when(error.get('ts', ''))} · turn {(error.get('turn') or 0) + 1}: {error.get('message', '')}",
                 icon=":material/error:")
    if highlight is not None:
        _scroll_to(key="scroll-to-match", data={"target": f"st-key-{MATCH_KEY}"}, height=0)
