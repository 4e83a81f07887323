"""One turn, end to end: ask() returns what was asked; answer() a Reply whose events the page renders.

    input (text | image | recording) -> validate -> transcribe -> question (logged)
      -> wait for the model (in-process: first come, first served) -> stream tokens -> cut sentences -> speak each (in a worker)
      -> answer (logged) with timings

Nothing here raises at the reader for bad input or a failing model: those become a Notice (before
the question exists) or a partial, marked Answer (after), and the turn is always logged.
"""

from __future__ import annotations

import logging
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Iterator

from core.chat.fair_queue import Ticket, queue_for
from core.chat.sentences import SentenceSplitter, speakable
from core.chat.session import BEFORE_REPLY, ChatSession
from core.conversation import Answer, Notice, Question, Status
from core.engines.api import (
    FAILED,
    HEARTBEAT,
    READER_LEFT,
    STOP_PRESSED,
    Engines,
    GenerationInfo,
    GenerationOptions,
    Interrupt,
    Speaker,
    Speech,
    Transcriber,
    Transcript,
)
from core.engines.tts import join_speech
from core.errors import AppError, InvalidAudio, SpeechError
from core.limits import MAX_REPLY_AUDIO_BYTES
from core.media import AudioInput, digest, load_audio

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
    joined: tuple[int, ...] = ()  # the questions that only waited, whose answer this one's covers (ChatSession.ask)


@dataclass(frozen=True)
class Waiting:  # the model is busy with other sessions' turns; repeated while the place changes
    message: str  # for the user: how many turns are ahead
    ahead: int = 0  # turns before this one: the one being answered and those queued in front
    speech: Speech | None = None  # the first Waiting of a spoken question with a spoken reply: the message, said


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


def pre_encode(session: ChatSession, engines: Engines, system_prompt: str = "") -> None:
    """Start encoding the picture attached for the next question, while the person types or speaks
    (an in-process model that can: LlavaModel.prepare; a server encodes it with the question). The
    picture replaced before its question cancels the encoding not yet begun."""
    prepare = getattr(engines.chat, "prepare", None)
    if prepare is None or not session.pending_image:
        return
    if session.encoding is not None:
        session.encoding.halt.set()
    session.encoding = prepare(session.pending_image, session.images, system_prompt)


def ask(session: ChatSession, engines: Engines, turn_input: TurnInput) -> Rejected | Asked | None:
    """Validate the input, transcribe a recording, and add the question to the conversation.

    Returns Asked, or Rejected (a notice, logged) for bad input or a failing speech engine, or
    None when there is nothing to ask. Questions of one session are asked one at a time, in the order
    they came: two runs of a page may overlap, and a question transcribed late must not come after
    the one said after it.
    """
    with session.asking:
        return _ask(session, engines, turn_input)


def _ask(session: ChatSession, engines: Engines, turn_input: TurnInput) -> Rejected | Asked | None:
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
    joined = tuple(session.waiting())
    index = session.ask(question)
    return Asked(index, session.exchange(index).question, clock.timings, joined)


def _spoken(session: ChatSession, engines: Engines, typed: Question, recording: bytes) -> Question:
    """The question with the transcript of the recording before any typed text; the recording is kept."""
    if engines.transcriber is None:
        raise InvalidAudio("Speech recognition is not available.", "Type your question instead.")
    audio = load_audio(recording, max_seconds=session.settings.max_audio_seconds)
    transcript = _transcribe(session, engines.transcriber, audio)
    if not transcript.text:
        raise InvalidAudio("I heard nothing — try again.", "Speak a little louder or closer.")
    session.keep_media(audio.data, audio.digest, "wav")  # kept only with a question that uses it
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


