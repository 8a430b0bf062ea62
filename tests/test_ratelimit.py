"""Token buckets: exact on both sides of the boundary, with a fake clock (the only mock)."""

from __future__ import annotations

from proxy.config import RateLimitConfig
from proxy.relay.ratelimit import RateLimiter, TokenBuckets


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refill() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=2.0, burst=3, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == 0.5                 # empty: one token back in 1/2 s
    assert buckets.take("b") == 0.0                 # keys are independent
    clock.now += 0.5
    assert buckets.take("a") == 0.0
    assert buckets.take("a") > 0
    clock.now += 100                                # never refills past the burst
    assert [buckets.take("a") for _ in range(4)][-1] > 0


def test_limiter_off_by_default_and_retry_after_rounds_up() -> None:
    clock = Clock()
    assert RateLimiter(RateLimitConfig(), clock).check_ip("1.2.3.4") == 0
    limiter = RateLimiter(RateLimitConfig(ip_per_second=0.25, ip_burst=1,
                                          token_per_second=1, token_burst=2), clock)
    assert limiter.check_ip("1.2.3.4") == 0
    assert limiter.check_ip("1.2.3.4") == 4          # 1 token at 0.25/s: 4 s
    assert limiter.check_ip("5.6.7.8") == 0
    assert limiter.check_tokens(["t1", "t2"]) == 0
    assert limiter.check_tokens(["t1"]) == 0
    assert limiter.check_tokens(["t1", "t2"]) == 1   # t1 is empty, t2 still has one
    assert limiter.check_tokens([]) == 0


def test_bucket_memory_is_bounded() -> None:
    buckets = TokenBuckets(rate=1.0, burst=1, max_keys=10, clock=Clock())
    for n in range(1000):
        buckets.take(f"ip-{n}")
    assert len(buckets._buckets) == 10
