"""One turn, end to end: ask() returns what was asked; answer() a Reply whose events the page renders.

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
from dataclasses import dataclass, replace
from typing import Iterator

from core.chat.fair_queue import Ticket, queue_for
from core.chat.sentences import SentenceSplitter, speakable
from core.chat.session import ChatSession
from core.conversation import Answer, Notice, Question, Status
from core.engines.api import Engines, GenerationOptions, Speaker, Speech, Transcriber, Transcript
from core.engines.tts import join_speech
from core.errors import AppError, InvalidAudio, SpeechError
from core.media import AudioInput, digest, load_audio
from core.store.session_log import save_media

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


Event = Waiting | Working | Token | Sentence | Spoken | Done


class _Clock:
    """A turn's timings, in seconds since its start (or since a given moment)."""

    def __init__(self):
        self.start = time.perf_counter()
        self.timings: dict[str, float] = {}

    def since(self, moment: float | None = None) -> float:
        return round(time.perf_counter() - (self.start if moment is None else moment), 4)

    def first(self, name: str, moment: float | None = None) -> None:
        """Time the first occurrence of something (the first token, sentence, audio); later ones change nothing."""
        if name not in self.timings:
            self.timings[name] = self.since(moment)

    def add(self, name: str, seconds: float) -> None:
        """Add to a total (the time spent speaking, sentence by sentence)."""
        self.timings[name] = round(self.timings.get(name, 0.0) + seconds, 4)


def ask(session: ChatSession, engines: Engines, turn_input: TurnInput) -> Rejected | Asked | None:
    """Validate the input, transcribe a recording, and add the question to the conversation.

    Returns Asked, or Rejected (a notice, logged) for bad input or a failing speech engine, or
    None when there is nothing to ask.
    """
    clock = _Clock()
    try:
        if turn_input.image is not None:
            session.attach_image(turn_input.image)
        question = Question(text=turn_input.text.strip(), language=turn_input.language)
        if turn_input.audio is not None:
            question = _spoken(session, engines, question, turn_input.audio)
            clock.first("stt_s")
    except AppError as e:
        notice = Notice(str(e))
        session.notify(notice)
        return Rejected(notice)
    if not question.text:
        if not session.pending_image:
            return None  # nothing to ask
        question = replace(question, text=DEFAULT_IMAGE_QUESTION)
    index = session.ask(question)
    return Asked(index, session.exchange(index).question, clock.timings)


def _spoken(session: ChatSession, engines: Engines, typed: Question, recording: bytes) -> Question:
    """The question with the transcript of the recording before any typed text; the recording is kept."""
    if engines.transcriber is None:
        raise InvalidAudio("Speech recognition is not available.", "Type your question instead.")
    audio = load_audio(recording, max_seconds=session.settings.max_audio_seconds)
    transcript = _transcribe(session, engines.transcriber, audio)
    if not transcript.text:
        raise InvalidAudio("I heard nothing — try again.", "Speak a little louder or closer.")
    save_media(session.log_dir, audio.data, audio.digest, "wav")  # kept only with a question that uses it
    return Question(text=f"{transcript.text}\n\n{typed.text}".strip(), source="voice", language=transcript.language,
                    audio=audio.digest)


def _transcribe(session: ChatSession, transcriber: Transcriber, audio: AudioInput) -> Transcript:
    """The transcript; any failure of the engine (a missing CUDA library, a server gone) becomes
    a message for the user, with the traceback in the log."""
    try:
        return transcriber.transcribe(audio.samples)
    except AppError:
        raise
    except Exception as e:  # noqa: BLE001  (the boundary: whatever the engine raised, the turn goes on)
        logger.exception("transcription failed")
        session.log.error(f"transcription failed: {e!r}", None, traceback.format_exc())
        raise TranscriptionFailed(
            f"Speech recognition failed ({type(e).__name__}: {' '.join(str(e).split())[:200]}).",
            "Type your question, or try again.",
        ) from e


