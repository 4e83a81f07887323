"""When a turn is over. A rule is asked at every silent frame of a turn, with the silence so far, and
answers None (not yet) or why the turn ends:

SilenceRule  a fixed silence ends it (the page's rule: 0.7 s). A short one cuts questions that pause
             mid-sentence ("what is ... the man holding?"); a long one makes every answer late.
SmartTurnRule  after a short silence (0.24 s) Pipecat's smart-turn v3 hears the last 8 s and says
             whether the question sounds finished: if so the turn ends there; if not, it waits for
             more speech, and a longer silence (1.2 s) still ends it. With check_words, a turn it
             hears as finished ends only once the words so far (the incremental transcript of the
             same pause) do not stop on a word no English question ends with ("the", "and", "um").

smart-turn v3 (BSD-2-Clause) is a Whisper-tiny encoder with a classifier, 8.7 MB of ONNX, trained on
complete and unfinished utterances in 23 languages; it ships in the pipecat-ai wheel, installed
with --no-deps by scripts/install.sh (Pipecat itself is never imported: the file is found through
the package's metadata). Its input is Whisper's log-mel of the last 8 s, which faster-whisper's own
FeatureExtractor computes (the same figures as Pipecat's copy, to 2e-7).
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Protocol

import numpy as np

from core.errors import ModelLoadError
from core.listening.speech import cpu_session
from core.media import SAMPLE_RATE

SMART_TURN_FILE = "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
SMART_TURN_PACKAGE = "pipecat-ai==1.14.0"
WINDOW_S = 8  # smart-turn hears the last 8 s (zeros before a shorter turn)
COMPLETE = 0.5  # its probability over this means finished, as in Pipecat
SHORT_SILENCE_S = 0.24  # when it is asked
FALLBACK_SILENCE_S = 1.2  # what still ends a turn it heard as unfinished
PAGE_SILENCE_S = 0.7  # the page's fixed rule (ui/call_mode.py's SILENCE_MS)
EPSILON_S = 1e-6  # silences are sums of frames: compare them with room for rounding
# English words a question does not end on: articles, possessives, conjunctions, fillers. (Not
# prepositions or pronouns: "what is he looking at?", "what is this?" are finished.)
UNFINISHED = frozenset("a an the my your his their its our and or but because so if than um uh er erm hmm".split())


class TurnSoFar(Protocol):
    def audio(self) -> np.ndarray:
        """The turn's samples so far."""

    def words(self) -> Future | None:
        """The Transcript up to the current pause (None without a transcriber)."""


class TurnEndRule(Protocol):
    name: str

    def ended(self, turn: TurnSoFar, silence_s: float, frame_s: float) -> str | None:
        """Why the turn ends now ("silence", "meaning"), or None; asked at every silent frame."""


class SilenceRule:
    def __init__(self, silence_s: float = PAGE_SILENCE_S):
        self.silence_s = silence_s
        self.name = f"{silence_s:g} s silence"

    def ended(self, turn: TurnSoFar, silence_s: float, frame_s: float) -> str | None:
        return "silence" if silence_s >= self.silence_s - EPSILON_S else None


def smart_turn_path() -> Path:
    """The smart-turn v3 model inside the installed pipecat-ai package."""
    try:
        path = Path(str(distribution("pipecat-ai").locate_file(SMART_TURN_FILE)))
    except PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise ModelLoadError("The end-of-turn model (smart-turn v3) is not installed.",
                             f"pip install --no-deps {SMART_TURN_PACKAGE} (scripts/install.sh does).")
    return path


class SmartTurn:
    """smart-turn v3: the probability that the speech so far is a finished turn."""

    def __init__(self, path: Path | None = None):
        from faster_whisper.feature_extractor import FeatureExtractor

        self.session = cpu_session(str(path or smart_turn_path()))
        self.features = FeatureExtractor(chunk_length=WINDOW_S)
        self.cpu_s: list[float] = []  # per decision, features included

    def probability(self, samples: np.ndarray) -> float:
        start = time.thread_time()
        window = WINDOW_S * SAMPLE_RATE
        audio = np.pad(samples[-window:].astype(np.float32), (max(0, window - len(samples)), 0))
        audio = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)  # as Whisper's feature extractor normalises
        mel = self.features(audio, padding=0)[None].astype(np.float32)
        probability = float(self.session.run(None, {"input_features": mel})[0].ravel()[0])
        self.cpu_s.append(time.thread_time() - start)
        return probability


def reached(silence_s: float, limit_s: float, frame_s: float) -> bool:
    """Whether the silence has just reached limit_s, at this frame and at no other."""
    return silence_s - frame_s < limit_s - EPSILON_S <= silence_s


def sounds_unfinished(text: str, language: str) -> bool:
    """Whether English words stop where no question ends ("what colour is the")."""
    words = "".join(c if c.isalpha() or c == "'" else " " for c in text.lower()).split()
    return language.startswith("en") and bool(words) and words[-1] in UNFINISHED


class SmartTurnRule:
    def __init__(self, model: SmartTurn, short_s: float = SHORT_SILENCE_S, fallback_s: float = FALLBACK_SILENCE_S,
                 check_words: bool = False):
        self.model, self.short_s, self.fallback_s, self.check_words = model, short_s, fallback_s, check_words
        self.name = f"smart-turn v3{' + words' if check_words else ''} after {short_s:g} s, else {fallback_s:g} s"
        self.pending: Future | None = None  # the words of a pause the model heard as finished

    def ended(self, turn: TurnSoFar, silence_s: float, frame_s: float) -> str | None:
        if silence_s >= self.fallback_s - EPSILON_S:
            return "silence"
        if reached(silence_s, self.short_s, frame_s):
            self.pending = None
            if self.model.probability(turn.audio()) <= COMPLETE:
                return None
            self.pending = turn.words() if self.check_words else None
            return "meaning" if self.pending is None else None
        if self.pending is not None and self.pending.done() and silence_s > self.short_s:
            words, self.pending = self.pending.result(), None
            return None if sounds_unfinished(words.text, words.language) else "meaning"
        return None
