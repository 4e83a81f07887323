"""The 4-bit model kept between starts (core.engines.saved_model), on the CPU with HQQ's portable matmul
(gemlite needs CUDA): it round-trips, a damaged entry is rebuilt, and the key follows what made it."""

import pytest
from PIL import Image

from core.conversation import Exchange, Question
from core.engines import saved_model
from core.engines.vlm import GenerationOptions, LlavaModel, _load_processor

pytestmark = pytest.mark.slow
IMAGE = "c" * 32


@pytest.fixture
def quantised(tiny_llava):
    import torch
    from transformers import AutoModelForImageTextToText

    from core.engines.quant import quantize_hqq

    model = AutoModelForImageTextToText.from_pretrained(str(tiny_llava), dtype=torch.float32).eval()
    quantize_hqq(model, "cpu", kernels=False)
    return model


def reply(model, folder) -> str:
    llava = LlavaModel(model, _load_processor(str(folder)), "tiny 4bit")
    question = [Exchange(Question("What is it?", image=IMAGE))]
    return "".join(llava.stream(question, {IMAGE: Image.new("RGB", (50, 40), "red")},
                                GenerationOptions(temperature=0, max_new_tokens=16)))


def test_a_kept_model_answers_like_the_one_it_was_made_from(quantised, tiny_llava, tmp_path, monkeypatch):
    from core.engines.quant import hqq_settings, is_quantised

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    before = reply(quantised, tiny_llava)  # its vision tower ran with hidden states asked: hooks installed
    assert any(saved_model.HOOKS_FLAG in vars(m) for m in quantised.modules())  # what torch.save cannot pickle
    path = saved_model.entry(str(tiny_llava), hqq_settings(), "cpu")
    assert path.parent == tmp_path / "talk-with-a-picture" / "quantised"
    assert saved_model.load(path, "cpu") is None  # nothing kept yet
    assert saved_model.save(quantised, path) and path.is_file()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    loaded = saved_model.load(path, "cpu")
    assert is_quantised(loaded) and reply(loaded, tiny_llava) == before
    assert reply(quantised, tiny_llava) == before  # the saved one still works too
    assert reply_in_a_new_process(path, tiny_llava) == before  # a restart: nothing of this process's state


def reply_in_a_new_process(path, folder) -> str:
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = ("import json, sys; from core.engines import saved_model; from tests.slow.test_saved_model import reply; "
            "model = saved_model.load(__import__('pathlib').Path(sys.argv[1]), 'cpu'); "
            "print(json.dumps(reply(model, sys.argv[2])))")
    done = subprocess.run([sys.executable, "-c", code, str(path), str(folder)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_damaged_entry_is_deleted_and_not_trusted(quantised, tmp_path, tiny_llava):
    path = tmp_path / "entry.pt"
    assert saved_model.save(quantised, path)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])  # a crash or a full disk cut it short
    assert saved_model.load(path, "cpu") is None and not path.exists()
    path.write_bytes(b"not a model at all")
    assert saved_model.load(path, "cpu") is None and not path.exists()
    import torch

    torch.save({"a": 1}, path)  # readable, but no model
    assert saved_model.load(path, "cpu") is None and not path.exists()
    assert saved_model.save(quantised, path) and saved_model.load(path, "cpu") is not None  # rebuilt


def test_the_key_follows_the_weights_the_settings_and_the_versions(tiny_llava, tmp_path, monkeypatch):
    import os

    from core.engines.quant import hqq_settings

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = saved_model.entry(str(tiny_llava), hqq_settings(), "cpu")
    assert saved_model.entry(str(tiny_llava), hqq_settings(), "cpu") == first
    assert saved_model.entry(str(tiny_llava), {**hqq_settings(), "group_size": 128}, "cpu") != first
    monkeypatch.setattr(saved_model, "version", lambda package: "9.9" if package == "hqq" else "1.0")
    assert saved_model.entry(str(tiny_llava), hqq_settings(), "cpu") != first
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    weights = next(p for p in tiny_llava.iterdir() if p.suffix == ".safetensors")
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # new weights in the same folder
    try:
        assert saved_model.entry(str(tiny_llava), hqq_settings(), "cpu") != first
    finally:
        os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_disk_that_refuses_loses_nothing_but_the_entry(quantised, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder should be")
    assert saved_model.save(quantised, blocker / "sub" / "entry.pt") is False


def test_warm_up_runs_one_length_per_kernel_class():
    from core.engines.quant import warm_up_lengths

    def powers_of_two(m):
        return 1 << (m - 1).bit_length()

    lengths = list(range(64, 2049, 64))
    assert warm_up_lengths(lengths, powers_of_two) == [64, 128, 192, 320, 576, 1088]
    assert len(warm_up_lengths(list(range(64, 8705, 64)), lambda m: min(powers_of_two(m), 4096))) == 7
