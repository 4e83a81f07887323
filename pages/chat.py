"""The conversation: image, chat input (text, image, voice), streamed reply, spoken answer."""

from __future__ import annotations

import threading

import streamlit as st

from core import turn
from core.chat_session import MAX_QUESTION_CHARS, ChatSession
from core.config import Settings
from core.conversation import Exchange, Notice
from core.errors import AppError
from core.markup import safe_markdown, safe_stream
from core.media import IMAGE_FORMATS
from core.vlm import GenerationOptions
from ui import chat_view, speech_queue
from ui.account import signed_in_settings
from ui.resources import engines_for

LANGUAGES = {"en": "English", "fr": "Français", "de": "Deutsch", "es": "Español", "it": "Italiano",
             "pt": "Português", "nl": "Nederlands", "pl": "Polski", "ru": "Русский", "ja": "日本語",
             "zh": "中文", "ko": "한국어", "ar": "العربية", "hi": "हिन्दी", "tr": "Türkçe"}
IMAGE_TYPES = [fmt.lower() for fmt in IMAGE_FORMATS] + ["jpg"]

try:
    settings = signed_in_settings(Settings.from_env())
except ValueError as e:  # a misspelt engine name in the environment
    st.error(f"Configuration error: {e}. Fix the environment variable and restart the app.")
    st.stop()
engines, load_notes = engines_for(settings)

if "chat" not in st.session_state or st.session_state.chat.log_dir != settings.log_dir:
    # new here, or signed in as someone else since: never write into another user's folder
    st.session_state.chat = ChatSession(settings, meta={"model": engines.chat.name})
session: ChatSession = st.session_state.chat
state = st.session_state


def new_session() -> None:
    state.chat = ChatSession(settings, meta={"model": engines.chat.name})
    state.silence = True
    state.pop("shown", None)
    state.uploader = state.get("uploader", 0) + 1


def on_sidebar_image() -> None:
    upload = state.get(f"image-{state.get('uploader', 0)}")
    if upload is None:
        return
    try:
        session.attach_image(upload.getvalue())
    except AppError as e:
        session.notify(Notice(str(e)))


# ---- sidebar: image, settings, engines, timings
with st.sidebar:
    st.button("New session", icon=":material/add_comment:", on_click=new_session, use_container_width=True)
    st.file_uploader("Image", type=IMAGE_TYPES, key=f"image-{state.get('uploader', 0)}", on_change=on_sidebar_image,
                     help="Or attach it in the chat box. A new image starts a new visual context.")
    if session.current_image:
        chat_view.draw_image(session.log_dir, session.current_image, side=chat_view.SIDEBAR_SIDE, width=None,
                             caption="Current image" + (" (used by your next question)" if session.pending_image else ""))
    speak = st.toggle("Speak replies", value=settings.tts_engine != "none", disabled=engines.speaker is None)
    language = st.selectbox("Language of typed questions", list(LANGUAGES), format_func=LANGUAGES.get,
                            help="Spoken questions use the language Whisper detects.")
    with st.expander("Generation settings"):
        options = GenerationOptions(
            temperature=st.slider("Temperature", 0.0, 1.5, 0.2, 0.05, help="0 = always the most likely word"),
            top_p=st.slider("Top p", 0.1, 1.0, 0.9, 0.05),
            max_new_tokens=st.slider("Max new tokens", 16, 2048, 512, 16),
            system_prompt=st.text_area("System prompt", "", placeholder="e.g. Answer in one short paragraph."),
        )
    with st.expander("Models and configuration"):
        st.markdown(f"**Chat model:** {engines.chat.name}")
        st.markdown(f"**Speech to text:** {engines.transcriber.name if engines.transcriber else 'off'}")
        st.markdown(f"**Text to speech:** {engines.speaker.name if engines.speaker else 'off'}")
        st.caption("Set by environment variables (see README):")
        st.code("\n".join(f"{name} = {value}" for name, value in settings.as_rows()), language=None)
    st.markdown("**Last turn**")
    timings_box = st.empty()
    if session.session_id:
        st.caption(f"Session `{session.session_id}`")

for note in load_notes:
    st.info(note, icon=":material/info:")
if state.pop("silence", False):  # Stop or New session was clicked: the spoken reply stops too
    speech_queue.stop()


# ---- the conversation so far
def last_exchange() -> int | None:
    return session.conversation.last_exchange_index()


