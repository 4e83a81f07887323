"""One user's chat: the conversation, its images, and the log it is written to."""

from __future__ import annotations

import logging
import threading
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from typing import Iterator, Mapping

from PIL import Image

from core.config import Settings
from core.conversation import Answer, Conversation, Exchange, Notice, Question, Turn
from core.engines.api import STOP_PRESSED, TALKED_OVER, Interrupt
from core.errors import InvalidImage
from core.media import ImageInput, load_image
from core.store.session_log import (
    LOG_FULL,
    LogFolderError,
    SessionLog,
    answer_record,
    apply,
    feedback_record,
    media_path,
    notice_record,
    question_record,
    read_session,
    save_media,
    session_path,
)

# The longest question kept, in characters (the chat box takes no more: pages/chat.py). Longer text
# reaching a session some other way is cut, with a notice: beyond this the index, the search
# snippets and the model's context gain nothing but cost time.
MAX_QUESTION_CHARS = 20_000
# Why a question has an empty answer that is still to come: nothing of its reply was written or said
# (it waited for the model, or a rerun cut in first). The next run answers it, or the next question's
# answer covers it too (ChatSession.ask); the page may show this note until its next rerun, so it says both.
BEFORE_REPLY = "Interrupted before the reply began; the next answer covers this question."
JOINED = "Answered together with the next question, which came while this one waited."

log = logging.getLogger(__name__)


class ImageGone(InvalidImage, KeyError):
    """An image of the conversation that is neither in memory nor readable from the log's media."""


