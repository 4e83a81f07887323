"""Hands-free call mode: the page listens, finds each utterance, and sends it to Python as a WAV.

One st.components.v2 component, mounted at the end of every run of the chat page. Its script
(ui/js/call_mode.js) keeps the call on `window` (the microphone stays open across reruns) and draws the call
bar in document.body, above the chat box: a "Start hands-free call" / "End call" button, the state and a
level meter. The bar is outside Streamlit's elements, so no rerun hides it, and starting or ending a call
happens in the browser without a rerun (a rerun would cut the reply being written):

- getUserMedia with echo cancellation, noise suppression and automatic gain; an AudioWorklet
  hands 20 ms frames to the page;
- an energy voice-activity detector (bench/vad.py measured it against Silero VAD): speech starts
  when 3 frames in a row are 12 dB over the noise floor (the quietest frame of the last 5 s) and
  over -45 dBFS, and ends after `silence_ms` below it; 300 ms before the start are kept, so the first word is whole;
  bursts shorter than 250 ms are dropped;
- each utterance, resampled to 16 kHz mono 16-bit WAV, is sent as the trigger value "utterance"
  ({id, wav: base64}); ui.component_values checks it (and every other value the page sends), and
  Python asks it as a voice question (ui.state.take_utterance);
- barge-in: speech starting while a reply is written or spoken silences the speech queue at once
  (ui/speech_queue.py, in the browser; clips of replies to earlier utterances are dropped when
  they come) and sends the trigger "barge" ({turn: the queue's reply id, spoken, upto: the last
  utterance id sent}):
  a reply to an utterance up to that id stops (one not begun waits: the answer to what is being
  said covers its question too, core.chat.session), and a written reply whose voice was cut is marked stopped;
- what the user sees: a state (listening, hearing you, thinking, speaking) and a level meter, through
  every run (thinking: an utterance was sent and the run that answers it has not ended, or a reply is
  being written; speaking: the reply's voice plays).

window.__talkCall.log records per utterance {onset_sample, end_sample, onset_at, end_at, sent_at,
barge, dropped}; `t0` and `rate` map a sample of the microphone to performance.now(), so the
browser tests and bench/call_mode.py measure from the speech in the fake microphone's file.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from ui import component_values, state

KEY = "talk-call"
SILENCE_MS = 700  # end of turn: this long below the speech threshold

SCRIPTS = Path(__file__).parent / "js"
CSS = (SCRIPTS / "call_mode.css").read_text()
JS = (SCRIPTS / "call_mode.js").read_text()  # the detector, the call and the component's entry (linted: scripts/test.sh)

_mount = st.components.v2.component("talk_call_mode", js=JS, css=CSS)


def _events():
    return st.session_state.get(KEY)


def _on_utterance() -> None:
    """The component's callback: what the page heard, checked (ui.component_values), waits in
    ui.state for this run to ask it."""
    if (heard := component_values.utterance(getattr(_events(), "utterance", None), state.heard())) is not None:
        state.put_utterance(heard.id, heard.wav, heard.cut)


def _on_barge() -> None:
    if (barge := component_values.barge(getattr(_events(), "barge", None))) is not None:
        state.put_barge(barge.turn, barge.spoken, barge.upto)


def mount(available: bool) -> None:
    """Call mode's bar (the page draws it above the chat box); not available (no speech to text): no bar,
    and a call in progress ends."""
    _mount(key=KEY, height="content", data={"available": available, "css": CSS, "silence_ms": SILENCE_MS,
                                            "handled": state.heard(), "run": state.next_run()},
           on_utterance_change=_on_utterance, on_barge_change=_on_barge)
