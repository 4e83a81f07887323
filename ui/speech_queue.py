"""The audio queue on the page: each spoken sentence plays once, in order, without overlap.

One st.components.v2 component (no iframe; its script runs in the app page) hands clips to a
queue kept on `window`, outside any element. The page mounts the component again for every new
clip, in one placeholder, with the new clip and the one before it (in case the browser never
rendered the previous mount): the queue skips clips it has seen, holds back a clip until the one
before it has played, and starts each clip when the previous one ends. A clip of another turn
(a new question, Regenerate) silences the old turn first; stop() silences everything.

window.__talkSpeech.log records {turn, seq, queued, start, end, error, stopped} per clip (milliseconds,
performance.now()), which the browser tests read.
"""

from __future__ import annotations

import base64
import secrets

import streamlit as st

JS = """
export default function (component) {
  const data = component.data || {};
  const q = (window.__talkSpeech ||= { turn: null, expected: 0, pending: [], seen: new Set(), audio: null, log: [] });
  const silence = () => {
    q.pending = [];
    if (q.audio) { q.audio.pause(); q.audio = null; q.entry.end = performance.now(); q.entry.stopped = true; }
  };
  if (data.stop) { silence(); q.turn = null; return; }
  if (data.turn !== q.turn) { silence(); q.turn = data.turn; q.expected = 0; q.seen = new Set(); }
  for (const clip of data.clips || []) {
    if (!q.seen.has(clip.seq)) { q.seen.add(clip.seq); q.pending.push({ ...clip, queued: performance.now() }); }
  }
  q.pending.sort((a, b) => a.seq - b.seq);
  const next = () => {
    if (q.audio || !q.pending.length || q.pending[0].seq !== q.expected) return;
    const clip = q.pending.shift();
    q.expected += 1;
    const audio = new Audio(clip.src);
    const entry = { turn: q.turn, seq: clip.seq, queued: clip.queued, start: performance.now(),
                    end: null, error: null, stopped: false };
    q.audio = audio;
    q.entry = entry;
    q.log.push(entry);
    const done = (error) => {
      if (q.audio !== audio) return;
      entry.end = performance.now();
      entry.error = error ? String(error) : null;
      q.audio = null;
      next();
    };
    audio.onended = () => done(null);
    audio.onerror = () => done("cannot play");
    audio.play().catch(done);  // refused autoplay: skip, never stall the queue
  };
  next();
}
"""

_mount = st.components.v2.component("talk_speech_queue", js=JS)
MIME = {"mp3": "audio/mpeg", "wav": "audio/wav"}


class SpeechQueue:
    """The clips of one reply, sent to the page's queue as they are synthesised."""

    def __init__(self):
        self.turn = secrets.token_hex(6)  # new for every reply, so a regenerated one plays too
        self.box = st.empty()
        self.clips: list[dict] = []

    def play(self, audio: bytes, audio_format: str) -> None:
        src = f"data:{MIME.get(audio_format, 'audio/wav')};base64,{base64.b64encode(audio).decode()}"
        self.clips.append({"seq": len(self.clips), "src": src})
        with self.box:
            _mount(key=f"speech-{self.turn}-{len(self.clips)}", data={"turn": self.turn, "clips": self.clips[-2:]},
                   height="content")


def stop() -> None:
    """Silence whatever the queue is playing."""
    _mount(key=f"speech-stop-{secrets.token_hex(4)}", data={"stop": True}, height="content")
