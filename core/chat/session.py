"""One user's chat: the conversation, its images, and the log it is written to."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from PIL import Image

from core.config import Settings
from core.conversation import Answer, Conversation, Exchange, Notice, Question, Turn, image_digests
from core.engines.api import STOP_PRESSED, TALKED_OVER, Interrupt
from core.errors import InvalidImage
from core.media import ImageInput, load_image
from core.store.session_log import (
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

log = logging.getLogger(__name__)


class ChatSession:
    """Holds what a conversation needs between turns. The log file is created on the first record,
    so opening the page without asking anything leaves no empty session behind."""

    def __init__(self, settings: Settings, meta: dict | None = None):
        self.settings = settings
        self.meta = meta or {}
        self.conversation = Conversation()
        self.images: dict[str, Image.Image] = {}  # digest -> the normalised image (previews come from its file)
        self.pending_image: str | None = None  # set from the sidebar, taken by the next question
        self.talked_over_upto = 0  # call mode: replies to its utterances up to this id were talked over
        self._replying: tuple[Interrupt, int] | None = None  # the reply being written, and the utterance it answers
        self._log: SessionLog | None = None

    @classmethod
    def resume(cls, settings: Settings, session_id: str) -> "ChatSession":
        """Continue a logged session: its conversation and images come back, new turns go on
        being appended to the same log file."""
        logged = read_session(session_path(settings.log_dir, session_id))
        session = cls(settings, meta=logged.header)
        session.conversation = logged.conversation
        session._log = SessionLog(settings.log_dir, logged.session_id)
        for digest in image_digests(logged.conversation.exchanges):
            path = media_path(settings.log_dir, digest)
            if path is None:
                continue  # shown as missing; the model is then asked without it
            try:  # older logs stored uploads as they came: normalised here, as at upload
                image = load_image(path.read_bytes(), max_pixels=settings.max_image_pixels,
                                   max_bytes=settings.max_image_bytes)
            except (InvalidImage, OSError) as e:
                log.warning("image %s of session %s cannot be used: %s", digest, session_id, e)
                continue  # like a missing file: the exchange stays, its preview says why
            session.images[digest] = image.image
        return session

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
        self.images[image.digest] = image.image
        if image.digest != self.conversation.current_image:
            self.pending_image = image.digest
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
        self._record(question_record(Turn(), question))  # numbered by the log: another tab may write it too
        return len(self.conversation.items) - 1

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

    def replying(self, interrupt: Interrupt, heard: int = 0) -> None:
        """The reply being written from now on, with the call mode utterance it answers (0: typed).
        Stop and the user talking over it reach it through its interrupt; a reply to an utterance
        already talked over (before a rerun could cut in) stops at once."""
        self._replying = (interrupt, heard)
        if 0 < heard <= self.talked_over_upto:
            interrupt.set(TALKED_OVER)

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
        playing, if any). A question whose reply had not begun is not to be answered now; a reply
        written but still being spoken is marked stopped; one being written was ended by its interrupt."""
        last = self.conversation.last_exchange_index()
        if last is None:
            return
        if self.exchange(last).answer is None:  # the rerun cut in before its reply began
            self.answer(last, Answer("", "stopped", "Interrupted before the reply began."))
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
        self.log.append(record)

    def error(self, index: int, message: str, detail: str = "") -> None:
        """Log an error of the exchange at index (its number may be given later, when the log can be written)."""
        self.log.error(message, self.exchange(index).turn, detail)

    def turn_number(self, index: int) -> int | None:
        """The log's number (0, 1, ...) of the exchange at index; None while its question waits to be written."""
        return self.exchange(index).turn.number
