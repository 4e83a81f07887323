"""The GPU turn, side by side on one GPU: the original pipeline against the app's, plus the parts.

    python bench/gpu_turn.py --out DIR [--parts turn,stt,recompile,decode,restart] [--turns 8]
    python bench/gpu_turn.py --quick   # on the CPU, the tiny LLaVA and a tiny random Whisper: a smoke run

Run on the GPU machine (bench/gpu/run.sh prepares it). Random weights with the real
architectures (bench/gpu/build.py): LLaVA-1.5-7B, Whisper medium and large-v3-turbo; speed does
not depend on the weights. Both arms hear the same questions (espeak-ng WAVs made beforehand),
see the same image (bench/scene.py), and speak with the same engine (espeak-ng).

  original  openai-whisper medium transcribe() -> pipeline("image-to-text"), bitsandbytes 4-bit
            with fp16 compute, the whole reply -> TTS of the whole reply
  app       the app's CUDA defaults through core.chat.turn, as the page runs it: openai-whisper
            large-v3-turbo -> LLAVA_QUANT=4bit (HQQ + gemlite, compiled decode loop) streamed ->
            first sentence -> TTS of that sentence

Every turn starts at the end of a recording (the WAV bytes in hand, the image attached) and the
headline is voice-to-first-audio: until the first audio bytes exist. Random weights never say
"end of text", so both arms write max_new_tokens (96: a short reply); Whisper decodes at most
WHISPER_TOKENS tokens in every engine (a 3 s question is about 20), with no temperature fallback.

Parts (one JSON object, printed and written to DIR/gpu_turn.json as each part ends):
  turn       the two arms, alternating, --turns questions each, after one warm-up turn each
  stt        speech to text alone on a 3 s question: openai-whisper turbo (the app's engine,
             one window), openai-whisper medium transcribe() (the original), transformers Whisper
             turbo generate()
  recompile  20 app turns with growing conversations, other max_new_tokens and a second image:
             compiled graphs, recompilations and time to first token per turn
  decode     decode speed of the same LLaVA several ways (200 tokens, greedy, one 336-px image):
             fp16 generate() without and with a TextIteratorStreamer (the old streamed path),
             fp16 in the app's loop (eager), 4-bit candidates in the app's loop, compiled
             (HQQ + gemlite, torchao int4)
  restart    load + warm-up time of the app's model in a new process (inductor cache warm)

--quick runs the same parts on the CPU with tiny inputs (CI runs it: tests/slow/test_bench_quick.py):
the tiny random LLaVA (core/tiny_llava.py) loaded as the app loads it on a CPU (fp32, eager) in
place of the 4-bit one, random Whisper tiny in place of turbo and medium, fp32 in place of fp16,
the original arm's pipeline unquantised, one espeak-ng question, one turn per arm, 8 decode tokens;
torchao is skipped (its int4 kernels need CUDA). A smoke run: its figures are not timings.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MAX_NEW_TOKENS = 96
WHISPER_TOKENS = 24
DECODE_TOKENS = 200
CACHE_TOKENS = 2048
DEVICE = "cuda"  # "cpu" with --quick
WHISPER_SIZES = {"app": "large-v3-turbo", "original": "medium"}  # random weights of these (bench/gpu/build.py)
STT_RUNS = 8  # per engine, after a warm-up
RECOMPILE_TURNS = 20
QUICK = False  # --quick: see the docstring

from bench.scene import QUESTIONS  # noqa: E402

RESULT: dict = {}
OUT: Path = Path(".")


def save() -> None:
    (OUT / "gpu_turn.json").write_text(json.dumps(RESULT, indent=1))


def median(values) -> float:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 4) if values else float("nan")


def gib(n: float) -> float:
    return round(n / 2**30, 2)


def cuda() -> bool:
    return DEVICE == "cuda"


def dtype():
    import torch

    return torch.float16 if cuda() else torch.float32


def sync() -> None:
    import torch

    if cuda():
        torch.cuda.synchronize()


def allocated() -> int:
    import torch

    return torch.cuda.memory_allocated() if cuda() else 0


def peak() -> int:
    import torch

    return torch.cuda.max_memory_allocated() if cuda() else 0


def reset_peak() -> None:
    import torch

    if cuda():
        torch.cuda.reset_peak_memory_stats()


def environment() -> dict:
    import torch
    import transformers

    versions = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}
    for name in ("hqq", "gemlite", "torchao", "bitsandbytes", "whisper", "triton"):
        try:
            versions[name] = getattr(__import__(name), "__version__", "installed")
        except Exception as e:  # noqa: BLE001  (recorded, not fatal)
            versions[name] = f"missing ({type(e).__name__})"
    return {
        "device": torch.cuda.get_device_name(0) if cuda() else f"cpu ({os.cpu_count()} cores): --quick, a smoke run",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": versions,
        "settings": {"max_new_tokens": MAX_NEW_TOKENS, "whisper_tokens": WHISPER_TOKENS, "cache_tokens": CACHE_TOKENS,
                     "decode_tokens": DECODE_TOKENS, "greedy": True},
    }


class TimedSpeaker:
    """espeak-ng, noting when each piece of audio is ready."""

    def __init__(self):
        from core.engines.tts import EspeakSpeaker

        self.inner = EspeakSpeaker()
        self.name = self.inner.name
        self.calls: list[tuple[float, float]] = []

    def speak(self, text: str, language: str = "en"):
        start = time.perf_counter()
        speech = self.inner.speak(text, language)
        self.calls.append((start, time.perf_counter()))
        return speech


def app_transcriber(path: Path):
    from core.engines.stt import OpenAIWhisperTranscriber

    transcriber = OpenAIWhisperTranscriber(str(path), DEVICE)
    transcriber.sample_len = WHISPER_TOKENS
    return transcriber


def app_turn(settings, llava, transcriber, audio: bytes, image: bytes, options) -> dict:
    """core.chat.turn as the page runs it; seconds since the end of the recording."""
    from core.chat import turn
    from core.chat.session import ChatSession
    from core.engines.api import Engines

    session = ChatSession(settings)
    session.attach_image(image)
    speaker = TimedSpeaker()
    engines = Engines(llava, transcriber, speaker)
    start = time.perf_counter()
    asked = turn.ask(session, engines, turn.TurnInput(audio=audio))
    if not isinstance(asked, turn.Asked):
        raise RuntimeError(f"turn rejected: {asked}")
    marks = {"stt_s": time.perf_counter() - start}
    done = None
    for event in turn.answer(session, engines, asked.index, options, timings=asked.timings):
        now = time.perf_counter() - start
        if isinstance(event, turn.Token):
            marks.setdefault("first_token_s", now)
        elif isinstance(event, turn.Sentence):
            marks.setdefault("first_sentence_s", now)
            marks.setdefault("first_sentence_words", len(event.text.split()))
        elif isinstance(event, turn.Done):
            done = event.answer
    start_tts, end_tts = speaker.calls[0]
    marks.update(first_audio_s=end_tts - start, tts_first_s=end_tts - start_tts,
                 tokens_per_s=done.timings.get("tokens_per_s"), ttft_s=done.timings.get("ttft_s"),
                 reply_tokens=done.timings.get("completion_tokens"))
    return marks


def original_turn(whisper_model, pipe, audio: bytes, image, speaker_factory) -> dict:
    """The original script: transcribe, the whole reply through the pipeline, TTS of all of it."""
    from core.media import load_audio

    speaker = speaker_factory()
    start = time.perf_counter()
    samples = load_audio(audio, max_seconds=60).samples
    text = whisper_model.transcribe(samples, fp16=cuda(), temperature=0.0, sample_len=WHISPER_TOKENS,
                                    condition_on_previous_text=False)["text"].strip()
    stt = time.perf_counter() - start
    prompt = f"USER: <image>\n{text}\nASSISTANT:"
    output = pipe(image, prompt=prompt, generate_kwargs={"max_new_tokens": MAX_NEW_TOKENS, "do_sample": False})
    reply = output[0]["generated_text"]
    generated = time.perf_counter() - start
    speaker.speak(reply[-2000:])
    (tts_start, tts_end), = speaker.calls
    return {"stt_s": stt, "first_token_s": generated, "first_sentence_s": generated, "tts_first_s": tts_end - tts_start,
            "first_audio_s": tts_end - start, "generate_s": generated - stt}


def load_app_model(model_dir: Path, device: str = "cuda") -> tuple[object, dict]:
    """The app's model as the app loads it on that device: 4-bit on CUDA, fp32 on the CPU."""
    from core.engines.vlm import LlavaModel

    global DEVICE
    DEVICE = device
    reset_peak()
    before = allocated()
    steps: list[tuple[float, str]] = []
    start = time.perf_counter()
    llava = LlavaModel.load(str(model_dir), "4bit" if cuda() else "none", device, cache_tokens=CACHE_TOKENS if cuda() else None,
                            progress=lambda m: steps.append((round(time.perf_counter() - start, 2), m)))
    seconds = time.perf_counter() - start
    return llava, {"load_and_warm_up_s": round(seconds, 2), "steps": steps,
                   "vram_after_load_gib": gib(allocated() - before), "vram_peak_during_load_gib": gib(peak() - before)}


