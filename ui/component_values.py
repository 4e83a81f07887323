"""Every value the page's components send, checked in one place before the app acts on it.

A component's value comes from the browser: a modified page, an old tab or an extension can send
anything JSON can hold. Call mode (ui/call_mode.py) sends two trigger values:

    utterance  {id: the page's count of utterances, from 1; wav: base64 of a 16-bit PCM WAV}
    barge      {turn: the speech queue's reply id or null, spoken: whether its voice played,
                upto: the id of the last utterance sent}

(the speech queue, ui/speech_queue.py, sends nothing back). A value that is not what it should be
is dropped with a log line: the page never shows a traceback for it. A recording longer than
MAX_RECORDING_S is cut to its start and marked (`cut`): the question goes on.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import struct
import wave
from dataclasses import dataclass

from core.limits import MAX_RECORDING_S, MAX_UTTERANCE_B64_CHARS, MAX_UTTERANCE_ID
from ui.speech_queue import ReplyId

log = logging.getLogger(__name__)

RATES = (8_000, 48_000)  # Hz: what a browser's microphone records, resampled or not
MAX_HEX_CHARS = 32  # a reply id's hex (ReplyId.new makes 12)


@dataclass(frozen=True)
class Utterance:
    id: int
    wav: bytes  # a 16-bit PCM WAV of at most MAX_RECORDING_S
    cut: bool = False  # it was longer: only its first MAX_RECORDING_S are kept


@dataclass(frozen=True)
class Barge:
    turn: ReplyId | None  # the reply the queue was playing or waiting for (None: none, or not one)
    spoken: bool
    upto: int


def utterance(value: object, heard: int) -> Utterance | None:
    """Call mode's utterance value, checked; None for one already taken (id <= heard) or a bad one."""
    if not isinstance(value, dict):
        return _dropped("an utterance", "not an object", value)
    if (number := count(value.get("id"))) is None or number == 0:
        return _dropped("an utterance", "its id is not a whole number from 1", value.get("id"))
    if number <= heard:
        return None  # taken already (a rerun sends the component's last value again)
    recording = wav(value.get("wav"))
    if recording is None:
        return None
    return Utterance(number, *recording)


def barge(value: object) -> Barge | None:
    """Call mode's barge value, checked; None for a bad one."""
    if not isinstance(value, dict):
        return _dropped("a barge", "not an object", value)
    upto, spoken, turn = count(value.get("upto", 0)), value.get("spoken", False), value.get("turn")
    if upto is None or not isinstance(spoken, bool):
        return _dropped("a barge", "upto is not a whole number or spoken not true/false", value)
    return Barge(reply_id(turn), spoken, upto)


def count(value: object) -> int | None:
    """A whole number from 0 to MAX_UTTERANCE_ID (not a bool, a float, a string); None otherwise."""
    return value if type(value) is int and 0 <= value <= MAX_UTTERANCE_ID else None


def reply_id(value: object) -> ReplyId | None:
    """A reply id as the speech queue sent it, within bounds; None for anything else."""
    parsed = ReplyId.parse(value)
    if parsed is None or max(parsed.index, parsed.heard) > MAX_UTTERANCE_ID or len(parsed.hex) > MAX_HEX_CHARS:
        return None if value is None else _dropped("a barge", "its turn is not a reply id", value)
    return parsed


def wav(value: object) -> tuple[bytes, bool] | None:
    """(a 16-bit PCM WAV of at most MAX_RECORDING_S, whether it was cut) from base64; None for a bad one."""
    if not isinstance(value, str) or len(value) > MAX_UTTERANCE_B64_CHARS:
        return _dropped("an utterance", "its wav is not a string of a bounded size", f"{type(value).__name__}")
    try:
        data = base64.b64decode(value, validate=True)
        with wave.open(io.BytesIO(data)) as clip:
            params = clip.getparams()
            most = int(MAX_RECORDING_S * params.framerate)
            frames = clip.readframes(most)
            cut = clip.getnframes() > most
    except (binascii.Error, ValueError, wave.Error, EOFError, OverflowError, struct.error) as e:
        return _dropped("an utterance", f"its wav cannot be read ({e})", f"{len(value)} characters")
    if params.comptype != "NONE" or params.sampwidth != 2 or params.nchannels not in (1, 2) \
            or not RATES[0] <= params.framerate <= RATES[1]:
        return _dropped("an utterance", "its wav is not 16-bit PCM, mono or stereo, 8-48 kHz", params)
    frames = frames[: len(frames) // (2 * params.nchannels) * 2 * params.nchannels]  # whole frames only
    if not frames:
        return _dropped("an utterance", "its wav holds no sound", params)
    return _wav(frames, params), cut


def _wav(frames: bytes, params) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(params.nchannels)
        writer.setsampwidth(2)
        writer.setframerate(params.framerate)
        writer.writeframes(frames)
    return out.getvalue()


def _dropped(what: str, why: str, value: object) -> None:
    log.warning("call mode: dropped %s value: %s: %.200r", what, why, value)
    return None
