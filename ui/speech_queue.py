"""The audio queue on the page: each spoken sentence plays once, in order, without overlap.

One st.components.v2 component (no iframe; its script, ui/js/speech_queue.js, runs in the app page) hands clips to a
queue kept on `window`, outside any element. The page mounts the component again for every new
clip, in one placeholder, with the new clip and the one before it (in case the browser never
rendered the previous mount): the queue skips clips it has seen, holds back a clip until the one
before it has played, and starts each clip when the previous one ends. A clip of another turn
(a new question, Regenerate) silences the old turn first; stop() silences everything, and so do
the chat box's microphone button and call mode's barge-in (ui/call_mode.py), in the browser.

One <audio> element plays every clip: a player the user has tapped once stays allowed to play
(iOS Safari). When the browser refuses to play without a tap, the queue waits at that clip and a
"Tap to hear" button resumes it from there. The speech rate (0.75x to 1.5x) is the player's
playbackRate, so it applies to every engine and at once.

The queue also knows whether a reply is being written (`writing`: from its first mount to the
mount with `total`), which call mode reads to tell "thinking" from "listening".

window.__talkSpeech.log records {turn, seq, queued, start, end, error, stopped, why, tapped} per
clip played or tried (milliseconds, performance.now()), which the browser tests read.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from ui.exchange_view import audio_mime

JS = (Path(__file__).parent / "js" / "speech_queue.js").read_text()  # linted: scripts/test.sh
_mount = st.components.v2.component("talk_speech_queue", js=JS)
RATES = (0.75, 1.5)  # the speech rate slider's range


@dataclass(frozen=True)
class ReplyId:
    """Which reply a queue's clips belong to; sent to the page as a JSON object and back in call mode's
    barge-in. Formatted and parsed here only."""

    index: int  # the exchange's item index (what a barge-in names)
    heard: int  # the call mode utterance it answers (0: typed); the page drops clips of one talked over
    hex: str  # new for every reply: a regenerated one is another turn and plays too

    @classmethod
    def new(cls, index: int, heard: int = 0) -> ReplyId:
        return cls(index, heard, secrets.token_hex(6))

    def as_data(self) -> dict:
        return {"index": self.index, "heard": self.heard, "hex": self.hex}

    @classmethod
    def parse(cls, data: object) -> ReplyId | None:
        """A reply id the page sent back; None for anything else (no reply was playing, a broken message)."""
        if not isinstance(data, dict):
            return None
        index, heard, hex_ = data.get("index"), data.get("heard"), data.get("hex")
        if type(index) is not int or type(heard) is not int or not isinstance(hex_, str) or min(index, heard) < 0:
            return None
        return cls(index, heard, hex_)

    def __str__(self) -> str:  # for widget keys
        return f"{self.index}-{self.heard}-{self.hex}"


class SpeechQueue:
    """The clips of one reply, sent to the page's queue as they are synthesised.

    Made when the reply starts (the page then knows a reply is being written) and finished when it
    ends. Its turn is the reply's id (ReplyId).
    """

    def __init__(self, index: int, rate: float = 1.0, heard: int = 0, box=None):
        self.turn = ReplyId.new(index, heard)
        self.rate = rate
        self.box = st.empty() if box is None else box  # the placeholder it mounts in (the reply's audio slot)
        self.clips: list[dict] = []
        self._send("start")

    def play(self, audio: bytes, audio_format: str) -> None:
        src = f"data:{audio_mime(audio_format)};base64,{base64.b64encode(audio).decode()}"
        self.clips.append({"seq": len(self.clips), "src": src})
        self._send(str(len(self.clips)))

    def finish(self) -> None:
        """The reply is written: no more clips will come."""
        self._send("end", total=len(self.clips))

    def _send(self, name: str, **extra) -> None:
        with self.box:
            _mount(key=f"speech-{self.turn}-{name}", height="content",
                   data={"turn": self.turn.as_data(), "clips": self.clips[-2:], "rate": self.rate, **extra})


def stop() -> None:
    """Silence whatever the queue is playing."""
    _mount(key=f"speech-stop-{secrets.token_hex(4)}", data={"stop": True}, height="content")
