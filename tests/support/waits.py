"""The one way tests wait: poll a condition on what a fake, a process or a registry recorded,
until it holds or a deadline passes. Never a fixed sleep: a loaded machine only makes a wait
longer, never wrong, and a fast one does not wait at all."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar, overload

T = TypeVar("T")
POLL = 0.01    # seconds between checks: short, so a wait costs little beyond the event itself


def _deadline(what: str, timeout: float) -> Iterator[None]:
    """Yield once per poll until `timeout` seconds have passed, then fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() <= deadline:
        yield
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@overload
async def eventually(check: Callable[[], Awaitable[T | None]],
                     what: str = ..., timeout: float = ...) -> T: ...
@overload
async def eventually(check: Callable[[], T | None], what: str = ..., timeout: float = ...) -> T: ...


async def eventually(check: Callable[[], object], what: str = "condition",
                     timeout: float = 15.0) -> object:
    """Poll `check()` (sync or async) until it answers something truthy, and return that."""
    for _ in _deadline(what, timeout):
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        await asyncio.sleep(POLL)    # the poll: the one place tests wait
    raise AssertionError("unreachable")   # _deadline raises first


def eventually_blocking(check: Callable[[], T | None], what: str = "condition",
                        timeout: float = 15.0) -> T:
    """`eventually` for code with no event loop (process start-up, bench/ scripts)."""
    for _ in _deadline(what, timeout):
        result = check()
        if result:
            return result
        time.sleep(POLL)             # the poll: the one place tests wait
    raise AssertionError("unreachable")
