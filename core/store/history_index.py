"""A search index over the session logs: SQLite with FTS5, kept in step with the files.

The log files stay the source of truth. The index (LOG_DIR/index.sqlite3) only holds what the
History page lists and searches, and sync() brings it up to date by comparing each file's size
and modification time with what was indexed: new and changed files are read again, rows of
deleted files are dropped. Deleting the index file is always safe; the next sync rebuilds it, and
so does any use of an index found damaged (random bytes, a file cut short).

Each turn's question and reply are indexed up to MAX_INDEXED_CHARS: FTS5's snippet() costs more
than linearly in the length of the text it cuts from (0.5 MB: over a minute), and a search must
stay quick whatever was logged.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
import time
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

from core.store.session_log import (
    LoggedSession,
    folder_problem,
    read_session,
    scan_sessions,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

MAX_INDEXED_CHARS = 20_000  # of each question and reply: searched, and what snippets are cut from
FIRST_QUESTION_CHARS = 300  # of a session's first question, for its row in the list
SCHEMA_VERSION = "4"
SCHEMA = [
    """CREATE TABLE sessions (
        id TEXT PRIMARY KEY, mtime_ns INTEGER, size INTEGER, created TEXT, first_question TEXT,
        turns INTEGER, duration_s REAL, model TEXT, images TEXT, errors INTEGER, notes INTEGER)""",
    "CREATE TABLE media (session_id TEXT, digest TEXT, PRIMARY KEY (session_id, digest)) WITHOUT ROWID",
    "CREATE INDEX media_by_digest ON media (digest)",
    # The text of each turn, and an FTS5 index over it (external content: the text is stored once).
    "CREATE TABLE turns (id INTEGER PRIMARY KEY, session_id TEXT, turn INTEGER, question TEXT, answer TEXT)",
    "CREATE INDEX turns_by_session ON turns (session_id)",
    """CREATE VIRTUAL TABLE turn_text USING fts5 (
        question, answer, content = 'turns', content_rowid = 'id', tokenize = 'unicode61 remove_diacritics 2',
        prefix = '2 3')""",
    """CREATE TRIGGER turns_added AFTER INSERT ON turns BEGIN
        INSERT INTO turn_text (rowid, question, answer) VALUES (new.id, new.question, new.answer); END""",
    """CREATE TRIGGER turns_removed AFTER DELETE ON turns BEGIN
        INSERT INTO turn_text (turn_text, rowid, question, answer) VALUES ('delete', old.id, old.question, old.answer);
        END""",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)",
]
MARK_START, MARK_END = "\x02", "\x03"  # around matched words in snippets; never in logged text
WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class SessionSummary:
    session_id: str
    created: str  # ISO 8601, UTC
    first_question: str
    turns: int
    duration_s: float
    model: str
    images: tuple[str, ...]  # digests, in order of appearance
    errors: int
    notes: int  # lines that could not be read, upgrades made


@dataclass(frozen=True)
class SearchHit:
    session_id: str
    turn: int  # exchange number, 0-based
    question: str  # snippets, matched words between MARK_START and MARK_END
    answer: str
    created: str


@dataclass(frozen=True)
class SyncResult:
    added: int = 0
    updated: int = 0
    removed: int = 0
    unread: int = 0  # changed files that could not be read this time


def fts_query(text: str, prefix: bool = True) -> str | None:
    """A user's words as an FTS5 query that cannot be a syntax error: each word quoted, all
    required, the last one also matching as a prefix if prefix is set. None if no words."""
    words = WORD.findall(text)
    if not words:
        return None
    return " ".join(f'"{word}"' for word in words) + ("*" if prefix else "")


class HistoryIndex:
    def __init__(self, log_dir: Path):
        self.log_dir = Path(log_dir)
        self.path = self.log_dir / "index.sqlite3"

    def _connect(self) -> sqlite3.Connection:
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)  # transactions are explicit
        except OSError as e:
            raise folder_problem(self.log_dir, e) from e
        except sqlite3.OperationalError as e:  # cannot open the file
            raise folder_problem(self.log_dir, OSError(str(e))) from e
        try:
            db.execute("PRAGMA busy_timeout = 30000")  # concurrent syncs wait for each other
            _use_wal(db)  # readers never wait for a sync in another session
            if _schema(db) != SCHEMA_VERSION:  # new, or made by another version: rebuilt from the logs
                with _transaction(db):
                    if _schema(db) != SCHEMA_VERSION:  # another session may have just done it
                        tables = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
                        for (table,) in tables:
                            if not table.startswith("turn_text_"):  # FTS shadow tables go with their table
                                db.execute(f'DROP TABLE IF EXISTS "{table}"')
                        for statement in SCHEMA:
                            db.execute(statement)
                        db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        except BaseException:
            db.close()
            raise
        return db

    def _run(self, work: Callable[[sqlite3.Connection], T], resync: bool = True) -> T:
        """work(db) on a fresh connection. A damaged index is rebuilt from the logs (synced again
        unless resync is off, for sync itself) and the work done once more."""
        opened = self._identity()
        try:
            with closing(self._connect()) as db:
                return work(db)
        except sqlite3.DatabaseError as e:
            if not _damaged(e):
                if _cannot_write(e):
                    raise folder_problem(self.log_dir, OSError(str(e))) from e
                raise
            self._discard(opened, e)
        if resync:
            self.sync()
        with closing(self._connect()) as db:
            return work(db)

    def _identity(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_dev, stat.st_ino

    def _discard(self, opened: tuple[int, int] | None, error: sqlite3.DatabaseError) -> None:
        """Remove the damaged index file, unless another thread has already put a new one there."""
        with _discard_lock:
            if self._identity() != opened:
                return
            logger.warning("the history index %s is damaged (%s); rebuilding it from the logs", self.path, error)
            for suffix in ("", "-wal", "-shm"):
                try:
                    self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)
                except OSError as e:
                    raise folder_problem(self.log_dir, e) from e

    def sync(self) -> SyncResult:
        """Index new and changed log files and forget deleted ones."""
        on_disk = {}
        try:
            for entry in scan_sessions(self.log_dir):
                stat = entry.stat(follow_symlinks=False)
                on_disk[entry.name[:-6]] = (stat.st_mtime_ns, stat.st_size, entry.path)  # a Path only when read
        except OSError as e:
            raise folder_problem(self.log_dir, e) from e

        def work(db: sqlite3.Connection) -> SyncResult:
            with _transaction(db):  # what is indexed is read in the write transaction: no other sync interleaves
                indexed = {row[0]: (row[1], row[2]) for row in db.execute("SELECT id, mtime_ns, size FROM sessions")}
                removed = indexed.keys() - on_disk.keys()
                changed = [sid for sid, (mtime, size, _) in on_disk.items() if indexed.get(sid) != (mtime, size)]
                for session_id in removed:
                    _forget(db, session_id)
                unread = 0
                for session_id in sorted(changed):  # oldest first: newer turns get higher row ids
                    mtime, size, path = on_disk[session_id]
                    try:
                        logged = read_session(path)
                    except OSError:
                        unread += 1
                        continue  # deleted or unreadable since the scan: the next sync sees it
                    if session_id in indexed:
                        _forget(db, session_id)
                    _insert(db, session_id, mtime, size, logged)
            added = sum(1 for sid in changed if sid not in indexed)
            return SyncResult(added=added, updated=len(changed) - added, removed=len(removed), unread=unread)

        return self._run(work, resync=False)

    def count(self) -> int:
        return self._run(lambda db: db.execute("SELECT count(*) FROM sessions").fetchone()[0])

    def page(self, offset: int = 0, limit: int = 20) -> list[SessionSummary]:
        """Sessions newest first (ids begin with their UTC start time)."""
        rows = self._run(lambda db: db.execute(
            "SELECT id, created, first_question, turns, duration_s, model, images, errors, notes "
            "FROM sessions ORDER BY id DESC LIMIT ? OFFSET ?", (limit, offset)).fetchall())
        return [_summary(row) for row in rows]

    def get(self, session_id: str) -> SessionSummary | None:
        row = self._run(lambda db: db.execute(
            "SELECT id, created, first_question, turns, duration_s, model, images, errors, notes "
            "FROM sessions WHERE id = ?", (session_id,)).fetchone())
        return _summary(row) if row else None

    def search(self, text: str, limit: int = 50) -> list[SearchHit]:
        """Turns whose question (or transcript) or reply contain all the words, most recently
        written first (FTS5 walks its index in row id order and stops at the limit, so a word
        found in every session costs no more than a rare one)."""
        exact = fts_query(text, prefix=False)
        if exact is None:
            return []

        def work(db: sqlite3.Connection) -> list[tuple]:
            rows = _matches(db, exact, limit)
            if len(rows) < limit:  # the last word may be cut short ("crim" for crimson): widen
                rows = _matches(db, fts_query(text, prefix=True), limit)
            return rows

        rows = self._run(work)
        return [SearchHit(sid, int(turn), question, answer, created) for sid, turn, question, answer, created in rows]

    def forget(self, session_id: str) -> set[str]:
        """Forget a session's rows (its files are the store's: core.store.sessions deletes them).
        Returns the digests of the media files that only this session used."""

        def work(db: sqlite3.Connection) -> set[str]:
            with _transaction(db):
                own = {d for (d,) in db.execute("SELECT digest FROM media WHERE session_id = ?", (session_id,))}
                shared = {d for (d,) in db.execute(
                    "SELECT DISTINCT digest FROM media WHERE session_id != ? AND digest IN "
                    "(SELECT digest FROM media WHERE session_id = ?)", (session_id, session_id))}
                _forget(db, session_id)
            return own - shared

        return self._run(work)

    def referenced_media(self) -> set[str]:
        """The digests of the media files that some indexed session refers to."""
        return self._run(lambda db: {d for (d,) in db.execute("SELECT DISTINCT digest FROM media")})


def _matches(db: sqlite3.Connection, query: str, limit: int) -> list[tuple]:
    # FTS5 first, on its own, so that it stops at the limit; then the few rows are joined.
    return db.execute(
        "SELECT t.session_id, t.turn, m.question, m.answer, s.created FROM ("
        f"  SELECT rowid AS id, snippet(turn_text, 0, '{MARK_START}', '{MARK_END}', '…', 16) AS question,"
        f"  snippet(turn_text, 1, '{MARK_START}', '{MARK_END}', '…', 24) AS answer"
        "  FROM turn_text WHERE turn_text MATCH ? ORDER BY rowid DESC LIMIT ?"
        ") m JOIN turns t ON t.id = m.id JOIN sessions s ON s.id = t.session_id ORDER BY m.id DESC",
        (query, limit)).fetchall()


def _schema(db: sqlite3.Connection) -> str | None:
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    except sqlite3.OperationalError:  # no meta table yet
        return None
    return row[0] if row else None


def _use_wal(db: sqlite3.Connection, patience_s: float = 30.0) -> None:
    """Switch a new index to WAL. Switching needs the file alone, and SQLite may answer "database is
    locked" at once, without its busy timeout, while another session opens it: try again a while."""
    deadline = time.monotonic() + patience_s
    while db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        try:
            db.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextmanager
