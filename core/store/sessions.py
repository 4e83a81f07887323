"""Deleting sessions: the store removes a session's log and the media only it used, and the
history index forgets its rows (the logs are the source of truth; the index only mirrors them)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from core.store.history_index import HistoryIndex
from core.store.session_log import DIGEST, folder_problem, media_path, session_path

logger = logging.getLogger(__name__)

ORPHAN_MEDIA_AGE_S = 24 * 3600  # a media file no session refers to is removed once this old


def delete_session(index: HistoryIndex, session_id: str) -> list[Path]:
    """Delete a session: its log, the media files no other session uses, its index rows; and media
    files that no session refers to (see remove_unreferenced_media). Returns the files removed, the
    log first. The log goes first: when it cannot be removed, nothing is forgotten."""
    path = session_path(index.log_dir, session_id)  # refuses anything that is not a session id
    complete = index.sync().unread == 0  # media references of every other session must be current
    removed = []
    try:
        if path.exists():
            path.unlink()
            removed.append(path)
        for digest in sorted(index.forget(session_id)):
            if file := media_path(index.log_dir, digest):
                file.unlink(missing_ok=True)
                removed.append(file)
    except OSError as e:
        raise folder_problem(index.log_dir, e) from e
    if complete:  # every log was read: what none refers to is known
        removed += remove_unreferenced_media(index)
    return removed


def remove_unreferenced_media(index: HistoryIndex, min_age_s: float = ORPHAN_MEDIA_AGE_S) -> list[Path]:
    """Remove media files that no indexed session refers to and that are older than min_age_s
    (a recording whose transcript came out empty; younger ones may belong to a turn still
    being written). Call right after a sync that read every log. Returns the files removed."""
    folder = index.log_dir / "media"
    if not folder.is_dir() or folder.is_symlink():
        return []
    referenced = index.referenced_media()
    cutoff = time.time() - min_age_s
    removed = []
    for file in folder.iterdir():
        digest = file.name.split(".", 1)[0]
        if file.name.endswith(".tmp") or not DIGEST.match(digest) or digest in referenced:
            continue
        try:
            if file.is_file() and not file.is_symlink() and file.stat().st_mtime < cutoff:
                file.unlink()
                removed.append(file)
        except OSError as e:
            logger.warning("could not remove unreferenced media file %s: %s", file, e)
    return removed
