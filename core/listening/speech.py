"""Whether a 20 ms frame is speech. Two detectors with one method, `is_speech(frame, speaking)`:

EnergyDetector  the page's own (ui/js/call_mode.js), ported frame for frame: 12 dB over the noise
                floor (the quietest frame of the last 5 s) and over -45 dBFS; 3 dB less keeps speech going.
SileroDetector  Silero VAD v6 (the ONNX model faster-whisper ships) run on 32 ms windows as the frames
                come, its recurrent state carried over: it ignores typing, which keeps the energy
                detector's utterances open and runs questions together (bench/vad.py).
"""

from __future__ import annotations

import os
import time
from collections import deque

import numpy as np

from core.media import SAMPLE_RATE

FRAME = SAMPLE_RATE // 50  # samples in a 20 ms frame, what the page's AudioWorklet sends
FLOOR_S = 5.0  # the noise floor is the quietest frame of this many seconds
OVER_FLOOR_DB = 12.0
MIN_DBFS = -45.0
HOLD_DB = 3.0  # once speaking, a frame this much under the threshold still counts
WINDOW = 512  # Silero's window at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous window it sees again
START_PROBABILITY = 0.5  # Silero's own defaults (faster_whisper.vad.VadOptions)
KEEP_PROBABILITY = 0.35


class EnergyDetector:
    """call_mode.js's voice-activity detector in Python: the baseline the others are measured against."""

    name = "energy"

    def __init__(self, frame: int = FRAME):
        self.levels: deque[float] = deque(maxlen=int(FLOOR_S * SAMPLE_RATE / frame))
        self.cpu_s = 0.0

    def is_speech(self, frame: np.ndarray, speaking: bool) -> bool:
        start = time.thread_time()
        db = 10 * np.log10(np.mean(np.square(frame, dtype=np.float64)) + 1e-10)
        self.levels.append(db)
        threshold = max(max(-90.0, min(self.levels)) + OVER_FLOOR_DB, MIN_DBFS)
        self.cpu_s += time.thread_time() - start
        return bool(db > (threshold - HOLD_DB if speaking else threshold))


def silero_path() -> str:
    from faster_whisper.utils import get_assets_path

    return os.path.join(get_assets_path(), "silero_vad_v6.onnx")


def cpu_session(path: str):
    """An onnxruntime session on one thread: a decision per frame must not take the cores a reply needs."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.inter_op_num_threads = options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"], sess_options=options)


class SileroDetector:
    """Silero VAD v6 on the stream: each frame says what the last complete 32 ms window was."""

    name = "silero"

    def __init__(self, session=None):
        self.session = session or cpu_session(silero_path())
        self.state = [np.zeros((1, 1, 128), np.float32) for _ in range(2)]  # h, c
        self.pending = np.zeros(CONTEXT, np.float32)  # the context, then samples not yet in a window
        self.probability = 0.0
        self.cpu_s = 0.0

    def is_speech(self, frame: np.ndarray, speaking: bool) -> bool:
        start = time.thread_time()
        self.pending = np.concatenate([self.pending, frame.astype(np.float32)])
        while len(self.pending) >= CONTEXT + WINDOW:
            window = self.pending[: CONTEXT + WINDOW][None]
            probs, *self.state = self.session.run(None, {"input": window, "h": self.state[0], "c": self.state[1]})
            self.probability = float(np.ravel(probs)[-1])
            self.pending = self.pending[WINDOW:]
        self.cpu_s += time.thread_time() - start
        return self.probability >= (KEEP_PROBABILITY if speaking else START_PROBABILITY)