class SessionImages(Mapping[str, Image.Image]):
    """digest -> the normalised image, what the engines read the visual context's images from.

    Only the images still of use stay in memory (ChatSession.trim_images: the current visual
    context's and the one shown); any other is read back from the log's media file when asked for
    (an old turn regenerated, a session continued from History), and not kept. An image whose file
    could not be written (the log folder failing) stays in memory: nothing else holds it."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._kept: dict[str, Image.Image] = {}

    def __getitem__(self, digest: str) -> Image.Image:
        image = self._kept.get(digest)
        return image if image is not None else self.read_back(digest)

    def __iter__(self) -> Iterator[str]:
        return iter(self._kept)

    def __len__(self) -> int:
        return len(self._kept)

    def __contains__(self, digest: object) -> bool:
        return digest in self._kept or media_path(self.settings.log_dir, digest) is not None

    def keep(self, digest: str, image: Image.Image) -> None:
        self._kept[digest] = image

    def keep_only(self, digests: set[str | None]) -> None:
        for digest in [d for d in self._kept if d not in digests]:
            if media_path(self.settings.log_dir, digest) is not None:  # else it lives only here
                del self._kept[digest]

    def read_back(self, digest: str) -> Image.Image:
        """The image from its media file, normalised as at upload (older logs stored uploads as they came)."""
        path = media_path(self.settings.log_dir, digest)
        try:
            if path is None:
                raise FileNotFoundError(f"no media file {digest}.* in {self.settings.log_dir / 'media'}")
            return load_image(path.read_bytes(), max_pixels=self.settings.max_image_pixels,
                              max_bytes=self.settings.max_image_bytes).image
        except (InvalidImage, OSError) as e:
            log.warning("image %s cannot be read back: %s", digest, e)
            raise ImageGone(f"The image of this part of the conversation cannot be read back from the log ({e}).",
                            "Attach it again to ask about it.") from e


class ChatSession:
    """Holds what a conversation needs between turns. The log file is created on the first record,
    so opening the page without asking anything leaves no empty session behind."""

    def __init__(self, settings: Settings, meta: dict | None = None):
        self.settings = settings
        self.meta = meta or {}
        self.conversation = Conversation()
        self.images = SessionImages(settings)  # digest -> the normalised image (previews come from its file)
        self.pending_image: str | None = None  # set from the sidebar, taken by the next question
        self.encoding = None  # the worker's job encoding pending_image ahead of its question (core.chat.turn.pre_encode)
        self.talked_over_upto = 0  # call mode: replies to its utterances up to this id were talked over
        self.asking = threading.Lock()  # one question at a time is transcribed and recorded (two runs may overlap)
        self._replying: tuple[Interrupt, int] | None = None  # the reply being written, and the utterance it answers
        self._heard: dict[int, int] = {}  # item index -> the call mode utterance its question was said in
        self._log: SessionLog | None = None

    @classmethod
    def resume(cls, settings: Settings, session_id: str) -> "ChatSession":
        """Continue a logged session: its conversation and images come back, new turns go on
        being appended to the same log file."""
        logged = read_session(session_path(settings.log_dir, session_id))
        session = cls(settings, meta=logged.header)
        session.conversation = logged.conversation
        session._log = SessionLog(settings.log_dir, logged.session_id)
        if digest := logged.conversation.current_image:  # the others are read back when asked for
            with suppress(ImageGone):  # the exchange stays, its preview says why; asking about it says so too
                session.images.keep(digest, session.images.read_back(digest))
        return session

    def trim_images(self) -> None:
        """Keep in memory only the images still of use: the current visual context's and the one shown."""
        self.images.keep_only({self.conversation.current_image, self.pending_image})

    @property
    def log(self) -> SessionLog:
        if self._log is None:
            self._log = SessionLog.create(self.settings.log_dir, **self.meta)
        return self._log

    @property
    def save_problem(self) -> LogFolderError | None:
        """Why the log is not being written right now (what was said waits in memory); None when saved."""
        if self._log is None:
            return None
        if self._log.problem is not None:
            self._log.flush()  # the folder may be back: write what waits
        return self._log.problem

    @property
    def session_id(self) -> str | None:
        return self._log.session_id if self._log else None

    @property
    def log_dir(self) -> Path:
        return self.settings.log_dir

    @property
    def current_image(self) -> str | None:
        return self.pending_image or self.conversation.current_image

    def attach_image(self, data: bytes) -> ImageInput:
        """Validate and normalise an image, store the normalised file (what the log, the model and
        every preview use), and make it the visual context of the next question."""
        image = load_image(data, max_pixels=self.settings.max_image_pixels, max_bytes=self.settings.max_image_bytes)
        self.keep_media(image.data, image.digest, image.format)
        self.images.keep(image.digest, image.image)
        if image.digest != self.conversation.current_image:
            self.pending_image = image.digest
        self.trim_images()
        return image

    def keep_media(self, data: bytes, digest: str, extension: str) -> None:
        """Store a file a record refers to (an image, a recording, a reply's audio): the one place
        a session writes media, beside its log."""
        save_media(self.log_dir, data, digest, extension)

    def ask(self, question: Question) -> int:
        """Record a question; it takes the pending image, if any. Returns the item index."""
        if len(question.text) > MAX_QUESTION_CHARS:
            self.notify(Notice(f"Your question was {len(question.text):,} characters long; only its first "
                               f"{MAX_QUESTION_CHARS:,} are kept and answered.", level="warning"))
            question = replace(question, text=question.text[:MAX_QUESTION_CHARS])
        if self.pending_image:
            question = replace(question, image=self.pending_image)
            self.pending_image = None
        self._join_waiting()
        self._record(question_record(Turn(), question))  # numbered by the log: another tab may write it too
        self.trim_images()
        return len(self.conversation.items) - 1

    def awaits_answer(self, index: int) -> bool:
        """True when nothing of the answer at index was written or said: none yet, or one stopped before it began."""
        answer = self.exchange(index).answer
        return answer is None or (answer.status == "stopped" and not answer.text and answer.note == BEFORE_REPLY)

    def waiting(self) -> list[int]:
        """The questions asked since the last one answered (or stopped) that still await their answer, in order."""
        waiting: list[int] = []
        for index in range(len(self.conversation.items) - 1, -1, -1):
            if isinstance(self.conversation.items[index], Exchange):
                if not self.awaits_answer(index):
                    break
                waiting.insert(0, index)
        return waiting

    def _join_waiting(self) -> None:
        """A new question while earlier ones only wait: they are in the conversation the model reads (a
        question without an answer is sent with the next one), so one answer covers them all. Each gets
        its answer record now, saying so (issue 26: a question that waits is never silently dropped)."""
        for index in self.waiting():
            self.answer(index, Answer("", "stopped", JOINED))

    def settle(self, index: int) -> None:
        """Whatever ended the page's turn (a rerun, a closed tab, a bug), the question at index has an
        answer record: one that is still to come, when none was written."""
        if self.exchange(index).answer is None:
            self.answer(index, Answer("", "stopped", BEFORE_REPLY))

    def exchange(self, index: int) -> Exchange:
        """The exchange at item index (what the page and core.chat.turn address an exchange by)."""
        exchange = self.conversation.items[index]
        if not isinstance(exchange, Exchange):
            raise IndexError(f"item {index} is a notice, not an exchange")
        return exchange

    def edit(self, index: int, text: str) -> None:
        """Replace the text of a question; its answer is dropped (to be generated again)."""
        exchange = self.exchange(index)
        self._record(question_record(exchange.turn, replace(exchange.question, text=text)))

    def regenerate(self, index: int) -> None:
        """Drop the answer at index, to be generated again; the new answer replaces it in the log."""
        self.conversation.unanswer(index)

    def answer(self, index: int, answer: Answer) -> None:
        self._record(answer_record(self.exchange(index).turn, answer))

    def cut_off(self, index: int, why: str = "Interrupted while it was being spoken.") -> bool:
        """Mark a written reply whose voice the user cut off as stopped (a new record: the last one
        wins). False when there is nothing to mark: no reply yet, or it already ended otherwise."""
        answer = self.exchange(index).answer
        if answer is None or answer.status != "complete":
            return False
        self.answer(index, replace(answer, status="stopped", note=" ".join(filter(None, (why, answer.note)))))
        return True

    def redo(self, kind: str, index: int, text: str = "") -> bool:
        """Regenerate ("regenerate") or resend the edited question ("edit", text) at index, clicked in
        an earlier run. Only the last exchange, once answered: False for a stale button (a question
        was asked since, or its reply is still being written), and nothing changes."""
        last = self.conversation.last_exchange_index()
        if index != last or self.exchange(index).answer is None:
            return False
        if kind == "edit":
            self.edit(index, text.strip() or self.exchange(index).question.text)
        else:
            self.regenerate(index)  # the new answer replaces it in the log
        return True

    def replying(self, interrupt: Interrupt, heard: int = 0, index: int | None = None) -> None:
        """The reply being written from now on (to the exchange at index), with the call mode utterance
        it answers (0: typed). Stop and the user talking over it reach it through its interrupt; a reply
        to an utterance already talked over (before a rerun could cut in) stops at once: its question is
        answered with the one being said."""
        self._replying = (interrupt, heard)
        if index is not None and heard:
            self._heard[index] = heard
        if 0 < heard <= self.talked_over_upto:
            interrupt.set(TALKED_OVER)

    def heard_of(self, index: int) -> int:
        """The call mode utterance the question at index was said in (0: typed, or not known)."""
        return self._heard.get(index, 0)

    def stop(self) -> None:
        """Stop was pressed: the reply being written ends at its next step, its text kept."""
        if self._replying is not None:
            self._replying[0].set(STOP_PRESSED)

    def talked_over(self, upto: int) -> None:
        """The user spoke over the replies to call mode's utterances up to upto: the one being written
        to any of them stops (a typed question's reply is ended by the rerun that follows)."""
        self.talked_over_upto = max(self.talked_over_upto, upto)
        if self._replying is not None and 0 < self._replying[1] <= upto:
            self._replying[0].set(TALKED_OVER)

    def barge_in(self, playing: int | None) -> None:
        """What is left after the user spoke over a reply (playing: the exchange whose voice was
        playing, if any). A question whose reply had not begun is still to be answered (by the next run,
        or with the question being spoken now); a reply written but still being spoken is marked stopped;
        one being written was ended by its interrupt."""
        last = self.conversation.last_exchange_index()
        if last is None:
            return
        if self.exchange(last).answer is None:  # the rerun cut in before its reply began: still to come
            self.answer(last, Answer("", "stopped", BEFORE_REPLY))
        elif playing == last:
            self.cut_off(last)

    def notify(self, notice: Notice) -> None:
        self._record(notice_record(notice))

    def feedback(self, index: int, score: int | None) -> None:
        self._record(feedback_record(self.exchange(index).turn, score))

    def _record(self, record: dict) -> None:
        """Apply a record to the conversation and append it to the log: the same function applies it
        again when the log is read back (core.store.session_log.apply)."""
        apply(self.conversation, record)
        full = self.log.full
        self.log.append(record)
        if self.log.full and not full:  # the log's last line says so; the page says it here
            self.conversation.notify(Notice(LOG_FULL, level="warning"))

    def error(self, index: int, message: str, detail: str = "") -> None:
        """Log an error of the exchange at index (its number may be given later, when the log can be written)."""
        self.log.error(message, self.exchange(index).turn, detail)

    def turn_number(self, index: int) -> int | None:
        """The log's number (0, 1, ...) of the exchange at index; None while its question waits to be written."""
        return self.exchange(index).turn.number
