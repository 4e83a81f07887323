import os
import re
import sqlite3

import pytest

from core.conversation import Answer, Question
from core.store.history_index import MARK_END, MARK_START, HistoryIndex, SyncResult, fts_query
from core.store.session_log import SessionLog, media_path, save_media, session_path
from core.store.sessions import delete_session


def make_session(log_dir, *turns, images=(), model="fake"):
    """A logged session; turns are (question, answer) texts; images[i] is the digest of turn i's image."""
    log = SessionLog.create(log_dir, model=model)
    for number, (question, answer) in enumerate(turns):
        image = images[number] if number < len(images) else None
        log.question(number, Question(question, image=image))
        log.answer(number, Answer(answer))
    return log


def rows(log_dir, table, session_id):
    column = "id" if table == "sessions" else "session_id"
    with sqlite3.connect(log_dir / "index.sqlite3") as db:
        return db.execute(f"SELECT count(*) FROM {table} WHERE {column} = ?", (session_id,)).fetchone()[0]


def test_sync_lists_newest_first_with_summaries(tmp_path):
    older = make_session(tmp_path, ("What is it?", "A red car."), ("Where?", "On a road."), images=["a" * 32])
    os.rename(older.path, older.path.with_name("20200101-000000-aaaaaa.jsonl"))  # an older id
    newer = make_session(tmp_path, ("Hello", "Hi."))
    index = HistoryIndex(tmp_path)
    assert index.sync().added == 2
    first, second = index.page(0, 10)
    assert first.session_id == newer.session_id and second.session_id == "20200101-000000-aaaaaa"
    assert (second.first_question, second.turns, second.images, second.model) == ("What is it?", 2, ("a" * 32,), "fake")
    assert index.count() == 2 and index.page(1, 10) == [second]


def test_incremental_sync_reads_only_what_changed(tmp_path):
    a = make_session(tmp_path, ("first", "one"))
    make_session(tmp_path, ("second", "two"))
    index = HistoryIndex(tmp_path)
    index.sync()
    assert index.sync() == SyncResult(added=0, updated=0, removed=0, unread=0)  # nothing changed: nothing read
    a.question(1, Question("another zebra question"))
    result = index.sync()
    assert (result.added, result.updated, result.removed) == (0, 1, 0)
    assert [h.turn for h in index.search("zebra")] == [1]
    a.path.unlink()
    assert index.sync().removed == 1
    assert index.search("zebra") == [] and index.count() == 1


def test_search_finds_replies_and_transcripts_with_highlight(tmp_path):
    log = make_session(tmp_path, ("What colour is the car?", "The car is crimson red."))
    log.question(1, Question("Is there a dog?", source="voice"))
    index = HistoryIndex(tmp_path)
    index.sync()
    (hit,) = index.search("crimson")
    assert hit.session_id == log.session_id and hit.turn == 0
    assert f"{MARK_START}crimson{MARK_END}" in hit.answer
    assert [h.turn for h in index.search("dog")] == [1]
    assert [h.turn for h in index.search("crim")] == [0]  # the last word matches as a prefix
    assert index.search("car dog") == []  # all words must be in one turn


def test_search_handles_unicode_and_accents(tmp_path):
    make_session(tmp_path, ("Qu'est-ce que c'est ?", "Un café crème à Zürich."), ("日本語", "これは 東京 です"))
    index = HistoryIndex(tmp_path)
    index.sync()
    assert [h.turn for h in index.search("cafe")] == [0]  # accents are folded
    assert [h.turn for h in index.search("ZÜRICH")] == [0]
    assert [h.turn for h in index.search("東京")] == [1]


@pytest.mark.parametrize("query", ['"', '*', 'car"', '"car', 'car*', 'NEAR(car', 'car OR', 'AND', '-car', 'a:b', "(", "^"])
def test_fts_syntax_in_the_query_is_taken_literally(tmp_path, query):
    make_session(tmp_path, ("the car", "a car OR AND near b"))
    index = HistoryIndex(tmp_path)
    index.sync()
    # never an FTS syntax error: the words are searched as words (all of them are in the turn),
    # and a query of punctuation only finds nothing
    expected = [0] if re.search(r"\w", query) else []
    assert [h.turn for h in index.search(query)] == expected