def part_turn(ctx) -> None:
    import io

    import whisper
    from PIL import Image

    from bench.gpu.build import whisper as build_whisper
    from core.config import Settings
    from core.engines.api import GenerationOptions

    settings = Settings.from_env({"LOG_DIR": str(OUT / "logs"), "LLAVA_MODEL": "unused"})
    options = GenerationOptions(temperature=0, max_new_tokens=MAX_NEW_TOKENS)
    audios, image = ctx["audios"], ctx["image"]
    transcriber = app_transcriber(build_whisper(OUT / "turbo.pt", WHISPER_SIZES["app"]))
    llava = ctx["llava"]
    resident = allocated()  # the app's models, nothing else yet
    reset_peak()
    app_turn(settings, llava, transcriber, audios[0], image, options)
    app_vram = {"resident_gib": gib(resident), "peak_while_answering_gib": gib(peak())}
    original_whisper = whisper.load_model(str(build_whisper(OUT / "medium.pt", WHISPER_SIZES["original"])), device=DEVICE)
    start = time.perf_counter()
    pipe, task = original_pipeline(ctx["model_dir"])
    original_load = time.perf_counter() - start
    picture = Image.open(io.BytesIO(image)).convert("RGB")

    def original(audio):
        return original_turn(original_whisper, lambda *a, **k: _pipe_call(pipe, task, *a, **k), audio, picture,
                             TimedSpeaker)

    def app(audio):
        return app_turn(settings, llava, transcriber, audio, image, options)

    original(audios[0]), app(audios[0])  # warm-up, not counted
    runs = {"original": [], "app": []}
    for i in range(ctx["turns"]):
        audio = audios[i % len(audios)]
        for arm in (["original", "app"] if i % 2 == 0 else ["app", "original"]):
            runs[arm].append((original if arm == "original" else app)(audio))
    summary = {arm: {key: median(r.get(key) for r in rows) for key in rows[0]} for arm, rows in runs.items()}
    o, a = summary["original"]["first_audio_s"], summary["app"]["first_audio_s"]
    RESULT["turn"] = {
        "headline_voice_to_first_audio_median_s": {"original": o, "app": a, "ratio_original_over_app": round(o / a, 1)},
        "median_s": summary,
        "app_first_audio_range_s": [round(min(r["first_audio_s"] for r in runs["app"]), 3),
                                    round(max(r["first_audio_s"] for r in runs["app"]), 3)],
        "turns_per_arm": len(runs["app"]),
        "original_task": task, "original_load_s": round(original_load, 1),
        "vram_app_llava_plus_whisper": app_vram,
    }


