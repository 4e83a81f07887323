"""One turn, end to end, as a generator of events that the page renders.

    input (text | image | recording) -> validate -> transcribe -> question (logged)
      -> wait for the model (in-process: first come, first served) -> stream tokens -> cut sentences -> speak each (in a worker)
      -> answer (logged) with timings

Nothing here raises at the reader for bad input or a failing model: those become a Notice (before
the question exists) or a partial, marked Answer (after), and the turn is always logged.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator

from core.chat_session import ChatSession
from core.conversation import Answer, Notice, Question
from core.engines import Engines, GenerationOptions, Transcriber, Transcript
from core.errors import AppError, InvalidAudio, SpeechError
from core.fair_queue import Ticket, queue_for
from core.media import AudioInput, digest, load_audio
from core.sentences import SentenceSplitter, speakable
from core.session_log import save_media
from core.tts import Speaker, Speech, join_speech

logger = logging.getLogger(__name__)

DEFAULT_IMAGE_QUESTION = "Describe this image."
WAIT_POLL_S = 0.25  # a queued turn checks its place and the Stop button this often
WAIT_HEARTBEAT_S = 1.0  # and yields a Waiting at least this often, so that a rerun can interrupt the page


@dataclass(frozen=True)
class TurnInput:
    text: str = ""
    image: bytes | None = None  # attached in the chat box
    audio: bytes | None = None  # a recording, any format PyAV reads
    language: str = "en"  # language of typed text (and of speech, unless Whisper detects another)


class TranscriptionFailed(AppError):
    """The speech engine raised: the recording could not be turned into text."""


# Events, in the order a turn produces them.
@dataclass(frozen=True)
class Rejected:  # bad input: nothing was asked; the notice is in the conversation and the log
    notice: Notice


@dataclass(frozen=True)
class Asked:  # the question is in the conversation (for voice: the transcript is ready)
    index: int
    question: Question
    timings: dict[str, float]  # stt_s for a voice question


@dataclass(frozen=True)
class Waiting:  # the model is busy with other sessions' turns; repeated while the place changes
    message: str  # for the user: how many turns are ahead
    ahead: int = 0  # turns before this one: the one being answered and those queued in front


@dataclass(frozen=True)
class Working:  # the engine is still at work and nothing new came (a heartbeat, every HEARTBEAT_S)
    pass


@dataclass(frozen=True)
class Token:
    text: str


@dataclass(frozen=True)
class Sentence:
    text: str


@dataclass(frozen=True)
class Spoken:  # one sentence's audio is ready
    speech: Speech


@dataclass(frozen=True)
class Done:  # the answer is in the conversation and the log
    index: int
    answer: Answer


@dataclass
class _Clock:
    start: float = field(default_factory=time.perf_counter)
    marks: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str, since: float | None = None) -> None:
        self.marks.setdefault(name, round(time.perf_counter() - (self.start if since is None else since), 4))


def ask(session: ChatSession, engines: Engines, turn_input: TurnInput) -> Iterator[Rejected | Asked]:
    """Validate the input, transcribe a recording, and add the question to the conversation.

    Yields Asked, or Rejected (a notice, logged) for bad input or a failing speech engine, or
    nothing when there is nothing to ask.
    """
    clock = _Clock()
    try:
        if turn_input.image is not None:
            session.attach_image(turn_input.image)
        text, source, language, audio_digest = turn_input.text.strip(), "text", turn_input.language, None
        if turn_input.audio is not None:
            if engines.transcriber is None:
                raise InvalidAudio("Speech recognition is not available.", "Type your question instead.")
            audio = load_audio(turn_input.audio, max_seconds=session.settings.max_audio_seconds)
            transcript = _transcribe(session, engines.transcriber, audio)
            clock.mark("stt_s")
            if not transcript.text:
                raise InvalidAudio("I heard nothing — try again.", "Speak a little louder or closer.")
            save_media(session.log_dir, audio.data, audio.digest, "wav")  # kept only with a question that uses it
            text = f"{transcript.text}\n\n{text}".strip()
            source, language, audio_digest = "voice", transcript.language, audio.digest
    except AppError as e:
        notice = Notice(str(e))
        session.notify(notice)
        yield Rejected(notice)
        return
    if not text:
        if not session.pending_image:
            return  # nothing to ask
        text = DEFAULT_IMAGE_QUESTION
    question = Question(text=text, source=source, language=language, audio=audio_digest)
    index = session.ask(question)
    yield Asked(index, session.conversation.items[index].question, clock.marks)


def _transcribe(session: ChatSession, transcriber: Transcriber, audio: AudioInput) -> Transcript:
    """The transcript; any failure of the engine (a missing CUDA library, a server gone) becomes
    a message for the user, with the traceback in the log."""
    try:
        return transcriber.transcribe(audio.samples)
    except AppError:
        raise
    except Exception as e:  # the boundary: whatever the engine raised, the turn goes on
        logger.exception("transcription failed")
        session.log.error(f"transcription failed: {e!r}", None, traceback.format_exc())
        raise TranscriptionFailed(
            f"Speech recognition failed ({type(e).__name__}: {' '.join(str(e).split())[:200]}).",
            "Type your question, or try again.",
        ) from e


def answer(
    session: ChatSession,
    engines: Engines,
    index: int,
    options: GenerationOptions,
    speak: bool = True,
    stop: threading.Event | None = None,
    timings: dict[str, float] | None = None,
) -> Iterator[Waiting | Working | Token | Sentence | Spoken | Done]:
    """Generate, stream and speak the answer to the question at index; log it.

    timings: those of asking (stt_s), kept with the answer's own.
    """
    clock = _Clock()
    stop = stop or threading.Event()
    question = session.conversation.items[index].question
    context = session.conversation.visual_context()
    context = context[: context.index(session.conversation.items[index]) + 1]
    speaker = engines.speaker if speak else None
    speech_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tts") if speaker else None
    pending: list[Future] = []
    spoken: list[Speech] = []
    notes: list[str] = []
    text, status = "", "complete"
    splitter = SentenceSplitter()

    def say(sentence: str) -> None:
        if speech_pool and (words := speakable(sentence)):
            pending.append(speech_pool.submit(_timed_speak, speaker, words, question.language))

    def ready_speech(wait: bool) -> Iterator[Spoken]:
        while pending and (wait or pending[0].done()):
            try:
                speech, seconds = pending.pop(0).result()
            except SpeechError as e:
                if (note := f"Speech failed: {e}") not in notes:  # once per reply, however many sentences fail
                    notes.append(note)
                continue
            clock.mark("first_audio_s")
            clock.marks["tts_s"] = round(clock.marks.get("tts_s", 0.0) + seconds, 4)
            if speech.note and speech.note not in notes:
                notes.append(speech.note)
            spoken.append(speech)
            yield Spoken(speech)

    def finish() -> Answer:
        """Record the answer as it stands (complete, partial or stopped)."""
        if speech_pool:
            speech_pool.shutdown(wait=False, cancel_futures=status != "complete")
        tokens = engines.chat.count_tokens(text) if text else 0
        if clock.marks.get("generate_s"):
            clock.marks["tokens_per_s"] = round(tokens / clock.marks["generate_s"], 2)
        clock.marks.update(timings or {})
        clock.mark("total_s")
        audio, audio_format = _store_speech(session, spoken, notes)
        result = Answer(text, status, " ".join(notes), audio, audio_format, clock.marks)
        session.answer(index, result)
        return result

    ticket = queue_for(engines.chat.lock).join() if engines.chat.lock is not None else None
    try:
        try:
            if ticket is not None and not ticket.wait(timeout=0):
                yield from _wait_for_the_model(ticket, stop)
            clock.mark("wait_s")
            if stop.is_set():  # while waiting: nothing was written
                status = "stopped"
                notes.insert(0, "Stopped while waiting for the model.")
            generation_start = time.perf_counter()
            for chunk in engines.chat.stream(context, session.images, options, stop) if status == "complete" else ():
                if not chunk:  # the engine is still at work: the page gets a moment to act on Stop
                    yield Working()
                    if stop.is_set():
                        break
                    continue
                clock.mark("ttft_s", since=generation_start)
                text += chunk
                yield Token(chunk)
                for sentence in splitter.feed(chunk):
                    clock.mark("first_sentence_s")
                    yield Sentence(sentence)
                    say(sentence)
                yield from ready_speech(wait=False)
                if stop.is_set():
                    status = "stopped"
                    break
            clock.marks["generate_s"] = round(time.perf_counter() - generation_start, 4)
            if stop.is_set() and status == "complete":  # the engine ended early because of Stop
                status = "stopped"
                notes.insert(0, "Stopped before the end.")
        finally:
            if ticket is not None:
                ticket.leave()
    except GeneratorExit:  # the reader went away (Stop, a rerun, a closed tab): keep what was written
        status = "stopped"
        stop.set()
        notes.insert(0, "Stopped before the end.")
        finish()
        raise
    except AppError as e:
        status = "partial" if text else "error"
        notes = [f"{e} The reply above is incomplete." if text else str(e)] + notes
        session.log.error(str(e), session.turn_number(index), traceback.format_exc())
    except Exception as e:  # a bug: keep the turn, show a short message, log the traceback
        logger.exception("generation failed")
        status = "partial" if text else "error"
        notes = [f"Something went wrong while writing the reply ({type(e).__name__}: {e})."] + notes
        session.log.error(repr(e), session.turn_number(index), traceback.format_exc())
    if status != "complete":
        stop.set()
    for sentence in splitter.flush():
        yield Sentence(sentence)
        if status == "complete":
            say(sentence)
    yield from ready_speech(wait=True)
    yield Done(index, finish())


def waiting_message(ahead: int) -> str:
    if ahead <= 0:
        return "The model is finishing another answer; yours is next…"
    if ahead == 1:
        return "1 person is ahead of you; the model answers one question at a time…"
    return f"{ahead} people are ahead of you; the model answers one question at a time…"


def _wait_for_the_model(ticket: Ticket, stop: threading.Event) -> Iterator[Waiting]:
    """Yield the place in the line until the ticket holds the model (or Stop is pressed)."""
    shown, shown_at = None, 0.0
    while not stop.is_set():
        ahead = ticket.ahead
        if ahead != shown or time.monotonic() - shown_at >= WAIT_HEARTBEAT_S:
            yield Waiting(waiting_message(ahead), ahead)
            shown, shown_at = ahead, time.monotonic()
        if ticket.wait(timeout=WAIT_POLL_S):
            return


def _timed_speak(speaker: Speaker, text: str, language: str) -> tuple[Speech, float]:
    start = time.perf_counter()
    speech = speaker.speak(text, language)
    return speech, time.perf_counter() - start


def _store_speech(session: ChatSession, parts: list[Speech], notes: list[str]) -> tuple[str | None, str | None]:
    """Save the reply's audio as one file; return (digest, format)."""
    if not parts:
        return None, None
    try:
        whole = join_speech(parts)
    except ValueError:  # the engine changed mid-reply (gTTS mp3, then espeak wav): keep the first kind
        whole = join_speech([p for p in parts if p.format == parts[0].format])
        notes.append("Part of the reply was spoken by another engine and is not in the saved audio.")
    key = digest(whole.audio)
    save_media(session.log_dir, whole.audio, key, whole.format)
    return key, whole.format
