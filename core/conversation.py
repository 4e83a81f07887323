"""A conversation as data: questions, answers, notices; and the message list a model reads.

Each exchange is one question and its answer. An exchange that carries an image starts a new
visual context: the model sees that exchange and those after it. Earlier exchanges stay in the
conversation (shown and logged) but are not sent.

So a prompt holds one image, for every family: llava-1.5 and llava-v1.6 were trained on
conversations about one image, and OneVision's multi-image mode sees each image at its base size
(729 tokens) instead of its any-resolution tiles. The image's placeholder goes before
the text of its question, where each family's chat template puts it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterator, Literal, Sequence

from core.errors import GenerationError

Status = Literal["complete", "partial", "stopped", "error"]


@dataclass(frozen=True)
class Question:
    text: str
    source: Literal["text", "voice"] = "text"
    language: str = "en"  # ISO 639-1, detected by Whisper for voice, chosen by the user for text
    image: str | None = None  # digest of the image this question starts a visual context with
    audio: str | None = None  # digest of the recording, for voice questions


@dataclass(frozen=True)
class Answer:
    text: str
    status: Status = "complete"
    note: str = ""  # shown under the reply: why it is partial, that speech failed, ...
    audio: str | None = None  # digest of the spoken reply
    audio_format: str | None = None  # "mp3" or "wav"
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds (or tokens/s)
    feedback: int | None = None  # st.feedback thumbs: 1 up, 0 down


class Turn:
    """An exchange's number in its session (0, 1, ...), given once, when the log writes its question:
    the next after the highest the file holds, read under a lock, so that two tabs continuing one
    session never write the same number. None until then (the log folder may be failing: records
    that name this Turn get its number when they are written). The log, History, the exports and
    error records all use this number; the page addresses an exchange by its position in items."""

    __slots__ = ("number",)

    def __init__(self, number: int | None = None):
        self.number = number

    def __repr__(self) -> str:
        return f"Turn({self.number})"


@dataclass(frozen=True)
class Exchange:
    question: Question
    answer: Answer | None = None
    turn: Turn = field(default_factory=Turn, compare=False)  # the same object for the exchange's whole life


@dataclass(frozen=True)
class Notice:
    """A message to the user in the chat (bad input, a load failure); never sent to the model."""

    text: str
    level: Literal["error", "warning", "info"] = "error"


Item = Exchange | Notice


@dataclass
class Conversation:
    items: list[Item] = field(default_factory=list)

    @property
    def exchanges(self) -> list[Exchange]:
        return [item for item in self.items if isinstance(item, Exchange)]

    @property
    def current_image(self) -> str | None:
        """Digest of the image of the current visual context, if any."""
        for exchange in reversed(self.exchanges):
            if exchange.question.image:
                return exchange.question.image
        return None

    def last_exchange_index(self) -> int | None:
        for i in range(len(self.items) - 1, -1, -1):
            if isinstance(self.items[i], Exchange):
                return i
        return None

    def ask(self, question: Question, turn: Turn | None = None) -> int:
        """Append a question (with its turn, when it has one already); return its item index."""
        self.items.append(Exchange(question, turn=turn or Turn()))
        return len(self.items) - 1

    def find(self, turn: Turn | int) -> int | None:
        """The item index of the exchange of a turn (the object, or its logged number); None when
        there is none. Searched from the end: records mostly name the latest turn."""
        for index in range(len(self.items) - 1, -1, -1):
            item = self.items[index]
            if isinstance(item, Exchange) and (item.turn is turn or item.turn.number == turn):
                return index
        return None

    def answer(self, index: int, answer: Answer) -> None:
        self.items[index] = replace(self.items[index], answer=answer)

    def unanswer(self, index: int, text: str | None = None, question: Question | None = None) -> Exchange:
        """Drop the answer at index (to be written again), with the question's text, or the whole
        question, replaced if given; the exchange keeps its turn. Returns the new exchange."""
        exchange = self.items[index]
        question = question or (exchange.question if text is None else replace(exchange.question, text=text))
        self.items[index] = replace(exchange, question=question, answer=None)
        return self.items[index]

    def notify(self, notice: Notice) -> None:
        self.items.append(notice)

    def set_feedback(self, index: int, score: int | None) -> None:
        exchange = self.items[index]
        if isinstance(exchange, Exchange) and exchange.answer:
            self.items[index] = replace(exchange, answer=replace(exchange.answer, feedback=score))

    def visual_context(self, upto: int | None = None) -> list[Exchange]:
        """Exchanges the model sees to answer the exchange at item index upto (the last one when
        None): from the latest one with an image, up to and including it. Found by position: two
        exchanges may be equal (the same question asked twice, neither answered)."""
        items = self.items if upto is None else self.items[: upto + 1]
        exchanges = [item for item in items if isinstance(item, Exchange)]
        for start in range(len(exchanges) - 1, -1, -1):
            if exchanges[start].question.image:
                return exchanges[start:]
        return exchanges


def build_messages(exchanges: Sequence[Exchange], system_prompt: str = "") -> list[dict]:
    """Role/content messages in the form processor.apply_chat_template expects.

    The last exchange may be unanswered (the question being asked now).
    """
    messages: list[dict] = []
    if system_prompt.strip():
        messages.append({"role": "system", "content": [{"type": "text", "text": system_prompt.strip()}]})
    for exchange in exchanges:
        content: list[dict] = []
        if exchange.question.image:
            content.append({"type": "image"})
        content.append({"type": "text", "text": exchange.question.text})
        messages.append({"role": "user", "content": content})
        if exchange.answer is not None and exchange.answer.text:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": exchange.answer.text}]})
    return messages


def image_digests(exchanges: Sequence[Exchange]) -> list[str]:
    """Digests of the images in exchanges, in the order their placeholders appear."""
    return [e.question.image for e in exchanges if e.question.image]


def trimmings(exchanges: Sequence[Exchange]) -> Iterator[list[Exchange]]:
    """The exchanges to try, longest first: all of them, then without the oldest one that may go,
    and so on; never without the image exchange nor the last one. The caller takes the first that
    fits (its prompt's length, or the server's answer, decides).

    Raises GenerationError when asked for another after the shortest: even the image exchange and
    the question alone do not fit.
    """
    kept = list(exchanges)
    while True:
        yield list(kept)
        droppable = [i for i, e in enumerate(kept[:-1]) if not e.question.image]
        if not droppable:
            raise GenerationError(
                "The question and the image no longer fit in the model's context.",
                "Ask a shorter question or start a new session.",
            )
        del kept[droppable[0]]
