"""A turn's transcript made while the person speaks. At each pause the audio since the last pause
is transcribed in a worker thread while they go on; when the turn ends, only the tail since the
last pause is left, and often not even that: the pause that ends a turn is the one that was
already being transcribed. The pieces are transcribed one after another on one worker (Whisper
takes the cores it is given), and the transcript is their texts joined.

Each piece is one Whisper window of its own (a short piece costs the encoder of a 30 s window like
a long one), so a turn with pauses costs more CPU in all than a single pass, but less after its
end. bench/turn_end.py measures the word error rate of the joined transcript against a single pass
over the whole turn, and the time left after the end of the turn.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from core.engines.api import Transcriber, Transcript
from core.media import SAMPLE_RATE


def joined(pieces: list[Transcript]) -> Transcript:
    """The pieces' texts in order; the language of the longest piece (a short "um" says little)."""
    if not pieces:
        return Transcript(text="", language="", duration_s=0.0)
    texts = [piece.text for piece in pieces if piece.text]
    longest = max(pieces, key=lambda piece: piece.duration_s)
    return Transcript(text=" ".join(texts), language=longest.language,
                      duration_s=sum(piece.duration_s for piece in pieces))


class IncrementalTranscript:
    """One turn's transcript: add() a piece at each pause, finish() with the tail."""

    def __init__(self, transcriber: Transcriber, worker: ThreadPoolExecutor):
        self.transcriber = transcriber
        self.worker = worker  # one thread: pieces are transcribed, and joined, in the order given
        self.pieces: list[Future] = []

    def add(self, samples: np.ndarray) -> None:
        if len(samples) >= SAMPLE_RATE // 10:
            self.pieces.append(self.worker.submit(self.transcriber.transcribe, samples))

    def so_far(self) -> Future:
        """The transcript of the pieces added so far (done once they are)."""
        pieces = list(self.pieces)
        return self.worker.submit(lambda: joined([piece.result() for piece in pieces]))

    def finish(self, tail: np.ndarray | None = None) -> Future:
        """The transcript once every piece and the tail are done (a Future: the listener never waits)."""
        if tail is not None:
            self.add(tail)
        return self.so_far()