def original_pipeline(model_dir: Path):
    """The original script's model: bitsandbytes NF4 with fp16 compute on CUDA (unquantised fp32 on the CPU)."""
    from transformers import pipeline

    kwargs: dict = {"dtype": dtype()}
    if cuda():
        from core.engines.quant import bitsandbytes_config

        kwargs["quantization_config"] = bitsandbytes_config("nf4")
    device_map = {"": 0 if cuda() else "cpu"}
    try:
        return pipeline("image-to-text", model=str(model_dir), device_map=device_map, model_kwargs=kwargs), "image-to-text"
    except Exception:  # noqa: BLE001  (the task name changed in transformers 5)
        return (pipeline("image-text-to-text", model=str(model_dir), device_map=device_map, model_kwargs=kwargs),
                "image-text-to-text")


def _pipe_call(pipe, task, image, prompt, generate_kwargs):
    if task == "image-to-text":
        return pipe(image, prompt=prompt, generate_kwargs=generate_kwargs)
    out = pipe(images=image, text=prompt, generate_kwargs=generate_kwargs, return_full_text=False)
    return [{"generated_text": out[0]["generated_text"]}]


def part_stt(ctx) -> None:
    import torch
    import whisper
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from bench.gpu.build import WHISPER_DIMS
    from bench.gpu.build import whisper as build_whisper
    from core.media import load_audio

    clip = load_audio(ctx["audios"][0], max_seconds=60).samples
    turbo_path = OUT / "turbo.pt"
    turbo = app_transcriber(turbo_path if turbo_path.exists() else build_whisper(turbo_path, WHISPER_SIZES["app"]))
    medium = whisper.load_model(str(OUT / "medium.pt") if (OUT / "medium.pt").exists()
                                else str(build_whisper(OUT / "medium.pt", WHISPER_SIZES["original"])), device=DEVICE)
    dims = WHISPER_DIMS[WHISPER_SIZES["app"]]
    config = WhisperConfig(vocab_size=dims["n_vocab"], num_mel_bins=dims["n_mels"], d_model=dims["n_audio_state"],
                           encoder_layers=dims["n_audio_layer"], encoder_attention_heads=dims["n_audio_head"],
                           decoder_layers=dims["n_text_layer"], decoder_attention_heads=dims["n_text_head"],
                           encoder_ffn_dim=4 * dims["n_audio_state"], decoder_ffn_dim=4 * dims["n_text_state"],
                           max_source_positions=1500, max_target_positions=448)
    with torch.device(DEVICE):
        hf = WhisperForConditionalGeneration(config).to(dtype()).eval()
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(clip)), dims["n_mels"], device=DEVICE)

    # The words of the question as Whisper's tokenizer counts them, plus its end token: what a
    # trained model would decode for this clip.
    spoken = len(whisper.tokenizer.get_tokenizer(True, num_languages=100).encode(" " + QUESTIONS[0])) + 1
    rows = {}
    for tokens in (WHISPER_TOKENS,) if QUICK else (spoken, WHISPER_TOKENS):
        turbo.sample_len = tokens

        def hf_turbo(n=tokens):
            with torch.inference_mode():
                hf.generate(input_features=mel.unsqueeze(0).to(dtype()), max_new_tokens=n, min_new_tokens=n)

        engines = {
            f"openai-whisper {WHISPER_SIZES['app']}, one window (the app)": lambda: turbo.transcribe(clip),
            f"openai-whisper {WHISPER_SIZES['original']} transcribe() (the original)": lambda n=tokens: medium.transcribe(
                clip, fp16=cuda(), temperature=0.0, sample_len=n, condition_on_previous_text=False),
            f"transformers Whisper {WHISPER_SIZES['app']} generate()": hf_turbo,
        }
        times = {name: [] for name in engines}
        for run in engines.values():
            run()
        for _ in range(STT_RUNS):
            for name, run in engines.items():
                sync()
                start = time.perf_counter()
                run()
                sync()
                times[name].append(time.perf_counter() - start)
        rows[f"{tokens} tokens"] = {k: median(v) for k, v in times.items()}
    turbo.sample_len = WHISPER_TOKENS
    RESULT["stt"] = {"clip_s": round(len(clip) / 16000, 2), "median_s": rows, "question_tokens": spoken,
                     "note": "random weights: each engine decodes exactly that many tokens (the question's own "
                             f"count, and {WHISPER_TOKENS}), greedy, no temperature fallback"}


