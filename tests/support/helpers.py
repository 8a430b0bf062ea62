"""Builders for the request shapes the real SDKs send (wire contract sections 1 and 5)."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp.test_utils import TestClient
from yarl import URL


def event(token: str, name: str = "page view", **props: Any) -> dict[str, Any]:
    return {"event": name, "properties": {"token": token, "distinct_id": "user-1",
                                          "time": 1764330000.123, "$insert_id": "abc123def456ghi7",
                                          **props}}


def as_base64(payload: Any) -> str:
    return base64.b64encode(json.dumps(payload).encode()).decode()


def browser_form(payload: Any, fmt: str = "base64") -> bytes:
    """What mixpanel-browser's XHR batch sends: data=<encodeURIComponent(base64 or JSON)>."""
    value = as_base64(payload) if fmt == "base64" else json.dumps(payload)
    return f"data={quote(value, safe='')}".encode()


def python_sdk_form(payload: Any) -> bytes:
    """What the `mixpanel` PyPI SDK sends: data=<JSON>&verbose=1&ip=0, urlencoded by requests."""
    return urlencode({"data": json.dumps(payload), "verbose": 1, "ip": 0}).encode()


def raw_url(client: TestClient[Any, Any], target: str) -> URL:
    """An exact request target: yarl would otherwise re-quote it (%24 -> $) before sending."""
    return URL(f"http://127.0.0.1:{client.port}{target}", encoded=True)


def basic(token: str) -> str:
    return "Basic " + base64.b64encode(f"{token}:".encode()).decode()


FORM = {"Content-Type": "application/x-www-form-urlencoded"}
BEACON = {"Content-Type": "text/plain;charset=UTF-8"}
