"""Access logs: one JSON line per client request on the `mixpanel_proxy.access` logger.

A middleware opens a `RequestFacts` for each request; the relay fills it in as it learns things
(endpoint, region, client IP, rejection reason, upstream time) through `request_facts()`, a
context variable, so no handler signature has to carry it. The line never holds a payload, a
query string or a token: only closed-set names, sizes, durations and the (policy-shaped) IP.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import Counter

from ..config import Config
from ..endpoints import ROOT_ALIASES
from ..relay.incoming import Incoming
from .logs import access_writer
from .metrics import Metrics

__all__ = [
    "ACCESS_LOGGER", "OPS_ENDPOINT", "AccessRecorder", "RequestFacts", "access_middleware",
    "asset_prefixes", "enter_facts", "ip_policy", "leave_facts", "request_facts",
]

ACCESS_LOGGER: Final = logging.getLogger("mixpanel_proxy.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Anonymizer = Callable[[str], str]
# Turns aiohttp's own refusals (HTTPException from its router) into the relay's JSON answers.
Refusal = Callable[[web.Request, web.HTTPException], web.StreamResponse]

OPS_ENDPOINT: Final = "ops"
_MAX_PATH: Final = 96     # unmatched paths are logged cut short: they are client-chosen text
_V6_48 = ((1 << 48) - 1) << 80


@dataclass(slots=True, init=False)   # the __init__ is ours: see RoutedRequest (routing.py)
class RequestFacts:
    endpoint: str
    region: str
    client_ip: str
    reason: str                   # why the relay refused the request itself
    request_bytes: int            # the body as read; -1: not read (Content-Length is logged)
    upstream_seconds: float       # the slowest upstream exchange (split parts run in parallel)
    # What became of the data: "forwarded" (the upstream's final answer), "stored" (in the
    # durable spool: the client got its success answer, a drainer delivers it later), both
    # joined by "+" for a batch split across regions, "" when neither (refused, or failed).
    outcome: str

    def __init__(self) -> None:
        self.endpoint, self.region, self.client_ip, self.reason = "none", "-", "", ""
        self.request_bytes, self.upstream_seconds, self.outcome = -1, 0.0, ""

    def upstream_took(self, seconds: float) -> None:
        self.upstream_seconds = max(self.upstream_seconds, seconds)

    def note(self, outcome: str) -> None:
        if not self.outcome:
            self.outcome = outcome
        elif outcome not in self.outcome.split("+"):
            self.outcome = f"{self.outcome}+{outcome}"

    def add_region(self, region: str) -> None:
        self.region = region if self.region == "-" else f"{self.region}+{region}"


_current: Final[ContextVar[RequestFacts | None]] = ContextVar("mixpanel_proxy_request_facts",
                                                       default=None)


def request_facts() -> RequestFacts:
    """The facts of the request being handled (a throwaway one outside the middleware)."""
    facts = _current.get()
    return facts if facts is not None else RequestFacts()


def enter_facts(facts: RequestFacts) -> Token[RequestFacts | None]:
    """Make `facts` the current request's (`request_facts()`) until `leave_facts`."""
    return _current.set(facts)


def leave_facts(token: Token[RequestFacts | None]) -> None:
    _current.reset(token)


def ip_policy(policy: str, upstream: Anonymizer | None = None) -> Anonymizer:
    """The access log's view of a client IP: full, truncated (/24 or /48) or omitted.

    `upstream` is the privacy policy's view (what the relay shows Mixpanel): the log never
    shows more than that, whatever `[log] client_ip` says.
    """
    own = _keep if policy == "full" else _omit if policy == "omitted" else truncate_ip
    if upstream is None:
        return own
    if own is _keep:
        return upstream
    return lambda ip: own(upstream(ip))


@functools.lru_cache(maxsize=4096)   # clients come back: a hit costs far less than parsing
def truncate_ip(ip: str) -> str:
    """IPv4 to its /24, IPv6 to its /48: keeps coarse geography, drops the subscriber."""
    head, dot, last = ip.rpartition(".")
    if dot and ":" not in ip:
        octets = head.split(".")
        if len(octets) == 3 and all(_is_octet(part) for part in (*octets, last)):
            return f"{head}.0"
        return ""
    try:
        address = ipaddress.IPv6Address(ip)
    except ValueError:
        return ""
    return str(ipaddress.IPv6Address(int(address) & _V6_48))