def _transaction(db: sqlite3.Connection):
    """One write transaction; IMMEDIATE so that concurrent syncs queue instead of failing."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _damaged(error: sqlite3.DatabaseError) -> bool:
    """A damaged database file (not a busy one, nor a constraint)."""
    name = getattr(error, "sqlite_errorname", "") or ""
    if name:
        return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))
    return any(words in str(error) for words in ("malformed", "not a database"))


def _cannot_write(error: sqlite3.DatabaseError) -> bool:
    name = getattr(error, "sqlite_errorname", "") or ""
    return name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_FULL"))


_discard_lock = threading.Lock()  # one thread at a time decides that an index is damaged


def _forget(db: sqlite3.Connection, session_id: str) -> None:
    for table, column in (("sessions", "id"), ("media", "session_id"), ("turns", "session_id")):
        db.execute(f"DELETE FROM {table} WHERE {column} = ?", (session_id,))


def _insert(db: sqlite3.Connection, session_id: str, mtime: int, size: int, logged: LoggedSession) -> None:
    exchanges = logged.conversation.exchanges
    images = [e.question.image for e in exchanges if e.question.image]
    db.execute(
        "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (session_id, mtime, size, logged.created or _created_from_id(session_id),
         exchanges[0].question.text[:FIRST_QUESTION_CHARS] if exchanges else "", len(exchanges), logged.duration_s,
         str(logged.header.get("model", "")), json.dumps(list(dict.fromkeys(images))), len(logged.errors),
         len(logged.notes)))
    db.executemany("INSERT INTO media VALUES (?, ?)", [(session_id, d) for d in logged.media()])
    db.executemany(
        "INSERT INTO turns (session_id, turn, question, answer) VALUES (?, ?, ?, ?)",
        [(session_id, e.turn.number, e.question.text[:MAX_INDEXED_CHARS], e.answer.text[:MAX_INDEXED_CHARS] if e.answer else "")
         for e in exchanges])


def _created_from_id(session_id: str) -> str:
    day, time = session_id.split("-")[:2]
    return f"{day[:4]}-{day[4:6]}-{day[6:]}T{time[:2]}:{time[2:4]}:{time[4:]}+00:00"


def _summary(row) -> SessionSummary:
    sid, created, first, turns, duration, model, images, errors, notes = row
    return SessionSummary(sid, created, first, turns, duration, model, tuple(json.loads(images)), errors, notes)
