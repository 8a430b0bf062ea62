"""The spool's pure decisions: retryable or final, lanes, the /track window, Retry-After."""

from __future__ import annotations

import gzip
import time
from email.utils import formatdate

from proxy.spool.drain import retry_after_seconds
from proxy.spool.entry import (
    SpoolEntry,
    is_retryable,
    project_of,
    refusal_in_success,
    stale_track_records,
)
from tests.conftest import US_TOKEN
from tests.support.helpers import basic, browser_form, event, python_sdk_form


def entry(endpoint: str, body: bytes, headers: dict[str, str] | None = None,
          query: bytes = b"") -> SpoolEntry:
    return SpoolEntry("us", endpoint, "POST", f"/{endpoint}/", query, headers or {}, body)


def test_retryable_and_final_statuses() -> None:
    assert [status for status in (200, 400, 401, 403, 404, 408, 413, 429, 500, 502, 503)
            if is_retryable(status)] == [408, 429, 500, 502, 503]


def test_refusals_inside_a_200() -> None:
    assert refusal_in_success(200, b"1") is None
    assert refusal_in_success(200, b'{"status":1,"error":null}') is None
    assert refusal_in_success(200, b'{"code":200,"num_records_imported":3,"status":"OK"}') is None
    assert refusal_in_success(200, b"0") is not None
    assert refusal_in_success(200, b'{"status":0,"error":"x"}') == \
        "the upstream refused the payload: x"
    assert refusal_in_success(400, b"0") is None


def test_track_window_counts_seconds_and_milliseconds_in_any_encoding() -> None:
    now = time.time()
    batch = [event(US_TOKEN, time=now - 6 * 86400), event(US_TOKEN, time=(now - 60) * 1000),
             event(US_TOKEN, time=now - 7 * 86400 * 1.0)]
    assert stale_track_records(entry("track", browser_form(batch)), now, 432000) == 2
    gzipped = gzip.compress(browser_form(batch))
    assert stale_track_records(entry("track", gzipped, {"Content-Encoding": "gzip"}), now,
                               432000) == 2
    get = entry("track", b"", query=browser_form(batch) + b"&ip=1")
    assert stale_track_records(get, now, 432000) == 2
    assert stale_track_records(entry("engage", browser_form(batch)), now, 432000) == 0
    assert stale_track_records(entry("track", b"data=%%%not-base64"), now, 432000) == 0


def test_lanes_and_projects() -> None:
    record = entry("record", b"\x1f\x8b", {"Authorization": basic(US_TOKEN)})
    assert project_of("record", record.headers, b"seq=3&replay_id=r-9&format=gzip",
                      record.body) == f"{US_TOKEN}/r-9"
    engage = python_sdk_form([{"$token": US_TOKEN, "$distinct_id": "u", "$set": {"a": 1}}])
    assert project_of("engage", {}, b"", engage) == US_TOKEN
    assert project_of("track", {}, b"", browser_form(event(US_TOKEN))) == ""
    assert entry("track", b"").lane is None
    assert entry("groups", b"").lane == ("groups", "")


def test_retry_after_forms() -> None:
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(None) == 0.0
    assert retry_after_seconds("soon") == 0.0
    assert 28 <= retry_after_seconds(formatdate(time.time() + 30, usegmt=True)) <= 30