@dataclass
class _Draft:
    """The answer being written: what the stages add to it, folded into the Answer at the end."""

    text: str = ""
    status: Status = "complete"
    notes: list[str] = field(default_factory=list)  # shown under the reply, in this order
    spoken: list[Speech] = field(default_factory=list)
    clock: _Clock = field(default_factory=_Clock)
    info: GenerationInfo | None = None
    audio_bytes: int = 0  # of the speech kept so far

    def stopped(self, why: str) -> None:
        if self.status == "complete":
            self.status = "stopped"
            self.notes.insert(0, why)

    def failed(self, note: str) -> None:
        self.status = "partial" if self.text else "error"
        self.notes.insert(0, note)

    def cut(self, note: str) -> None:
        """More came than a limit lets through (core.limits): what was kept stays, marked partial."""
        self.status = "partial" if self.status == "complete" else self.status
        self.notes.insert(0, note)

    def note(self, note: str) -> None:
        if note not in self.notes:
            self.notes.append(note)


class Reply:
    """The reply to the question at item index, being written: iterate it for the events
    (Waiting, Working, Token, Sentence, Spoken, then Done); afterwards `.answer` holds what was
    kept (complete, partial, stopped or error), which is also in the conversation and the log.

    A chain of small stages, each passing the events on and adding its own: the queue and the model
    (_model), the sentences (_sentences), the speech (_speech); the record (_record) folds the draft
    into the Answer. One Interrupt reaches them all: set it (Stop, the user talking over the reply)
    and every stage ends at its next step; closing the reply early (a rerun, a closed tab) sets it
    too. Either way the text written so far is kept, marked stopped.
    """

    def __init__(self, session: ChatSession, engines: Engines, index: int, options: GenerationOptions,
                 speak: bool = True, interrupt: Interrupt | None = None, timings: dict[str, float] | None = None):
        self.session, self.engines, self.index, self.options = session, engines, index, options
        self.interrupt = interrupt or Interrupt()
        self.asked_timings = timings or {}  # those of asking (stt_s), kept with the answer's own
        self.draft = _Draft()
        speaker = engines.speaker if speak else None
        self.voice = _Voice(speaker, session.exchange(index).question.language) if speaker else None
        self.answer: Answer | None = None  # set when the reply is over
        self._events = self._run()

    def __iter__(self) -> "Reply":
        return self

    def __next__(self) -> Event:
        return next(self._events)

    def close(self) -> None:
        """End the reply now (what a rerun does to the page's loop): what was written is kept, as stopped."""
        self._events.close()
        if self.answer is None:  # closed before its first event: the generator never ran, nor its finally
            self.interrupt.set(READER_LEFT)
            self._stopped("Stopped before the end.")
            self._record()

    def _stopped(self, why: str) -> None:
        """Mark the draft stopped. One that wrote and said nothing, ended by anything but Stop (the user
        talking while it waited, a rerun), is still to be answered: the next run or question does it."""
        began = self.draft.text or self.draft.spoken
        self.draft.stopped(why if began or self.interrupt.reason == STOP_PRESSED else BEFORE_REPLY)

    def _run(self) -> Iterator[Event]:
        try:
            yield from self._speech(self._sentences(self._model()))
            yield Done(self.index, self._record())
        finally:
            if self.answer is None:  # the reader went away (Stop, a rerun, a closed tab): keep what was written
                self.interrupt.set(READER_LEFT)
                self._stopped("Stopped before the end.")
                self._record()

    def _model(self) -> Iterator[Event]:
        """The queue and the model: Waiting while other turns hold the model, then Working and Token.
        A failure ends the reply here, marked partial or error; the stages after it go on."""
        try:
            with _turn_at(self.engines.chat.lock) as ticket:
                if ticket is not None and not ticket.wait(timeout=0):
                    yield from self._announced(_wait_for_the_model(ticket, self.interrupt))
                self.draft.clock.first("wait_s")
                if self.interrupt.is_set():  # while waiting: nothing was written
                    self._stopped("Stopped while waiting for the model.")
                    return
                yield from self._generate()
        except AppError as e:
            self._failed(f"{e} The reply above is incomplete." if self.draft.text else str(e), str(e))
        except Exception as e:  # noqa: BLE001  (a bug: keep the turn, show a short message, log the traceback)
            logger.exception("generation failed")
            self._failed(f"Something went wrong while writing the reply ({type(e).__name__}: {e}).", repr(e))

    def _announced(self, waits: Iterator[Waiting]) -> Iterator[Waiting]:
        """The waits; the first one also said when the question was spoken and its reply is: a person
        in a hands-free call hears that the question waits behind other people's, and how many."""
        spoken = self.voice is not None and self.session.exchange(self.index).question.source == "voice"
        for number, waiting in enumerate(waits):
            yield replace(waiting, speech=self.voice.now(waiting.message)) if spoken and number == 0 else waiting

    def _generate(self) -> Iterator[Event]:
        """Stream the model's Generation; the engine ends it early once the interrupt is set."""
        clock, start = self.draft.clock, time.perf_counter()
        context = self.session.conversation.visual_context(upto=self.index)
        generation = self.engines.chat.stream(context, self.session.images, self.options, self.interrupt)
        try:
            for chunk in generation:
                if chunk == HEARTBEAT:  # the engine is still at work: the page gets a moment to act on Stop
                    yield Working()
                    continue
                clock.first("ttft_s", start)
                self.draft.text += chunk
                yield Token(chunk)
        finally:
            generation.close()
        clock.timings["generate_s"] = clock.since(start)
        self.draft.info = generation.info
        if generation.info is not None and generation.info.cut_chars is not None:
            self.draft.cut(f"The chat server sent more than the {self.options.max_new_tokens} tokens asked for; "
                           f"the reply is cut at {generation.info.cut_chars:,} characters.")
        if self.interrupt.is_set():  # Stop was pressed, or the engine ended early because of it
            self._stopped("Stopped before the end.")

    def _failed(self, note: str, logged: str) -> None:
        self.draft.failed(note)
        self.interrupt.set(FAILED)
        self.session.error(self.index, logged, traceback.format_exc())

    def _sentences(self, events: Iterator[Event]) -> Iterator[Event]:
        """The events, each Token followed by the sentences it completes; the rest when the text ends."""
        splitter = SentenceSplitter()
        for event in events:
            yield event
            if isinstance(event, Token):
                for sentence in splitter.feed(event.text):
                    self.draft.clock.first("first_sentence_s")
                    yield Sentence(sentence)
        for sentence in splitter.flush():
            yield Sentence(sentence)

    def _speech(self, events: Iterator[Event]) -> Iterator[Event]:
        """The events, with each sentence spoken (in a worker) until the interrupt; Spoken as soon as
        its audio is ready, in order, and every one asked for before the end."""
        for event in events:
            yield event
            if self.voice is None:
                continue
            if isinstance(event, Sentence) and not self.interrupt.is_set():
                self.voice.say(event.text)
            yield from self._spoken(wait=False)
        if self.voice is not None:
            yield from self._spoken(wait=True)

    def _spoken(self, wait: bool) -> Iterator[Spoken]:
        clock = self.draft.clock
        for speech, seconds in self.voice.ready(wait, self.draft.note):
            if self.draft.audio_bytes + len(speech.audio) > MAX_REPLY_AUDIO_BYTES:
                self._speech_full()
                return
            self.draft.audio_bytes += len(speech.audio)
            clock.first("first_audio_s")
            clock.add("tts_s", seconds)
            if speech.note:
                self.draft.note(speech.note)
            self.draft.spoken.append(speech)
            yield Spoken(speech)

    def _speech_full(self) -> None:
        """The reply's audio reached its limit (core.limits): no more is made, kept or sent; the text goes on."""
        self.voice.close(cancel=True)
        self.voice = None
        self.draft.note(f"Only the first {MAX_REPLY_AUDIO_BYTES // 2**20} MiB of the reply's audio are spoken and kept "
                        "(about 6 minutes); read the rest.")

    def _record(self) -> Answer:
        """Fold the draft into the Answer (complete, partial or stopped) and record it."""
        draft = self.draft
        if self.voice is not None:
            self.voice.close(cancel=draft.status != "complete")
        timings = draft.clock.timings
        timings.update(_facts(draft.info, timings.get("generate_s"), bool(draft.text)))
        timings.update(self.asked_timings)
        draft.clock.first("total_s")
        audio, audio_format = _store_speech(self.session, draft.spoken, draft.notes)
        self.answer = Answer(draft.text, draft.status, " ".join(draft.notes), audio, audio_format, timings)
        self.session.answer(self.index, self.answer)
        return self.answer


