"""The conversation: image, chat input (text, image, voice), streamed reply, spoken answer.

A thin script: the sidebar gives the choices, the chat box the input, core.chat.turn does the turn and
ui.exchange_view draws it. Callbacks get what they act on through args=; what lasts from one run to
the next is in ui.state.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import streamlit as st

from core.chat import turn
from core.chat.session import MAX_QUESTION_CHARS, ChatSession
from core.config import Settings
from core.conversation import Answer, Notice
from core.engines.api import Engines, GenerationOptions
from core.errors import AppError
from core.markup import safe_stream
from core.media import IMAGE_FORMATS
from ui import call_mode, chat_view, exchange_view, speech_queue, state
from ui.account import page_settings
from ui.resources import engines_for

LANGUAGES = {"en": "English", "fr": "Français", "de": "Deutsch", "es": "Español", "it": "Italiano",
             "pt": "Português", "nl": "Nederlands", "pl": "Polski", "ru": "Русский", "ja": "日本語",
             "zh": "中文", "ko": "한국어", "ar": "العربية", "hi": "हिन्दी", "tr": "Türkçe"}
IMAGE_TYPES = [fmt.lower() for fmt in IMAGE_FORMATS] + ["jpg"]
QUESTION_KEY = "question"  # the chat box's widget key: a question whose file was refused is put back in it


@dataclass(frozen=True)
class Choices:
    """What the sidebar says about the next reply."""

    speak: bool
    language: str  # of typed questions
    options: GenerationOptions
    rate: float = 1.0  # speech rate, applied by the page's player


def on_sidebar_image(session: ChatSession, engines: Engines, key: str) -> None:
    upload = st.session_state.get(key)
    if upload is None:
        return
    try:
        session.attach_image(upload.getvalue())
    except AppError as e:
        session.notify(Notice(str(e)))
        return
    turn.pre_encode(session, engines, st.session_state.get(state.SYSTEM_PROMPT_KEY, ""))


def sidebar(settings: Settings, engines: Engines, session: ChatSession):
    """Image, voice and generation settings, the engines in use; leaves room for the last turn's timings.
    Returns the choices and the place of the current image."""
    st.button("New session", icon=":material/add_comment:", on_click=state.new_chat, args=(settings, engines.chat.name),
              use_container_width=True)
    st.file_uploader("Image", type=IMAGE_TYPES, key=state.image_key(), on_change=on_sidebar_image,
                     args=(session, engines, state.image_key()),
                     help="Or attach it in the chat box. A new image starts a new visual context.")
    image_box = st.empty()  # the current image, drawn again at the end of the run: a question asked in it may change it
    draw_current_image(session, image_box)
    state.keep_in_address(session)  # a reload goes on with this conversation
    speak = st.toggle("Speak replies", value=settings.tts_engine != "none", disabled=engines.speaker is None)
    rate = st.slider("Speech rate", *speech_queue.RATES, 1.0, 0.05, format="%.2fx", key="speech_rate",
                     disabled=not speak)
    language = st.selectbox("Language of typed questions", list(LANGUAGES), format_func=LANGUAGES.get,
                            help="Spoken questions use the language Whisper detects.")
    with st.expander("Generation settings"):
        options = GenerationOptions(
            temperature=st.slider("Temperature", 0.0, 1.5, 0.2, 0.05, help="0 = always the most likely word"),
            top_p=st.slider("Top p", 0.1, 1.0, 0.9, 0.05),
            max_new_tokens=st.slider("Max new tokens", 16, 2048, 512, 16),
            system_prompt=st.text_area("System prompt", "", key=state.SYSTEM_PROMPT_KEY,
                                       placeholder="e.g. Answer in one short paragraph."),
        )
    with st.expander("Models and configuration"):
        st.markdown(f"**Chat model:** {engines.chat.name}")
        st.markdown(f"**Speech to text:** {engines.transcriber.name if engines.transcriber else 'off'}")
        st.markdown(f"**Text to speech:** {engines.speaker.name if engines.speaker else 'off'}")
        st.caption("Set by environment variables (see README):")
        st.code("\n".join(f"{name} = {value}" for name, value in settings.as_rows()), language=None)
    return Choices(speak, language, options, rate=rate), image_box


def stream_answer(session: ChatSession, engines: Engines, choices: Choices, index: int,
                  timings: dict | None = None, heard: int = 0) -> None:
    """Draw the reply to the question at index as it is written, then speak it. heard: the call mode
    utterance it answers (0: typed); the reply stops when the user talks over it. The message has
    exchange_view's slots (status, text, note, audio, controls, speech), so that the next run redraws it in place."""
    with st.chat_message("assistant"):
        status, text, note, audio, controls, voice = (st.empty() for _ in range(exchange_view.SLOTS))
        status.caption("Thinking…")
        speech = speech_queue.SpeechQueue(index, choices.rate, heard, voice)  # also tells call mode a reply is being written
        reply = turn.answer(session, engines, index, choices.options, speak=choices.speak, timings=timings)
        session.replying(reply.interrupt, heard, index)  # Stop and the user talking over it end it through its interrupt
        controls.button("Stop", icon=":material/stop_circle:", key=f"stop-{index}", on_click=state.stop, args=(session,),
                        help="Stop writing and speaking; the reply so far is kept.")
        try:
            text.write_stream(safe_stream(text_of(reply, status, note, speech)))
        finally:
            reply.close()  # a rerun (Stop, any click) interrupts here: the partial reply is still logged
        speech.finish()
        status.empty()
        if reply.answer is None:
            controls.empty()
            return
        text.markdown(exchange_view.reply_text(reply.answer))  # as the next run draws it
        exchange_view.draw_reply_media(session.log_dir, reply.answer, note, audio)  # the whole reply in one player
        with controls.container():
            draw_controls(session, index, True, reply.answer)


