"""A search index over the session logs: SQLite with FTS5, kept in step with the files.

The log files stay the source of truth. The index (LOG_DIR/index.sqlite3) only holds what the
History page lists and searches, and sync() brings it up to date by comparing each file's size
and modification time with what was indexed: new and changed files are read again, rows of
deleted files are dropped. Deleting the index file is always safe; the next sync rebuilds it.
"""

from __future__ import annotations

import json
import re
import sqlite3
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from core.session_log import LoggedSession, media_path, read_session, scan_sessions, session_path

SCHEMA_VERSION = "3"
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
        self.log_dir.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)  # transactions are explicit
        db.execute("PRAGMA journal_mode = WAL")  # readers never wait for a sync in another session
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
        return db

    def sync(self) -> SyncResult:
        """Index new and changed log files and forget deleted ones."""
        on_disk = {}
        for entry in scan_sessions(self.log_dir):
            stat = entry.stat(follow_symlinks=False)
            on_disk[entry.name[:-6]] = (stat.st_mtime_ns, stat.st_size, entry.path)  # a Path only when read
        with closing(self._connect()) as db:
            indexed = {row[0]: (row[1], row[2]) for row in db.execute("SELECT id, mtime_ns, size FROM sessions")}
            removed = indexed.keys() - on_disk.keys()
            changed = [sid for sid, (mtime, size, _) in on_disk.items() if indexed.get(sid) != (mtime, size)]
            with _transaction(db):
                for session_id in removed:
                    _forget(db, session_id)
                for session_id in sorted(changed):  # oldest first: newer turns get higher row ids
                    mtime, size, path = on_disk[session_id]
                    try:
                        logged = read_session(path)
                    except OSError:
                        continue  # deleted or unreadable since the scan: the next sync sees it
                    if session_id in indexed:
                        _forget(db, session_id)
                    _insert(db, session_id, mtime, size, logged)
        added = sum(1 for sid in changed if sid not in indexed)
        return SyncResult(added=added, updated=len(changed) - added, removed=len(removed))

    def count(self) -> int:
        with closing(self._connect()) as db:
            return db.execute("SELECT count(*) FROM sessions").fetchone()[0]

    def page(self, offset: int = 0, limit: int = 20) -> list[SessionSummary]:
        """Sessions newest first (ids begin with their UTC start time)."""
        with closing(self._connect()) as db:
            rows = db.execute(
                "SELECT id, created, first_question, turns, duration_s, model, images, errors, notes "
                "FROM sessions ORDER BY id DESC LIMIT ? OFFSET ?", (limit, offset)).fetchall()
        return [_summary(row) for row in rows]

    def get(self, session_id: str) -> SessionSummary | None:
        with closing(self._connect()) as db:
            row = db.execute(
                "SELECT id, created, first_question, turns, duration_s, model, images, errors, notes "
                "FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return _summary(row) if row else None

    def search(self, text: str, limit: int = 50) -> list[SearchHit]:
        """Turns whose question (or transcript) or reply contain all the words, most recently
        written first (FTS5 walks its index in row id order and stops at the limit, so a word
        found in every session costs no more than a rare one)."""
        exact = fts_query(text, prefix=False)
        if exact is None:
            return []
        with closing(self._connect()) as db:
            rows = _matches(db, exact, limit)
            if len(rows) < limit:  # the last word may be cut short ("crim" for crimson): widen
                rows = _matches(db, fts_query(text, prefix=True), limit)
        return [SearchHit(sid, int(turn), question, answer, created) for sid, turn, question, answer, created in rows]

    def delete(self, session_id: str) -> list[Path]:
        """Delete a session: its log, the media files no other session uses, its index rows.
        Returns the files removed."""
        path = session_path(self.log_dir, session_id)  # refuses anything that is not a session id
        self.sync()  # media references of every other session must be current
        removed = []
        with closing(self._connect()) as db:
            with _transaction(db):
                own = {d for (d,) in db.execute("SELECT digest FROM media WHERE session_id = ?", (session_id,))}
                shared = {d for (d,) in db.execute(
                    "SELECT DISTINCT digest FROM media WHERE session_id != ? AND digest IN "
                    "(SELECT digest FROM media WHERE session_id = ?)", (session_id, session_id))}
                if path.exists():
                    path.unlink()
                    removed.append(path)
                for digest in sorted(own - shared):
                    if file := media_path(self.log_dir, digest):
                        file.unlink(missing_ok=True)
                        removed.append(file)
                _forget(db, session_id)
        return removed


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


def _forget(db: sqlite3.Connection, session_id: str) -> None:
    for table, column in (("sessions", "id"), ("media", "session_id"), ("turns", "session_id")):
        db.execute(f"DELETE FROM {table} WHERE {column} = ?", (session_id,))


def _insert(db: sqlite3.Connection, session_id: str, mtime: int, size: int, logged: LoggedSession) -> None:
    exchanges = logged.conversation.exchanges
    images = [e.question.image for e in exchanges if e.question.image]
    db.execute(
        "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (session_id, mtime, size, logged.created or _created_from_id(session_id),
         exchanges[0].question.text if exchanges else "", len(exchanges), logged.duration_s,
         str(logged.header.get("model", "")), json.dumps(list(dict.fromkeys(images))), len(logged.errors),
         len(logged.notes)))
    db.executemany("INSERT INTO media VALUES (?, ?)", [(session_id, d) for d in logged.media()])
    db.executemany(
        "INSERT INTO turns (session_id, turn, question, answer) VALUES (?, ?, ?, ?)",
        [(session_id, turn, e.question.text, e.answer.text if e.answer else "") for turn, e in enumerate(exchanges)])


def _created_from_id(session_id: str) -> str:
    day, time = session_id.split("-")[:2]
    return f"{day[:4]}-{day[4:6]}-{day[6:]}T{time[:2]}:{time[2:4]}:{time[4:]}+00:00"


def _summary(row) -> SessionSummary:
    sid, created, first, turns, duration, model, images, errors, notes = row
    return SessionSummary(sid, created, first, turns, duration, model, tuple(json.loads(images)), errors, notes)
