// The page's audio queue (ui/speech_queue.py says how the chat page feeds it). A turn is a reply id,
// {index, heard, hex} (ui.speech_queue.ReplyId): the same reply when all three are equal.
const sameTurn = (a, b) => !!a && !!b && a.index === b.index && a.heard === b.heard && a.hex === b.hex;

function createQueue() {
  const q = { turn: null, expected: 0, pending: [], seen: new Set(), audio: null, entry: null, log: [],
              rate: 1, writing: false, muted: null, blocked: null, player: new Audio(), button: null, playing: null };
  const now = () => performance.now();
  q.busy = () => q.writing || q.audio !== null || q.pending.length > 0 || q.blocked !== null;
  q.showTap = (show) => {
    if (!q.button) {
      q.button = document.createElement("button");
      q.button.textContent = "\u{1F50A} Tap to hear the reply";
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
  if (!data.turn || sameTurn(data.turn, q.muted)) return;  // clips still arriving for a reply the user silenced
  const heard = data.turn.heard;  // the call mode utterance it answers (0: typed)
  if (heard > 0 && heard <= (q.bargedUpTo || 0)) return;  // talked over before it began
  if (!sameTurn(data.turn, q.turn)) {
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
