"""The plain path: a request the lean edge framed, answered in callbacks.

`ApiRelay.handle` awaits every step of a request, and every await costs the request a coroutine
level; with the Task the edge made for it, that machinery cost more per /track request than the
relay's own work. Most requests need no await at all: the local rate limits, the routing
decision and the answer are synchronous, and the one exchange with the upstream completes in
the upstream connection's protocol callback. So the edge hands a framed request here first:

    decide (synchronous: the same steps as `ApiRelay._relay`, in the same order)
      -> answered at once: a refusal, a preflight, a rate limit, telemetry answered locally
      -> one exchange, in callbacks: the pool's idle connection writes it, its protocol calls
         `_Exchange.settled` with the whole answer (or the failure) -> translated -> replied
      -> anything that must await (split batches, the spool): `ApiRelay.forward`
         in a Task, then replied
    or not taken at all (`start` answers False) when even the decision must await: the rate
    limiter is the fleet's (Redis). The edge then runs `ApiRelay.handle` in a Task, as when
    the plain path is switched off (`EdgeSite(fast_path=False)`).

Every step is `ApiRelay`'s own method (screen, client_ip_of, route, outgoing, exchange_opened /
exchange_closed, answer_whole): the plain path only drives them without awaiting, so metrics,
the access record, the upstream headers and the answer translation are the general path's.
The pool's rules stay too (one deadline, complete answers only, the one replay: pool.submit).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol

from ..decide.paths import PathMatch
from ..decide.routing import Plan, RoutedRequest
from ..ops.accesslog import RequestFacts, enter_facts, leave_facts, request_facts
from ..ops.metrics import Metrics, RouteMeters
from ..upstream.client import UpstreamFailure
from . import answers
from .answers import Answer
from .handler import ApiRelay
from .incoming import Incoming
from .outcomes import Outcome
from .ratelimit import RateLimiter

log = logging.getLogger("mixpanel_proxy.relay")

Spawn = Callable[[Coroutine[Any, Any, None]], None]


class PlainRequest(Incoming, Protocol):
    """What the plain path reads of a request: the edge's `LeanRequest`, its body whole."""

    @property
    def body(self) -> bytes: ...


class Reply(Protocol):
    """Who asked (the edge's connection): called once with the answer, or None to close
    without one (the request was cancelled by a stop)."""

    def replied(self, answer: Answer | None) -> None: ...


class PlainPath:
    def __init__(self, relay: ApiRelay, metrics: Metrics, spawn: Spawn) -> None:
        self._relay = relay
        self._tally, self._in_flight = metrics.tally, metrics.in_flight
        self._spawn = spawn            # a Task the edge keeps (a stop cancels the stragglers)

    def start(self, request: PlainRequest, match: PathMatch, facts: RequestFacts,
              reply: Reply) -> bool:
        """Take the request: True when `reply` has been or will be called; False when nothing
        was done and the general path must take it."""
        limits = self._relay.local_limits
        if limits is None:
            return False
        token = enter_facts(facts)     # the relay's steps note what they learn in `facts`
        try:
            answer = self._decide(request, match, limits, reply)
        except Exception:
            log.exception("the relay failed on %s /%s", request.method, match.endpoint)
            answer = answers.problem(500, "internal error")
        finally:
            leave_facts(token)
        if answer is not None:
            reply.replied(answer)
        return True

    def _decide(self, request: PlainRequest, match: PathMatch, limits: RateLimiter,
                reply: Reply) -> Answer | None:
        """The answer now, or None when it comes later (from the upstream, or a Task)."""
        relay = self._relay
        screened = relay.screen(request, match)
        if isinstance(screened, Answer):
            return screened
        match, cors = screened
        self.began()
        try:
            answer = self._steps(request, match, cors, limits, reply)
        except BaseException:
            self.ended()
            raise
        if answer is not None:
            self.ended()
        return answer

    def _steps(self, request: PlainRequest, match: PathMatch, cors: dict[str, str],
               limits: RateLimiter, reply: Reply) -> Answer | None:
        """`ApiRelay._relay`'s steps, in its order, none awaited."""
        relay = self._relay
        client_ip = relay.client_ip_of(request)
        wait = limits.check_ip(client_ip)
        if wait:
            return relay.rate_limited("this client IP", "ip_per_second", wait, cors)
        refusal = relay.declared_too_large(request, match, cors)
        if refusal is not None:
            return refusal
        routed = relay.route(request, match, request.body, cors)
        if isinstance(routed, Answer):
            return routed
        wait = limits.check_tokens(routed[1].tokens)
        if wait:
            return relay.rate_limited("this project token", "token_per_second", wait, cors)
        part = relay.plain_part(routed[1], match)
        if part is None:
            self._spawn(self._forward(*routed, match, request.headers, client_ip, cors, reply))
            return None
        out = relay.outgoing(routed[0], match, part, request.headers, client_ip)
        exchange = _Exchange(relay, self, reply, match.endpoint, part.region, cors,
                             relay.exchange_opened(match.endpoint, part.region, out.body))
        try:
            relay.submit(out, routed[0].method, match.endpoint, exchange.settled)
        except UpstreamFailure as failure:     # not even written (a header's line break)
            exchange.settled(failure)
        return None

    def began(self) -> None:
        self._tally.add(self._in_flight)

    def ended(self) -> None:
        self._tally.add(self._in_flight, -1)

    async def _forward(self, routed: RoutedRequest, plan: Plan, match: PathMatch,
                       headers: Mapping[str, str], client_ip: str, cors: dict[str, str],
                       reply: Reply) -> None:
        """The general path's forwarding, for a plan that must await (its Task's context
        holds the request's facts: it was made inside `start`)."""
        answer: Answer | None = None
        try:
            answer = await self._relay.forward(routed, plan, match, headers, client_ip, cors)
        except Exception:
            log.exception("the relay failed on %s /%s", routed.method, match.endpoint)
            answer = answers.problem(500, "internal error")
        finally:
            self.ended()
            reply.replied(answer)         # None when cancelled: the edge closes


class _Exchange:
    """One plain request at the upstream: the state its answer needs when it comes."""

    __slots__ = ("_relay", "_path", "_reply", "_endpoint", "_region", "_cors", "_meters",
                 "_facts", "_started")

    def __init__(self, relay: ApiRelay, path: PlainPath, reply: Reply, endpoint: str,
                 region: str, cors: dict[str, str], meters: RouteMeters) -> None:
        self._relay, self._path, self._reply = relay, path, reply
        self._endpoint, self._region, self._cors, self._meters = endpoint, region, cors, meters
        self._facts = request_facts()
        self._started = time.perf_counter()

    def settled(self, outcome: Outcome) -> None:
        """The upstream's whole answer, or the failure: `ApiRelay._exchange`'s accounting and
        `_forward_whole`'s answer."""
        seconds = time.perf_counter() - self._started
        relay = self._relay
        token = enter_facts(self._facts)
        try:
            relay.exchange_closed(self._region, self._meters, outcome, seconds)
            relay.client_exchange_noted(outcome, seconds)
            answer = relay.answer_whole(outcome, self._endpoint, self._region, self._cors)
        except Exception:
            log.exception("the relay failed on /%s", self._endpoint)
            answer = answers.problem(500, "internal error")
        finally:
            leave_facts(token)
            self._path.ended()
        self._reply.replied(answer)