def part_recompile(ctx) -> None:
    import torch

    from core.chat import turn
    from core.chat.session import ChatSession
    from core.config import Settings
    from core.engines.api import Engines, GenerationOptions
    from core.engines.tts import EspeakSpeaker

    counters = torch._dynamo.utils.counters
    llava = ctx["llava"]
    settings = Settings.from_env({"LOG_DIR": str(OUT / "logs"), "LLAVA_MODEL": "unused"})
    session = ChatSession(settings)
    engines = Engines(llava, None, EspeakSpeaker())
    before = {"unique_graphs": counters["stats"]["unique_graphs"], "frames_ok": counters["frames"]["ok"]}
    rows = []
    session.attach_image(ctx["image"])
    for i in range(RECOMPILE_TURNS):
        if i == RECOMPILE_TURNS // 2:
            session.attach_image(_png(1024, 600))  # another image, another size
        asked = turn.ask(session, engines, turn.TurnInput(text=f"Question {i}: " + "tell me more " * (i % 4)))
        options = GenerationOptions(temperature=0 if i % 3 else 0.7, max_new_tokens=[40, 120, 250, 64][i % 4])
        done = None
        for event in turn.answer(session, engines, asked.index, options, speak=False):
            if isinstance(event, turn.Done):
                done = event.answer
        rows.append({"ttft_s": done.timings.get("ttft_s"), "tokens_per_s": done.timings.get("tokens_per_s"),
                     **llava.decoder.last})
    after = {"unique_graphs": counters["stats"]["unique_graphs"], "frames_ok": counters["frames"]["ok"]}
    RESULT["recompile"] = {
        "turns": len(rows), "graphs_compiled_during_turns": after["unique_graphs"] - before["unique_graphs"],
        "frames_compiled_during_turns": after["frames_ok"] - before["frames_ok"],
        "ttft_s_median": median(r["ttft_s"] for r in rows), "ttft_s_max": max(r["ttft_s"] for r in rows),
        "tokens_per_s_median": median(r["tokens_per_s"] for r in rows), "per_turn": rows,
    }