class _Voice:
    """Sentences spoken one after another in a worker thread, their audio handed back in order."""

    def __init__(self, speaker: Speaker, language: str):
        self.speaker, self.language = speaker, language
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tts")
        self._pending: list[Future] = []  # sentences being spoken, in order

    def say(self, sentence: str) -> None:
        if words := speakable(sentence):
            self._pending.append(self._pool.submit(_timed_speak, self.speaker, words, self.language))

    def now(self, text: str) -> Speech | None:
        """text said at once, in this thread (a notice, not the reply); None when no engine can."""
        try:
            return self.speaker.speak(text, self.language)
        except SpeechError as e:
            logger.info("a notice was not spoken: %s", e)
            return None

    def ready(self, wait: bool, note) -> Iterator[tuple[Speech, float]]:
        """(speech, seconds) of the sentences that are ready (all of them, in order, when wait); a
        failure is passed to note (the reply notes it once, however many sentences fail)."""
        while self._pending and (wait or self._pending[0].done()):
            try:
                yield self._pending.pop(0).result()
            except SpeechError as e:
                note(f"Speech failed: {e}")

    def close(self, cancel: bool) -> None:
        self._pool.shutdown(wait=False, cancel_futures=cancel)


def _facts(info: GenerationInfo | None, generate_s: float | None, wrote: bool) -> dict[str, float]:
    """The generation's facts kept with the timings: tokens/s, the token counts, the prefill."""
    if info is None:
        return {}
    facts = {name: value for name, value in (("prompt_tokens", info.prompt_tokens), ("cached_tokens", info.cached_tokens),
             ("completion_tokens", info.completion_tokens), ("prefill_s", info.prefill_s)) if value is not None}
    if generate_s and info.completion_tokens is not None:
        facts["tokens_per_s"] = round((info.completion_tokens if wrote else 0) / generate_s, 2)
    return facts


