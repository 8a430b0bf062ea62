"""`mixpanel-proxy spool status|retry-dead|purge` on the Redis spool (`[spool] backend =
"redis"`). Unlike the SQLite file, Redis is shared by running relays, so these work while the
fleet runs: retry-dead moves each dead letter back atomically, purge deletes by key.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from ..config import Config
from ..upstream.redislink import connect
from .redisformat import GROUP, Keys, decode, lane_field, snapshot_of

Say = Callable[[str], None]
_CHUNK = 200
_DEAD_SCANNED = 10_000      # dead letters read to group reasons in `status`

# KEYS: dead, target stream, counts. ARGV: dead id, lane field, size, the entry's pairs.
# Written to its stream before it leaves the dead letters: a refused write leaves it dead.
_REVIVE = """
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then return 0 end
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 4))
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('HINCRBY', KEYS[3], ARGV[2], 1)
redis.call('HINCRBY', KEYS[3], 'live_bytes', ARGV[3])
redis.call('HINCRBY', KEYS[3], 'dead_bytes', -tonumber(ARGV[3]))
redis.call('HINCRBY', KEYS[3], 'dead_entries', -1)
return 1
"""
_ENTRY_FIELDS = (b"region", b"endpoint", b"method", b"path", b"query", b"headers", b"body",
                 b"project", b"created_at")


async def status(config: Config, say: Say) -> None:
    client, keys = _open(config)
    async with client:
        counts: Any = await client.hgetall(keys.counts)
        snapshot = snapshot_of(counts)
        say(f"spool {config.redis.redacted_url()} ({keys.base}): shared by the fleet")
        say(f"waiting: {sum(snapshot.lanes.values())} requests, {snapshot.live_bytes} bytes")
        for (region, endpoint), count in sorted(snapshot.lanes.items()):
            say(f"  {region} /{endpoint}: {count}")
        consumers: set[str] = set()
        pending = 0
        for region in config.regions:
            for key in keys.streams(region):
                for group in await client.xinfo_groups(key) if await client.exists(key) else []:
                    if _text(group["name"]) == GROUP:
                        pending += int(group["pending"])
                for consumer in (await client.xinfo_consumers(key, GROUP)
                                 if await client.exists(key) else []):
                    consumers.add(_text(consumer["name"]))
        say(f"in flight (read by a relay, not yet confirmed): {pending}; "
            f"relay processes seen: {len(consumers)}")
        say(f"dead letters: {snapshot.dead_entries} requests, {snapshot.dead_bytes} bytes")
        reasons: Counter[tuple[str, int]] = Counter()
        dead: Any = await client.xrange(keys.dead, count=_DEAD_SCANNED)
        for _, fields in dead:
            reasons[(_text(fields[b"reason"]), int(fields[b"status"]))] += 1
        for (reason, answer_status), count in reasons.most_common(20):
            shown = f"HTTP {answer_status}" if answer_status else "not sent"
            say(f"  {count} x {shown}: {reason}")


async def retry_dead(config: Config, say: Say) -> None:
    """Move every dead letter back to its stream, behind what is waiting."""
    client, keys = _open(config)
    moved = 0
    async with client:
        revive = client.register_script(_REVIVE)
        start = "-"
        while batch := await _chunk(client, keys.dead, start):
            for raw_id, fields in batch:
                entry = decode(raw_id, {name: fields[name] for name in _ENTRY_FIELDS})
                pairs = [item for name in _ENTRY_FIELDS for item in (name, fields[name])]
                moved += int(await revive(keys=[keys.dead, keys.of(entry), keys.counts],
                                          args=[raw_id, lane_field(entry), entry.size, *pairs]))
            start = "(" + _text(batch[-1][0])
    say(f"{moved} dead letters moved back to the queue; the relays send them now")


async def purge(config: Config, everything: bool, say: Say) -> None:
    """Delete the dead letters; with `everything`, the waiting requests too (they are lost)."""
    client, keys = _open(config)
    async with client:
        dead = int(await client.xlen(keys.dead))
        await client.delete(keys.dead)
        await client.hset(keys.counts, mapping={"dead_bytes": 0, "dead_entries": 0})
        live = 0
        if everything:
            for region in config.regions:
                for key in keys.streams(region):
                    live += int(await client.xlen(key))
                    await client.delete(key)
                    await client.xgroup_create(key, GROUP, id="0", mkstream=True)
            lanes = [name for name in await client.hkeys(keys.counts)
                     if _text(name).startswith("lane:")]
            await client.hset(keys.counts, mapping={"live_bytes": 0,
                                                    **dict.fromkeys(lanes, 0)})
    say(f"purged {dead} dead letters" + (f" and {live} waiting requests" if everything else ""))


async def _chunk(client: Redis, key: str, start: str) -> Any:
    found: Any = await client.xrange(key, min=start, count=_CHUNK)
    return found


def _open(config: Config) -> tuple[Redis, Keys]:
    return connect(config.redis), Keys(config.redis.key_prefix, config.spool.partitions)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
