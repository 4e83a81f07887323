"""What a new user meets in the chat page's first minutes (issue 21), through AppTest."""

import pytest

from tests.app.conftest import ask
from tests.conftest import png_bytes

pytestmark = pytest.mark.slow


def sidebar_captions(at) -> list[str]:
    return [picture.caption for image in at.sidebar.get("image") for picture in image.proto.imgs]


def test_the_sidebar_shows_the_current_image_of_the_question_just_asked(app):
    at = ask(app(), "What is in this picture?", png_bytes(color="blue"))
    assert sidebar_captions(at) == ["Current image"]  # not missing until the next run


def test_a_sidebar_image_is_pending_until_a_question_uses_it(app):
    at = app()
    at.sidebar.file_uploader[0].set_value(("cat.png", png_bytes(color="green"), "image/png")).run()
    assert sidebar_captions(at) == ["Current image (used by your next question)"]
    ask(at, "Describe it.")
    assert sidebar_captions(at) == ["Current image"]  # used: no longer "next"
