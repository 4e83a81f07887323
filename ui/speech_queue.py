"""The audio queue on the page: each spoken sentence plays once, in order, without overlap.

One st.components.v2 component (no iframe; its script runs in the app page) hands clips to a
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

import streamlit as st

JS = """
function createQueue() {
  const q = { turn: null, expected: 0, pending: [], seen: new Set(), audio: null, entry: null, log: [],
              rate: 1, writing: false, muted: null, blocked: null, player: new Audio(), button: null, playing: null };
  const now = () => performance.now();
  q.busy = () => q.writing || q.audio !== null || q.pending.length > 0 || q.blocked !== null;
  q.showTap = (show) => {
    if (!q.button) {
      q.button = document.createElement("button");
      q.button.textContent = "\\u{1F50A} Tap to hear the reply";
      q.button.dataset.testid = "talk-tap-to-hear";
      q.button.style.cssText = "position:fixed;right:24px;bottom:120px;z-index:1000;padding:.7rem 1.1rem;" +
        "border-radius:2rem;border:none;background:#ff4b4b;color:#fff;font:600 1rem sans-serif;" +
        "box-shadow:0 2px 8px rgba(0,0,0,.3);cursor:pointer";
      q.button.onclick = () => { const clip = q.blocked; q.blocked = null; q.showTap(false); if (clip) q.start(clip, true); };
      document.body.appendChild(q.button);
    }
    q.button.style.display = show ? "block" : "none";
  };
  q.silence = (why) => {  // why: "new turn", or the user's "stop", "mic", "barge": then the turn stays muted
    if (why !== "new turn") q.muted = q.turn;
    q.pending = [];
    q.writing = false;
    if (q.blocked) { q.blocked = null; q.showTap(false); }
    if (q.audio) {
      q.audio.pause(); q.audio = null; q.playing = null;
      q.entry.end = now(); q.entry.stopped = true; q.entry.why = why;
    }
  };
  q.start = (clip, tapped) => {
    const player = q.player, token = {};
    const entry = { turn: q.turn, seq: clip.seq, queued: clip.queued, start: now(), end: null, error: null,
                    stopped: false, why: null, tapped: !!tapped };
    q.audio = player; q.entry = entry; q.playing = token; q.log.push(entry);
    const done = (error) => {
      if (q.playing !== token) return;
      entry.end = now(); entry.error = error ? String(error) : null;
      q.audio = null; q.playing = null;
      q.next();
    };
    player.onended = () => done(null);
    player.onerror = () => done("cannot play");
    player.src = clip.src;
    player.defaultPlaybackRate = player.playbackRate = q.rate;
    player.play().catch((error) => {
      if (q.playing !== token) return;
      if (error && error.name === "NotAllowedError") {  // autoplay refused: wait here for a tap
        entry.end = now(); entry.error = "autoplay refused";
        q.audio = null; q.playing = null; q.blocked = clip; q.showTap(true);
      } else {
        done(error);  // a clip that cannot play is skipped, never stalls the queue
      }
    });
  };
  q.next = () => {
    if (q.audio || q.blocked || !q.pending.length || q.pending[0].seq !== q.expected) return;
    q.expected += 1;
    q.start(q.pending.shift(), false);
  };
  // The chat box's microphone silences the reply: the user is about to speak.
  document.addEventListener("click", (event) => {
    if (event.target.closest && event.target.closest('[data-testid="stChatInputMicButton"]')) q.silence("mic");
  }, true);
  return q;
}

export default function (component) {
  const data = component.data || {};
  const q = (window.__talkSpeech ||= createQueue());
  if (data.rate) { q.rate = data.rate; if (q.audio) q.player.playbackRate = data.rate; }
  if (data.stop) { q.silence("stop"); q.turn = null; return; }
  if (!data.turn || data.turn === q.muted) return;  // clips still arriving for a reply the user silenced
  const heard = Number(data.turn.split("-")[1]);  // the call mode utterance it answers (0: typed)
  if (heard > 0 && heard <= (q.bargedUpTo || 0)) return;  // talked over before it began
  if (data.turn !== q.turn) {
    q.silence("new turn");
    Object.assign(q, { turn: data.turn, expected: 0, seen: new Set(), writing: true });
  }
  for (const clip of data.clips || []) {
    if (!q.seen.has(clip.seq)) { q.seen.add(clip.seq); q.pending.push({ ...clip, queued: performance.now() }); }
  }
  q.pending.sort((a, b) => a.seq - b.seq);
  if (data.total !== undefined && data.total !== null) q.writing = false;
  q.next();
}
"""

_mount = st.components.v2.component("talk_speech_queue", js=JS)
MIME = {"mp3": "audio/mpeg", "wav": "audio/wav"}
RATES = (0.75, 1.5)  # the speech rate slider's range


class SpeechQueue:
    """The clips of one reply, sent to the page's queue as they are synthesised.

    Made when the reply starts (the page then knows a reply is being written) and finished when it
    ends. The turn id starts with the exchange's item index, which call mode's barge-in names, and
    the id of the utterance it answers, whose clips the page drops once that was talked over.
    """

    def __init__(self, index: int, rate: float = 1.0, heard: int = 0):
        # index, the call mode utterance it answers (0: typed), and new for every reply (a regenerated one plays too)
        self.turn = f"{index}-{heard}-{secrets.token_hex(6)}"
        self.rate = rate
        self.box = st.empty()
        self.clips: list[dict] = []
        self._send("start")

    def play(self, audio: bytes, audio_format: str) -> None:
        src = f"data:{MIME.get(audio_format, 'audio/wav')};base64,{base64.b64encode(audio).decode()}"
        self.clips.append({"seq": len(self.clips), "src": src})
        self._send(str(len(self.clips)))

    def finish(self) -> None:
        """The reply is written: no more clips will come."""
        self._send("end", total=len(self.clips))

    def _send(self, name: str, **extra) -> None:
        with self.box:
            _mount(key=f"speech-{self.turn}-{name}", height="content",
                   data={"turn": self.turn, "clips": self.clips[-2:], "rate": self.rate, **extra})


def stop() -> None:
    """Silence whatever the queue is playing."""
    _mount(key=f"speech-stop-{secrets.token_hex(4)}", data={"stop": True}, height="content")


def turn_index(turn: str) -> int | None:
    """The item index a queue's turn id names (see SpeechQueue); None for anything else."""
    head = turn.partition("-")[0]
    return int(head) if head.isdigit() else None
