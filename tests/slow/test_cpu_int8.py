"""LLAVA_QUANT=int8, the CPU default: torch's dynamic int8 weights (core.engines.quant.quantize_int8) and a
picture read as a whole plus one tile (core.engines.vlm.cpu_grid), on the tiny OneVision."""

import pytest
import torch
from PIL import Image

from core.conversation import Exchange, Question
from core.engines.decoding import Sampling
from core.engines.vlm import GenerationOptions, LlavaModel, max_image_tokens
from tests.tiny_llava import build_tiny_llava

pytestmark = pytest.mark.slow
PHOTO = "p" * 32


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny_llava(tmp_path_factory.mktemp("models") / "onevision", family="onevision")


@pytest.fixture(scope="module")
def int8(folder):
    return LlavaModel.load(str(folder), quant="int8", device="cpu")


def photo_inputs(model, size=(640, 480)):
    images = {PHOTO: Image.new("RGB", size, "teal")}
    return model.inputs([Exchange(Question("What is in this picture?", image=PHOTO))], images), images


def test_int8_layers_and_name(int8):
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    model = int8.model
    assert not any(type(m) is torch.nn.Linear for m in model.model.language_model.modules())
    assert not any(type(m) is torch.nn.Linear for m in model.model.vision_tower.modules())
    assert any(isinstance(m, DynamicLinear) for m in model.model.language_model.modules())
    assert "int8, cpu" in int8.name and "one 32-px tile" in int8.note


def test_int8_greedy_reply_equals_generate(int8):
    """The app's decode loop on the quantised model gives generate()'s greedy tokens on the same model."""
    inputs, _ = photo_inputs(int8)
    ours = list(int8.decoder.tokens(inputs, 16, Sampling(), lambda: False, PHOTO))
    with torch.no_grad():
        out = int8.model.generate(**inputs, do_sample=False, max_new_tokens=16, pad_token_id=0)
    theirs = out[0, inputs["input_ids"].shape[1]:].tolist()
    theirs = theirs[:next((i for i, t in enumerate(theirs) if t in int8.decoder.eos), len(theirs))]
    assert ours == theirs and ours


@pytest.mark.parametrize("size", [(640, 480), (480, 640), (2048, 1536), (100, 400)])
def test_one_tile_grid_tokens_are_the_processors_and_the_models(int8, size):
    """Whatever the picture's shape, two vision passes (the whole and one tile); the <image> tokens are
    as many as the processor says, and the model fills each with a feature (it raises otherwise)."""
    inputs, images = photo_inputs(int8, size)
    counted = int((inputs["input_ids"] == int8.model.config.image_token_id).sum())
    said = int8.processor._get_num_multimodal_tokens(image_sizes=[[size[1], size[0]]]).num_image_tokens[0]
    assert counted == said <= max_image_tokens(int8.processor)
    assert inputs["pixel_values"].shape[1] == 2  # the whole picture and one tile
    with torch.no_grad():
        int8.model(**inputs)
    question = [Exchange(Question("What is in this picture?", image=PHOTO))]
    for _ in int8.stream(question, images, GenerationOptions(temperature=0, max_new_tokens=4)):
        pass
    assert int8.decoder.last["prompt_tokens"] == inputs["input_ids"].shape[1]


def test_none_keeps_fp32_and_the_full_grid(folder, int8):
    full = LlavaModel.load(str(folder), quant="none", device="cpu")
    assert full.note == "" and "float32" in full.name
    assert max_image_tokens(full.processor) > max_image_tokens(int8.processor)
    assert len(full.model.config.image_grid_pinpoints) > 1


def test_a_restart_loads_the_kept_int8_model_and_answers_alike(folder, tmp_path):
    """The first start quantises and keeps the int8 model; a new process loads it instead of the fp32
    checkpoint (saying so) and gives the same greedy reply."""
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = ("import json, sys; from PIL import Image; from core.conversation import Exchange, Question; "
            "from core.engines.vlm import GenerationOptions, LlavaModel; steps = []; "
            "m = LlavaModel.load(sys.argv[1], quant='int8', device='cpu', progress=steps.append); "
            "q = [Exchange(Question('What is in this picture?', image='p' * 32))]; "
            "text = ''.join(m.stream(q, {'p' * 32: Image.new('RGB', (640, 480), 'teal')}, "
            "GenerationOptions(temperature=0, max_new_tokens=12))); print(json.dumps([steps, text, m.note]))")
    runs = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", code, str(folder)], cwd=ROOT, capture_output=True, text=True,
                              timeout=300, env={**os.environ, "XDG_CACHE_HOME": str(tmp_path)})
        assert done.returncode == 0, done.stderr[-2000:]
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    (first_steps, first_text, first_note), (second_steps, second_text, second_note) = runs
    assert any("Quantising the model to int8" in s for s in first_steps)
    assert any("int8 weights kept" in s for s in second_steps) and not any("Quantising" in s for s in second_steps)
    assert second_text == first_text and first_text and second_note == first_note  # the same model and grid
    assert len(list((tmp_path / "talk-with-a-picture" / "quantised").glob("*.pt"))) == 1
