"""A turn's transcript made while the person speaks, so that little or nothing is left to do when
the turn ends. At each pause the Listener calls pause() with the turn so far; a worker thread
transcribes while the person goes on or the end of the turn is being decided. Two ways:

whole   (the default) the turn so far, from its start, at each pause; a newer pause replaces a job
        not yet begun. The audio given is what the turn would be were it to end at that pause, so
        a turn that ends at a pause (nearly all: the end of a turn is a pause) has had its one pass
        under way since the pause began, on the very same samples: the same text, with a head
        start. Speech after the last pause means one pass at the end, as without this.
pieces  the audio since the last pause only, the texts joined: at the end only the tail since the
        last pause is left, but each piece is heard without the words before it, and Whisper makes
        more mistakes on fragments ("holding in his hand" heard alone as "go digging in hand").

Whisper pads every window to 30 s, so a short piece costs nearly what the whole turn does: the
pieces save little time and lose words. bench/turn_end.py measures both (word error rate against
one pass, time left after the end of the turn).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from core.engines.api import Transcriber, Transcript
from core.media import SAMPLE_RATE

MIN_PIECE = SAMPLE_RATE // 10  # shorter audio is not worth a Whisper window
WAYS = ("whole", "pieces")


def joined(pieces: list[Transcript]) -> Transcript:
    """The pieces' texts in order; the language of the longest piece (a short "um" says little)."""
    if not pieces:
        return Transcript(text="", language="", duration_s=0.0)
    texts = [piece.text for piece in pieces if piece.text]
    longest = max(pieces, key=lambda piece: piece.duration_s)
    return Transcript(text=" ".join(texts), language=longest.language,
                      duration_s=sum(piece.duration_s for piece in pieces))


class IncrementalTranscript:
    """One turn's transcript: pause() at each pause, finish() at the end."""

    def __init__(self, transcriber: Transcriber, worker: ThreadPoolExecutor, way: str = "whole"):
        if way not in WAYS:
            raise ValueError(f"way must be one of {WAYS}, not {way!r}")
        self.transcriber, self.worker, self.way = transcriber, worker, way
        self.pieces: list[Future] = []  # whole: the latest job alone
        self.cut = 0  # samples of the turn already given to a job

    def pause(self, turn: np.ndarray) -> None:
        """The person paused: transcribe what is new (pieces) or the whole turn so far (whole)."""
        if len(turn) - (self.cut if self.way == "pieces" else 0) < MIN_PIECE:
            return
        if self.way == "whole":
            if self.pieces and self.pieces[-1].cancel():  # not begun: the newer pause replaces it
                self.pieces.pop()
            self.pieces = [self.worker.submit(self.transcriber.transcribe, turn)]
        else:
            self.pieces.append(self.worker.submit(self.transcriber.transcribe, turn[self.cut:]))
        self.cut = len(turn)

    def so_far(self) -> Future:
        """The transcript of what the jobs so far hold (done once they are)."""
        pieces = list(self.pieces)
        return self.worker.submit(lambda: joined([piece.result() for piece in pieces]))

    def finish(self, turn: np.ndarray, spoke_since_pause: bool) -> Future:
        """The turn's transcript (a Future: the listener never waits). turn is the whole turn as kept."""
        if spoke_since_pause or not self.pieces:
            if self.way == "whole":
                self.pieces, self.cut = [], 0
            self.pause(turn)
        return self.so_far()
