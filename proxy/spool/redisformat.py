"""The Redis spool's layout: key names, the entry's stream fields, and the Lua scripts that
change an entry and its counters in one step (see redisstore.py for how they are used)."""

from __future__ import annotations

import json
import zlib
from typing import Any

from .entry import ORDERED_ENDPOINTS, SpoolEntry
from .store import Snapshot

GROUP = "drain"
_SEQ_BITS = 32     # a stream id "ms-seq" as one int: ms << 32 | seq (SpoolEntry.id is an int)
_FIELDS = ("region", "endpoint", "method", "path", "query", "headers", "body", "project",
           "created_at")

# KEYS: stream, counts. ARGV: lane field, size, then the entry's field/value pairs.
ADD = """
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 3))
local lane = redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
local live = redis.call('HINCRBY', KEYS[2], 'live_bytes', ARGV[2])
return {id, lane, live}
"""
# KEYS: stream, counts. ARGV: id, lane field, size. Idempotent: a second delete counts nothing.
DELETE = """
local removed = redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('XACK', KEYS[1], 'drain', ARGV[1])
if removed == 1 then
  redis.call('HINCRBY', KEYS[2], ARGV[2], -1)
  redis.call('HINCRBY', KEYS[2], 'live_bytes', -tonumber(ARGV[3]))
end
return removed
"""
# KEYS: stream, counts, dead. ARGV: id, lane field, size, then the dead letter's pairs. The dead
# letter is written first: if Redis refuses it (maxmemory), the entry stays where it was.
BURY = """
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then
  redis.call('XACK', KEYS[1], 'drain', ARGV[1])
  return 0
end
redis.call('XADD', KEYS[3], '*', unpack(ARGV, 4))
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('XACK', KEYS[1], 'drain', ARGV[1])
redis.call('HINCRBY', KEYS[2], ARGV[2], -1)
redis.call('HINCRBY', KEYS[2], 'live_bytes', -tonumber(ARGV[3]))
redis.call('HINCRBY', KEYS[2], 'dead_bytes', tonumber(ARGV[3]))
redis.call('HINCRBY', KEYS[2], 'dead_entries', 1)
return 1
"""
# KEYS: lease keys. ARGV: owner, ttl ms. Returns 1 per lease held (renewed or taken), else 0.
LEASE = """
local held = {}
for i, key in ipairs(KEYS) do
  local owner = redis.call('GET', key)
  if owner == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    held[i] = 1
  elseif not owner then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    held[i] = 1
  else
    held[i] = 0
  end
end
return held
"""
RELEASE = """
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key) end
end
return 1
"""


def stream_id(entry_id: int) -> str:
    return f"{entry_id >> _SEQ_BITS}-{entry_id & ((1 << _SEQ_BITS) - 1)}"


def entry_id(text: bytes | str) -> int:
    ms, _, seq = (text.decode() if isinstance(text, bytes) else text).partition("-")
    return int(ms) << _SEQ_BITS | int(seq)


class Keys:
    def __init__(self, prefix: str, partitions: int) -> None:
        self.base = f"{prefix}:spool"
        self.partitions = partitions
        self.counts = f"{self.base}:counts"
        self.dead = f"{self.base}:dead"

    def unordered(self, region: str) -> str:
        return f"{self.base}:{region}:u"

    def ordered(self, region: str, partition: int) -> str:
        return f"{self.base}:{region}:o:{partition}"

    def lease(self, region: str, partition: int) -> str:
        return f"{self.base}:lease:{region}:{partition}"

    def streams(self, region: str) -> list[str]:
        return [self.unordered(region)] + [self.ordered(region, n)
                                           for n in range(self.partitions)]

    def of(self, entry: SpoolEntry) -> str:
        if entry.endpoint not in ORDERED_ENDPOINTS:
            return self.unordered(entry.region)
        lane = f"{entry.endpoint}\0{entry.project}".encode()
        return self.ordered(entry.region, zlib.crc32(lane) % self.partitions)


def lane_field(entry: SpoolEntry) -> str:
    return f"lane:{entry.region}/{entry.endpoint}"


def encode(entry: SpoolEntry) -> list[Any]:
    values = (entry.region, entry.endpoint, entry.method, entry.path, entry.query,
              entry.headers_json(), entry.body, entry.project, repr(entry.created_at))
    return [item for pair in zip(_FIELDS, values, strict=True) for item in pair]


def decode(raw_id: bytes, fields: dict[bytes, bytes], deliveries: int = 0) -> SpoolEntry:
    text = {key.decode(): value for key, value in fields.items()}
    return SpoolEntry(
        region=text["region"].decode(), endpoint=text["endpoint"].decode(),
        method=text["method"].decode(), path=text["path"].decode(), query=text["query"],
        headers=json.loads(text["headers"]), body=text["body"],
        project=text["project"].decode(), created_at=float(text["created_at"]),
        id=entry_id(raw_id), attempts=deliveries)


def snapshot_of(counts: dict[bytes, bytes]) -> Snapshot:
    snapshot = Snapshot()
    for raw_name, raw_value in counts.items():
        name, value = raw_name.decode(), int(raw_value)
        if name.startswith("lane:") and value > 0:
            region, _, endpoint = name[5:].partition("/")
            snapshot.lanes[(region, endpoint)] = value
        elif name == "live_bytes":
            snapshot.live_bytes = max(0, value)
        elif name == "dead_bytes":
            snapshot.dead_bytes = max(0, value)
        elif name == "dead_entries":
            snapshot.dead_entries = max(0, value)
    return snapshot
