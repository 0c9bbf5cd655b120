"""Spent-token stores: remember every redeemed token until its key expires, so it is redeemed once.

One interface, two backends:
- `SqliteSpentStore`: the embedded default, one file, for one gateway process.
- `RedisSpentStore`: `SET key 1 NX EXAT expires` on a shared Redis, for several gateways.

Rules: `spend` is atomic (the first caller gets True, every later one False) and fails closed: if
the store cannot answer, it raises `StoreUnavailableError` and the token is refused. `is_spent`
only reads (a caller refuses a replay before doing work for it, and spends after). Entries are
token ids (a hash of the authenticator input), never tokens, and expire with their key.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from privproc.errors import PrivprocError, UsageError
from privproc.storage import create_private_file

__all__ = [
    "RedisSpentStore",
    "SpentTokenStore",
    "SqliteSpentStore",
    "StoreUnavailableError",
    "open_spent_store",
]

REDIS_PREFIX = "privproc:spent:"
_PURGE_EVERY = 1024  # spends between sweeps of expired SQLite rows


class StoreUnavailableError(PrivprocError):
    """The spent-token store could not be reached or did not answer."""


class SpentTokenStore(Protocol):
    async def spend(self, token_id: bytes, expires_at: float) -> bool:
        """Record `token_id` as spent until `expires_at`; True only for the first caller."""
        ...

    async def is_spent(self, token_id: bytes) -> bool:
        """Whether `token_id` has been spent (a read: it spends nothing)."""
        ...

    async def aclose(self) -> None: ...


class SqliteSpentStore:
    """Spent tokens in one SQLite file, written by one dedicated thread (off the event loop).

    WAL with synchronous=FULL: a spend is on disk before the token is accepted, so not even a power
    cut can make a spent token valid again. The flush costs latency on the first message of a
    session, never the event loop."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            create_private_file(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spent-sqlite")
        self._db = self._executor.submit(self._open, path).result()
        self._since_purge = 0

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(
            "CREATE TABLE IF NOT EXISTS spent (id BLOB PRIMARY KEY, expires INTEGER NOT NULL) "
            "WITHOUT ROWID"
        )
        return db

    def _spend(self, token_id: bytes, expires_at: float) -> bool:
        self._since_purge += 1
        if self._since_purge >= _PURGE_EVERY:
            self._since_purge = 0
            self._db.execute("DELETE FROM spent WHERE expires <= ?", (int(time.time()),))
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO spent (id, expires) VALUES (?, ?)",
            (token_id, math.ceil(expires_at)),
        )
        return cursor.rowcount == 1

    def _is_spent(self, token_id: bytes) -> bool:
        row = self._db.execute("SELECT 1 FROM spent WHERE id = ?", (token_id,)).fetchone()
        return row is not None

    async def spend(self, token_id: bytes, expires_at: float) -> bool:
        return await self._run(self._spend, token_id, expires_at)

    async def is_spent(self, token_id: bytes) -> bool:
        return await self._run(self._is_spent, token_id)

    async def _run(self, call: Callable[..., bool], *args: object) -> bool:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, call, *args)
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"the spent-token database failed: {exc}") from None

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._db.close)
        self._executor.shutdown(wait=True)


class RedisSpentStore:
    """Spent tokens in Redis, shared by every gateway that points at it."""

    def __init__(self, url: str, *, timeout: float = 2.0) -> None:
        self._url_for_errors = url.split("@")[-1]  # never repeat a password
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )

    async def check(self) -> None:
        """Fail with a clear message now, rather than at the first token, if Redis is absent."""
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            await self._redis.aclose()
            raise StoreUnavailableError(
                f"cannot reach Redis at {self._url_for_errors} for the spent-token store: {exc}"
            ) from None

    async def spend(self, token_id: bytes, expires_at: float) -> bool:
        try:
            created = await self._redis.set(
                REDIS_PREFIX + token_id.hex(), b"1", nx=True, exat=math.ceil(expires_at)
            )
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"the spent-token store (Redis) failed: {exc}") from None
        return bool(created)

    async def is_spent(self, token_id: bytes) -> bool:
        try:
            found = await self._redis.exists(REDIS_PREFIX + token_id.hex())
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"the spent-token store (Redis) failed: {exc}") from None
        return bool(found)

    async def aclose(self) -> None:
        await self._redis.aclose()


async def open_spent_store(spec: str) -> SqliteSpentStore | RedisSpentStore:
    """`sqlite:PATH` or a `redis://` / `rediss://` / `unix://` URL."""
    if spec.startswith("sqlite:"):
        path = spec.removeprefix("sqlite:")
        if not path:
            raise UsageError("sqlite: needs a path, as in sqlite:/var/lib/privproc/spent.sqlite3")
        return SqliteSpentStore(Path(path))
    if spec.startswith(("redis://", "rediss://", "unix://")):
        store = RedisSpentStore(spec)
        await store.check()
        return store
    raise UsageError("a spent-token store is sqlite:PATH or a redis:// URL")
