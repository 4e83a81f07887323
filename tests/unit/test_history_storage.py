"""The History index under faults: damaged index files, concurrent syncs, an unusable log folder,
huge logged texts, and media files no session refers to. Real files and real SQLite."""

import os
import sqlite3
import threading
import time
from functools import partial

import pytest

from core.conversation import Answer, Question
from core.store.history_index import MAX_INDEXED_CHARS, HistoryIndex
from core.store.session_log import LogFolderError, SessionLog, media_path, save_media
from core.store.sessions import delete_session


def make_session(log_dir, *turns, durable=False):
    log = SessionLog.create(log_dir, model="fake", durable=durable)
    for number, (question, answer) in enumerate(turns):
        log.question(number, Question(question))
        log.answer(number, Answer(answer))
    return log


def many_sessions(log_dir, count=40):
    return [make_session(log_dir, (f"question number {n} about a red car", f"reply {n} " + "words " * 50))
            for n in range(count)]


def checkpointed(log_dir) -> bytes:
    """The index as one file (its write-ahead log folded in), as a crash or a copy would leave it."""
    with sqlite3.connect(log_dir / "index.sqlite3") as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return (log_dir / "index.sqlite3").read_bytes()


@pytest.mark.parametrize("damage", ["random bytes", "cut in half", "zeroed middle"])
def test_a_damaged_index_is_rebuilt_from_the_logs(tmp_path, damage):
    sessions = many_sessions(tmp_path)
    HistoryIndex(tmp_path).sync()
    data = checkpointed(tmp_path)
    for leftover in ("index.sqlite3-wal", "index.sqlite3-shm"):
        (tmp_path / leftover).unlink(missing_ok=True)
    if damage == "random bytes":
        data = os.urandom(len(data))
    elif damage == "cut in half":
        data = data[: len(data) // 2]
    else:
        data = data[:4096] + bytes(len(data) // 2) + data[4096 + len(data) // 2:]
    (tmp_path / "index.sqlite3").write_bytes(data)

    index = HistoryIndex(tmp_path)
    assert index.count() == len(sessions)
    assert {s.session_id for s in index.page(0, 100)} == {s.session_id for s in sessions}
    assert len(index.search("red car")) == len(sessions)
    make_session(tmp_path, ("one more", "reply"))
    assert index.sync().added == 1 and index.count() == len(sessions) + 1


def test_each_operation_survives_a_damaged_index(tmp_path):
    many_sessions(tmp_path, 5)
    for operation in ("sync", "count", "page", "get", "search", "forget", "delete"):
        HistoryIndex(tmp_path).sync()
        (tmp_path / "index.sqlite3").write_bytes(os.urandom(8192))
        for leftover in ("index.sqlite3-wal", "index.sqlite3-shm"):
            (tmp_path / leftover).unlink(missing_ok=True)
        index = HistoryIndex(tmp_path)
        first = index.page(0, 1)[0].session_id if operation in ("forget", "delete") else None
        calls = {
            "sync": index.sync, "count": index.count, "page": index.page, "search": partial(index.search, "car"),
            "get": partial(index.get, "20200101-000000-abcdef"), "forget": partial(index.forget, first),
            "delete": partial(delete_session, index, first),
        }
        calls[operation]()
        assert sqlite3.connect(tmp_path / "index.sqlite3").execute("PRAGMA quick_check").fetchone()[0] == "ok"


def test_concurrent_syncs_never_fail(tmp_path):
    """Several sessions (threads) syncing one index at once, over many trials: each used to fail
    now and then with UNIQUE constraint failed: sessions.id or database is locked."""
    failures = []
    for trial in range(15):
        log_dir = tmp_path / f"trial-{trial}"
        many_sessions(log_dir, 12)
        barrier = threading.Barrier(4)

        def sync(log_dir=log_dir, barrier=barrier):
            try:
                barrier.wait()
                HistoryIndex(log_dir).sync()
            except Exception as e:  # noqa: BLE001 - collected and reported below
                failures.append(repr(e))

        threads = [threading.Thread(target=sync) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert HistoryIndex(log_dir).count() == 12
    assert failures == []


@pytest.mark.parametrize("fault", ["a file", "removed"])
def test_an_unusable_log_folder_raises_a_message_not_an_os_error(tmp_path, fault):
    log_dir = tmp_path / "logs"
    many_sessions(log_dir, 2)
    index = HistoryIndex(log_dir)
    index.sync()
    if fault == "a file":
        for child in sorted(log_dir.rglob("*"), reverse=True):
            child.rmdir() if child.is_dir() else child.unlink()
        log_dir.rmdir()
        log_dir.write_text("a file")
        with pytest.raises(LogFolderError) as raised:
            index.sync()
        assert str(log_dir) in raised.value.message and raised.value.hint
    else:
        import shutil

        shutil.rmtree(log_dir)
        assert index.sync().removed == 0 and index.count() == 0  # made again, empty


def test_search_over_huge_questions_is_quick(tmp_path):
    """A 0.5 MB and a 5 MB question (logged before the chat box had a limit): indexed up to the
    limit, and a search for a word in both takes well under a second."""
    words = "the red car stands by a blue house under a green tree ".split()
    big = " ".join(words[i % len(words)] for i in range(100_000))  # ~0.5 MB
    huge = " ".join(words[i % len(words)] for i in range(1_000_000))  # ~5 MB
    make_session(tmp_path, (big, "A reply about the car."), (huge, "Another reply."))
    index = HistoryIndex(tmp_path)
    index.sync()
    with sqlite3.connect(tmp_path / "index.sqlite3") as db:
        longest = db.execute("SELECT max(length(question)), max(length(answer)) FROM turns").fetchone()
        first = db.execute("SELECT length(first_question) FROM sessions").fetchone()[0]
    assert max(longest) <= MAX_INDEXED_CHARS and first <= 1000
    start = time.perf_counter()
    hits = index.search("green tree")
    assert time.perf_counter() - start < 0.5
    assert len(hits) == 2 and all("\x02" in hit.question and len(hit.question) < 2000 for hit in hits)


def test_delete_removes_media_no_session_refers_to_and_keeps_the_rest(tmp_path):
    keep = make_session(tmp_path, ("kept", "reply"))
    keep.question(1, Question("with a recording", audio="a" * 32))
    save_media(tmp_path, b"referenced", "a" * 32, "wav")
    save_media(tmp_path, b"empty transcript, long ago", "b" * 32, "wav")  # asked nothing: referenced by none
    save_media(tmp_path, b"a turn being written now", "c" * 32, "wav")
    old = time.time() - 2 * 24 * 3600
    for digest in ("a" * 32, "b" * 32):
        os.utime(media_path(tmp_path, digest), (old, old))
    gone = make_session(tmp_path, ("deleted", "reply"))
    index = HistoryIndex(tmp_path)
    removed = delete_session(index, gone.session_id)
    assert removed[0] == gone.path and media_path(tmp_path, "b" * 32) is None
    assert media_path(tmp_path, "a" * 32) and media_path(tmp_path, "c" * 32)  # referenced; too recent
    assert index.count() == 1


def test_highlighting_is_linear_and_bounded():
    from ui.history_view import HIGHLIGHT_CHARS, highlighted

    marked = highlighted("\x02red\x03 car " * 10)
    assert marked.count(":orange-background[red]") == 10
    unclosed = "\x02a" * 200_000  # marks that never close: the old pattern scanned to the end from each
    start = time.perf_counter()
    out = highlighted(unclosed)
    assert time.perf_counter() - start < 0.5 and len(out) < 3 * HIGHLIGHT_CHARS and "\x02" not in out
    huge_word = highlighted("\x02" + "x" * 5_000_000 + "\x03")  # one "word" of 5 MB
    assert len(huge_word) < 3 * HIGHLIGHT_CHARS
