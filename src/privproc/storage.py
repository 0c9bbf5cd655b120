"""Small, careful file and SQLite helpers shared by every party that keeps state.

Rules: files holding secrets are created with mode 0600 from the first byte (never created and
then chmod-ed); replacing a file is write-fsync-rename-fsync(dir), so a crash leaves the old file
or the new one; a SQLite transaction that must be atomic with checks (quota, witness state, log
tiles) is `BEGIN IMMEDIATE` under the caller's lock, rolled back on any exception.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["create_private_file", "private_by_default", "transaction", "write_atomically"]


def private_by_default() -> None:
    """From now on, this process (and the parties it starts) creates files readable by their owner
    only (0600) and directories only their owner can enter (0700), from the first byte: no
    window in which a state directory, key, database or log is open to other local users."""
    os.umask(0o077)


def create_private_file(path: Path, data: bytes = b"") -> None:
    """Create `path` (it must not exist) readable by its owner only, holding `data`."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, *, private: bool = False) -> None:
    """Replace `path` with `data` so that readers see the old file or the new one, never a part
    (mode 0600 if `private`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def transaction(
    db: sqlite3.Connection, lock: threading.Lock | threading.RLock
) -> Iterator[sqlite3.Connection]:
    """One `BEGIN IMMEDIATE` transaction (the write lock taken up front) under `lock`."""
    with lock:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
