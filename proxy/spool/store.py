"""The spool file: SQLite in WAL mode, owned by one dedicated thread, with group commit.

Every call runs on a single-thread executor that owns the connection, so the event loop never
blocks on disk. Writes queue up while the thread is busy with a commit and then go in together:
one transaction and one fsync (`synchronous=FULL`) for all of them, so a burst of concurrent
requests costs one disk flush, not one each. A write's future resolves only once it is durable.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .entry import Refusal, SpoolEntry

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]
Effect = Callable[[Any], None]      # run on the store's thread once the op's transaction committed

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY, region TEXT NOT NULL, endpoint TEXT NOT NULL, method TEXT NOT NULL,
    path TEXT NOT NULL, query BLOB NOT NULL, headers TEXT NOT NULL, body BLOB NOT NULL,
    project TEXT NOT NULL, created_at REAL NOT NULL, size INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, in_flight INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS entries_by_region ON entries (region, id);
CREATE TABLE IF NOT EXISTS dead (
    id INTEGER PRIMARY KEY, region TEXT NOT NULL, endpoint TEXT NOT NULL, method TEXT NOT NULL,
    path TEXT NOT NULL, query BLOB NOT NULL, headers TEXT NOT NULL, body BLOB NOT NULL,
    project TEXT NOT NULL, created_at REAL NOT NULL, size INTEGER NOT NULL,
    attempts INTEGER NOT NULL, failed_at REAL NOT NULL, reason TEXT NOT NULL,
    status INTEGER NOT NULL, answer BLOB NOT NULL, answer_headers TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS totals (
    id INTEGER PRIMARY KEY CHECK (id = 1), live_bytes INTEGER NOT NULL,
    dead_bytes INTEGER NOT NULL, dead_entries INTEGER NOT NULL);
INSERT OR IGNORE INTO totals SELECT 1, (SELECT COALESCE(SUM(size), 0) FROM entries),
    (SELECT COALESCE(SUM(size), 0) FROM dead), (SELECT COUNT(*) FROM dead);
"""
_COLUMNS = ("region, endpoint, method, path, query, headers, body, project, created_at, size, "
            "attempts")


class SpoolError(Exception):
    """The spool file cannot be used (corrupt, locked, unreadable); the message names the file."""


@dataclass
class Snapshot:
    """What the file holds now; every process sharing the file refreshes its counters from it."""

    lanes: dict[tuple[str, str], int] = field(default_factory=dict)   # (region, endpoint) ->
    live_bytes: int = 0                                                # waiting entries
    dead_bytes: int = 0
    dead_entries: int = 0
    oldest: dict[str, float] = field(default_factory=dict)   # region -> created_at


