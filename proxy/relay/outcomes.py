"""What the relay makes of upstream outcomes: the request it sends (`Outgoing`), and the answer
the SDK gets (`translate`, `combine`). Shared by the general path (handler.py) and the plain
path (plain.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..decide.headers import client_response_headers
from ..decide.routing import RoutedRequest
from ..upstream.client import UpstreamAnswer, UpstreamFailure
from . import answers
from .answers import Answer

Outcome = UpstreamAnswer | UpstreamFailure


@dataclass(slots=True, init=False)   # the __init__ is ours: see RoutedRequest (routing.py)
class Outgoing:
    """One upstream request, before the client serializes it."""

    base: str                      # the region's endpoint URL
    path_qs: str
    query: bytes
    headers: dict[str, str]
    body: bytes
    read_timeout: float | None     # None: the config's

    def __init__(self, base: str, path_qs: str, query: bytes, headers: dict[str, str],
                 body: bytes, read_timeout: float | None) -> None:
        self.base, self.path_qs, self.query, self.headers = base, path_qs, query, headers
        self.body, self.read_timeout = body, read_timeout


def translate(outcome: Outcome, cors: dict[str, str], retry_after: str) -> Answer:
    """Map the upstream's answer to one the SDK acts on correctly (wire contract 8.4);
    `retry_after`: the configured Retry-After, when the upstream gives none."""
    if isinstance(outcome, UpstreamFailure):
        return answers.problem(503, f"upstream unavailable: {outcome.message}",
                               {**cors, "Retry-After": retry_after})
    status = outcome.status
    if 200 <= status < 300 or (400 <= status < 500 and status != 429 and _is_json(outcome)):
        headers = {**client_response_headers(outcome.headers), **cors}
        return Answer(status, headers, outcome.body)
    retry_after = outcome.headers.get("Retry-After", retry_after)
    if status == 429:     # 503 for the same reason as our own rate limit (rate_limited)
        return answers.problem(503, "upstream rate limit", {**cors, "Retry-After": retry_after})
    if status >= 500 or 300 <= status < 400:
        return answers.problem(503, f"upstream answered {status}",
                               {**cors, "Retry-After": retry_after})
    return answers.problem(status, f"upstream answered {status}", cors)


def combine(routed: RoutedRequest, responses: Sequence[Answer], cors: dict[str, str],
            records: int) -> Answer:
    """One truthful answer for a split batch: 200 only when every part was accepted."""
    statuses = [response.status for response in responses]
    if all(status == 200 for status in statuses):
        body, content_type = answers.success_for(routed, records)
        return Answer(200, {**cors, "Content-Type": content_type}, body)
    # Retryable failures first: the SDK resends the whole batch, and Mixpanel deduplicates
    # the parts that were already accepted by (event, distinct_id, time, $insert_id).
    for response in responses:
        if response.status == 503:
            return response
    return next(response for response in responses if response.status != 200)


def _is_json(answer: UpstreamAnswer) -> bool:
    return "json" in answer.headers.get("Content-Type", "")