def _is_octet(text: str) -> bool:
    return text.isdigit() and len(text) <= 3 and int(text) <= 255


def _keep(ip: str) -> str:
    return ip


def _omit(ip: str) -> str:
    return ""


def asset_prefixes(config: Config) -> tuple[str, ...]:
    """The paths the asset relay serves: its requests are labelled `assets`, not `none`."""
    if not config.assets.enabled:
        return ()
    return (config.assets.path, *(ROOT_ALIASES if config.assets.aliases else ()))


class AccessRecorder:
    """Per-request bookkeeping shared by the aiohttp middleware and the lean edge: opens the
    request's facts, then counts answer bytes and writes the access line."""

    def __init__(self, metrics: Metrics, log_enabled: bool, anonymize: Anonymizer,
                 assets: tuple[str, ...] = ()) -> None:
        self._metrics = metrics
        self._log_enabled = log_enabled
        self._anonymize = anonymize
        self._assets = assets
        self._response_bytes: dict[str, Counter] = {}   # label children, one lookup per endpoint
        self._shown_ips: dict[str, str] = {}

    def open(self) -> tuple[RequestFacts, Token[RequestFacts | None]]:
        facts = RequestFacts()
        return facts, _current.set(facts)

    def close(self, request: Incoming, facts: RequestFacts, token: Token[RequestFacts | None],
              status: int, size: int, started: float) -> None:
        _current.reset(token)
        self.record(request, facts, status, size, started)

    def record(self, request: Incoming, facts: RequestFacts, status: int, size: int,
               started: float) -> None:
        """Count the answer's bytes and write the access line (`close` without the context)."""
        if facts.endpoint == "none" and self._assets and request.path.startswith(self._assets):
            facts.endpoint = "assets"
        if facts.endpoint != OPS_ENDPOINT:   # probes and scrapes are not client traffic
            self._count_bytes(facts.endpoint, size)
        elif _routine_probe(request.path, status):
            return
        if not self._log_enabled:
            return
        writer = access_writer()        # it asks the logging module's level and handlers
        if writer is not None:          # written together, around logging (logs.py)
            writer.write(self._line(request, facts, status, size, started))
        elif ACCESS_LOGGER.isEnabledFor(logging.INFO):
            # A record made directly: Logger.info() would walk the stack to find its caller
            # on every request (findCaller), which costs more than the line itself.
            ACCESS_LOGGER.handle(logging.LogRecord(
                ACCESS_LOGGER.name, logging.INFO, __file__, 0,
                self._line(request, facts, status, size, started), None, None))

    def _line(self, request: Incoming, facts: RequestFacts, status: int, size: int,
              started: float) -> str:
        return access_line(request, facts, status, size, time.perf_counter() - started,
                           self._client_ip(facts.client_ip or request.remote or ""))

    def _client_ip(self, ip: str) -> str:
        """The IP as the line shows it (policy applied, JSON-quoted), remembered per client:
        the same clients come back line after line. Bounded as `_json_string` is."""
        shown = self._shown_ips.get(ip)
        if shown is None:
            if len(self._shown_ips) >= _QUOTED_KEPT:
                self._shown_ips.clear()
            shown = self._shown_ips[ip] = json.dumps(self._anonymize(ip))
        return shown

    def _count_bytes(self, endpoint: str, size: int) -> None:
        counter = self._response_bytes.get(endpoint)
        if counter is None:
            counter = self._response_bytes[endpoint] = self._metrics.response_bytes.labels(endpoint)
        self._metrics.tally.add(counter, size)


def _routine_probe(path: str, status: int) -> bool:
    """A passing liveness or readiness probe: a load balancer's heartbeat, every few seconds
    from every balancer; the log keeps scrapes, refusals and probes that failed."""
    return path == "/healthz" or (path == "/readyz" and status == 200)