class SpoolStore:
    def __init__(self, path: str, *, group_commit: bool = True) -> None:
        self.path = path
        self._group_commit = group_commit
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._pending: list[tuple[Op, Effect | None, asyncio.Future[Any]]] = []
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self.commits = 0               # transactions committed: the benchmark reads it
        # The file's counters as this process last saw them. Written only on the store's thread,
        # in commit order, so they never run behind or ahead of what the file holds.
        self.totals = (0, 0, 0)        # live bytes, dead bytes, dead entries
        self.lanes: dict[tuple[str, str], int] = {}    # (region, endpoint) -> waiting entries
        self._lock_fd: int | None = None

    # -- the drain role: one process per file sends upstream -------------------------------------
    def take_drain_role(self) -> bool:
        if self._lock_fd is None:
            self._lock_fd = take_drain_lock(self.path)
        return self._lock_fd is not None

    def release_drain_role(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- lifecycle ---------------------------------------------------------------------------
    async def open(self) -> Snapshot:
        """Open (or create) the file; SpoolError when it is corrupt or unusable."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        try:
            await self._call(self._open_sync)
            snapshot = await self.snapshot()
        except BaseException:
            await self._call(self._close_sync)
            await self._shutdown_executor()
            raise
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())
        return snapshot

    async def close(self) -> None:
        """Commit whatever is queued, checkpoint the WAL into the file, close it."""
        if self._writer is not None:
            await self._drain_queue()
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
        if self._executor is not None:
            await self._call(self._close_sync)
            await self._shutdown_executor()

    async def _shutdown_executor(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _open_sync(self) -> None:
        self._conn = connect_checked(self.path)

    def _close_sync(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error:
                pass      # the data is in the WAL either way; the next open replays it
            self._conn.close()
            self._conn = None

    # -- writes: queued, committed together ------------------------------------------------------
    async def add(self, entry: SpoolEntry) -> int:
        """Store `entry`; returns its id once the write is durable on disk."""
        row = (entry.region, entry.endpoint, entry.method, entry.path, entry.query,
               entry.headers_json(), entry.body, entry.project, entry.created_at, entry.size, 0)

        def insert(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(f"INSERT INTO entries ({_COLUMNS}) VALUES "
                                  "(?,?,?,?,?,?,?,?,?,?,?)", row)
            conn.execute("UPDATE totals SET live_bytes = live_bytes + ?", (entry.size,))
            return int(cursor.lastrowid or 0)

        result: int = await self._write(insert, lambda _: self._count(entry, +1))
        return result

    async def delete(self, entry: SpoolEntry) -> None:
        def remove(conn: sqlite3.Connection) -> int:
            removed: int = conn.execute("DELETE FROM entries WHERE id = ?", (entry.id,)).rowcount
            if removed:
                conn.execute("UPDATE totals SET live_bytes = live_bytes - ?", (entry.size,))
            return removed

        await self._write(remove, lambda removed: self._count(entry, -removed))

    async def bury(self, entry: SpoolEntry, refusal: Refusal) -> None:
        """Move `entry` to the dead-letter table with the upstream's answer, in one transaction."""
        values = (time.time(), refusal.reason, refusal.status, refusal.kept_answer(),
                  json.dumps(refusal.answer_headers), entry.id)

        def move(conn: sqlite3.Connection) -> int:
            conn.execute(f"INSERT INTO dead ({_COLUMNS}, failed_at, reason, status, answer, "
                         f"answer_headers) SELECT {_COLUMNS}, ?, ?, ?, ?, ? FROM entries "
                         "WHERE id = ?", values)
            removed: int = conn.execute("DELETE FROM entries WHERE id = ?", (entry.id,)).rowcount
            if removed:
                conn.execute("UPDATE totals SET live_bytes = live_bytes - ?, dead_bytes = "
                             "dead_bytes + ?, dead_entries = dead_entries + 1",
                             (entry.size, entry.size))
            return removed

        await self._write(move, lambda removed: self._count(entry, -removed))

    def _count(self, entry: SpoolEntry, change: int) -> None:
        lane = (entry.region, entry.endpoint)
        # Copied, then swapped: the event loop reads this dict while this thread writes it.
        lanes = dict(self.lanes)
        lanes[lane] = max(0, lanes.get(lane, 0) + change)
        self.lanes = lanes

    async def mark_in_flight(self, ids: Sequence[int], in_flight: bool) -> None:
        """Flag entries on their way upstream: a crash leaves the flag, and the count of possible
        duplicates on the next start comes from it."""
        marks = [(int(in_flight), int(in_flight), entry_id) for entry_id in ids]
        await self._write(lambda conn: conn.executemany(
            "UPDATE entries SET in_flight = ?, attempts = attempts + ? WHERE id = ?", marks))

    async def _write(self, op: Op, effect: Effect | None = None) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((op, effect, future))
        self._wakeup.set()
        return await future

    async def _write_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                await self._commit_next()

    async def _commit_next(self) -> None:
        if self._group_commit:
            batch, self._pending = self._pending, []
        else:
            batch = [self._pending.pop(0)]
        results = await self._call(self._apply, [(op, effect) for op, effect, _ in batch])
        for (_, _, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _drain_queue(self) -> None:
        while self._pending:
            await self._commit_next()

    def _apply(self, ops: list[tuple[Op, Effect | None]]) -> list[Any]:
        """Run `ops` in one transaction; if one fails, run each alone so only it fails."""
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            results = [op(conn) for op, _ in ops]
            totals = conn.execute("SELECT live_bytes, dead_bytes, dead_entries FROM totals"
                                  ).fetchone()
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if len(ops) == 1:
                return [SpoolError(f"{self.path}: write failed ({exc})")]
            return [self._apply([op])[0] for op in ops]
        self.commits += 1
        self.totals = (totals[0], totals[1], totals[2])
        for (_, effect), result in zip(ops, results, strict=True):
            if effect is not None:
                effect(result)
        return results

    # -- reads ---------------------------------------------------------------------------------
    async def batch(self, region: str, limit: int) -> list[SpoolEntry]:
        """The `limit` oldest entries of `region`, in the order they were accepted."""
        rows = await self._call(lambda: self._connection().execute(
            f"SELECT id, {_COLUMNS} FROM entries WHERE region = ? ORDER BY id LIMIT ?",
            (region, limit)).fetchall())
        return [_entry(row) for row in rows]

    async def snapshot(self) -> Snapshot:
        def read() -> Snapshot:
            snapshot = read_snapshot(self._connection())
            # Same thread as the commits, so this is newer than any totals a commit left.
            self.totals = (snapshot.live_bytes, snapshot.dead_bytes, snapshot.dead_entries)
            self.lanes = dict(snapshot.lanes)
            return snapshot

        return await self._call(read)

    async def claim_interrupted(self) -> int:
        """Count and clear the in-flight flags a stopped drain owner left: possible duplicates.
        Only the process that just became the drain owner may call this."""
        def claim(conn: sqlite3.Connection) -> int:
            return conn.execute("UPDATE entries SET in_flight = 0 WHERE in_flight = 1").rowcount

        count: int = await self._write(claim)
        return count

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise SpoolError(f"{self.path}: the spool is not open")
        return self._conn

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise SpoolError(f"{self.path}: the spool is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)


def take_drain_lock(path: str) -> int | None:
    """The drain owner's lock (one process per file sends upstream): an fd, or None when another
    process holds it. The kernel releases it when the holder dies, even by SIGKILL."""
    lock_path = path + ".lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise SpoolError(f"{lock_path}: cannot create the spool lock file ({exc.strerror})"
                         ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def connect_checked(path: str) -> sqlite3.Connection:
    """Open `path` as a spool: create it when missing, refuse it when it is not a sound spool."""
    try:
        # The file holds user data and forwarded Authorization headers (/import credentials):
        # owner-only. SQLite gives its -wal and -shm files the same mode.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        # timeout: other processes (workers, the `spool` command) may hold the write lock briefly
        conn = sqlite3.connect(path, isolation_level=None, timeout=10.0)
    except OSError as exc:
        raise SpoolError(f"{path}: cannot open the spool database ({exc.strerror})") from exc
    except sqlite3.Error as exc:
        raise SpoolError(f"{path}: cannot open the spool database ({exc})") from exc
    try:
        # Checked before anything writes: a damaged file is left exactly as found, for recovery.
        problems = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            raise SpoolError(f"{path}: the spool database is corrupt ({'; '.join(problems[:3])})"
                             "; move it aside to keep its data for recovery, then restart")
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: in WAL mode, NORMAL may lose the last commits on power loss; we answered for them.
        conn.execute("PRAGMA synchronous=FULL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise SpoolError(f"{path}: written by a newer mixpanel-proxy (schema {version})")
        conn.executescript(_SCHEMA)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise SpoolError(f"{path}: the spool database is corrupt or not a SQLite file ({exc}); "
                         "move it aside to keep its data for recovery, then restart") from exc
    except SpoolError:
        conn.close()
        raise
    return conn


def read_snapshot(conn: sqlite3.Connection) -> Snapshot:
    snapshot = Snapshot()
    for region, endpoint, count in conn.execute(
            "SELECT region, endpoint, COUNT(*) FROM entries GROUP BY region, endpoint"):
        snapshot.lanes[(region, endpoint)] = count
    snapshot.live_bytes, snapshot.dead_bytes, snapshot.dead_entries = conn.execute(
        "SELECT live_bytes, dead_bytes, dead_entries FROM totals").fetchone()
    for region in {region for region, _ in snapshot.lanes}:
        row = conn.execute("SELECT created_at FROM entries WHERE region = ? ORDER BY id LIMIT 1",
                           (region,)).fetchone()
        if row:
            snapshot.oldest[region] = row[0]
    return snapshot


def _entry(row: Sequence[Any]) -> SpoolEntry:
    (entry_id, region, endpoint, method, path, query, headers, body, project, created_at, _,
     attempts) = row
    return SpoolEntry(region=region, endpoint=endpoint, method=method, path=path,
                      query=bytes(query), headers=json.loads(headers), body=bytes(body),
                      project=project, created_at=created_at, id=entry_id, attempts=attempts)