def _png(width: int, height: int) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 40)).save(buffer, "PNG")
    return buffer.getvalue()


def decode_timing(llava, inputs_fn, label: str, reps: int = 2) -> dict:
    """Time to first chunk and decode tok/s of a model's stream(), greedy, DECODE_TOKENS tokens."""

    from core.engines.api import GenerationOptions

    options = GenerationOptions(temperature=0, max_new_tokens=DECODE_TOKENS)
    exchanges, images = inputs_fn()
    rows = []
    for _ in range(reps + 1):  # the first is a warm-up
        sync()
        start = time.perf_counter()
        first, generation = None, llava.stream(exchanges, images, options)
        for _ in generation:
            first = first or time.perf_counter()
        end = time.perf_counter()
        rows.append((first - start, end - first, generation.info.completion_tokens))
    rows = rows[1:]
    return {"path": label, "ttft_s": median(r[0] for r in rows),
            "decode_tok_s": round(median((r[2] - 1) / r[1] for r in rows), 1), "tokens": rows[0][2],
            "prefill_s": llava.decoder.last.get("prefill_s"), "prompt_tokens": llava.decoder.last.get("prompt_tokens")}


def part_decode(ctx) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor, TextIteratorStreamer

    from core.conversation import Exchange, Question
    from core.engines.vlm import LlavaModel

    model_dir, image = ctx["model_dir"], ctx["picture"]

    def question():
        return [Exchange(Question("Describe the picture in detail, please.", image="img"))], {"img": image}

    rows = []
    RESULT["decode"] = rows
    app_path = "HQQ 4-bit + gemlite, app loop, compiled (LLAVA_QUANT=4bit)" if cuda() else "fp32, app loop (the CPU's)"
    rows.append({**decode_timing(ctx["llava"], question, app_path), "vram_gib": ctx["app_load"]["vram_after_load_gib"]})
    save()
    processor = AutoProcessor.from_pretrained(model_dir)
    fp16 = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=dtype(), device_map={"": DEVICE}).eval()
    eager = LlavaModel(fp16, processor, "fp16 eager")
    exchanges, images = question()
    inputs = eager.inputs(exchanges, images).to(DEVICE, dtype())
    length = inputs["input_ids"].shape[1]

    def timed_generate(streamer: bool) -> tuple[float, float]:
        kwargs = dict(**inputs, max_new_tokens=DECODE_TOKENS, min_new_tokens=DECODE_TOKENS, do_sample=False)
        sync()
        start = time.perf_counter()
        if not streamer:
            first_done = []

            class First:
                def put(self, value):
                    if len(first_done) == 1:
                        sync()
                        first_done.append(time.perf_counter())
                    first_done.append(None) if len(first_done) == 0 else None

                def end(self):
                    pass

            fp16.generate(**kwargs, streamer=First())
            sync()
            return first_done[1] - start, time.perf_counter() - first_done[1]
        stream = TextIteratorStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        worker = threading.Thread(target=fp16.generate, kwargs={**kwargs, "streamer": stream})
        worker.start()
        first = None
        for _ in stream:
            first = first or time.perf_counter()
        worker.join()
        return first - start, time.perf_counter() - first

    for label, streamer in (("fp16 generate(), no streamer", False),
                            ("fp16 generate() + TextIteratorStreamer in a thread (the old stream())", True)):
        timed_generate(streamer)
        samples = [timed_generate(streamer) for _ in range(2)]
        rows.append({"path": label, "ttft_s": median(s[0] for s in samples),
                     "decode_tok_s": round((DECODE_TOKENS - 1) / median(s[1] for s in samples), 1)})
        save()
    rows.append(decode_timing(eager, question, "fp16, app loop, eager"))
    save()
    RESULT["decode_prompt_tokens"] = length


