"""Everything the app keeps in st.session_state, in one place: each key, what it holds, who sets it.

    chat         the Chat page's ChatSession; replaced by New session and by signing in as someone
                 else, dropped by History when it deletes that session
    action       ("regenerate" | "edit", item index): a button clicked under the last reply, done
                 at the top of the next run (the page checks it is still the last exchange)
    silence      True after Stop or New session: the next run stops the spoken reply
    shown        how many of the last turns a long conversation draws ("Show earlier turns" adds more)
    uploader     the sidebar file picker's generation. Streamlit cannot empty a file_uploader from
                 code, so New session bumps this number: the picker's key (image-<n>) changes and a
                 new, empty picker is drawn
    page         the History list's page (0 is the newest)
    flash        History: what the last action did (shown once); flash_error: why it failed
    utterances   WAVs call mode heard and no run has asked yet (put by its callback, each taken by
                 the run that asks it); heard: the last one's id
    barge        (the speech queue's ReplyId or None, whether its voice was playing): the user spoke
                 over a reply; barged: the last utterance id sent before that (replies to it and
                 earlier ones stop)
    call_run     a number that changes every run, so that call mode's component hears that a run ended
    put_back     a typed question whose file was refused, put back in the chat box by the next run

Widget keys (Streamlit keeps their values under them): image-<n> (the sidebar picker), query
(History's search box), question (the chat box), edit-<index> (an edited question), feedback-<session>-<index>, and the
buttons stop-/regen-/resend-<index>, open-<session>, recent-<session>, hit-<session>-<turn>, confirm-delete; speech_rate
(sidebar) and talk-call (call mode's component, ui/call_mode.py).
"""

from __future__ import annotations

import streamlit as st

from core.chat.session import ChatSession
from core.config import Settings
from core.conversation import Notice
from core.errors import AppError
from core.limits import MAX_RECORDING_S
from core.store.session_log import SESSION_ID, session_path
from ui.chat_view import SHOWN_TURNS
from ui.speech_queue import ReplyId

CHAT_PARAM = "chat"  # the chat page's conversation in its address (History's open session is "session")

SYSTEM_PROMPT_KEY = "system_prompt"  # the sidebar's system prompt, read when a picture is encoded ahead of its question


def chat(settings: Settings, model: str) -> ChatSession:
    """This browser session's conversation: the one the address names (?session=<id>, in this user's
    folder: a reload or a shared tab goes on with it), else the one kept, else a new one; a new one too
    when the user's folder changed (signed in as someone else since): never write into another user's folder."""
    current = st.session_state.get("chat")
    if current is not None and current.log_dir != settings.log_dir:
        current = None
    named = st.query_params.get(CHAT_PARAM)
    if named and (current is None or current.session_id != named):
        current = _resumed(settings, named) or current
    if current is None:
        current = ChatSession(settings, meta={"model": model})
    st.session_state.chat = current
    return current


def _resumed(settings: Settings, session_id: str) -> ChatSession | None:
    """The logged session the address names; None (and the address cleared) when there is none."""
    try:
        if SESSION_ID.match(session_id) and session_path(settings.log_dir, session_id).is_file():
            return ChatSession.resume(settings, session_id)
    except (AppError, OSError, ValueError):  # unreadable, or a link that leads outside the folder
        pass
    st.query_params.pop(CHAT_PARAM, None)
    return None


def open_chat(session_id: str) -> None:
    """A recent conversation clicked (a callback): the next run goes on with it; the spoken reply stops."""
    st.query_params[CHAT_PARAM] = session_id
    st.session_state.pop("shown", None)
    silence()


def keep_in_address(session: ChatSession) -> None:
    """Put the conversation's id in the chat page's address (once it has one), so that a reload finds it."""
    if session.session_id and st.query_params.get(CHAT_PARAM) != session.session_id:
        st.query_params[CHAT_PARAM] = session.session_id


def set_chat(session: ChatSession) -> None:
    """Continue a session from History: the Chat page now shows and extends it."""
    st.session_state.chat = session


