"""Pure client-IP derivation from the TCP peer and forwarding headers of trusted peers only.

A client can write anything into X-Forwarded-For, so the chain is walked right to left and
believed only while each hop is a configured trusted proxy (as uvicorn's `_TrustedHosts` and
aiohttp-remotes' `XForwardedFiltered` do). The result is always a syntactically valid IP.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache

from ..config.reader import Network

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_KEPT = 4096          # entries per cache; both are cleared when full


class ClientIPResolver:
    def __init__(self, trusted: Sequence[Network], client_ip_header: str | None = None) -> None:
        self._trusted = tuple(trusted)
        self._header = client_ip_header
        self._peers: dict[str, tuple[str, bool]] = {}            # see _peer
        self._declared: dict[tuple[str | None, ...], str] = {}    # trusted hops' headers -> IP

    def is_trusted(self, address: str | None) -> bool:
        ip = _parse_ip(address)
        return ip is not None and self._trusted_ip(ip)

    def _trusted_ip(self, ip: IPAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self._trusted)

    def resolve(self, peer: str | None, xff: str | None, x_real_ip: str | None,
                header_ip: str | None = None) -> str:
        """The client's IP: the peer, or what trusted hops say about who sent them the request."""
        peer_text, trusted = self._peer(peer)
        if not trusted or not (xff or x_real_ip or (self._header and header_ip)):
            return peer_text
        # From a trusted hop (the nginx front): the same headers come back for every request of
        # a client, and walking them costs more than remembering the answer.
        key = (peer_text, xff, x_real_ip, header_ip)
        found = self._declared.get(key)
        if found is None:
            if len(self._declared) >= _KEPT:
                self._declared.clear()
            peer_ip = _parse_ip(peer_text)
            assert peer_ip is not None            # a trusted peer is a valid IP
            found = self._declared[key] = self._believe(peer_ip, xff, x_real_ip, header_ip)
        return found

    def _peer(self, peer: str | None) -> tuple[str, bool]:
        """The peer as IP text (as given when it is none) and whether it is a trusted hop,
        remembered: the same few peers (the front, clients on keep-alive) come back."""
        known = self._peers.get(peer or "")
        if known is None:
            peer_ip = _parse_ip(peer)
            if peer_ip is None:
                return peer or "", False
            known = (str(peer_ip), self._trusted_ip(peer_ip))
            if len(self._peers) >= _KEPT:
                self._peers.clear()
            self._peers[peer or ""] = known
        return known

    def _believe(self, peer_ip: IPAddress, xff: str | None, x_real_ip: str | None,
                 header_ip: str | None) -> str:
        if self._header and header_ip:
            declared = _parse_ip(header_ip.strip())
            if declared is not None:
                return str(declared)
        if xff:
            return str(self._walk_chain(xff, peer_ip))
        declared = _parse_ip(x_real_ip.strip()) if x_real_ip else None
        return str(declared or peer_ip)

    def _walk_chain(self, xff: str, peer_ip: IPAddress) -> IPAddress:
        client = peer_ip
        for entry in reversed(xff.split(",")):
            hop = _parse_ip(entry.strip())
            if hop is None:
                break  # garbage in the chain: stop believing it, keep the last good hop
            client = hop
            if not self._trusted_ip(hop):
                break
        return client

    @property
    def header(self) -> str | None:
        return self._header


@lru_cache(maxsize=4096)
def _parse_ip(text: str | None) -> IPAddress | None:
    if not text:
        return None
    if text.startswith("[") and "]" in text:     # "[::1]:443" form some balancers write
        text = text[1:text.index("]")]
    elif text.count(":") == 1:                    # "1.2.3.4:5678"
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip
