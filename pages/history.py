"""Past sessions: list, search, open, replay, export, delete, and continue in the chat.

The log files are the source of truth; core.store.history_index keeps a SQLite FTS5 index of them in
step (synced once per run: only new or changed files are read). The open session is named in
the URL (?session=<id>&turn=<n>), so it can be bookmarked; ids are checked before any file is.
"""

from __future__ import annotations

import streamlit as st

from core.chat.session import ChatSession
from core.config import Settings
from core.errors import AppError
from core.store.export import export_zip, session_to_json, session_to_markdown
from core.store.history_index import HistoryIndex
from core.store.session_log import SESSION_ID, LogFolderError, folder_problem, read_session, session_path
from core.store.sessions import delete_session
from ui import history_view, state
from ui.account import page_settings

PAGE_SIZE = 20

def folder_error(problem: LogFolderError) -> None:
    st.error(f"Your sessions cannot be shown: {problem.message} {problem.hint}", icon=":material/folder_off:")


def open_session(session_id: str, turn: int | None = None) -> None:
    st.query_params.clear()
    st.query_params["session"] = session_id
    if turn is not None:
        st.query_params["turn"] = str(turn)


def close_session() -> None:
    st.query_params.clear()


def on_delete(sessions: HistoryIndex, session_id: str) -> None:
    try:
        removed = delete_session(sessions, session_id)
    except LogFolderError as e:
        state.flash(f"The session was not deleted: {e.message} {e.hint}", error=True)
        return
    state.drop_chat(session_id)
    st.query_params.clear()
    state.flash(f"Deleted the session and {len(removed) - 1} media file(s) no other session used.")


def draw_list(sessions: HistoryIndex) -> None:
    st.title("History")
    done, failed = state.take_flash()
    if done:
        st.success(done, icon=":material/delete:")
    if failed:
        st.error(failed, icon=":material/error:")
    total = sessions.count()
    if total == 0:
        st.info("No sessions yet. Ask something on the Chat page and it will appear here.", icon=":material/info:")
        return
    query = st.text_input("Search", key="query", placeholder="A word from a question, a transcript or a reply",
                          icon=":material/search:")
    if query.strip():
        hits = sessions.search(query)
        st.caption(f"{len(hits)}{'+' if len(hits) == 50 else ''} matching turn{'s' if len(hits) != 1 else ''}")
        for hit in hits:
            history_view.search_hit(hit, open_session)
        return
    pages = (total + PAGE_SIZE - 1) // PAGE_SIZE
    page = min(state.history_page(), pages - 1)
    top = st.columns([3, 1], vertical_alignment="center")
    top[0].caption(f"{total} session{'s' if total != 1 else ''}, newest first")
    top[1].download_button("Export all (zip)", data=lambda: export_zip(sessions.log_dir, _all_ids(sessions)),
                           file_name="talk-with-a-picture-sessions.zip", mime="application/zip",
                           icon=":material/folder_zip:", on_click="ignore")
    for summary in sessions.page(page * PAGE_SIZE, PAGE_SIZE):
        history_view.summary_row(sessions.log_dir, summary, open_session)
    if pages > 1:
        back, where, forward = st.columns([1, 2, 1], vertical_alignment="center")
        back.button("Newer", icon=":material/chevron_left:", disabled=page == 0, on_click=state.turn_history_page, args=(-1,))
        where.caption(f"Page {page + 1} of {pages}")
        forward.button("Older", icon=":material/chevron_right:", disabled=page >= pages - 1,
                       on_click=state.turn_history_page, args=(1,))


def _all_ids(sessions: HistoryIndex) -> list[str]:
    return [s.session_id for s in sessions.page(0, sessions.count())]


def draw_session(settings: Settings, sessions: HistoryIndex, session_id: str, highlight: int | None) -> None:
    st.button("All sessions", icon=":material/arrow_back:", on_click=close_session)
    summary = sessions.get(session_id)
    try:
        logged = read_session(session_path(settings.log_dir, session_id)) if summary else None
    except FileNotFoundError:  # deleted since the sync
        logged = None
    except OSError as e:
        raise folder_problem(settings.log_dir, e) from e
    if logged is None:
        st.warning("Session not found: it is not in the log folder (it may have been deleted).", icon=":material/search_off:")
        return
    st.title(f"Session of {history_view.when(summary.created)}")
    st.caption(f"{history_view.turns(summary.turns)} · {history_view.duration(summary.duration_s)} · "
               f"{summary.model or 'unknown model'} · `{session_id}`")
    resume, markdown, as_json, delete = st.columns(4)
    if resume.button("Continue in chat", icon=":material/chat:", type="primary"):
        try:
            state.set_chat(ChatSession.resume(settings, session_id))
        except (AppError, OSError) as e:
            st.error(f"This session cannot be continued: {e}")
        else:
            st.switch_page("pages/chat.py")
    markdown.download_button("Markdown", lambda: session_to_markdown(logged, settings.log_dir), f"{session_id}.md",
                             mime="text/markdown", icon=":material/description:", on_click="ignore")
    as_json.download_button("JSON", lambda: session_to_json(logged), f"{session_id}.json", mime="application/json",
                            icon=":material/data_object:", on_click="ignore")
    with delete.popover("Delete", icon=":material/delete:"):
        st.write("Delete this session, its recordings and spoken replies, and the images no other session uses? "
                 "This cannot be undone.")
        st.button("Delete for good", type="primary", key="confirm-delete", on_click=on_delete,
                  args=(sessions, session_id))
    history_view.session(settings.log_dir, logged, highlight)


def main() -> None:
    settings = page_settings()
    sessions = HistoryIndex(settings.log_dir)
    sessions.sync()
    selected = st.query_params.get("session")
    if selected is None:
        draw_list(sessions)
    elif not SESSION_ID.match(selected):
        st.query_params.clear()
        st.error("That link does not name a session.", icon=":material/link_off:")
        draw_list(sessions)
    else:
        turn = st.query_params.get("turn", "")
        draw_session(settings, sessions, selected, int(turn) if turn.isdigit() else None)


try:
    main()
except LogFolderError as e:  # LOG_DIR a file, removed, unreadable: say so, and what to do
    folder_error(e)
