"""`mixpanel-proxy spool status|retry-dead|purge`: inspect and operate a spool file.

`status` reads and works while the relay runs. `retry-dead` and `purge` change what the drainer
owns, so they take the drain lock and refuse while a relay holds it: stop the relay first.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..config import Config
from .store import SpoolError, connect_checked, read_snapshot, take_drain_lock

_COLUMNS = ("region, endpoint, method, path, query, headers, body, project, created_at, size, "
            "attempts")


def status(path: str, say: Callable[[str], None]) -> None:
    with _opened(path) as conn:
        snapshot = read_snapshot(conn)
        dead = conn.execute("SELECT reason, status, COUNT(*) FROM dead GROUP BY reason, status "
                            "ORDER BY COUNT(*) DESC LIMIT 20").fetchall()
    lock = take_drain_lock(path)
    draining = lock is None
    if lock is not None:
        os.close(lock)
    say(f"spool {path}: {'drained by a running relay' if draining else 'no relay draining it'}")
    waiting = sum(snapshot.lanes.values())
    say(f"waiting: {waiting} requests, {snapshot.live_bytes} bytes")
    for (region, endpoint), count in sorted(snapshot.lanes.items()):
        say(f"  {region} /{endpoint}: {count}")
    for region, oldest in sorted(snapshot.oldest.items()):
        say(f"  {region} oldest: {time.time() - oldest:.0f} s old")
    say(f"dead letters: {snapshot.dead_entries} requests, {snapshot.dead_bytes} bytes")
    for reason, answer_status, count in dead:
        shown = f"HTTP {answer_status}" if answer_status else "not sent"
        say(f"  {count} x {shown}: {reason}")


def retry_dead(path: str, say: Callable[[str], None]) -> None:
    """Move every dead letter back to the queue, behind what is waiting."""
    with _owned(path) as conn:
        conn.execute("BEGIN IMMEDIATE")
        moved = conn.execute(f"INSERT INTO entries ({_COLUMNS}) SELECT {_COLUMNS} FROM dead "
                             "ORDER BY id").rowcount
        conn.execute("DELETE FROM dead")
        _recount(conn)
        conn.execute("COMMIT")
    say(f"{moved} dead letters moved back to the queue; the relay sends them on its next start")


def purge(path: str, everything: bool, say: Callable[[str], None]) -> None:
    """Delete the dead letters; with `everything`, the waiting requests too (they are lost)."""
    with _owned(path) as conn:
        conn.execute("BEGIN IMMEDIATE")
        dead = conn.execute("DELETE FROM dead").rowcount
        live = conn.execute("DELETE FROM entries").rowcount if everything else 0
        _recount(conn)
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("VACUUM")
    say(f"purged {dead} dead letters" + (f" and {live} waiting requests" if everything else ""))


def _recount(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE totals SET live_bytes = (SELECT COALESCE(SUM(size), 0) FROM entries), "
                 "dead_bytes = (SELECT COALESCE(SUM(size), 0) FROM dead), "
                 "dead_entries = (SELECT COUNT(*) FROM dead)")


@contextmanager
def _opened(path: str) -> Iterator[sqlite3.Connection]:
    if not os.path.exists(path):
        raise SpoolError(f"{path}: no spool file here (is [spool] path right?)")
    conn = connect_checked(path)
    try:
        yield conn
    finally:
        conn.close()


@contextmanager
def _owned(path: str) -> Iterator[sqlite3.Connection]:
    if not os.path.exists(path):
        raise SpoolError(f"{path}: no spool file here (is [spool] path right?)")
    lock = take_drain_lock(path)
    if lock is None:
        raise SpoolError(f"{path}: a running relay is draining this spool; stop it first")
    try:
        with _opened(path) as conn:
            yield conn
    finally:
        os.close(lock)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser],
               config_help: str) -> None:
    spool = commands.add_parser("spool", help="inspect or operate the durable spool")
    spool.add_argument("action", choices=("status", "retry-dead", "purge"),
                       help="status: what waits and what died; retry-dead: queue dead letters "
                            "again; purge: delete dead letters (--all: waiting requests too)")
    spool.add_argument("--config", help=config_help)
    spool.add_argument("--all", action="store_true",
                       help="purge: also delete requests still waiting (they are lost)")


def run(action: str, config: Config, everything: bool) -> int:
    """The `spool` command; 0 on success, 1 with the problem on stderr."""
    if config.spool.backend == "redis":
        return _run_on_redis(action, config, everything)
    path = config.spool.path
    try:
        if action == "status":
            status(path, print)
        elif action == "retry-dead":
            retry_dead(path, print)
        else:
            purge(path, everything, print)
    except (SpoolError, sqlite3.Error) as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


def _run_on_redis(action: str, config: Config, everything: bool) -> int:
    from redis.exceptions import RedisError

    from . import redisadmin

    try:
        if action == "status":
            asyncio.run(redisadmin.status(config, print))
        elif action == "retry-dead":
            asyncio.run(redisadmin.retry_dead(config, print))
        else:
            asyncio.run(redisadmin.purge(config, everything, print))
    except (RedisError, OSError) as exc:
        print(f"redis {config.redis.redacted_url()}: {exc}", file=sys.stderr)
        return 1
    return 0


def preflight(config: Config) -> str | None:
    """Before serving: the problem with the spool file, if any. A relay configured with a spool
    must never run without it, so `serve` refuses to start on this. (A Redis spool without a
    local fallback has no file: Redis down is served with 503s, not a refused start.)"""
    if not config.spool.enabled or (config.spool.backend == "redis"
                                    and config.spool.fallback == "none"):
        return None
    try:
        connect_checked(config.spool.path).close()
    except SpoolError as exc:
        return f"spool.path: {exc}"
    return None
