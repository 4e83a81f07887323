"""What each install file holds: requirements.txt is the front end (no torch, no CUDA), the in-process
model is in requirements-local.txt, which the tests' requirements include; the test browser is not an
apt package of the app."""

import re

from tests.conftest import ROOT

IN_PROCESS = {"torch", "torchvision", "transformers", "accelerate", "openai-whisper", "triton", "hqq", "gemlite",
              "bitsandbytes", "torchao"}


def names(file: str) -> set[str]:
    found = set()
    for line in (ROOT / file).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r "):
            found |= names(line[3:].strip())
        elif line:
            found.add(re.split(r"[\[<>=!~; ]", line)[0].lower())
    return found


def test_the_front_end_requirements_hold_no_in_process_package():
    assert not names("requirements.txt") & IN_PROCESS
    assert {"streamlit", "faster-whisper", "openai", "gtts", "av", "pillow"} <= names("requirements.txt")


def test_the_in_process_packages_are_in_the_local_file_and_the_tests_get_them():
    assert {"torch", "transformers", "accelerate"} <= names("requirements-local.txt")
    assert names("requirements-local.txt") | names("requirements.txt") <= names("requirements-dev.txt")


def test_apt_packages_of_the_app_are_what_it_runs_with():
    app = (ROOT / "packages.txt").read_text().split()
    assert "espeak-ng" in app and not {"chromium", "chromium-driver"} & set(app)
    assert {"chromium", "chromium-driver"} <= set((ROOT / "packages-test.txt").read_text().split())
