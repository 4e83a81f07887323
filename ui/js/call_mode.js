// Hands-free call mode in the page (ui/call_mode.py says what it does and what it sends to Python).

// Runs in the AudioWorklet (its source is handed over as text): 20 ms frames to the page.
function talkFrames() {
  class TalkFrames extends AudioWorkletProcessor {
    constructor(options) { super(); this.size = options.processorOptions.size; this.buf = new Float32Array(this.size); this.n = 0; }
    process(inputs) {
      const channel = inputs[0] && inputs[0][0];
      if (channel) for (let i = 0; i < channel.length; i++) {
        this.buf[this.n++] = channel[i];
        if (this.n === this.size) { this.port.postMessage(this.buf); this.buf = new Float32Array(this.size); this.n = 0; }
      }
      return true;
    }
  }
  registerProcessor("talk-frames", TalkFrames);
}
const WORKLET = `(${talkFrames})();`;

const FRAME_MS = 20, FLOOR_MS = 5000, ONSET_FRAMES = 3, PREROLL_MS = 300, MIN_SPEECH_MS = 250, MAX_MS = 60000;
const LABELS = { off: "Talk without clicking", starting: "Starting the microphone…", listening: "Listening — just talk",
                 hearing: "Hearing you…", thinking: "Thinking…", speaking: "Speaking — talk to interrupt" };

