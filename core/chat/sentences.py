"""Cut a stream of text chunks into speakable sentences as soon as each one is complete.

Invariant: the sentences joined give back exactly the text that was fed.
"""

from __future__ import annotations

import re
from typing import Iterable, Iterator

ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st vs etc e.g i.e eg ie approx fig no nos vol inc ltd co corp dept "
    "est min max jan feb mar apr jun jul aug sep sept oct nov dec mt ft cf al".split()
)
CLAUSE_AFTER_WORDS = 25  # a sentence this long may be cut at a clause mark (, ; : —)
MAX_WORDS = 45  # a sentence this long without any mark is cut at a space
FENCE = "```"

_END = re.compile(r"[.!?…。！？]+[\"'”’)\]]*(?=\s)")
_CLAUSE = re.compile(r"[,;:—–](?=\s)")


def _is_abbreviation(line: str) -> bool:
    """Does the '.' that ends line end a word that is not a sentence end?"""
    words = line.split()
    if not words:
        return False
    word = words[-1].lstrip("([\"'“‘").rstrip(".").lower()
    if word in ABBREVIATIONS:
        return True
    if len(word) == 1 and word.isalpha():  # an initial: "J. Smith"
        return True
    if "." in word and all(len(part) <= 1 for part in word.split(".")):  # "u.s", "e.g"
        return True
    return len(words) == 1 and word.isdigit()  # a numbered list item: "1. Apples"


_WAIT = -1  # a cut that cannot be decided yet: more text is needed


def _cut(buffer: str, final: bool) -> int | None:
    """Index just after the first complete sentence in buffer, or None to wait for more."""
    if buffer.count(FENCE) % 2 == 1:  # inside a code block: wait for it to close
        return None
    fence_end = buffer.find(FENCE)
    if fence_end != -1 and not buffer[:fence_end].strip():
        return _after_block(buffer, fence_end, final)
    limit = fence_end if fence_end != -1 else len(buffer)  # text before a closed code block is cut first
    end = _sentence_end(buffer, limit, final)
    if end == _WAIT:
        return None
    return end if end is not None else _line_or_clause_end(buffer, limit)


def _after_block(buffer: str, fence_end: int, final: bool) -> int | None:
    """A closed code block is one piece, up to the end of its closing line."""
    close = buffer.find(FENCE, fence_end + 3) + 3
    newline = buffer.find("\n", close)
    if newline != -1:
        return newline + 1
    return None if not final else len(buffer)


def _sentence_end(buffer: str, limit: int, final: bool) -> int | None:
    """Just after the first sentence-ending punctuation before limit; _WAIT when it cannot be told
    yet; None when there is none."""
    for match in _END.finditer(buffer, 0, limit + 1):
        end = match.end()
        if match.group().startswith(".") and len(match.group()) == 1:
            line = buffer[buffer.rfind("\n", 0, match.start()) + 1 : match.start() + 1]
            if _is_abbreviation(line):
                continue
            rest = buffer[end:].lstrip()
            if not rest and not final:
                return _WAIT  # cannot tell yet whether a lowercase word follows ("approx. five")
            if rest[:1].islower():
                continue
        if buffer[:end].strip():
            return end + 1  # keep the one whitespace character with the sentence
    return None


def _line_or_clause_end(buffer: str, limit: int) -> int | None:
    """Without a sentence end: a line break, else a clause of a long text, else a cut at MAX_WORDS."""
    newline = buffer.find("\n", 0, limit)
    while newline != -1:  # a line break ends a list item or paragraph
        if buffer[:newline].strip():
            return newline + 1
        newline = buffer.find("\n", newline + 1, limit)
    words = buffer[:limit].split()
    if len(words) >= CLAUSE_AFTER_WORDS:
        clauses = [m.end() + 1 for m in _CLAUSE.finditer(buffer, 0, limit) if len(buffer[: m.end()].split()) >= 8]
        if clauses:
            return clauses[-1]
    if len(words) >= MAX_WORDS:
        return buffer.rstrip().rfind(" ", 0, limit) + 1 or None
    if limit < len(buffer):  # text before a closed code block
        return limit
    return None


class SentenceSplitter:
    """Feed chunks, get back the sentences they complete; flush() returns the rest."""

    def __init__(self) -> None:
        self._buffer = ""

    def feed(self, chunk: str) -> list[str]:
        self._buffer += chunk
        return self._drain(final=False)

    def flush(self) -> list[str]:
        sentences = self._drain(final=True)
        if self._buffer:
            sentences.append(self._buffer)
            self._buffer = ""
        return sentences

    def _drain(self, final: bool) -> list[str]:
        sentences = []
        while (end := _cut(self._buffer, final)) is not None and 0 < end <= len(self._buffer):
            sentences.append(self._buffer[:end])
            self._buffer = self._buffer[end:]
        return sentences


def split_stream(chunks: Iterable[str]) -> Iterator[str]:
    splitter = SentenceSplitter()
    for chunk in chunks:
        yield from splitter.feed(chunk)
    yield from splitter.flush()


def speakable(sentence: str) -> str:
    """The words of a sentence to send to TTS: no code blocks, no markdown marks."""
    if sentence.lstrip().startswith(FENCE):
        return ""
    text = re.sub(r"`([^`]*)`", r"\1", sentence)
    text = re.sub(r"[*_#>|]+", " ", text)
    text = re.sub(r"^\s*[-•]\s+", "", text)
    return " ".join(text.split())
