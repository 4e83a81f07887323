"""Text made safe for a speech engine, once, at the entry of the speech chain (core.engines.tts).

A model's text can hold what no voice reads and what breaks an engine: control characters (Piper
refuses an embedded NUL, and the chain then rests it for five minutes), lone surrogates (not UTF-8:
espeak-ng's input cannot be encoded), markup (HTML tags, Markdown marks, a link's address) and
endless "words" (a hash, a run of one letter) that an engine spells out for minutes.
"""

from __future__ import annotations

import re
import unicodedata

from core.limits import MAX_SPOKEN_CHARS, MAX_SPOKEN_WORD_CHARS

# Unicode categories never spoken: controls (NUL, ESC, ...), format characters (zero-width spaces,
# bidi marks), surrogates, private use, unassigned. Emoji joiners go too: engines do not read emoji.
UNSPOKEN = {"Cc", "Cf", "Cs", "Co", "Cn"}
TAG = re.compile(r"</?[A-Za-z][^<>]{0,200}>|<!--.*?-->", re.DOTALL)  # an HTML tag or comment
LINK = re.compile(r"!?\[([^\]]{0,200})\]\([^)]{0,2000}\)")  # Markdown link or image: its text is read
MARKS = re.compile(r"[*_#>|~`=\\^]+|^\s*[-+•]\s+", re.MULTILINE)  # emphasis, headings, quotes, tables, code


def speech_text(text: str) -> str:
    """The words of text a voice can read: no control or invisible characters, no markup, no word
    longer than MAX_SPOKEN_WORD_CHARS, at most MAX_SPOKEN_CHARS in all; "" when nothing is left."""
    text = "".join(c if c.isspace() or unicodedata.category(c) not in UNSPOKEN else " " for c in text[: MAX_SPOKEN_CHARS * 4])
    text = MARKS.sub(" ", LINK.sub(r"\1", TAG.sub(" ", text)))
    words = (word[:MAX_SPOKEN_WORD_CHARS] for word in text.split())
    return " ".join(words)[:MAX_SPOKEN_CHARS].strip()