@contextmanager
def _turn_at(lock) -> Iterator[Ticket | None]:
    """A place in the line for the model (None when it serves every turn at once), left at the end."""
    ticket = queue_for(lock).join() if lock is not None else None
    try:
        yield ticket
    finally:
        if ticket is not None:
            ticket.leave()


def answer(session: ChatSession, engines: Engines, index: int, options: GenerationOptions, speak: bool = True,
           interrupt: Interrupt | None = None, timings: dict[str, float] | None = None) -> Reply:
    """Generate, stream and speak the answer to the question at index, and log it: a Reply to iterate.

    timings: those of asking (stt_s), kept with the answer's own.
    """
    return Reply(session, engines, index, options, speak, interrupt, timings)


def waiting_message(ahead: int) -> str:
    if ahead <= 0:
        return "The model is finishing another answer; yours is next…"
    if ahead == 1:
        return "1 person is ahead of you; the model answers one question at a time…"
    return f"{ahead} people are ahead of you; the model answers one question at a time…"


def _wait_for_the_model(ticket: Ticket, interrupt: Interrupt) -> Iterator[Waiting]:
    """Yield the place in the line until the ticket holds the model (or the reply is interrupted)."""
    shown, shown_at = None, 0.0
    while not interrupt.is_set():
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
    session.keep_media(whole.audio, key, whole.format)
    return key, whole.format
