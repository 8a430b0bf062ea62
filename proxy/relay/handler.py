"""The API relay: one handler for every SDK endpoint.

Order of work, cheapest refusal first: target shape -> path -> CORS -> method -> client-IP rate
limit -> body limit -> routing (decodes only when it must) -> token rate limit -> upstream ->
answer in the form the SDK understands.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

from aiohttp import web

from ..codec import CodecError
from ..codec.policy import IpPolicy
from ..config import Config
from ..decide.clientip import ClientIPResolver
from ..decide.credentials import MixedCredentials
from ..decide.headers import (
    CorsPolicy,
    is_browser_settings,
    upstream_request_headers,
)
from ..decide.paths import PathMatch, PathMatcher
from ..decide.routing import Part, Plan, RoutedRequest, Router, UnknownToken
from ..ops.accesslog import request_facts
from ..ops.health import RegionHealth
from ..ops.metrics import Metrics, RouteMeters
from ..spool import Spool, SpoolEntry
from ..spool.entry import is_retryable
from ..upstream.client import REPLAYABLE_ENDPOINTS, UpstreamAnswer, UpstreamClient, UpstreamFailure
from . import answers
from .answers import Answer
from .fleetlimit import Limiter, LocalLimiter
from .incoming import Incoming
from .outcomes import Outcome, Outgoing, combine, translate
from .ratelimit import RateLimiter

_ALLOWED_METHODS = ("GET", "POST")
_MATCHES_KEPT = 1024


class ApiRelay:
    """`spool` is None when `[spool]` is off: the request path then does no spool work at all.
    Its collaborators come from `app.create_app`, the one wiring place."""

    def __init__(self, config: Config, upstream: UpstreamClient, metrics: Metrics, *,
                 health: RegionHealth, spool: Spool | None, rate: Limiter | None = None) -> None:
        self._config = config
        self._upstream = upstream
        self._metrics = metrics
        self._spool = spool
        self._health = health
        self._paths = PathMatcher(config.routing.base_path, config.routing.aliases)
        self._matches: dict[str, PathMatch] = {}
        self._router = Router(config)
        self._ip_policy = IpPolicy(config.privacy)
        self._cors = CorsPolicy(config.cors)
        self._client_ip = ClientIPResolver(config.server.trusted_proxies,
                                           config.server.client_ip_header)
        self._limits = config.limits.body
        # The most the relay reads: a data body over its limit is cut into parts under it.
        self._accepted = {endpoint: config.limits.accepted(endpoint) for endpoint in self._limits}
        self._rate = rate or LocalLimiter(config.limits.rate)   # [limits.rate] backend
        self._retry_after = str(config.upstream.retry_after)
        self._base_urls = {
            (region.name, endpoint): str(region.base_url(endpoint)).rstrip("/")
            for region in config.regions.values() for endpoint in self._limits
        }

    @property
    def local_limits(self) -> RateLimiter | None:
        """The rate limits, when checking them needs no await (not the fleet's, on Redis)."""
        return self._rate.local

    def submit(self, out: Outgoing, method: str, endpoint: str,
               done: Callable[[Outcome], None]) -> None:
        """`_exchange`'s upstream call, in callbacks (plain.py); the accounting is the
        caller's (exchange_opened, exchange_closed)."""
        self._upstream.submit_to(out.base, out.path_qs, method, out.headers,
                                 out.body if out.body or method == "POST" else None,
                                 out.read_timeout, endpoint in REPLAYABLE_ENDPOINTS, done)

    async def handle_aiohttp(self, request: web.Request) -> web.Response:
        """The route handler for requests aiohttp serves (the edge hands it what is not plain)."""
        return (await self.handle(request)).as_response()

    def match(self, raw_target: str) -> PathMatch | None:
        path = raw_target.partition("?")[0]
        found = self._matches.get(path)
        if found is None:
            found = self._paths.match(path)
            # Only matches are kept: misses are client-chosen text; SDK paths are a few dozen.
            if found is not None and len(self._matches) < _MATCHES_KEPT:
                self._matches[path] = found
        return found

    async def handle(self, request: Incoming, match: PathMatch | None = None) -> Answer:
        """`match`: the target's, when the caller (the lean edge) has already matched it."""
        screened = self.screen(request, match)
        if isinstance(screened, Answer):
            return screened
        tally = self._metrics.tally
        tally.add(self._metrics.in_flight)
        try:
            return await self._relay(request, *screened)
        finally:
            tally.add(self._metrics.in_flight, -1)

    def screen(self, request: Incoming,
               match: PathMatch | None) -> Answer | tuple[PathMatch, dict[str, str]]:
        """The checks before any work: target shape, path, CORS, method. An answer, or the
        request's endpoint and CORS headers to go on with."""
        origin = request.headers.get("Origin")
        cors = self._cors.headers(origin)
        if not request.raw_path.startswith("/"):
            return self.reject("bad_request", 400, "absolute-form request targets are refused: "
                               "this relay is not a forward proxy", cors)
        match = match or self.match(request.raw_path)
        if match is None:
            return self.reject("not_found", 404, "no such endpoint", cors)
        request_facts().endpoint = match.endpoint
        if not self._cors.allows(origin):
            return self.reject("cors", 403, "this Origin is not allowed", {})
        if request.method == "OPTIONS":
            return Answer(204, self._cors.preflight_headers(origin))
        if request.method not in _ALLOWED_METHODS:
            return self.reject("method", 405, f"{request.method} is not allowed here",
                               {**cors, "Allow": "GET, POST, OPTIONS"})
        return match, cors

    async def _relay(self, request: Incoming, match: PathMatch,
                     cors: dict[str, str]) -> Answer:
        """The steps of a request; the lean edge's plain path (plain.py) takes the same ones
        without awaiting."""
        client_ip = self.client_ip_of(request)
        wait = await self._rate.check_ip(client_ip)     # before the body: a flood costs no reads
        if wait:
            return self.rate_limited("this client IP", "ip_per_second", wait, cors)
        refusal = self.declared_too_large(request, match, cors)
        if refusal is not None:
            return refusal
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:  # chunked body past the app-wide maximum
            return self.reject("limit", 413, _too_large(match.endpoint,
                                                        self._accepted[match.endpoint]), cors)
        routed = self.route(request, match, body, cors)
        if isinstance(routed, Answer):
            return routed
        wait = await self._rate.check_tokens(routed[1].tokens)
        if wait:
            return self.rate_limited("this project token", "token_per_second", wait, cors)
        return await self.forward(*routed, match, request.headers, client_ip, cors)

    def client_ip_of(self, request: Incoming) -> str:
        headers = request.headers
        client_ip = self._client_ip.resolve(
            request.remote, headers.get("X-Forwarded-For"), headers.get("X-Real-IP"),
            headers.get(self._client_ip.header) if self._client_ip.header else None)
        request_facts().client_ip = client_ip
        return client_ip

    def declared_too_large(self, request: Incoming, match: PathMatch,
                           cors: dict[str, str]) -> Answer | None:
        limit = self._accepted[match.endpoint]
        if request.content_length is not None and request.content_length > limit:
            return self.reject("limit", 413, _too_large(match.endpoint, limit), cors)
        return None

    def route(self, request: Incoming, match: PathMatch, body: bytes,
              cors: dict[str, str]) -> Answer | tuple[RoutedRequest, Plan]:
        """The body read: where it goes (decoding only when it must), or the answer."""
        endpoint = match.endpoint
        limit = self._accepted[endpoint]
        if len(body) > limit:
            return self.reject("limit", 413, _too_large(endpoint, limit), cors)
        self._metrics.tally.add(self._metrics.child(self._metrics.request_bytes, endpoint),
                                len(body))
        request_facts().request_bytes = len(body)
        headers = request.headers
        routed = RoutedRequest(
            endpoint=endpoint, pinned_region=match.region, method=request.method,
            query=request.raw_path.partition("?")[2].encode(), body=body,
            content_type=headers.get("Content-Type", ""),
            content_encoding=headers.get("Content-Encoding", ""),
            authorization=headers.get("Authorization", ""), inflate_limit=limit,
            part_limit=self._limits[endpoint])
        try:
            plan = self._router.plan(routed)
        except CodecError as exc:
            return self.reject(exc.reason, exc.status, exc.message, cors)
        # Not `exc` again: compiled, one name holds one type (CodecError above).
        except (UnknownToken, MixedCredentials) as refused:
            return self.reject(refused.reason, refused.status, refused.message, cors)
        for part in plan.parts:
            if part.body is not None or part.query is not None:
                self._metrics.child(self._metrics.rewritten, endpoint).inc()
                break
        if plan.telemetry:
            self._metrics.child(self._metrics.telemetry, endpoint).inc(plan.telemetry)
        if not plan.parts:      # only Mixpanel's own telemetry (strict mode): answered here
            body, content_type = answers.success_for(routed, 0)
            return Answer(200, {**cors, "Content-Type": content_type}, body)
        return routed, plan

    async def forward(self, routed: RoutedRequest, plan: Plan, match: PathMatch,
                      headers: Mapping[str, str], client_ip: str,
                      cors: dict[str, str]) -> Answer:
        if not plan.split:
            return await self._forward_whole(routed, match, plan.parts[0], headers, client_ip, cors)
        return await self._forward_split(routed, match, plan, headers, client_ip, cors)

    async def _forward_whole(self, routed: RoutedRequest, match: PathMatch, part: Part,
                             headers: Mapping[str, str], client_ip: str,
                             cors: dict[str, str]) -> Answer:
        outcome = await self._send(routed, match, part, headers, client_ip)
        return self.answer_whole(outcome, match.endpoint, part.region, cors)

    def answer_whole(self, outcome: Outcome, endpoint: str, region: str,
                     cors: dict[str, str]) -> Answer:
        """The client's answer to a request that went whole to one region, counted."""
        response = translate(outcome, cors, self._retry_after)
        self._metrics.count_request(endpoint, region, response.status)
        request_facts().add_region(region)
        return response

    def plain_part(self, plan: Plan, match: PathMatch) -> Part | None:
        """The part of a plan that goes whole, one exchange and nothing else: no split, no
        spool (plain.py sends it in callbacks). None: the plan needs `forward`."""
        if plan.split or self._spool is not None:
            return None
        return plan.parts[0]

    async def _forward_split(self, routed: RoutedRequest, match: PathMatch, plan: Plan,
                             headers: Mapping[str, str], client_ip: str,
                             cors: dict[str, str]) -> Answer:
        self._metrics.split_batches.inc()
        outcomes = await asyncio.gather(*(
            self._send(routed, match, part, headers, client_ip) for part in plan.parts))
        responses = [translate(outcome, cors, self._retry_after) for outcome in outcomes]
        for part, response in zip(plan.parts, responses, strict=True):
            self._metrics.count_request(match.endpoint, part.region, response.status)
            request_facts().add_region(part.region)
        return combine(routed, responses, cors, sum(part.records for part in plan.parts))

    def outgoing(self, routed: RoutedRequest, match: PathMatch, part: Part,
                 headers: Mapping[str, str], client_ip: str) -> Outgoing:
        """The upstream request of one part: target, headers (policy applied), body."""
        query = routed.query if part.query is None else part.query
        path_qs = f"{match.upstream_path}?{query.decode()}" if query else match.upstream_path
        out_headers = upstream_request_headers(headers, self._ip_policy.upstream_ip(client_ip),
                                               part.drop_content_encoding)
        if part.content_encoding:      # a rewritten body the router re-encoded (gzip)
            out_headers["Content-Encoding"] = part.content_encoding
        if part.authorization:         # a split /import part's own project credentials
            out_headers["Authorization"] = part.authorization
        body = routed.body if part.body is None else part.body
        read_timeout = self._settings_timeout(query) if match.endpoint == "settings" else None
        return Outgoing(self._base_urls[(part.region, match.endpoint)], path_qs, query,
                        out_headers, body, read_timeout)

    async def _send(self, routed: RoutedRequest, match: PathMatch, part: Part,
                    headers: Mapping[str, str], client_ip: str) -> Outcome:
        out = self.outgoing(routed, match, part, headers, client_ip)
        path_qs, out_headers, body, read_timeout = out.path_qs, out.headers, out.body, \
            out.read_timeout
        spool = self._spool
        if spool is None:
            return await self._exchange_for_client(part.region, match.endpoint, path_qs,
                                                   routed.method, out_headers, body, read_timeout)
        entry = SpoolEntry(part.region, match.endpoint, routed.method, match.upstream_path,
                           out.query, out_headers, body)
        if spool.takes_first(part.region, match.endpoint):
            stored = await spool.store(entry, routed)
            if isinstance(stored, UpstreamAnswer):
                return stored
        outcome = await self._exchange_for_client(part.region, match.endpoint, path_qs,
                                                  routed.method, out_headers, body, read_timeout)
        if not spool.would_keep(match.endpoint, outcome):
            return outcome
        return await spool.after(entry, routed, outcome)

    async def _exchange_for_client(self, region: str, endpoint: str, path_qs: str, method: str,
                                   headers: dict[str, str], body: bytes,
                                   read_timeout: float | None) -> Outcome:
        """An exchange made for one client request: its upstream time and the upstream's
        final word go to that request's access record."""
        outcome, seconds = await self._exchange(region, endpoint, path_qs, method, headers, body,
                                                read_timeout)
        self.client_exchange_noted(outcome, seconds)
        return outcome

    @staticmethod
    def client_exchange_noted(outcome: Outcome, seconds: float) -> None:
        facts = request_facts()
        facts.upstream_took(seconds)
        if isinstance(outcome, UpstreamAnswer) and not is_retryable(outcome.status):
            facts.note("forwarded")     # the upstream's final word (the spool notes "stored")

    async def _exchange(self, region: str, endpoint: str, path_qs: str, method: str,
                        headers: dict[str, str], body: bytes,
                        read_timeout: float | None) -> tuple[Outcome, float]:
        """One upstream exchange and its accounting, the only one: bytes out, latency, answer
        size, failures by kind, and region health."""
        meters = self.exchange_opened(endpoint, region, body)
        started = time.perf_counter()
        try:
            outcome: Outcome = await self._upstream.send_to(
                self._base_urls[(region, endpoint)], path_qs, method, headers,
                body if body or method == "POST" else None, read_timeout,
                replayable=endpoint in REPLAYABLE_ENDPOINTS)
        except UpstreamFailure as failure:
            outcome = failure
        seconds = time.perf_counter() - started
        self.exchange_closed(region, meters, outcome, seconds)
        return outcome, seconds

    def exchange_opened(self, endpoint: str, region: str, body: bytes) -> RouteMeters:
        meters = self._metrics.route(endpoint, region)
        self._metrics.tally.add(meters.upstream_bytes, len(body))
        return meters

    def exchange_closed(self, region: str, meters: RouteMeters, outcome: Outcome,
                        seconds: float) -> None:
        """An exchange's accounting: latency, answer size, failures by kind, region health."""
        if isinstance(outcome, UpstreamFailure):
            self._metrics.upstream_failures.labels(region, outcome.kind).inc()
            self._health.failed(region, outcome.message)
            return
        meters.upstream_seconds.observe(seconds)
        self._metrics.tally.add(meters.upstream_response_bytes, len(outcome.body))
        if outcome.status >= 500:   # reachable, but not serving: not ready either
            self._health.failed(region, f"answered {outcome.status}")
        else:
            self._health.succeeded(region, seconds)

    def _settings_timeout(self, query: bytes) -> float:
        """The browser aborts /settings after 500 ms; the mobile replay SDKs wait 5 s."""
        upstream = self._config.upstream
        return (upstream.settings_timeout if is_browser_settings(query)
                else upstream.settings_timeout_mobile)

    def rate_limited(self, who: str, key: str, wait: int,
                      cors: dict[str, str]) -> Answer:
        # 503 + Retry-After, not 429: mixpanel-iphone deletes a batch on any 4xx (it retries
        # only 5xx), and every SDK that retries a 429 retries a 503 too (sdk-endpoints.md 5.2).
        message = f"rate limit exceeded for {who} ([limits.rate] {key}); retry in {wait} s"
        return self.reject("rate_limit", 503, message, {**cors, "Retry-After": str(wait)},
                            limit=key)

    def reject(self, reason: str, status: int, message: str,
                headers: dict[str, str], **extra: object) -> Answer:
        self._metrics.reject(reason)
        request_facts().reason = reason
        return answers.problem(status, message, headers, **extra)


def _too_large(endpoint: str, limit: int) -> str:
    return f"the body exceeds the {limit}-byte limit for /{endpoint}"