class Reply:
    """The reply to the question at item index, being written: iterate it for the events
    (Waiting, Working, Token, Sentence, Spoken, then Done); afterwards `.answer` holds what was
    kept (complete, partial, stopped or error), which is also in the conversation and the log.

    Closing it early (Stop, a rerun, a closed tab) keeps the text written so far, marked stopped.
    """

    def __init__(self, session: ChatSession, engines: Engines, index: int, options: GenerationOptions,
                 speak: bool = True, stop: threading.Event | None = None, timings: dict[str, float] | None = None):
        self.session, self.engines, self.index, self.options = session, engines, index, options
        self.stop = stop or threading.Event()
        self.asked_timings = timings or {}  # those of asking (stt_s), kept with the answer's own
        self.question = session.exchange(index).question
        self.context = session.conversation.visual_context(upto=index)
        self.speaker = engines.speaker if speak else None
        self.clock = _Clock()
        self.text = ""
        self.status: Status = "complete"
        self.notes: list[str] = []  # shown under the reply, in this order
        self.spoken: list[Speech] = []
        self.answer: Answer | None = None  # set when the reply is over
        self._splitter = SentenceSplitter()
        self._speech: list[Future] = []  # sentences being spoken, in order
        self._speech_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tts") if self.speaker else None
        self._finished = False
        self._events = self._run()

    def __iter__(self) -> "Reply":
        return self

    def __next__(self) -> Event:
        return next(self._events)

    def close(self) -> None:
        """End the reply now (what a rerun does to the page's loop): what was written is kept, as stopped."""
        self._events.close()

    def _run(self) -> Iterator[Event]:
        try:
            try:
                yield from self._generate()
            except AppError as e:
                self._failed(f"{e} The reply above is incomplete." if self.text else str(e), str(e))
            except Exception as e:  # noqa: BLE001  (a bug: keep the turn, show a short message, log the traceback)
                logger.exception("generation failed")
                self._failed(f"Something went wrong while writing the reply ({type(e).__name__}: {e}).", repr(e))
            if self.status != "complete":
                self.stop.set()
            for sentence in self._splitter.flush():
                yield Sentence(sentence)
                if self.status == "complete":
                    self._say(sentence)
            yield from self._ready_speech(wait=True)
            yield Done(self.index, self._finish())
        finally:
            if not self._finished:  # the reader went away (Stop, a rerun, a closed tab): keep what was written
                self.stop.set()
                self._stopped("Stopped before the end.")
                self._finish()

    def _generate(self) -> Iterator[Event]:
        """Wait for the model (when it serves one turn at a time), then stream the reply."""
        lock = self.engines.chat.lock
        ticket = queue_for(lock).join() if lock is not None else None
        try:
            if ticket is not None and not ticket.wait(timeout=0):
                yield from _wait_for_the_model(ticket, self.stop)
            self.clock.first("wait_s")
            if self.stop.is_set():  # while waiting: nothing was written
                self._stopped("Stopped while waiting for the model.")
                return
            yield from self._stream()
        finally:
            if ticket is not None:
                ticket.leave()

    def _stream(self) -> Iterator[Event]:
        start = time.perf_counter()
        chunks = self.engines.chat.stream(self.context, self.session.images, self.options, self.stop)
        for chunk in chunks:
            if not chunk:  # a heartbeat: the engine is still at work, the page gets a moment to act on Stop
                yield Working()
                if self.stop.is_set():
                    break
                continue
            self.clock.first("ttft_s", start)
            self.text += chunk
            yield Token(chunk)
            for sentence in self._splitter.feed(chunk):
                self.clock.first("first_sentence_s")
                yield Sentence(sentence)
                self._say(sentence)
            yield from self._ready_speech(wait=False)
            if self.stop.is_set():
                break
        self.clock.timings["generate_s"] = self.clock.since(start)
        if self.stop.is_set():  # Stop was pressed, or the engine ended early because of it
            self._stopped("Stopped before the end.")

    def _stopped(self, why: str) -> None:
        if self.status == "complete":
            self.status = "stopped"
            self.notes.insert(0, why)

    def _failed(self, note: str, logged: str) -> None:
        self.status = "partial" if self.text else "error"
        self.notes.insert(0, note)
        self.session.error(self.index, logged, traceback.format_exc())

    def _say(self, sentence: str) -> None:
        if self._speech_pool and (words := speakable(sentence)):
            self._speech.append(self._speech_pool.submit(_timed_speak, self.speaker, words, self.question.language))

    def _ready_speech(self, wait: bool) -> Iterator[Spoken]:
        """The spoken sentences that are ready (all of them, in order, when wait)."""
        while self._speech and (wait or self._speech[0].done()):
            try:
                speech, seconds = self._speech.pop(0).result()
            except SpeechError as e:
                self._note(f"Speech failed: {e}")  # once per reply, however many sentences fail
                continue
            self.clock.first("first_audio_s")
            self.clock.add("tts_s", seconds)
            if speech.note:
                self._note(speech.note)
            self.spoken.append(speech)
            yield Spoken(speech)

    def _note(self, note: str) -> None:
        if note not in self.notes:
            self.notes.append(note)

    def _finish(self) -> Answer:
        """Record the answer as it stands (complete, partial or stopped)."""
        self._finished = True
        if self._speech_pool:
            self._speech_pool.shutdown(wait=False, cancel_futures=self.status != "complete")
        timings = self.clock.timings
        if timings.get("generate_s"):
            tokens = self.engines.chat.count_tokens(self.text) if self.text else 0
            timings["tokens_per_s"] = round(tokens / timings["generate_s"], 2)
        timings.update(self.asked_timings)
        self.clock.first("total_s")
        audio, audio_format = _store_speech(self.session, self.spoken, self.notes)
        self.answer = Answer(self.text, self.status, " ".join(self.notes), audio, audio_format, timings)
        self.session.answer(self.index, self.answer)
        return self.answer


def answer(session: ChatSession, engines: Engines, index: int, options: GenerationOptions, speak: bool = True,
           stop: threading.Event | None = None, timings: dict[str, float] | None = None) -> Reply:
    """Generate, stream and speak the answer to the question at index, and log it: a Reply to iterate.

    timings: those of asking (stt_s), kept with the answer's own.
    """
    return Reply(session, engines, index, options, speak, stop, timings)


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
