"""Drive the app through streamlit_app.py with AppTest and print what the page showed, as JSON.

Needs only what requirements.txt installs (streamlit, the app), not pytest: tests run it in a
subprocess, with the test environment's Python and the in-process packages hidden (--hide), or with
the Python of a virtual environment made from requirements.txt alone.

    python tests/light_driver.py [--hide torch,transformers] [--ask "question"] [--image]

The environment (OPENAI_BASE_URL, LOG_DIR, TTS_ENGINE, ...) configures the app as usual.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IN_PROCESS = ("torch", "torchvision", "transformers", "accelerate", "whisper", "hqq", "gemlite", "bitsandbytes", "triton")


def hide(names: list[str]) -> None:
    """Make these packages look uninstalled: `import` raises ModuleNotFoundError and
    importlib.util.find_spec returns None, as in an environment without them."""
    for name in names:
        sys.modules[name] = None  # type: ignore[assignment]


def texts(element) -> list[str]:
    return [e.value for kind in ("markdown", "caption", "warning", "error", "info") for e in getattr(element, kind)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hide", default="", help="comma-separated packages to hide")
    parser.add_argument("--ask", default="", help="a question to type")
    parser.add_argument("--image", action="store_true", help="attach a picture to the question")
    args = parser.parse_args()
    hide([n for n in args.hide.split(",") if n])
    sys.path.insert(0, str(ROOT))

    from PIL import Image
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120)
    at.run()
    shown = {"start_errors": [e.value for e in at.error], "exceptions": [e.value for e in at.exception]}
    if args.ask:
        box = at.chat_input[0]
        if args.image:
            buffer = io.BytesIO()
            Image.new("RGB", (64, 48), "white").save(buffer, "PNG")
            box.upload("photo.png", buffer.getvalue(), "image/png")
        box.set_value(args.ask).run()
        shown["exceptions"] += [e.value for e in at.exception]
        shown["messages"] = [{"role": m.name, "texts": texts(m)} for m in at.chat_message]
        shown["errors"] = [e.value for e in at.error]
        at.switch_page("pages/history.py").run()
        shown["exceptions"] += [e.value for e in at.exception]
        shown["history"] = [m.value for m in at.markdown] + [b.label for b in at.button]
    shown["loaded"] = sorted(n for n in IN_PROCESS if sys.modules.get(n) is not None)
    print(json.dumps(shown))


if __name__ == "__main__":
    main()