def access_middleware(recorder: AccessRecorder, ops_paths: Collection[str],
                      refuse: Refusal | None = None) -> Middleware:
    """The recorder around every aiohttp-served request. `ops_paths` (probes, scrapes) are
    logged as endpoint `ops` and kept out of the byte counts: an operator reading the log sees
    who scraped (or was refused), and the traffic metrics stay the clients'.

    `refuse` answers aiohttp's own refusals (one middleware doing both: every middleware layer
    costs each request a wrapper call).
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        facts, token = recorder.open()
        if request.path in ops_paths:
            facts.endpoint = OPS_ENDPOINT
        started = time.perf_counter()
        status = 500
        size = 0
        try:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                if refuse is None:
                    raise
                response = refuse(request, exc)
            status = response.status
            size = response.content_length or 0
            return response
        finally:
            recorder.close(request, facts, token, status, size, started)

    return middleware


def access_line(request: Incoming, facts: RequestFacts, status: int, size: int,
                elapsed: float, client_ip: str) -> str:
    """One JSON object. Closed-set values are written directly; client-chosen text is escaped
    (`client_ip` comes quoted).

    An f-string without format specs: compiled (proxy/compiled.py), it costs 0.6 µs a line
    against 0.85 for one `%`-format of the whole line, while an f-string's `:.2f` fields cost
    about twice what the interpreter pays."""
    path = _json_string(request.path[:_MAX_PATH])
    # The method is an HTTP token (the parsers guarantee it): no quote or backslash.
    return (f'{{"time":"{_timestamp()}","method":"{request.method}","endpoint":"{facts.endpoint}",'
            f'"region":"{facts.region}","status":{status},"reason":"{facts.reason}",'
            f'"bytes_in":{_bytes_in(request, facts)},"bytes_out":{size},'
            f'"duration_ms":{_milliseconds(elapsed)},'
            f'"upstream_ms":{_milliseconds(facts.upstream_seconds)},"client_ip":{client_ip},'
            f'"path":{path},"outcome":"{facts.outcome}"}}')


_HUNDREDTHS: Final = tuple(f"{hundredths:02d}" for hundredths in range(100))


_MILLISECONDS_KEPT: Final = 4096
_milliseconds_text: Final[dict[int, str]] = {}


def _milliseconds(seconds: float) -> str:
    """`"%.2f" % (seconds * 1000)`, remembered: most durations fall in a few hundred steps of
    10 µs, and a lookup costs a third of formatting one in integers (a float's `%` format costs
    twice that again)."""
    hundredths = int(seconds * 100_000 + 0.5)
    text = _milliseconds_text.get(hundredths)
    if text is None:
        if len(_milliseconds_text) >= _MILLISECONDS_KEPT:
            _milliseconds_text.clear()
        text = _milliseconds_text[hundredths] = \
            f"{hundredths // 100}.{_HUNDREDTHS[hundredths % 100]}"
    return text


_QUOTED_KEPT: Final = 4096
_quoted: Final[dict[str, str]] = {}


def _json_string(text: str) -> str:
    """`json.dumps(text)`, remembered: the same paths and (truncated) client IPs come back line
    after line. Client-chosen text, so the memory is bounded: cleared when full."""
    found = _quoted.get(text)
    if found is None:
        if len(_quoted) >= _QUOTED_KEPT:
            _quoted.clear()
        found = _quoted[text] = json.dumps(text)
    return found


class _Clock:
    """The last millisecond formatted and its text; the last whole second and its text."""

    __slots__ = ("milli", "stamp", "second", "second_text")

    def __init__(self) -> None:
        self.milli, self.stamp, self.second, self.second_text = -1, "", -1, ""


# Final module names are C statics once compiled (proxy/compiled.py); others cost a dict lookup.
_clock: Final = _Clock()
_wall_time: Final = time.time
_MILLIS: Final = tuple(f".{milli:03d}Z" for milli in range(1000))


def _timestamp() -> str:
    """ISO 8601 UTC with milliseconds, formatted once per millisecond (lines come faster), its
    date and time once per second."""
    clock = _clock
    milli = int(_wall_time() * 1000)
    if milli != clock.milli:
        whole, part = divmod(milli, 1000)
        if whole != clock.second:
            clock.second = whole
            clock.second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        clock.milli, clock.stamp = milli, clock.second_text + _MILLIS[part]
    return clock.stamp


def _bytes_in(request: Incoming, facts: RequestFacts) -> int:
    return facts.request_bytes if facts.request_bytes >= 0 else request.content_length or 0