def text_of(reply: turn.Reply, status, beat, speech: speech_queue.SpeechQueue):
    """The reply's text, as markdown, for st.write_stream; the other events drawn on the way (beat: an
    empty slot, emptied again at each heartbeat so that a Stop clicked meanwhile interrupts the run)."""
    for event in reply:
        if isinstance(event, turn.Waiting):
            status.info(event.message, icon=":material/hourglass_top:")
            if event.speech:  # a spoken question hears that it waits
                speech.play(event.speech.audio, event.speech.format)
        elif isinstance(event, turn.Working):
            beat.empty()  # draws nothing; a Stop clicked meanwhile interrupts the run here
        elif isinstance(event, turn.Token):
            status.empty()
            yield exchange_view.escape(event.text)
        elif isinstance(event, turn.Spoken):
            speech.play(event.speech.audio, event.speech.format)  # while the text goes on


def draw_controls(session: ChatSession, index: int, actions: bool, answer: Answer) -> None:
    """Under a reply: its feedback; Regenerate and Edit question when it is the last one."""
    chat_view.draw_feedback(session, index, answer)
    if actions:
        draw_actions(session, index)
    else:
        st.empty()  # the same count of elements as with actions: none left stale (exchange_view.SLOTS)


def draw_actions(session: ChatSession, index: int) -> None:
    left, right = st.columns([1, 4])
    left.button("Regenerate", icon=":material/refresh:", key=f"regen-{index}", on_click=state.request,
                args=("regenerate", index))
    with right.popover("Edit question", icon=":material/edit:"):
        st.text_area("Question", session.exchange(index).question.text, key=f"edit-{index}")
        st.button("Resend", key=f"resend-{index}", on_click=state.request, args=("edit", index))


def do_action(session: ChatSession, action: tuple[str, int]) -> None:
    """Regenerate or Resend, clicked in the last run: only on the last exchange, once it is answered."""
    kind, index = action
    if not session.redo(kind, index, st.session_state.get(f"edit-{index}", "")):
        # a button left on an older reply (a question was asked since), or a reply still being written
        st.toast("That reply is no longer the last one: nothing was changed.", icon=":material/info:")


def draw_conversation(session: ChatSession, asking: bool) -> None:
    """The conversation so far (its last turns when it is long); actions under the last reply
    unless a new question is being asked."""
    items = session.conversation.items
    last = session.conversation.last_exchange_index()
    first = chat_view.first_shown(items, state.shown())
    if first > 0:
        hidden = len(session.conversation.exchanges) - state.shown()  # the page shows exactly that many
        st.button(f"Show earlier turns ({hidden} more)", icon=":material/expand_less:", on_click=state.show_more,
                  help="Long conversations show their last turns only, to keep the page quick. All are in History.")
    for index in range(first, len(items)):
        item = items[index]
        if isinstance(item, Notice):
            exchange_view.draw_notice(item)
            continue
        # with a new question being asked the last reply is no longer the last: no actions under it
        exchange_view.draw_exchange(session.log_dir, item, partial(draw_controls, session, index, index == last and not asking))


def typed(prompt, choices: Choices) -> turn.TurnInput:
    """What the chat box sent: text, an image, a recording."""
    files = prompt.files or []
    return turn.TurnInput(
        text=prompt.text or "",
        image=files[0].getvalue() if files else None,
        audio=prompt.audio.getvalue() if prompt.audio else None,
        language=choices.language,
    )


def sent(prompt) -> bool:
    """Whether the chat box sent something to ask: spaces alone are not a question (a toast says so, and the
    last reply keeps its buttons)."""
    if not prompt:
        return False
    if (prompt.text or "").strip() or prompt.files or prompt.audio:
        return True
    st.toast("Type a question first (or attach an image, or press the microphone).", icon=":material/edit:")
    return False


