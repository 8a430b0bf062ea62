"""The fault matrix, in process: upstreams and the CDN misbehave on command; for each fault, what
the client was told (status, JSON body), what reached the upstream, and proof that nothing the
relay answered 200 for was lost (with the spool off, and with it on, after the upstream recovers).

The relay-process faults (SIGKILL mid-request, disk full under the spool) are in
tests/test_faults_process.py; SIGKILL mid-drain in tests/test_spool_crash.py.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from prometheus_client import CollectorRegistry

from tests.conftest import US_TOKEN, RelayFactory
from tests.support.fake_cdn import FakeCdn
from tests.support.fakes import FakeUpstream
from tests.support.faulty import Ledger, RawUpstream, closed_port, insert_ids, numbered_events
from tests.support.helpers import FORM
from tests.support.metrics import sample
from tests.support.waits import eventually

REQUESTS = 5
READ_TIMEOUT = 0.5
RELAY_RETRY_AFTER = "10"           # [upstream] retry_after's default


@dataclass(frozen=True)
class Fault:
    name: str
    status: int                    # what every client request is answered
    error: str                     # in the JSON body's "error"
    reaches_upstream: bool         # whether the request bytes got to the upstream at all
    failure_kinds: tuple[str, ...]  # upstream_failures metric kinds it may count as
    retry_after: str = RELAY_RETRY_AFTER


TRANSPORT_FAULTS = [
    Fault("refused", 503, "upstream unavailable: cannot connect", False, ("connect",)),
    Fault("hang", 503, "did not answer in time", True, ("timeout",)),
    Fault("slow", 503, "did not answer in time", True, ("timeout",)),
    Fault("reset_mid_body", 503, "upstream unavailable", True, ("protocol",)),
    Fault("tls_untrusted", 503, "TLS with 127.0.0.1 failed", False, ("connect",)),
    # NXDOMAIN at once where a resolver answers; a connect timeout where none does (no network).
    Fault("dns_invalid", 503, "fault-matrix.invalid", False, ("connect", "timeout")),
]
STATUS_FAULTS = [
    Fault("500", 503, "upstream answered 500", True, ()),
    Fault("502", 503, "upstream answered 502", True, ()),
    Fault("503", 503, "upstream answered 503", True, ()),
    Fault("429", 503, "upstream rate limit", True, (), retry_after="7"),
]


@pytest.fixture
async def raw_upstream() -> AsyncIterator[RawUpstream]:
    upstream = RawUpstream()
    yield upstream
    await upstream.stop()


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


async def arm(fault: str, raw: RawUpstream, authority: trustme.CA) -> str:
    """Make `raw` (or a name or port) misbehave as `fault` says; the URL for region us."""
    if fault == "refused":
        raw.port = closed_port()          # nothing listens until the test starts it
        return raw.url
    if fault == "dns_invalid":
        return "http://fault-matrix.invalid"   # RFC 2606: never resolves
    if fault == "tls_untrusted":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        authority.issue_cert("127.0.0.1").configure_cert(context)
        raw.tls = context
    else:
        raw.mode = fault                  # type: ignore[assignment]
    await raw.start()
    return raw.url


async def send_events(client: Any, prefix: str, count: int = REQUESTS) -> Ledger:
    ledger = Ledger()

    async def one(insert_id: str, body: bytes) -> None:
        response = await client.post("/track/", data=body, headers={
            **FORM, "Origin": "https://shop.example"})
        ledger.record(insert_id, response.status, await response.read(),
                      response.headers.get("Retry-After"))
        if response.status != 200:
            assert response.headers["Access-Control-Allow-Origin"] == "https://shop.example"
            assert response.content_type == "application/json"

    await asyncio.gather(*(one(key, body) for key, body in numbered_events(US_TOKEN, count,
                                                                             prefix)))
    return ledger


def failures(registry: CollectorRegistry, kind: str) -> float:
    return sample(registry, "mixpanel_proxy_upstream_failures_total", region="us", kind=kind)


def check_refusals(ledger: Ledger, fault: Fault) -> None:
    for answer in ledger.answers.values():
        assert answer.status == fault.status, answer
        assert answer.body["status"] == 0 and fault.error in answer.body["error"], answer
        assert answer.retry_after == fault.retry_after


@pytest.mark.parametrize("fault", TRANSPORT_FAULTS, ids=lambda fault: fault.name)
async def test_transport_fault_without_spool(
        make_relay: RelayFactory, raw_upstream: RawUpstream, authority: trustme.CA,
        fault: Fault) -> None:
    url = await arm(fault.name, raw_upstream, authority)
    registry = CollectorRegistry()
    client = await make_relay({"regions": {"us": {"url": url}},
                               "upstream": {"read_timeout": READ_TIMEOUT}}, registry=registry)
    ledger = await send_events(client, fault.name)
    check_refusals(ledger, fault)
    seen = len(raw_upstream.received)
    assert seen == (REQUESTS if fault.reaches_upstream else 0)
    assert sum(failures(registry, kind) for kind in fault.failure_kinds) == REQUESTS
    assert ledger.lost(raw_upstream.received) == set()


async def test_tls_upstream_is_served_once_its_authority_is_trusted(
        make_relay: RelayFactory, raw_upstream: RawUpstream, authority: trustme.CA,
        tmp_path: Path) -> None:
    """The control for tls_untrusted: the same server, with [upstream] ca_file, is used."""
    url = await arm("tls_untrusted", raw_upstream, authority)
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    client = await make_relay({"regions": {"us": {"url": url}},
                               "upstream": {"ca_file": str(tmp_path / "ca.pem")}})
    ledger = await send_events(client, "tls-trusted")
    assert ledger.statuses() == {200}
    assert insert_ids(raw_upstream.received) == ledger.accepted


@pytest.mark.parametrize("fault", STATUS_FAULTS, ids=lambda fault: fault.name)
async def test_status_fault_without_spool(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream], fault: Fault) -> None:
    us = upstreams["us"]
    us.answer(int(fault.name), b"<html>oops</html>",
              {"Retry-After": "7"} if fault.name == "429" else None)
    client = await make_relay()
    ledger = await send_events(client, f"status-{fault.name}")
    check_refusals(ledger, fault)
    assert len(us.received) == REQUESTS
    assert ledger.lost(us.received) == set()


SPOOLED_TRANSPORT = ["refused", "hang", "reset_mid_body"]


@pytest.mark.parametrize("fault", SPOOLED_TRANSPORT)
async def test_transport_fault_with_spool_loses_nothing(
        make_relay: RelayFactory, raw_upstream: RawUpstream, authority: trustme.CA,
        tmp_path: Path, fault: str) -> None:
    """With the spool on, the client is told 200 (once stored); all of it arrives on recovery."""
    url = await arm(fault, raw_upstream, authority)
    client = await make_relay({"regions": {"us": {"url": url}},
                               "upstream": {"read_timeout": READ_TIMEOUT},
                               "spool": spool(tmp_path)})
    ledger = await send_events(client, f"spool-{fault}")
    assert ledger.statuses() == {200} and set(ledger.bodies()) == {1}
    raw_upstream.mode = "ok"
    if fault == "refused":
        await raw_upstream.start()                    # the same port comes back
    await eventually(lambda: not ledger.lost(raw_upstream.accepted), timeout=15,
                     what="every accepted event to reach the upstream")


@pytest.mark.slow   # waits out Retry-After
@pytest.mark.parametrize("status", [500, 502, 503, 429])
async def test_status_fault_with_spool_loses_nothing(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream], tmp_path: Path,
        status: int) -> None:
    us = upstreams["us"]
    us.answer(status, b"busy", {"Retry-After": "1"})
    client = await make_relay({"spool": spool(tmp_path)})
    ledger = await send_events(client, f"spool-{status}")
    assert ledger.statuses() == {200}
    us.answer(200)
    us.clear()            # what came before was refused: only what comes now is delivered
    await eventually(lambda: not ledger.lost(us.received), timeout=15,
                     what="every accepted event to reach the upstream")


def spool(tmp_path: Path) -> dict[str, Any]:
    return {"enabled": True, "path": str(tmp_path / "spool.db"), "backoff_min": 0.05,
            "backoff_max": 0.2, "poll_interval": 0.1}


# -- the CDN behind /libs/ ------------------------------------------------------------------------
LOADER = "mixpanel-2-latest.min.js"


@pytest.mark.parametrize("mode, reason", [
    ("down", "connect"), ("html", "content_type"), ("truncated", "protocol")])
async def test_cdn_fault(make_relay: RelayFactory, fake_cdn: FakeCdn,
                         upstreams: dict[str, FakeUpstream], mode: str, reason: str) -> None:
    """The client gets a 502 naming the problem, never a broken bundle; the API keeps working."""
    client = await make_relay({"assets": {"cdn_url": fake_cdn.url}})
    if mode == "down":
        await fake_cdn.go_down()
    else:
        fake_cdn.misbehave(mode)              # type: ignore[arg-type]
    response = await client.get(f"/libs/{LOADER}")
    body = await response.json()
    assert response.status == 502 and response.content_type == "application/json"
    assert body["reason"] == reason and LOADER in body["error"], body
    assert fake_cdn.count(LOADER) == (0 if mode == "down" else 1)
    ledger = await send_events(client, f"cdn-{mode}")         # the API is not affected
    assert ledger.statuses() == {200}
    assert insert_ids(upstreams["us"].received) == ledger.accepted
