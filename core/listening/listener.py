"""The Listener: 20 ms frames in, at the pace they are heard; events out.

    listener = Listener(SileroDetector(), SmartTurnRule(SmartTurn()), transcriber)
    for frame in frames:                      # float32, 16 kHz, 320 samples
        for event in listener.feed(frame):    # SpeechStarted, TurnEnded
            ...

SpeechStarted comes 3 speech frames after the speech began (60 ms: what barge-in waits for);
TurnEnded when the rule says so, or at the hard limit (MAX_TURN_S of speech never ends); its
transcript is a Future that the incremental transcript fills, usually soon after. Nothing here
knows where the frames come from: a test's array, bench/turn_end.py at real-time pace, or later
the page's microphone streamed to the server (README, "Hands-free: how it works").
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from core.engines.api import Transcriber
from core.listening.incremental import IncrementalTranscript
from core.listening.speech import FRAME
from core.listening.turn_end import SHORT_SILENCE_S, TurnEndRule, reached
from core.media import SAMPLE_RATE

ONSET_FRAMES = 3  # speech frames in a row that start a turn (60 ms), as in the page
PREROLL_S = 0.3  # kept from before the onset, so the first word is whole
MIN_SPEECH_S = 0.25  # a shorter burst (a cough, a click) is no turn
TRAILING_S = 0.2  # silence kept after the last speech frame
MAX_TURN_S = 60.0  # the hard limit: a turn is ended after this long, speech or not (the page's MAX_MS)


@dataclass(frozen=True)
class SpeechStarted:
    start_sample: int  # where the speech began (its first speech frame), counted from the first frame fed
    heard_sample: int  # the end of the frame at which it was heard: the barge-in may start here


@dataclass(frozen=True, eq=False)
class TurnEnded:
    start_sample: int  # the first speech frame
    end_sample: int  # the end of the last speech frame
    decided_sample: int  # the end of the frame at which the turn was ended
    reason: str  # "meaning" (the model heard it finished), "silence" or "limit"
    audio: np.ndarray  # the turn, pre-roll to TRAILING_S after its last speech
    transcript: Future | None  # of a Transcript; None without a transcriber


@dataclass
class _Turn:
    start: int
    first: int  # the first sample kept (the pre-roll's)
    last: int  # the end of the last speech frame
    frames: list = field(default_factory=list)
    paused: int = 0  # where the last pause that was transcribed began its transcript (a sample)
    silent: int = 0  # samples of silence since the last speech frame
    incremental: IncrementalTranscript | None = None

    def words(self) -> Future | None:
        return self.incremental.so_far() if self.incremental else None

    def audio(self) -> np.ndarray:
        return np.concatenate(self.frames) if self.frames else np.zeros(0, np.float32)


class Listener:
    def __init__(self, detector, rule: TurnEndRule, transcriber: Transcriber | None = None, *,
                 max_turn_s: float = MAX_TURN_S, cut_s: float = SHORT_SILENCE_S, worker: ThreadPoolExecutor | None = None,
                 transcript_way: str = "whole"):
        self.detector, self.rule, self.transcriber, self.transcript_way = detector, rule, transcriber, transcript_way
        self.max_turn_s, self.cut_s = max_turn_s, cut_s
        self.worker = worker or (ThreadPoolExecutor(1, thread_name_prefix="transcript") if transcriber else None)
        self.heard = 0  # samples fed so far
        self.loud = 0  # speech frames in a row while idle
        self.preroll: deque[np.ndarray] = deque(maxlen=round(PREROLL_S * SAMPLE_RATE / FRAME))
        self.turn: _Turn | None = None

    def feed(self, frame: np.ndarray) -> list:
        """Hear one frame (FRAME samples, float32 at 16 kHz); the events it brings."""
        speech = self.detector.is_speech(frame, self.turn is not None)
        events = self._turn_frame(frame, speech) if self.turn else self._idle_frame(frame, speech)
        self.heard += len(frame)
        return events

    def _idle_frame(self, frame: np.ndarray, speech: bool) -> list:
        self.preroll.append(frame)
        self.loud = self.loud + 1 if speech else 0
        if self.loud < ONSET_FRAMES:
            return []
        end = self.heard + len(frame)
        kept = sum(len(f) for f in self.preroll)
        self.turn = _Turn(start=end - ONSET_FRAMES * len(frame), first=end - kept, last=end, frames=list(self.preroll))
        if self.transcriber:
            self.turn.incremental = IncrementalTranscript(self.transcriber, self.worker, self.transcript_way)
        self.preroll.clear()
        self.loud = 0
        return [SpeechStarted(self.turn.start, end)]

    def _turn_frame(self, frame: np.ndarray, speech: bool) -> list:
        turn, end, frame_s = self.turn, self.heard + len(frame), len(frame) / SAMPLE_RATE
        turn.frames.append(frame)
        if speech:
            turn.last, turn.silent = end, 0
            reason = None
        else:
            turn.silent += len(frame)
            silence_s = turn.silent / SAMPLE_RATE
            if turn.incremental and reached(silence_s, self.cut_s, frame_s):
                turn.incremental.pause(self._kept(turn, end))  # what the turn would be, were it to end here
                turn.paused = end
            reason = self.rule.ended(turn, silence_s, frame_s)
        if reason is None and end - turn.start >= self.max_turn_s * SAMPLE_RATE:
            reason = "limit"
        return [] if reason is None else self._end(reason, end)

    @staticmethod
    def _kept(turn: _Turn, end: int) -> np.ndarray:
        """The turn as it is kept: from the pre-roll to TRAILING_S after its last speech."""
        return turn.audio()[:min(end, turn.last + round(TRAILING_S * SAMPLE_RATE)) - turn.first]

    def _end(self, reason: str, end: int) -> list:
        turn, self.turn = self.turn, None
        audio = self._kept(turn, end)
        if (turn.last - turn.start) / SAMPLE_RATE < MIN_SPEECH_S:
            return []
        transcript = turn.incremental.finish(audio, turn.last > turn.paused) if turn.incremental else None
        return [TurnEnded(turn.start, turn.last, end, reason, audio, transcript)]

    def close(self) -> None:
        """Hear no more: the transcripts under way are still finished, then the worker ends."""
        if self.worker:
            self.worker.shutdown(wait=False)