function wavBase64(frames, rate) {
  const length = frames.reduce((n, f) => n + f.length, 0);
  const step = rate / 16000, out = new Int16Array(Math.floor(length / step));
  const all = new Float32Array(length);
  let at = 0;
  for (const f of frames) { all.set(f, at); at += f.length; }
  for (let i = 0; i < out.length; i++) {  // average over each output sample's span: a simple low-pass
    const from = Math.floor(i * step), to = Math.max(from + 1, Math.floor((i + 1) * step));
    let sum = 0;
    for (let j = from; j < to; j++) sum += all[j];
    out[i] = Math.max(-1, Math.min(1, sum / (to - from))) * 32767;
  }
  const header = new DataView(new ArrayBuffer(44));
  const text = (o, s) => [...s].forEach((c, i) => header.setUint8(o + i, c.charCodeAt(0)));
  text(0, "RIFF"); header.setUint32(4, 36 + out.length * 2, true); text(8, "WAVEfmt ");
  header.setUint32(16, 16, true); header.setUint16(20, 1, true); header.setUint16(22, 1, true);
  header.setUint32(24, 16000, true); header.setUint32(28, 32000, true); header.setUint16(32, 2, true);
  header.setUint16(34, 16, true); text(36, "data"); header.setUint32(40, out.length * 2, true);
  const bytes = new Uint8Array(44 + out.length * 2);
  bytes.set(new Uint8Array(header.buffer), 0);
  bytes.set(new Uint8Array(out.buffer), 44);
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

function createCall() {
  const call = { on: false, stream: null, ctx: null, state: "starting", error: null, level: 0, floor: -90, history: [],
                 loud: 0, quiet: 0, speaking: false, frames: [], preroll: [], samples: 0, t0: null, rate: null,
                 sent: 0, handled: 0, silenceMs: 700, send: null, ui: null, log: [], current: null };
  const speech = () => window.__talkSpeech;
  const busy = () => call.sent > call.handled || (speech() && speech().busy());

  call.render = () => {
    const ui = call.ui;
    if (!ui || !ui.root.isConnected) return;
    let shown = call.error ? "error" : !call.on ? "off" : call.speaking ? "hearing" : call.state;
    if (shown === "listening" && busy()) shown = speech() && speech().audio ? "speaking" : "thinking";
    ui.root.dataset.state = shown;
    ui.label.textContent = call.error || LABELS[shown];
    ui.toggle.textContent = call.on ? "End call" : "Start hands-free call";
    ui.bar.style.width = call.on ? `${Math.round(Math.max(0, Math.min(1, (call.level + 60) / 50)) * 100)}%` : "0";
  };

  call.frame = (frame) => {
    const rate = call.rate, frameMs = 1000 * frame.length / rate;
    if (call.t0 === null) call.t0 = performance.now() - frameMs;  // when sample 0 was heard, near enough
    let energy = 0;
    for (let i = 0; i < frame.length; i++) energy += frame[i] * frame[i];
    const db = 10 * Math.log10(energy / frame.length + 1e-10);
    call.level = db;
    // The noise floor: the quietest frame of the last 5 s (minimum statistics). Pauses between words
    // fall to it, so it follows a fan or a street while someone talks, and never locks on the speech.
    call.history.push(db);
    if (call.history.length * frameMs > FLOOR_MS) call.history.shift();
    call.floor = Math.max(-90, Math.min(...call.history));
    const threshold = Math.max(call.floor + 12, -45);
    if (!call.speaking) {
      call.preroll.push(frame);
      while (call.preroll.length * frameMs > PREROLL_MS) call.preroll.shift();
      call.loud = db > threshold ? call.loud + 1 : 0;
      if (call.loud >= ONSET_FRAMES) call.onset(frame.length);
    } else {
      call.frames.push(frame);
      if (db > threshold - 3) { call.quiet = 0; call.current.last = call.samples + frame.length; }
      else call.quiet += frameMs;
      if (call.quiet >= call.silenceMs || call.frames.length * frameMs >= MAX_MS) call.end();
    }
    call.samples += frame.length;
  };

  call.onset = (frameLength) => {
    const entry = { onset_sample: call.samples + frameLength - ONSET_FRAMES * frameLength, onset_at: performance.now(),
                    end_sample: null, end_at: null, sent_at: null, barge: false, dropped: false,
                    last: call.samples + frameLength,
                    first_sample: call.samples + frameLength - call.preroll.reduce((n, f) => n + f.length, 0) };
    call.speaking = true; call.quiet = 0; call.current = entry; call.log.push(entry);
    call.frames = call.preroll; call.preroll = [];
    if (busy()) {  // barge-in: the reply's voice stops now, in the page; Python hears of it after
      const q = speech();
      const spoken = !!(q && (q.audio || q.pending.length || q.blocked));
      const turn = q ? q.turn : null;
      if (q) { q.silence("barge"); q.bargedUpTo = call.sent; }  // and clips of replies to those still to come
      entry.barge = true;
      if (call.send) call.send("barge", { turn, spoken, upto: call.sent });
    }
  };

  call.end = () => {
    const entry = call.current;
    call.speaking = false; call.loud = 0; call.current = null;
    entry.end_sample = entry.last; entry.end_at = performance.now();
    const keep = entry.last + Math.round(0.2 * call.rate) - entry.first_sample;  // trailing silence cut to 0.2 s
    const frames = [];
    let kept = 0;
    for (const f of call.frames) { if (kept >= keep) break; frames.push(f); kept += f.length; }
    call.frames = [];
    if ((entry.last - entry.onset_sample) * 1000 / call.rate < MIN_SPEECH_MS) { entry.dropped = true; return; }
    call.sent += 1;
    entry.id = call.sent;
    entry.sent_at = performance.now();
    if (call.send) call.send("utterance", { id: call.sent, wav: wavBase64(frames, call.rate) });
  };

  call.start = async () => {
    call.on = true; call.error = null; call.state = "starting";
    try {
      call.stream = await navigator.mediaDevices.getUserMedia({ audio: {
        echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 } });
      call.ctx = new AudioContext();
      call.rate = call.ctx.sampleRate;
      const url = URL.createObjectURL(new Blob([WORKLET], { type: "text/javascript" }));
      await call.ctx.audioWorklet.addModule(url);
      const node = new AudioWorkletNode(call.ctx, "talk-frames",
        { processorOptions: { size: Math.round(call.rate * FRAME_MS / 1000) } });
      node.port.onmessage = (event) => { if (call.on) call.frame(event.data); };
      const mute = call.ctx.createGain();
      mute.gain.value = 0;
      call.ctx.createMediaStreamSource(call.stream).connect(node).connect(mute).connect(call.ctx.destination);
      call.state = "listening";
    } catch (error) {
      call.error = `Microphone unavailable (${error.name || error}): allow it in the browser, then start the call again.`;
      call.stop();
    }
  };

  call.stop = () => {
    call.on = false; call.speaking = false; call.frames = []; call.preroll = []; call.history = [];
    if (call.stream) call.stream.getTracks().forEach((t) => t.stop());
    if (call.ctx) call.ctx.close();
    call.stream = null; call.ctx = null; call.t0 = null; call.samples = 0; call.state = "starting";
  };

  const tick = () => { call.render(); requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
  return call;
}

// The call bar lives in document.body, outside Streamlit's elements: no rerun hides it or its state, and
// starting or ending a call is the browser's business (no rerun, so no reply is cut by it).
function callBar(call, css) {
  if (!document.getElementById("talk-call-style")) {
    const style = document.createElement("style");
    style.id = "talk-call-style";
    style.textContent = css;
    document.head.appendChild(style);
  }
  const root = document.createElement("div");
  root.className = "talk-call";
  root.dataset.testid = "talk-call";
  root.innerHTML = '<button type="button" class="toggle" data-testid="talk-call-toggle"></button>' +
    '<span class="dot"></span><span class="label" role="status" aria-live="polite"></span>' +
    '<span class="meter"><span class="bar"></span></span>';
  const toggle = root.querySelector(".toggle");
  toggle.onclick = () => { if (call.on) call.stop(); else { call.error = null; call.start(); } call.render(); };
  document.body.appendChild(root);
  return { root, toggle, label: root.querySelector(".label"), bar: root.querySelector(".bar") };
}

export default function (component) {
  const data = component.data || {};
  const call = (window.__talkCall ||= createCall());
  call.send = component.setTriggerValue;
  call.silenceMs = data.silence_ms || 700;
  call.handled = Math.max(call.handled, data.handled || 0);
  if (window.__talkSpeech) window.__talkSpeech.writing = false;  // a run ended: no reply is being written
  if (!data.available) {  // no speech to text: no call
    if (call.on) call.stop();
    if (call.ui) { call.ui.root.remove(); call.ui = null; }
    return;
  }
  if (!call.ui || !call.ui.root.isConnected) call.ui = callBar(call, data.css || "");
  call.render();
}
