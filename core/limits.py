"""How much of anything from outside the app keeps: each limit named, with its reason.

Data is checked where it enters (a chat server's stream, a browser component's value, the speech
of a reply, the session log), and what goes past a limit is cut and marked: the turn goes on.
The README's "Limits" table lists these with where each is enforced.
"""

from __future__ import annotations

# A reply. max_new_tokens is what the user asked for; a server that ignores max_tokens (misconfigured
# or hostile) may stream without end. Tokens of the LLaVA families' vocabularies are rarely longer than
# 16 characters, and a server may send a few tokens more than asked (a stop sequence, special tokens).
MAX_CHARS_PER_TOKEN = 16
REPLY_MARGIN_TOKENS = 64
# Servers send one chunk per token, and a few more (the role, the finish reason, the usage); some split
# a token's bytes into several chunks. More chunks than this, with or without text, is a server in a loop.
CHUNKS_PER_TOKEN = 4
# The bytes of one HTTP answer from a chat or speech server: a reply at its character limit is under
# 1 MiB of server-sent events; this bounds what a server can make the app read (and buffer: a line
# without an end is held whole by the SDK's event parser).
MAX_RESPONSE_BYTES = 16 * 2**20

# The audio kept for one reply (the whole reply in one file in the log's media, and the clips sent to
# the page): 16 MiB is about 6 minutes of 22 kHz 16-bit WAV (Piper, espeak-ng) or an hour of gTTS's MP3.
# Past it, speech stops being made; the text goes on, with a note.
MAX_REPLY_AUDIO_BYTES = 16 * 2**20

# A question's recording, in seconds (st.chat_input's clip and call mode's utterance): Whisper reads
# 30 s windows; a minute is a long question. A recording's header is read before it is decoded.
MAX_RECORDING_S = 60.0
# Call mode's utterance as the page sends it: base64 of a 16 kHz mono 16-bit WAV of at most
# MAX_RECORDING_S (1.9 MB), with room for a page that records at 48 kHz stereo; longer is not decoded.
MAX_UTTERANCE_B64_CHARS = 16 * 2**20
MAX_UTTERANCE_ID = 2**31 - 1  # the page counts its utterances from 1; JavaScript's numbers go further

# A session's log file (JSONL): replies and questions are bounded above, so 64 MiB is thousands of turns.
# Past it, nothing more is written; the conversation goes on in memory and the page says so.
MAX_SESSION_LOG_BYTES = 64 * 2**20
MAX_LOGGED_DETAIL_CHARS = 20_000  # an error record's traceback (a deep recursion's can be megabytes)

# Text sent to a speech engine, per sentence (after cleaning: core.engines.speech_text).
MAX_SPOKEN_WORD_CHARS = 40  # a longer "word" (a hash, a URL, a run of one letter) is cut: no voice reads it
MAX_SPOKEN_CHARS = 1_000  # per sentence; the splitter cuts at 45 words, so only an endless word gets here


def max_reply_chars(max_new_tokens: int) -> int:
    """The longest reply kept for a request of max_new_tokens, whatever the server streams."""
    return (max(max_new_tokens, 1) + REPLY_MARGIN_TOKENS) * MAX_CHARS_PER_TOKEN


def max_reply_chunks(max_new_tokens: int) -> int:
    """The most streamed chunks read for a request of max_new_tokens."""
    return (max(max_new_tokens, 1) + REPLY_MARGIN_TOKENS) * CHUNKS_PER_TOKEN