def part_torchao(ctx) -> None:
    """The other 4-bit candidate in the same loop: torchao int4 weight-only (bf16)."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from core.conversation import Exchange, Question
    from core.engines.vlm import LlavaModel

    model_dir, image = ctx["model_dir"], ctx["picture"]
    processor = AutoProcessor.from_pretrained(model_dir)

    def question():
        return [Exchange(Question("Describe the picture in detail, please.", image="img"))], {"img": image}

    rows = RESULT.setdefault("decode", [])
    before = torch.cuda.memory_allocated()
    try:
        from torchao.quantization import Int4WeightOnlyConfig, quantize_

        bf16 = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.bfloat16, device_map={"": 0}).eval()
        quantize_(bf16.model.language_model, Int4WeightOnlyConfig(group_size=128, int4_packing_format="tile_packed_to_4d"))
        torch.cuda.reset_peak_memory_stats()
        ao = LlavaModel(bf16, processor, "torchao int4", cache_tokens=CACHE_TOKENS, compile=True)
        start = time.perf_counter()
        ao.warm_up()
        rows.append({**decode_timing(ao, question, "torchao int4 (tile_packed_to_4d), bf16, app loop, compiled"),
                     "warm_up_s": round(time.perf_counter() - start, 1), "vram_gib": gib(torch.cuda.memory_allocated() - before)})
    except Exception as e:  # noqa: BLE001  (a candidate that fails is recorded)
        rows.append({"path": "torchao int4", "error": f"{type(e).__name__}: {e}"[:300]})
    save()
    gc.collect()
    torch.cuda.empty_cache()


def part_restart(ctx) -> None:
    """The app's model loaded again in a new process: the inductor, Triton and gemlite caches are
    warm now (a first start on this machine filled them)."""
    code = ("import sys, json; sys.path.insert(0, '.'); from bench.gpu_turn import load_app_model; "
            f"_, info = load_app_model(__import__('pathlib').Path({str(ctx['model_dir'])!r}), {DEVICE!r}); "
            "print(json.dumps(info))")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=400)
    RESULT["restart"] = {"wall_s": round(time.perf_counter() - start, 1),
                         "info": json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else done.stderr[-800:]}


def quick_mode(out: Path) -> dict:
    """--quick: the CPU, tiny models, one question, a few tokens (see the docstring); returns the context."""
    global DEVICE, MAX_NEW_TOKENS, WHISPER_TOKENS, DECODE_TOKENS, STT_RUNS, RECOMPILE_TURNS, WHISPER_SIZES, QUICK
    from tests.tiny_llava import build_tiny_llava

    DEVICE, MAX_NEW_TOKENS, WHISPER_TOKENS, DECODE_TOKENS, STT_RUNS, RECOMPILE_TURNS, QUICK = "cpu", 8, 8, 8, 1, 2, True
    WHISPER_SIZES = {"app": "tiny", "original": "tiny"}
    RESULT["skipped"] = {"torchao": "its int4 kernels (tile_packed_to_4d) need CUDA"}
    wav = out / "question.wav"
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(wav), QUESTIONS[0]], check=True)
    return {"model_dir": build_tiny_llava(out / "tiny-llava"), "audios": [wav.read_bytes()]}


def gpu_mode(model_dir: Path) -> dict:
    """The GPU run: LLaVA-1.5-7B with random weights (built once), the questions bench/gpu/run.sh spoke."""
    from bench.gpu.build import llava_15_7b

    built = {}
    if not (model_dir / "config.json").exists():
        start = time.perf_counter()
        llava_15_7b(model_dir)
        built["build_and_save_s"] = round(time.perf_counter() - start, 1)
    audios = [p.read_bytes() for p in sorted(Path(os.environ.get("BENCH_AUDIO", "bench/gpu/audio")).glob("*.wav"))]
    return {"model_dir": model_dir, "audios": audios, "built": built}


def main() -> None:
    global OUT
    import io
    import tempfile

    from bench.quick import parse_args

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="where the JSON and the models go (required on the GPU; --quick: a temp folder)")
    parser.add_argument("--model-dir", default="/tmp/llava-1.5-7b-random")
    parser.add_argument("--parts", default="turn,stt,recompile,decode,torchao,restart")
    parser.add_argument("--turns", type=int, default=8)
    args = parse_args(parser, parts="turn,stt,recompile,decode,restart", turns=1)
    if not args.out and not args.quick:
        parser.error("--out is required")
    OUT = Path(args.out or tempfile.mkdtemp(prefix="gpu_turn-"))
    OUT.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    from bench.scene import picture

    ctx = quick_mode(OUT) if args.quick else gpu_mode(Path(args.model_dir))
    RESULT["environment"] = {**environment(), **ctx.pop("built", {})}
    save()
    image = picture()
    ctx.update(image=image, turns=args.turns, picture=Image.open(io.BytesIO(image)).convert("RGB"))
    ctx["llava"], ctx["app_load"] = load_app_model(ctx["model_dir"], DEVICE)
    RESULT["app_load"] = ctx["app_load"]
    save()
    for part in args.parts.split(","):
        run_part(part, ctx)
    print(json.dumps(RESULT, indent=1))


def run_part(part: str, ctx: dict) -> None:
    start = time.perf_counter()
    try:
        {"turn": part_turn, "stt": part_stt, "recompile": part_recompile, "decode": part_decode,
         "torchao": part_torchao, "restart": part_restart}[part](ctx)
    except Exception as e:  # noqa: BLE001  (the other parts still run; the error is in the JSON)
        RESULT.setdefault("errors", {})[part] = traceback.format_exc()[-2000:]
        print(f"part {part} failed: {e}", file=sys.stderr)
    RESULT.setdefault("part_seconds", {})[part] = round(time.perf_counter() - start, 1)
    RESULT["vram_peak_process_gib"] = gib(peak())
    save()


if __name__ == "__main__":
    main()