def stream_answer(index: int, timings: dict | None = None) -> None:
    """Draw the reply to the question at index as it is written, then speak it."""
    stop = threading.Event()
    with st.chat_message("assistant"):
        status = st.empty()
        status.caption("Thinking…")
        beat = st.empty()
        speech = speech_queue.SpeechQueue() if speak else None
        finished = {}

        def tokens():
            for event in turn.answer(session, engines, index, options, speak=speak, stop=stop, timings=timings):
                if isinstance(event, turn.Waiting):
                    status.info(event.message, icon=":material/hourglass_top:")
                elif isinstance(event, turn.Working):
                    beat.empty()  # draws nothing; a Stop clicked meanwhile interrupts the run here
                elif isinstance(event, turn.Token):
                    status.empty()
                    yield chat_view.escape(event.text)
                elif isinstance(event, turn.Spoken) and speech:
                    speech.play(event.speech.audio, event.speech.format)  # while the text goes on
                elif isinstance(event, turn.Done):
                    finished["answer"] = event.answer

        stop_box = st.empty()
        stop_box.button("Stop", icon=":material/stop_circle:", key=f"stop-{index}", on_click=silence,
                        help="Stop writing and speaking; the reply so far is kept.")
        stream = tokens()
        try:
            st.write_stream(safe_stream(stream))
        finally:
            stream.close()  # a rerun (Stop, any click) interrupts here: the partial reply is still logged
        status.empty()
        stop_box.empty()
        if answer := finished.get("answer"):
            chat_view.draw_answer_extras(session, index, answer)  # the whole reply in one player, to replay
            draw_actions(index)


def silence() -> None:
    state.silence = True


def show_more() -> None:
    state.shown = state.get("shown", chat_view.SHOWN_TURNS) + chat_view.SHOWN_TURNS


def draw_actions(index: int) -> None:
    left, right = st.columns([1, 4])
    left.button("Regenerate", icon=":material/refresh:", key=f"regen-{index}", on_click=request, args=("regenerate", index))
    with right.popover("Edit question", icon=":material/edit:"):
        st.text_area("Question", session.conversation.items[index].question.text, key=f"edit-{index}")
        st.button("Resend", key=f"resend-{index}", on_click=request, args=("edit", index))


def request(*action) -> None:
    state.action = action


# ---- the chat box (drawn at the bottom of the page wherever it is called)
prompt = st.chat_input(
    "Ask about the image…",
    accept_file=True,
    file_type=IMAGE_TYPES,
    accept_audio=True,
    audio_sample_rate=16000,
    max_chars=MAX_QUESTION_CHARS,  # 20,000 characters: longer questions cannot be typed (nor indexed quickly)
)
if not prompt and not session.conversation.items:
    st.markdown("### Talk with a picture\nDrop an image in the sidebar or the chat box, then ask about it by typing "
                "or with the microphone. Questions without an image are answered as a plain text chat.")

if action := state.pop("action", None):  # Regenerate or Resend, clicked in the last run
    kind, index = action
    if index != last_exchange() or session.conversation.items[index].answer is None:
        # a button left on an older reply (a question was asked since), or a reply still being written
        st.toast("That reply is no longer the last one: nothing was changed.", icon=":material/info:")
    elif kind == "edit":
        question = session.conversation.items[index].question
        session.edit(index, state.get(f"edit-{index}", "").strip() or question.text)
    else:
        question = session.conversation.items[index].question
        session.conversation.items[index] = Exchange(question)  # the new answer replaces it in the log

last = last_exchange()
items = session.conversation.items
first = chat_view.first_shown(items, state.get("shown", chat_view.SHOWN_TURNS))
if first > 0:
    hidden = sum(isinstance(item, Exchange) for item in items[:first])
    st.button(f"Show earlier turns ({hidden} more)", icon=":material/expand_less:", on_click=show_more,
              help="Long conversations show their last turns only, to keep the page quick. All are in History.")
for index in range(first, len(items)):
    item = items[index]
    if isinstance(item, Notice):
        chat_view.draw_notice(item)
        continue
    chat_view.draw_question(session, item)
    if item.answer is not None:
        with st.chat_message("assistant"):
            st.markdown(safe_markdown(chat_view.escape(item.answer.text)) or "*(no text)*")
            chat_view.draw_answer_extras(session, index, item.answer)
            if index == last and not prompt:  # with a new question this one is no longer the last
                draw_actions(index)

if last is not None and session.conversation.items[last].answer is None:
    stream_answer(last)  # regenerate, resend, or a question whose answer a rerun interrupted

# ---- a new question
if prompt:
    files = prompt.files or []
    turn_input = turn.TurnInput(
        text=prompt.text or "",
        image=files[0].getvalue() if files else None,
        audio=prompt.audio.getvalue() if prompt.audio else None,
        language=language,
    )
    for event in turn.ask(session, engines, turn_input):
        if isinstance(event, turn.Rejected):
            chat_view.draw_notice(event.notice)
        elif isinstance(event, turn.Asked):
            chat_view.draw_question(session, session.conversation.items[event.index])
            stream_answer(event.index, event.timings)

if (last := last_exchange()) is not None and (answer := session.conversation.items[last].answer):
    with timings_box.container():
        chat_view.draw_timings(answer.timings)
else:
    timings_box.caption("No turn yet.")

if problem := session.save_problem:  # the chat goes on; what was said waits in memory until it can be saved
    st.warning(f"This conversation is not being saved: {problem.message} {problem.hint} "
               "Nothing is lost meanwhile: it is written as soon as the folder can be used.", icon=":material/save:")