def test_fts_query_quotes_every_word():
    assert fts_query('say "hi" *') == '"say" "hi"*' and fts_query('say hi', prefix=False) == '"say" "hi"'
    assert fts_query("  ") is None and fts_query('"*') is None


def test_delete_removes_log_unshared_media_and_rows(tmp_path):
    shared, own = "a" * 32, "b" * 32
    save_media(tmp_path, b"shared", shared, "png")
    save_media(tmp_path, b"own", own, "png")
    keep = make_session(tmp_path, ("q", "a"), images=[shared])
    gone = make_session(tmp_path, ("q", "a"), ("q2", "a2"), images=[shared, own])
    index = HistoryIndex(tmp_path)
    index.sync()
    removed = delete_session(index, gone.session_id)
    assert set(removed) == {gone.path, tmp_path / "media" / f"{own}.png"}
    assert not gone.path.exists() and media_path(tmp_path, own) is None
    assert media_path(tmp_path, shared) is not None and keep.path.exists()
    for table in ("sessions", "media", "turns"):
        assert rows(tmp_path, table, gone.session_id) == 0
    assert rows(tmp_path, "sessions", keep.session_id) == 1


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "..", "20260101-000000-abcdef/../../x", "", "x.jsonl"])
def test_delete_refuses_what_is_not_a_session_id(tmp_path, bad):
    with pytest.raises(ValueError):
        delete_session(HistoryIndex(tmp_path), bad)


def test_symlinks_leading_outside_are_neither_indexed_nor_read(tmp_path):
    outside = tmp_path / "outside.jsonl"
    outside.write_text('{"type": "session", "v": 2}\n{"type": "question", "turn": 0, "text": "secret"}\n')
    log_dir = tmp_path / "logs"
    make_session(log_dir, ("hello", "hi"))
    link = log_dir / "sessions" / "20990101-000000-abcdef.jsonl"
    link.symlink_to(outside)
    index = HistoryIndex(log_dir)
    index.sync()
    assert index.count() == 1 and index.search("secret") == []
    with pytest.raises(ValueError):
        session_path(log_dir, "20990101-000000-abcdef")


def test_index_is_rebuilt_when_its_schema_is_old_or_it_is_deleted(tmp_path):
    make_session(tmp_path, ("hello", "world"))
    index = HistoryIndex(tmp_path)
    index.sync()
    with sqlite3.connect(tmp_path / "index.sqlite3") as db:
        db.execute("UPDATE meta SET value = 'old'")
    assert index.count() == 0 and index.sync().added == 1
    (tmp_path / "index.sqlite3").unlink()
    for extra in ("-wal", "-shm"):
        (tmp_path / f"index.sqlite3{extra}").unlink(missing_ok=True)
    assert index.sync().added == 1 and [h.turn for h in index.search("world")] == [0]


def test_truncated_and_garbage_logs_are_indexed_with_what_is_readable(tmp_path):
    log = make_session(tmp_path, ("first question", "first answer"))
    with open(log.path, "a") as f:
        f.write("garbage line\n")
        f.write('{"type": "question", "turn": 1, "text": "second quest')
    index = HistoryIndex(tmp_path)
    index.sync()
    (summary,) = index.page()
    assert summary.turns == 1 and summary.notes == 2
    assert [h.turn for h in index.search("first")] == [0]


def test_the_index_only_forgets_rows_the_files_are_the_stores(tmp_path):
    own = "b" * 32
    save_media(tmp_path, b"own", own, "png")
    gone = make_session(tmp_path, ("q", "a"), images=[own])
    index = HistoryIndex(tmp_path)
    index.sync()
    assert index.referenced_media() == {own}
    assert index.forget(gone.session_id) == {own}  # what only it used: the store may remove those
    assert gone.path.exists() and media_path(tmp_path, own) is not None  # nothing deleted by the index
    assert rows(tmp_path, "sessions", gone.session_id) == 0 and index.referenced_media() == set()
