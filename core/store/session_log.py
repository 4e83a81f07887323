"""Session logs: one JSONL file per session under LOG_DIR, media stored once by content hash.

    LOG_DIR/sessions/<session id>.jsonl   one JSON record per line, appended as things happen
    LOG_DIR/media/<digest>.<ext>          uploaded images, recordings and spoken replies

Every file starts with a "session" record carrying the format version. Reading goes through
read_session(), which upgrades older versions and skips lines it cannot parse (a crash can leave
the last line half written), reporting them in LoggedSession.notes.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from core.conversation import Answer, Conversation, Notice, Question, Turn
from core.errors import AppError
from core.limits import MAX_LOGGED_DETAIL_CHARS, MAX_SESSION_LOG_BYTES

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
SESSION_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{6}$")
DIGEST = re.compile(r"^[0-9a-f]{16,64}$")
EXTENSION = re.compile(r"^[a-z0-9]{1,5}$")
UNSAVED_MEDIA_BYTES = 256 * 1024 * 1024  # media held in memory while the log folder cannot be written

LOG_FULL = (f"This session's log reached its limit of {MAX_SESSION_LOG_BYTES // 2**20} MiB: what follows is not saved. "
            "Start a new session to save a conversation again.")
LOG_FULL_LINE = json.dumps({"type": "notice", "text": LOG_FULL, "level": "warning"})

_unsaved_media: dict[Path, bytes] = {}  # path it belongs at -> bytes, for every log folder of the process
_unsaved_lock = threading.Lock()


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


def user_log_dir(log_dir: Path, identity: str, by: str = "sub") -> Path:
    """The folder of one signed-in user's sessions: LOG_DIR/users/<hash of their identity>.
    Hashed, so that no name or address from the identity provider ever becomes a path.

    by: what identity holds after the issuer: "sub" (the provider's user id; the folder name is the
    bare hash, as it always was) or "email" (a provider that gives no sub): those folders are
    named "email-<hash>", so that an email never leads to the folder of a user whose sub is the
    same text."""
    if by not in ("sub", "email"):
        raise ValueError(f"unknown kind of identity: {by!r}")
    digest = hashlib.sha256(identity.encode()).hexdigest()[:24]
    return Path(log_dir) / "users" / (digest if by == "sub" else f"{by}-{digest}")


def _inside(log_dir: Path, path: Path) -> None:
    if not path.resolve().is_relative_to(Path(log_dir).resolve()):
        raise ValueError(f"{path} leads outside the log folder")


def save_media(log_dir: Path, data: bytes, digest: str, extension: str) -> Path:
    """Store a media file once under its content hash (atomic: written aside, then renamed).
    When the log folder cannot be written, the file is kept in memory (up to UNSAVED_MEDIA_BYTES)
    and written by the next SessionLog write that succeeds: the chat goes on either way."""
    if not DIGEST.match(digest) or not EXTENSION.match(extension):
        raise ValueError(f"bad media name {digest!r}.{extension!r}")
    path = Path(log_dir) / "media" / f"{digest}.{extension}"
    try:
        _write_media(path, data)
    except OSError as e:
        with _unsaved_lock:
            held = sum(len(d) for d in _unsaved_media.values())
            if path not in _unsaved_media and held + len(data) <= UNSAVED_MEDIA_BYTES:
                _unsaved_media[path] = data
                logger.warning("media file %s not saved (%s); kept in memory until the folder can be written", path, e)
            elif path not in _unsaved_media:
                logger.error("media file %s not saved (%s) and dropped: %d bytes already wait", path, e, held)
    return path


def _write_media(path: Path, data: bytes) -> None:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{secrets.token_hex(4)}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)


def save_unsaved_media(log_dir: Path) -> int:
    """Write the media files of log_dir that save_media had to keep in memory; returns how many
    are still waiting (their folder still cannot be written)."""
    root = Path(log_dir)
    with _unsaved_lock:
        waiting = [(p, d) for p, d in _unsaved_media.items() if p.parent.parent == root]
    for path, data in waiting:
        try:
            _write_media(path, data)
        except OSError:
            continue
        with _unsaved_lock:
            _unsaved_media.pop(path, None)
    with _unsaved_lock:
        return sum(1 for p in _unsaved_media if p.parent.parent == root)


def media_path(log_dir: Path, digest: str | None) -> Path | None:
    """The stored file for a digest, whatever its extension; None if missing."""
    if not digest or not DIGEST.match(digest):
        return None
    for path in (Path(log_dir) / "media").glob(f"{digest}.*"):
        if not path.name.endswith(".tmp") and path.resolve().is_relative_to(Path(log_dir).resolve()):
            return path
    return None


class LogFolderError(AppError):
    """The log folder cannot be read or written (a file in its place, no permission, removed)."""


def folder_problem(log_dir: Path, error: OSError) -> LogFolderError:
    """What went wrong with the log folder, said so that the user can fix it."""
    log_dir = Path(log_dir)
    blocker = next((p for p in (log_dir, *log_dir.parents) if p.exists() or p.is_symlink()), None)
    if blocker is not None and not blocker.is_dir():
        return LogFolderError(f"{blocker} is a file, where the log folder should be.",
                              "Move that file away, or set LOG_DIR to a folder the app can write to.")
    if isinstance(error, PermissionError):
        return LogFolderError(f"The log folder {log_dir} cannot be written or read (permission denied).",
                              "Give the app's user write access to it, or set LOG_DIR to another folder.")
    return LogFolderError(f"The log folder {log_dir} cannot be used ({error.strerror or error}).",
                          "Check that its disk is mounted and has space, or set LOG_DIR to another folder.")


class SessionLog:
    """Appends the records of one session; every write is whole lines, flushed and synced.

    Nothing is lost when the folder cannot be written (removed, a file in its place, no
    permission): records wait in memory, in order, and the next write that works saves them, the
    folder re-created if needed; `problem` says what is wrong meanwhile. The object keeps the lines
    the file holds, so that a log removed with its folder is written again whole. Appends take an
    exclusive lock (flock) on the file, and lines that another writer (a second tab continuing the
    session) added are read first.
    """

    def __init__(self, log_dir: Path, session_id: str, durable: bool = True):
        self.log_dir = Path(log_dir)
        self.session_id = session_id
        self.path = session_path(self.log_dir, session_id)
        self.durable = durable  # fsync each record (off only for synthetic logs in benchmarks)
        self.problem: LogFolderError | None = None  # why the last write failed; None once one works
        self.full = False  # the file reached MAX_SESSION_LOG_BYTES: nothing more is written
        self._saved: list[str] = []  # the lines the file holds, as far as this object knows
        self._pending: list[dict] = []  # records not written yet, in order
        self._file: tuple[int, int] | None = None  # (device, inode) of the file when last written
        self._size = 0  # its size then
        self._last_turn = -1  # highest question turn in the file
        if self.path.is_file():  # a session continued: its lines are known from the start
            try:
                with open(self.path, "rb") as f:
                    self._take_tail(f, 0)
            except OSError as e:
                logger.warning("cannot read %s: %s", self.path, e)

    @classmethod
    def create(cls, log_dir: Path, durable: bool = True, **meta) -> "SessionLog":
        while True:
            log = cls(log_dir, new_session_id(), durable)
            try:
                log.path.parent.mkdir(parents=True, exist_ok=True)
                open(log.path, "x").close()  # claim the id: two sessions in one second never share a file
            except FileExistsError:
                if log.path.parent.is_dir():
                    continue
            except OSError:
                pass  # the folder cannot be written: the header waits in memory with the rest
            log.append({"type": "session", "v": FORMAT_VERSION, "id": log.session_id, "created": now(), **meta})
            return log

    @property
    def waiting(self) -> int:
        """Records not yet in the file."""
        return len(self._pending)

    def append(self, record: dict) -> None:
        if self.full:  # past MAX_SESSION_LOG_BYTES: the conversation goes on, unsaved (the marker says so)
            return
        if isinstance(record.get("detail"), str):  # an error's traceback: a deep recursion's is megabytes
            record = {**record, "detail": record["detail"][:MAX_LOGGED_DETAIL_CHARS]}
        self._pending.append({**record, "ts": record.get("ts", now())})
        self.flush()

    def _within_limit(self, lines: list[str]) -> list[str]:
        """The lines that keep the file within MAX_SESSION_LOG_BYTES; past it, a last notice says the
        rest of the session is not saved, and nothing more is written (self.full)."""
        room = MAX_SESSION_LOG_BYTES - self._size - len(LOG_FULL_LINE) - 2
        kept: list[str] = []
        for line in lines:
            room -= len(line.encode()) + 1
            if room < 0:
                logger.warning("session %s: its log reached %d bytes; later records are not written",
                               self.session_id, MAX_SESSION_LOG_BYTES)
                self.full = True
                return [*kept, LOG_FULL_LINE]
            kept.append(line)
        return kept

    def flush(self) -> bool:
        """Write the waiting records; True when none is left waiting."""
        if not self._pending:
            return True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)  # removed mid-session: made again
            with open(self.path, "a+b") as f:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # released when the file is closed
                self._catch_up(f)
                lines, assigned, last_turn = self._lines_to_write()
                lines = self._within_limit(lines)
                data = "".join(line + "\n" for line in lines).encode()
                if self._size and not self._saved_ends_with_newline(f):
                    data = b"\n" + data  # a crash left a half line: never glue a record onto it
                f.write(data)
                f.flush()
                if self.durable:
                    os.fsync(f.fileno())
                stat = os.fstat(f.fileno())
        except OSError as e:
            if self.problem is None:
                logger.warning("session %s: %d record(s) wait in memory: %s", self.session_id, len(self._pending), e)
            self.problem = folder_problem(self.log_dir, e)
            return False
        for turn, number in assigned.items():
            turn.number = number
        self._saved.extend(lines)
        self._pending.clear()
        self._last_turn = last_turn
        self._file, self._size = (stat.st_dev, stat.st_ino), stat.st_size
        if self.problem is not None:
            logger.info("session %s: saving works again; the waiting records are in %s", self.session_id, self.path)
        self.problem = None
        save_unsaved_media(self.log_dir)
        return True

    def _catch_up(self, f) -> None:
        """Bring what this object knows in step with the file (held under the lock)."""
        stat = os.fstat(f.fileno())
        if self._file is None and not self._saved:  # never written by this object, nothing known
            self._take_tail(f, 0)
        elif (stat.st_dev, stat.st_ino) != self._file or stat.st_size < self._size:
            # the file was removed (maybe with its folder) or replaced: read what it holds now and
            # write again the known lines it lacks, before the waiting ones
            known = self._saved
            self._saved, self._last_turn = [], -1
            self._take_tail(f, 0)
            present = set(self._saved)
            self._pending[:0] = [_Line(line) for line in known if line not in present]
            if self._pending and known:
                logger.warning("%s was removed or replaced; writing its %d known line(s) again", self.path, len(known))
        elif stat.st_size > self._size:  # another writer appended
            self._take_tail(f, self._size)

    def _take_tail(self, f, offset: int) -> None:
        f.seek(offset)
        data = f.read()
        self._size = offset + len(data)
        stat = os.fstat(f.fileno())
        self._file = (stat.st_dev, stat.st_ino)
        for line in data.decode("utf-8", errors="replace").split("\n"):
            if line.strip():
                self._saved.append(line)
                self._last_turn = max(self._last_turn, _question_turn(line))

    def _saved_ends_with_newline(self, f) -> bool:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"

    def _lines_to_write(self) -> tuple[list[str], dict[Turn, int], int]:
        """The waiting records as lines; new turns numbered after the highest in the file."""
        lines, assigned, last = [], {}, self._last_turn
        for record in self._pending:
            if isinstance(record, _Line):
                lines.append(record)
                last = max(last, _question_turn(record))
                continue
            turn = record.get("turn")
            if isinstance(turn, Turn):
                if turn.number is None and turn not in assigned:
                    assigned[turn] = last + 1
                number = assigned.get(turn, turn.number)
                record = {**record, "turn": number}
            if record.get("type") == "question" and isinstance(record.get("turn"), int):
                last = max(last, record["turn"])
            lines.append(json.dumps(record, ensure_ascii=False))
        return lines, assigned, last

    def question(self, turn: int | Turn, question: Question) -> None:
        self.append(question_record(turn, question))

    def answer(self, turn: int | Turn, answer: Answer) -> None:
        self.append(answer_record(turn, answer))

    def feedback(self, turn: int | Turn, score: int | None) -> None:
        self.append(feedback_record(turn, score))

    def notice(self, notice: Notice) -> None:
        self.append(notice_record(notice))

    def error(self, message: str, turn: int | Turn | None = None, detail: str = "") -> None:
        self.append({"type": "error", "turn": turn, "message": message, "detail": detail})


# The records that change a conversation; "turn" is the exchange's Turn (live) or its number (read back).
def question_record(turn: int | Turn, question: Question) -> dict:
    return {"type": "question", "turn": turn, **asdict(question)}


def answer_record(turn: int | Turn, answer: Answer) -> dict:
    record = asdict(answer)
    record.pop("feedback")  # a record of its own
    return {"type": "answer", "turn": turn, **record}


def feedback_record(turn: int | Turn, score: int | None) -> dict:
    return {"type": "feedback", "turn": turn, "score": score}


def notice_record(notice: Notice) -> dict:
    return {"type": "notice", **asdict(notice)}


def apply(conversation: Conversation, record: dict) -> None:
    """Apply one record to a conversation: what a live session does as it writes the record, and
    what reading its log does again. A question of a turn already there is an edit (the question
    replaced, the answer dropped); feedback goes to an answer; other kinds change nothing. Raises
    KeyError, TypeError or IndexError for a record that does not fit the conversation."""
    kind = record.get("type")
    if kind == "notice":
        conversation.notify(Notice(**_fields(record, Notice)))
    elif kind in ("question", "answer", "feedback"):
        turn = record["turn"]
        if not isinstance(turn, Turn) and type(turn) is not int:  # the number History, the index and the exports show
            raise TypeError(f"turn {turn!r} is not a number")
        index = conversation.find(turn)
        if kind == "question":
            question = Question(**_fields(record, Question))
            if index is None:
                conversation.ask(question, turn if isinstance(turn, Turn) else Turn(turn))
            else:
                conversation.unanswer(index, question=question)
        elif index is None:
            raise KeyError(f"no question of turn {turn}")
        elif kind == "answer":
            conversation.answer(index, Answer(**_fields(record, Answer)))
        else:
            conversation.set_feedback(index, record.get("score"))


def _question_turn(line: str) -> int:
    """The turn number of a logged question line; -1 for any other line."""
    if '"question"' not in line:
        return -1
    try:
        record = json.loads(line)
    except ValueError:
        return -1
    if isinstance(record, dict) and record.get("type") == "question" and isinstance(record.get("turn"), int):
        return record["turn"]
    return -1


class _Line(str):
    """A line already written once, waiting to be written again (its file was removed)."""


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
    conversation = Conversation()
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
            if kind == "error":
                errors.append(record)
            else:
                apply(conversation, record)  # what the live session did when it wrote the record
        except (KeyError, TypeError, IndexError) as e:
            notes.append(f"line {number} ({kind}) could not be used and was skipped: {e!r}")
    if version < FORMAT_VERSION and header:
        notes.append(f"upgraded from format version {version}")
    session_id = header.get("id") or path.stem
    return LoggedSession(session_id, header, conversation, errors, notes, version, updated)


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

