"""Pure payload policies: property drop/allow lists, pattern redaction, IP blurring, `$insert_id`.

Applied to decoded track/engage/groups/import records in place, never to /record bodies. What
Mixpanel deduplicates or routes on (`event`, `token`, `distinct_id`, `time`, `$insert_id`) and
the identity keys (`$device_id`, `$user_id`) are never altered: redacting `$user_id` alone would
merge every device into one "[redacted]" user.

IP (wire contract section 7): with `ip = "truncated"` the relay sends the /24 (/48) network
address as the client IP, keeps the SDK's `ip=1` so Mixpanel still geolocates at city level, and
blurs payload `ip` / `$ip` the same way. With `ip = "omitted"` no client IP goes upstream, and
`ip=` becomes 0 on data requests: left at 1, Mixpanel would geolocate every user at the relay.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from ..config.payload import PayloadConfig
from ..config.privacy import ALWAYS_KEPT, PrivacyConfig
from ..endpoints import DATA_ENDPOINTS
from . import set_field
from .payload import form_field

EVENT_ENDPOINTS = frozenset({"track", "import"})
# Profile and group updates: the operations whose values are property name -> value maps.
_PROPERTY_OPERATIONS = ("$set", "$set_once", "$add", "$union", "$append", "$remove")


class IpPolicy:
    """The client IP as the relay shows it upstream, in headers and payloads."""

    def __init__(self, config: PrivacyConfig) -> None:
        self.mode = config.ip
        self._prefixes = (config.ipv4_prefix, config.ipv6_prefix)

    def upstream_ip(self, ip: str) -> str:
        """The X-Forwarded-For / X-Real-IP value; "" sends neither header."""
        if self.mode == "full":
            return ip
        if self.mode == "omitted":
            return ""
        return truncate_ip(ip, *self._prefixes) or ""

    def payload_ip(self, value: Any) -> Any:
        """A payload `ip` / `$ip` value as policy wants it; None removes it."""
        if self.mode == "omitted":
            return None
        if self.mode == "truncated" and isinstance(value, str):
            return truncate_ip(value, *self._prefixes) or value   # "0", "" keep their meaning
        return value

    def zero_ip_field(self, encoded: bytes, add: bool) -> bytes | None:
        """`encoded` (a query or form) with `ip=0` when no IP may be used; None if unchanged.

        With `add`, a missing field is added: /engage geolocates by default without one.
        """
        if self.mode != "omitted":
            return None
        current = form_field(encoded, b"ip")
        if current == b"0" or (current is None and not add):
            return None
        return set_field(encoded, b"ip", b"0")


class PayloadPolicy:
    """Everything the relay may change in track/engage/groups/import records."""

    def __init__(self, privacy: PrivacyConfig, payload: PayloadConfig) -> None:
        self.ip = IpPolicy(privacy)
        self._drop = frozenset(privacy.drop_properties)
        allow = privacy.allow_properties
        self._allow = frozenset(allow) | ALWAYS_KEPT if allow else None
        self._patterns = privacy.redact_patterns
        self._marker = privacy.redact_marker.replace("\\", "\\\\")   # a literal re template
        self._scrubs = privacy.rewrites_payloads
        self._insert_ids = payload.insert_id

    def decodes(self, endpoint: str) -> bool:
        """Whether this endpoint's payloads must be decoded for the policy's sake."""
        if endpoint not in DATA_ENDPOINTS:
            return False
        return self._scrubs or (self._insert_ids == "always" and endpoint in EVENT_ENDPOINTS)

    def scrub(self, endpoint: str, records: list[Any]) -> bool:
        """Apply the privacy rules to `records` in place; whether any record changed."""
        if not self._scrubs or endpoint not in DATA_ENDPOINTS:
            return False
        scrub_one = self._scrub_event if endpoint in EVENT_ENDPOINTS else self._scrub_update
        changed = False
        for record in records:
            if type(record) is dict and scrub_one(record):
                changed = True
        return changed

    def add_insert_ids(self, endpoint: str, records: list[Any], rewriting: bool) -> bool:
        """Give events without `$insert_id` a stable one; whether any was added.

        The id is derived from the event itself, so an SDK that resends the same batch (after a
        503, or a split batch whose other part failed) sends the same ids and Mixpanel
        deduplicates them; a random id would differ on every resend.
        """
        if endpoint not in EVENT_ENDPOINTS or self._insert_ids == "never":
            return False
        if not rewriting and self._insert_ids != "always":
            return False
        added = False
        for record in records:
            properties = record.get("properties") if type(record) is dict else None
            if type(properties) is dict and "$insert_id" not in properties:
                properties["$insert_id"] = derived_insert_id(record)
                added = True
        return added

    def _scrub_event(self, record: dict[str, Any]) -> bool:
        properties = record.get("properties")
        if type(properties) is not dict:
            return False
        changed = self._filter(properties)
        if "ip" in properties:
            changed = _apply(properties, "ip", self.ip.payload_ip) or changed
        return self._redact_map(properties) or changed

    def _scrub_update(self, record: dict[str, Any]) -> bool:
        changed = False
        if "$ip" in record:
            changed = _apply(record, "$ip", self.ip.payload_ip)
        for operation in _PROPERTY_OPERATIONS:
            values = record.get(operation)
            if type(values) is dict:
                changed = self._filter(values) or changed
                changed = self._redact_map(values) or changed
        return changed

    def _filter(self, properties: dict[str, Any]) -> bool:
        allow = self._allow
        doomed = [name for name in properties
                  if name in self._drop or (allow is not None and name not in allow)]
        for name in doomed:
            del properties[name]
        return bool(doomed)

    def _redact_map(self, properties: dict[str, Any]) -> bool:
        return bool(self._patterns) and self._redact_in(properties, top=True)

    def _redact_in(self, container: dict[Any, Any] | list[Any], top: bool = False) -> bool:
        """Redact every string inside `container` in place, nested keys too; whether any changed.

        Top-level property names are the schema (`drop_properties` handles them); a key inside a
        value is data like any other string.
        """
        changed = False
        pairs = container.items() if type(container) is dict else enumerate(container)
        for key, value in pairs:
            if top and key in ALWAYS_KEPT:
                continue
            kind = type(value)
            if kind is str:
                text = self._redact_text(value)
                if text is not value:
                    container[key] = text     # an existing key or index: safe while iterating
                    changed = True
            elif kind is dict or kind is list:
                changed = self._redact_in(value) or changed
        if not top and type(container) is dict:
            changed = self._redact_keys(container) or changed
        return changed

    def _redact_keys(self, values: dict[Any, Any]) -> bool:
        renamed = [(self._redact_text(key), value) for key, value in values.items()]
        if all(new is old for (new, _), old in zip(renamed, values, strict=True)):
            return False
        values.clear()
        values.update(renamed)    # two keys redacted alike become one: the later value stays
        return True

    def _redact_text(self, value: str) -> str:
        text = value
        for pattern in self._patterns:
            text = pattern.sub(self._marker, text)
        return value if text == value else text


def _apply(mapping: dict[str, Any], key: str, rule: Callable[[Any], Any]) -> bool:
    value = mapping[key]
    new = rule(value)
    if new is None:
        del mapping[key]
        return True
    if new is value or new == value:
        return False
    mapping[key] = new
    return True


def derived_insert_id(record: Any) -> str:
    """32 hex characters (Mixpanel takes up to 36 of [A-Za-z0-9-]) from the event's content."""
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.blake2b(canonical, digest_size=16).hexdigest()


@lru_cache(maxsize=4096)
def truncate_ip(text: str, ipv4_prefix: int, ipv6_prefix: int) -> str | None:
    """The network address of `text`'s /ipv4_prefix or /ipv6_prefix; None if not an IP."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = ipv4_prefix if address.version == 4 else ipv6_prefix
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)
