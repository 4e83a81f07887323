"""Session logs: one JSONL file per session under LOG_DIR, media stored once by content hash.

    LOG_DIR/sessions/<session id>.jsonl   one JSON record per line, appended as things happen
    LOG_DIR/media/<digest>.<ext>          uploaded images, recordings and spoken replies

Every file starts with a "session" record carrying the format version. Reading goes through
read_session(), which upgrades older versions and skips lines it cannot parse (a crash can leave
the last line half written), reporting them in LoggedSession.notes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from core.conversation import Answer, Conversation, Exchange, Notice, Question

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
SESSION_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{6}$")
DIGEST = re.compile(r"^[0-9a-f]{16,64}$")
EXTENSION = re.compile(r"^[a-z0-9]{1,5}$")


def new_session_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def session_path(log_dir: Path, session_id: str) -> Path:
    """The log file of a session. Refuses anything that is not a session id (a path, "../x", an
    absolute name) and a file that resolves outside LOG_DIR (a symlink pointing elsewhere)."""
    if not isinstance(session_id, str) or not SESSION_ID.match(session_id):
        raise ValueError(f"not a session id: {session_id!r}")
    path = Path(log_dir) / "sessions" / f"{session_id}.jsonl"
    _inside(log_dir, path)
    return path


def user_log_dir(log_dir: Path, identity: str) -> Path:
    """The folder of one signed-in user's sessions: LOG_DIR/users/<hash of their identity>.
    Hashed, so that no name or address from the identity provider ever becomes a path."""
    return Path(log_dir) / "users" / hashlib.sha256(identity.encode()).hexdigest()[:24]


def _inside(log_dir: Path, path: Path) -> None:
    if not path.resolve().is_relative_to(Path(log_dir).resolve()):
        raise ValueError(f"{path} leads outside the log folder")


def save_media(log_dir: Path, data: bytes, digest: str, extension: str) -> Path:
    """Store a media file once under its content hash (atomic: written aside, then renamed)."""
    if not DIGEST.match(digest) or not EXTENSION.match(extension):
        raise ValueError(f"bad media name {digest!r}.{extension!r}")
    path = Path(log_dir) / "media" / f"{digest}.{extension}"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{secrets.token_hex(4)}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return path


def media_path(log_dir: Path, digest: str | None) -> Path | None:
    """The stored file for a digest, whatever its extension; None if missing."""
    if not digest or not DIGEST.match(digest):
        return None
    for path in (Path(log_dir) / "media").glob(f"{digest}.*"):
        if not path.name.endswith(".tmp") and path.resolve().is_relative_to(Path(log_dir).resolve()):
            return path
    return None


class SessionLog:
    """Appends the records of one session; every write is a whole line, flushed and synced."""

    def __init__(self, log_dir: Path, session_id: str, durable: bool = True):
        self.log_dir = Path(log_dir)
        self.session_id = session_id
        self.path = session_path(self.log_dir, session_id)
        self.durable = durable  # fsync each record (off only for synthetic logs in benchmarks)

    @classmethod
    def create(cls, log_dir: Path, durable: bool = True, **meta) -> "SessionLog":
        while True:
            log = cls(log_dir, new_session_id(), durable)
            log.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                open(log.path, "x").close()  # claim the id: two sessions in one second never share a file
            except FileExistsError:
                continue
            log.append({"type": "session", "v": FORMAT_VERSION, "id": log.session_id, "created": now(), **meta})
            return log

    def append(self, record: dict) -> None:
        line = json.dumps({**record, "ts": record.get("ts", now())}, ensure_ascii=False)
        with open(self.path, "a", encoding="utf-8") as f:
            if f.tell() > 0 and not _ends_with_newline(self.path):
                f.write("\n")  # a crash left a half line: never glue a record onto it
            f.write(line + "\n")
            if self.durable:
                f.flush()
                os.fsync(f.fileno())

    def question(self, turn: int, question: Question) -> None:
        self.append({"type": "question", "turn": turn, **asdict(question)})

    def answer(self, turn: int, answer: Answer) -> None:
        record = asdict(answer)
        record.pop("feedback")
        self.append({"type": "answer", "turn": turn, **record})

    def feedback(self, turn: int, score: int | None) -> None:
        self.append({"type": "feedback", "turn": turn, "score": score})

    def notice(self, notice: Notice) -> None:
        self.append({"type": "notice", **asdict(notice)})

    def error(self, message: str, turn: int | None = None, detail: str = "") -> None:
        self.append({"type": "error", "turn": turn, "message": message, "detail": detail})


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


@dataclass
class LoggedSession:
    session_id: str
    header: dict
    conversation: Conversation
    errors: list[dict] = field(default_factory=list)  # error records, in order
    notes: list[str] = field(default_factory=list)  # what could not be read, and upgrades made
    version: int = FORMAT_VERSION
    updated: str = ""  # time of the last readable record (ISO 8601)

    @property
    def created(self) -> str:
        return self.header.get("created", "")

    @property
    def duration_s(self) -> float:
        """Seconds from the start of the session to its last record (0 when unknown)."""
        try:
            return max(0.0, (datetime.fromisoformat(self.updated) - datetime.fromisoformat(self.created)).total_seconds())
        except ValueError:
            return 0.0

    def media(self) -> set[str]:
        """Digests of every image, recording and spoken reply the session refers to."""
        digests = set()
        for exchange in self.conversation.exchanges:
            digests.update((exchange.question.image, exchange.question.audio))
            if exchange.answer:
                digests.add(exchange.answer.audio)
        digests.discard(None)
        return digests


def _upgrade_v1(record: dict, state: dict) -> dict:
    """Version 1 (the first release) wrote {"type": "user"|"assistant", "text", "image"} lines,
    numbered nothing, and put its timings ("<stage>_s": seconds) at the top level."""
    kind = record.get("type")
    if kind == "user":
        state["turn"] = state.get("turn", -1) + 1
        return {"type": "question", "turn": state["turn"], "text": record.get("text", ""),
                "source": "voice" if record.get("audio") else "text", "language": record.get("language", "en"),
                "image": record.get("image"), "audio": record.get("audio")}
    if kind == "assistant":
        timings = {k: v for k, v in record.items() if k.endswith("_s")}
        return {"type": "answer", "turn": state.get("turn", 0), "text": record.get("text", ""),
                "audio": record.get("audio"), "timings": timings}
    return record


def read_session(path: Path) -> LoggedSession:
    """Read a session log of any version; unreadable lines are skipped and reported in notes."""
    path = Path(path)
    header: dict = {}
    notes: list[str] = []
    errors: list[dict] = []
    items: list = []
    by_turn: dict[int, int] = {}  # turn number -> index in items
    upgrade_state: dict = {}
    version = FORMAT_VERSION
    updated = ""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not an object")
        except ValueError:
            last = number == len(lines) or all(not rest.strip() for rest in lines[number:])
            problem = "was cut off (the session may have ended abruptly)" if last else "is not valid JSON"
            notes.append(f"line {number} {problem} and was skipped")
            continue
        kind = record.get("type")
        updated = record.get("ts", updated) if isinstance(record.get("ts"), str) else updated
        if kind == "session":
            header, version = record, int(record.get("v", 1))
            if version > FORMAT_VERSION:
                notes.append(f"written by a newer version (format {version}); some details may be missing")
            continue
        if version == 1:
            record = _upgrade_v1(record, upgrade_state)
            kind = record.get("type")
        try:
            if kind == "question":
                question = Question(**_fields(record, Question))
                if record["turn"] in by_turn:  # the question was edited: it replaces the old one
                    items[by_turn[record["turn"]]] = Exchange(question)
                else:
                    by_turn[record["turn"]] = len(items)
                    items.append(Exchange(question))
            elif kind == "answer":
                index = by_turn[record["turn"]]
                answer = Answer(**_fields(record, Answer))
                items[index] = Exchange(items[index].question, answer)
            elif kind == "feedback":
                index = by_turn[record["turn"]]
                exchange = items[index]
                if exchange.answer:
                    items[index] = Exchange(exchange.question, replace(exchange.answer, feedback=record.get("score")))
            elif kind == "notice":
                items.append(Notice(**_fields(record, Notice)))
            elif kind == "error":
                errors.append(record)
        except (KeyError, TypeError, IndexError) as e:
            notes.append(f"line {number} ({kind}) could not be used and was skipped: {e!r}")
    if version < FORMAT_VERSION and header:
        notes.append(f"upgraded from format version {version}")
    session_id = header.get("id") or path.stem
    return LoggedSession(session_id, header, Conversation(items), errors, notes, version, updated)


def _fields(record: dict, cls) -> dict:
    names = cls.__dataclass_fields__
    return {k: v for k, v in record.items() if k in names}


def list_session_files(log_dir: Path) -> list[Path]:
    """Session log files, newest first (ids start with their UTC creation time)."""
    return sorted((Path(entry.path) for entry in scan_sessions(log_dir)), reverse=True)


def scan_sessions(log_dir: Path) -> list[os.DirEntry]:
    """The session files in LOG_DIR/sessions, unordered, with their cached stat. Symlinks are
    left out: a log is a plain file, and a link could lead outside LOG_DIR."""
    folder = Path(log_dir) / "sessions"
    if not folder.is_dir() or not folder.resolve().is_relative_to(Path(log_dir).resolve()):
        return []
    with os.scandir(folder) as entries:
        return [
            entry for entry in entries
            if entry.name.endswith(".jsonl") and SESSION_ID.match(entry.name[:-6]) and entry.is_file(follow_symlinks=False)
        ]

