"""What the spool keeps, and the pure decisions about it: which answers are retryable, which are
final, which lane keeps an entry's order, and whether a /track entry is past Mixpanel's window.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..codec import CodecError, decode_data, extract_data, form_field, inflate
from ..decide.routing import basic_auth_user, record_token

# Endpoints whose order matters at Mixpanel: profile and group updates apply in arrival order
# ($set then $unset), and replay batches carry `seq`. Events carry their own `time`, so /track and
# /import entries may be delivered in any order, concurrently.
ORDERED_ENDPOINTS = frozenset({"engage", "groups", "record"})
RETRYABLE_STATUSES = frozenset({408, 429})
_ANSWER_KEEP = 64 * 1024      # bytes of an upstream's refusal kept with a dead letter
_MS_THRESHOLD = 1e11          # a `time` above this is in milliseconds (year 5138 in seconds)


@dataclass(slots=True)   # not frozen: made per request, frozen costs each field a call
class SpoolEntry:
    """The exact upstream request, so a replay is byte-identical and Mixpanel deduplicates it."""

    region: str
    endpoint: str
    method: str
    path: str                 # the upstream path, e.g. /track/
    query: bytes              # the raw query string, without "?"
    headers: dict[str, str]   # the headers the relay forwards (allow-listed, client IP added)
    body: bytes
    project: str = ""         # the lane key: project token (+ replay id for /record), or ""
    created_at: float = 0.0   # unix time the relay accepted it
    id: int = 0               # the row id once stored
    attempts: int = 0

    @property
    def size(self) -> int:
        """What the entry counts against the spool's size bound."""
        return len(self.body) + len(self.query) + len(self.path) + _headers_size(self.headers)

    @property
    def lane(self) -> tuple[str, str] | None:
        """Entries of one lane are delivered one at a time, in order; None: no order needed."""
        return (self.endpoint, self.project) if self.endpoint in ORDERED_ENDPOINTS else None

    def headers_json(self) -> str:
        return json.dumps(self.headers, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an entry goes to the dead-letter table, with the upstream's answer when there was one."""

    reason: str
    status: int = 0
    answer: bytes = b""
    answer_headers: dict[str, str] = field(default_factory=dict)

    def kept_answer(self) -> bytes:
        return self.answer[:_ANSWER_KEEP]


def is_retryable(status: int) -> bool:
    """5xx, 429 and 408: the upstream may take the same bytes later."""
    return status >= 500 or status in RETRYABLE_STATUSES


def refusal_in_success(status: int, body: bytes) -> str | None:
    """A 200 that still refuses: plain `0`, or verbose `{"status":0,...}` (invalid payload)."""
    if status != 200 or len(body) > _ANSWER_KEEP:
        return None
    text = body.strip()
    if text == b"0":
        return "the upstream answered 0 (nothing valid in the payload)"
    if not text.startswith(b"{"):
        return None
    try:
        answer = json.loads(text)
    except ValueError:
        return None
    if isinstance(answer, dict) and answer.get("status") == 0:
        return f"the upstream refused the payload: {answer.get('error')}"
    return None


def stale_track_records(entry: SpoolEntry, now: float, max_age: float) -> int:
    """How many events of a /track entry are older than `max_age` seconds (0 when undecidable).

    A replay must be byte-exact, so a batch is never split here: one stale event sends the whole
    entry to dead letter, where its fresh events remain recoverable (e.g. through /import).
    """
    if entry.endpoint != "track":
        return 0
    try:
        body = inflate(entry.body, entry.headers.get("Content-Encoding", ""), 64 * 1024**2)
        raw = extract_data(body, entry.query)
        payload = decode_data(raw) if raw is not None else None
    except CodecError:
        return 0      # undecidable: let the upstream judge it
    records = payload if isinstance(payload, list) else [payload]
    return sum(1 for record in records if _age(record, now) > max_age)


def project_of(endpoint: str, headers: dict[str, str], query: bytes, body: bytes) -> str:
    """What names an ordered entry's lane: the project token ("" when it cannot be told
    cheaply); for /record the token and the replay, since `seq` orders batches of one replay."""
    if endpoint not in ORDERED_ENDPOINTS:
        return ""
    if endpoint == "record":
        token = basic_auth_user(headers.get("Authorization", "")) or ""
        replay = form_field(query, b"replay_id") or b""
        return f"{token}/{replay.decode('utf-8', 'replace')}"
    try:
        raw = extract_data(inflate(body, headers.get("Content-Encoding", ""), 64 * 1024**2),
                           query)
        payload = decode_data(raw) if raw is not None else None
    except CodecError:
        return ""
    first = payload[0] if isinstance(payload, list) and payload else payload
    return record_token(first) or ""


def _age(record: Any, now: float) -> float:
    properties = record.get("properties") if isinstance(record, dict) else None
    when = properties.get("time") if isinstance(properties, dict) else None
    if isinstance(when, bool) or not isinstance(when, int | float):
        return 0.0
    seconds = when / 1000 if when > _MS_THRESHOLD else float(when)
    return now - seconds


def _headers_size(headers: dict[str, str]) -> int:
    return sum(len(name) + len(value) for name, value in headers.items())
