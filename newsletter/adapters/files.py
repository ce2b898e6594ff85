"""Files written whole or not at all: the one rule for every file this package writes.

``write_atomically`` writes to a temporary file in the same folder, flushes it to disk, renames it
over the target and flushes the folder: a crash or a full disk at any point leaves either the old
file or the complete new one, never a truncated one (a preview half written, or a feed cache body
that a later 304 would reuse).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomically(path: Path, data: bytes) -> Path:
    """Replace ``path`` with ``data`` atomically and durably; returns ``path``.

    The temporary file (hidden, unique, beside the target) is removed when anything fails, and
    the error is raised.
    """
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _sync_folder(path.parent)
    return path


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable; best effort (some file systems refuse to open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
