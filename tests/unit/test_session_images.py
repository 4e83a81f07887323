"""The images a session keeps in memory are bounded: the current visual context's and the one shown;
every other is read back from the log's media when a turn needs it."""

import gc
import weakref

import pytest

from core.chat import session as chat_session
from core.chat import turn
from core.chat.session import ChatSession, ImageGone
from core.conversation import Question, image_digests
from core.engines.vlm import GenerationOptions
from core.errors import AppError
from core.media import load_image
from core.store.session_log import media_path
from tests.conftest import png_bytes
from tests.fakes import FakeChatModel

BOUND = 2  # the current visual context's image and the one shown (a new upload not asked about yet)
OPTIONS = GenerationOptions(temperature=0)


def picture(i: int) -> bytes:
    return png_bytes(size=(40 + i % 7, 30), color=(i * 2 % 256, i * 5 % 256, 255 - i % 256))


def pixels(data: bytes) -> bytes:
    return load_image(data, max_pixels=10**6, max_bytes=10**6).image.tobytes()


class SeeingModel(FakeChatModel):
    """Reads the visual context's images as the real engines do (images[digest]) and records their pixels."""

    def __init__(self, *replies):
        super().__init__(*replies)
        self.seen: list[list[bytes]] = []

    def stream(self, exchanges, images, options, stop=None):
        self.seen.append([images[d].tobytes() for d in image_digests(exchanges)])
        return super().stream(exchanges, images, options, stop)


@pytest.fixture
def alive(monkeypatch):
    """Weak references to every image the session decodes: what is still alive is what is still held."""
    refs = []

    def tracked(*args, **kwargs):
        image = load_image(*args, **kwargs)
        refs.append(weakref.ref(image.image))
        return image

    monkeypatch.setattr(chat_session, "load_image", tracked)

    def count() -> int:
        gc.collect()
        return sum(ref() is not None for ref in refs)

    count.refs = refs
    return count


def answer(session, engines, index):
    reply = turn.answer(session, engines, index, OPTIONS, speak=False)
    list(reply)
    return reply.answer


def test_a_session_given_100_images_keeps_no_more_than_the_bound(settings, alive):
    session, engines = ChatSession(settings), turn.Engines(SeeingModel())
    for i in range(100):
        session.attach_image(picture(i))
        assert len(session.images) == (BOUND if i else 1)  # the one shown and, after the first, the current one
        if i % 3 == 2:  # now and then an image replaced in the sidebar before anything is asked about it
            continue
        answer(session, engines, session.ask(Question(f"What is picture {i}?")))
        assert engines.chat.seen[-1] == [pixels(picture(i))]  # the model saw this question's image
        assert len(session.images) <= BOUND and set(session.images) <= {session.conversation.current_image, session.pending_image}
    assert len(alive.refs) == 100 and alive() <= BOUND
    assert list(session.images) == [session.conversation.current_image]  # picture 99, asked about


def test_an_old_turn_regenerated_sees_its_own_image_read_back_from_the_log(settings, alive):
    session, engines = ChatSession(settings), turn.Engines(SeeingModel())
    for i in range(5):
        session.attach_image(picture(i))
        answer(session, engines, session.ask(Question(f"What is picture {i}?")))
    first = session.conversation.exchanges[0].question.image
    assert first not in session.images._kept and first in session.images  # on disk, not in memory

    session.regenerate(0)  # an old turn: its visual context is picture 0 alone
    assert answer(session, engines, 0).status == "complete"
    assert engines.chat.seen[-1] == [pixels(picture(0))]
    assert len(session.images) == 1 and alive() <= BOUND  # read back for the turn, not kept


def test_a_continued_session_holds_only_its_current_image(settings, alive):
    first, engines = ChatSession(settings), turn.Engines(SeeingModel())
    for i in range(6):
        first.attach_image(picture(i))
        answer(first, engines, first.ask(Question(f"What is picture {i}?")))
    del first
    before = len(alive.refs)

    session = ChatSession.resume(settings, engines_session_id(settings))
    assert list(session.images) == [session.conversation.current_image] and len(alive.refs) == before + 1
    answer(session, engines, session.ask(Question("And now?")))  # goes on about picture 5
    assert engines.chat.seen[-1] == [pixels(picture(5))]
    session.regenerate(2)
    answer(session, engines, 2)
    assert engines.chat.seen[-1] == [pixels(picture(2))]  # item 2: the third exchange (no notices)
    assert alive() <= BOUND


def engines_session_id(settings) -> str:
    from core.store.session_log import list_session_files

    (path,) = list_session_files(settings.log_dir)
    return path.stem


def test_an_image_whose_file_is_gone_gives_a_message_not_a_traceback(settings):
    session, engines = ChatSession(settings), turn.Engines(SeeingModel())
    for i in range(2):
        session.attach_image(picture(i))
        answer(session, engines, session.ask(Question(f"What is picture {i}?")))
    gone = session.conversation.exchanges[0].question.image
    media_path(settings.log_dir, gone).unlink()
    with pytest.raises(ImageGone) as caught:
        session.images[gone]
    assert isinstance(caught.value, AppError) and isinstance(caught.value, KeyError)  # an AppError; a Mapping miss
    assert gone not in session.images and session.images.get(gone) is None

    session.regenerate(0)
    failed = answer(session, engines, 0)
    assert failed.status == "error" and "cannot be read back from the log" in failed.note
    assert "Something went wrong" not in failed.note


def test_an_image_that_could_not_be_saved_stays_in_memory(settings, monkeypatch):
    """The log folder failing: nothing else holds the image, so it is not dropped."""
    monkeypatch.setattr(chat_session, "save_media", lambda *args: None)
    session, engines = ChatSession(settings), turn.Engines(SeeingModel())
    for i in range(4):
        session.attach_image(picture(i))
        answer(session, engines, session.ask(Question(f"What is picture {i}?")))
    assert len(session.images) == 4
    session.regenerate(0)
    answer(session, engines, 0)
    assert engines.chat.seen[-1] == [pixels(picture(0))]
