"""The chat page's own drawing: which turns a long conversation shows, the feedback under a reply,
the sidebar's timings. Exchanges are drawn by ui.exchange_view; the live turn by pages/chat.py."""

from __future__ import annotations

import streamlit as st

from core.chat.session import ChatSession
from core.config import Settings
from core.conversation import Answer, Exchange
from core.engines.demo import is_random_demo
from core.store.history_index import HistoryIndex
from core.store.session_log import LogFolderError
from ui.exchange_view import STAGES, timing
from ui.history_view import turns

SIDEBAR_SIDE = 640  # pixels; the sidebar is about 300 wide
RECENT = 5  # conversations listed in the sidebar, newest first
SHOWN_TURNS = 30  # a long conversation draws its last turns; "Show earlier turns" adds this many more


DEMO_NOTICE = ("**Demo model: its answers are random.** No real model could be downloaded, so this app runs a tiny "
               "model with random weights: replies are noise, meant only to try the page (voice, speech, history). "
               "For real answers, set `LLAVA_MODEL` to a downloaded LLaVA folder or `OPENAI_BASE_URL` to a server "
               "that runs one, then restart (README, Configuration).")


def draw_demo_notice(settings: Settings) -> None:
    """Above the conversation while the demo model answers: without it the first reply looks like a broken app."""
    if not settings.openai_base_url and is_random_demo(settings.llava_model):
        st.warning(DEMO_NOTICE, icon=":material/science:")


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


def draw_feedback(session: ChatSession, index: int, answer: Answer) -> None:
    """Thumbs up or down under a reply, stored in the session log when clicked."""
    key = f"feedback-{session.session_id}-{index}"
    if key not in st.session_state and answer.feedback is not None:
        st.session_state[key] = answer.feedback
    st.feedback("thumbs", key=key, on_change=_on_feedback, args=(session, index, key))


def _on_feedback(session: ChatSession, index: int, key: str) -> None:
    session.feedback(index, st.session_state[key])


def draw_timings(timings: dict[str, float]) -> None:
    rows = [f"| {label} | {timing(key, timings[key])} |" for key, label in STAGES.items() if key in timings]
    if rows:
        st.markdown("| stage | time |\n|---|---:|\n" + "\n".join(rows))


def draw_recent(session: ChatSession, on_open) -> None:
    """The last few conversations (not this one), each a button that goes on with it; all are in History."""
    try:
        index = HistoryIndex(session.log_dir)
        index.sync()
        recent = [s for s in index.page(0, RECENT + 1) if s.session_id != session.session_id][:RECENT]
    except LogFolderError:
        return  # the page says why the conversation cannot be saved
    if not recent:
        return
    st.markdown("**Recent conversations**")
    for summary in recent:
        label = (summary.first_question.strip() or "(no question)")[:48]
        st.button(label, key=f"recent-{summary.session_id}", on_click=on_open, args=(summary.session_id,),
                  icon=":material/chat_bubble:", use_container_width=True,
                  help=f"{turns(summary.turns)}; History lists them all.")