def new_chat(settings: Settings, model: str) -> None:
    """New session (a callback): a fresh conversation, the spoken reply silenced, an empty file picker."""
    st.session_state.chat = ChatSession(settings, meta={"model": model})
    st.query_params.pop(CHAT_PARAM, None)
    st.session_state.silence = True
    st.session_state.pop("shown", None)
    st.session_state.uploader = uploader() + 1


def drop_chat(session_id: str) -> None:
    """The chat page starts afresh instead of writing into a deleted log."""
    current = st.session_state.get("chat")
    if current is not None and current.session_id == session_id:
        del st.session_state.chat


def uploader() -> int:
    return st.session_state.get("uploader", 0)


def image_key() -> str:
    return f"image-{uploader()}"


def silence() -> None:
    st.session_state.silence = True


def stop(session: ChatSession) -> None:
    """Stop (a callback): the reply being written ends at its next step, and the next run silences
    the spoken reply."""
    session.stop()
    silence()


def take_silence() -> bool:
    return st.session_state.pop("silence", False)


def shown() -> int:
    return st.session_state.get("shown", SHOWN_TURNS)


def show_more() -> None:
    st.session_state.shown = shown() + SHOWN_TURNS


def request(kind: str, index: int) -> None:
    st.session_state.action = (kind, index)


def take_action() -> tuple[str, int] | None:
    return st.session_state.pop("action", None)


def history_page() -> int:
    return st.session_state.get("page", 0)


def turn_history_page(step: int) -> None:
    st.session_state.page = max(0, history_page() + step)


def flash(message: str, error: bool = False) -> None:
    st.session_state["flash_error" if error else "flash"] = message


def take_flash() -> tuple[str | None, str | None]:
    """(what the last History action did, why it failed), each shown once."""
    return st.session_state.pop("flash", None), st.session_state.pop("flash_error", None)


def put_utterance(utterance_id: int, wav: bytes, cut: bool = False) -> None:
    """Call mode heard something (its callback): it waits in line until a run has asked it.
    cut: it was longer than a question's recording may be; the conversation says so."""
    st.session_state.setdefault("utterances", []).append((utterance_id, wav))
    st.session_state.heard = max(heard(), utterance_id)
    if cut and (session := st.session_state.get("chat")) is not None:
        session.notify(Notice(f"You spoke for more than {MAX_RECORDING_S:.0f} s; only the first "
                              f"{MAX_RECORDING_S:.0f} s are heard.", level="warning"))


def waiting_utterances() -> int:
    return len(st.session_state.get("utterances", []))


def take_utterance() -> tuple[int, bytes] | None:
    """The oldest utterance call mode heard and no run has asked yet, taken (None when there is none).
    Take it right before core.chat.turn.ask, with no Streamlit call between, where a rerun could cut in; a
    taken one is never asked twice, even by a second run that started before this one stopped."""
    waiting = st.session_state.get("utterances", [])  # (id, WAV)
    try:
        return waiting.pop(0)
    except IndexError:
        return None


def heard() -> int:
    """The id of the last utterance call mode sent (the page compares it with its own count)."""
    return st.session_state.get("heard", 0)


def put_barge(turn: ReplyId | None, spoken: bool, upto: int) -> None:
    """The user spoke over a reply: the reply id of the queue's turn then (whether its voice was
    playing), and the id of the last utterance sent before: no reply to it or to an earlier one may go on."""
    st.session_state.barge = (turn, spoken)
    if (session := st.session_state.get("chat")) is not None:
        session.talked_over(upto)


def take_barge() -> tuple[ReplyId | None, bool] | None:
    return st.session_state.pop("barge", None)



def put_back(text: str) -> None:
    """A typed question whose file was refused: the next run puts it back in the chat box."""
    st.session_state.put_back = text


def take_put_back() -> str | None:
    return st.session_state.pop("put_back", None)


def next_run() -> int:
    st.session_state.call_run = st.session_state.get("call_run", 0) + 1
    return st.session_state.call_run