def ask(session: ChatSession, engines: Engines, choices: Choices, turn_input: turn.TurnInput, drawn: int,
        heard: int = 0) -> None:
    """Ask and answer; drawn: the items this run drew before (a question another run asked meanwhile is not)."""
    event = turn.ask(session, engines, turn_input)
    if isinstance(event, turn.Rejected):
        if turn_input.audio is None and turn_input.text.strip():  # a refused file: the typed question waits in the box
            state.put_back(turn_input.text)
            st.rerun()  # the notice is in the conversation: the next run draws it, and the box with the text
        exchange_view.draw_notice(event.notice)
    elif isinstance(event, turn.Asked):
        try:
            for index in (i for i in event.joined if i >= drawn):  # its answer covers them: they show with theirs
                exchange_view.draw_exchange(session.log_dir, session.exchange(index))
            exchange_view.draw_question(session.log_dir, session.exchange(event.index))
            stream_answer(session, engines, choices, event.index, event.timings, heard)
        finally:  # a rerun may cut in anywhere: the question has an answer record all the same
            session.settle(event.index)


def ask_all(session: ChatSession, engines: Engines, choices: Choices, prompt, drawn: int) -> None:
    """What this run was asked: the chat box's question, then what call mode heard, oldest first."""
    if prompt:
        ask(session, engines, choices, typed(prompt, choices), drawn)
    while (heard := state.take_utterance()) is not None:
        utterance_id, wav = heard
        ask(session, engines, choices, turn.TurnInput(audio=wav, language=choices.language), drawn, utterance_id)


def draw_current_image(session: ChatSession, image_box) -> None:
    """The sidebar's current image, as this run leaves it (after its question, not before)."""
    if session.current_image:
        with image_box.container():
            exchange_view.draw_image(session.log_dir, session.current_image, side=chat_view.SIDEBAR_SIDE, width=None,
                                     caption="Current image" + (" (used by your next question)" if session.pending_image else ""))
    else:
        image_box.empty()


def draw_footer(session: ChatSession, timings_box, image_box) -> None:
    """The last turn's timings and the current image in the sidebar; a warning while the conversation cannot
    be saved; the conversation's id in the address, so that a reload goes on with it."""
    draw_current_image(session, image_box)
    state.keep_in_address(session)
    last = session.conversation.last_exchange_index()
    if last is not None and (answer := session.exchange(last).answer):
        with timings_box.container():
            chat_view.draw_timings(answer.timings)
    else:
        timings_box.caption("No turn yet.")
    if problem := session.save_problem:  # the chat goes on; what was said waits in memory until it can be saved
        st.warning(f"This conversation is not being saved: {problem.message} {problem.hint} "
                   "Nothing is lost meanwhile: it is written as soon as the folder can be used.", icon=":material/save:")


def draw_sidebar(settings: Settings, engines: Engines, session: ChatSession):
    """The sidebar; returns the choices and the places filled at the end of the run (image, timings)."""
    with st.sidebar:
        choices, image_box = sidebar(settings, engines, session)
        st.markdown("**Last turn**")
        timings_box = st.empty()
        caption = st.empty()  # drawn or not, the same elements below it: none left stale after New session
        if session.session_id:
            caption.caption(f"Session `{session.session_id}`")
        with st.container():
            chat_view.draw_recent(session, state.open_chat)
    return choices, image_box, timings_box


def draw_welcome() -> None:
    st.markdown("### Talk with a picture\nAttach an image with the chat box's **+** button, then ask about it: type, "
                "press the microphone, or **Start hands-free call** and just talk. Questions without an image are "
                "answered as a plain text chat. Settings and recent conversations are in the sidebar (**>** at the top left).")


def main() -> None:
    settings = page_settings()
    engines, load_notes = engines_for(settings)
    session = state.chat(settings, engines.chat.name)
    choices, image_box, timings_box = draw_sidebar(settings, engines, session)
    chat_view.draw_demo_notice(settings)
    for note in load_notes:
        st.info(note, icon=":material/info:")
    if state.take_silence():  # Stop or New session was clicked: the spoken reply stops too
        speech_queue.stop()
    if barge := state.take_barge():  # the user spoke over a reply: what it leaves is the session's rule
        reply, spoken = barge
        session.barge_in(reply.index if spoken and reply is not None else None)

    if (text := state.take_put_back()) is not None:
        st.session_state[QUESTION_KEY] = text  # before the box is drawn: the only time it may be set
    prompt = st.chat_input(  # drawn at the bottom of the page wherever it is called
        "Ask about the image…", accept_file=True, file_type=IMAGE_TYPES, accept_audio=True, audio_sample_rate=16000,
        max_chars=MAX_QUESTION_CHARS,  # 20,000 characters: longer questions cannot be typed (nor indexed quickly)
        key=QUESTION_KEY,
    )
    prompt = prompt if sent(prompt) else None
    asking = bool(prompt) or state.waiting_utterances() > 0  # typed, or heard by call mode
    if not asking and not session.conversation.items:
        draw_welcome()
    if action := state.take_action():
        do_action(session, action)
    draw_conversation(session, asking=asking)
    drawn = len(session.conversation.items)
    ask_all(session, engines, choices, prompt, drawn)
    last = session.conversation.last_exchange_index()  # a new question's answer covers those that only waited
    if last is not None and session.awaits_answer(last):
        stream_answer(session, engines, choices, last, heard=session.heard_of(last))  # regenerate, resend, a rerun
    draw_footer(session, timings_box, image_box)
    call_mode.mount(engines.transcriber is not None)  # last: its mount tells the page that this run is over


main()
