"""Client IP: forwarding headers are believed only from trusted peers, walked right to left."""

from __future__ import annotations

import ipaddress

from proxy.decide.clientip import ClientIPResolver

TRUSTED = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"))


def test_untrusted_peer_headers_are_ignored() -> None:
    resolver = ClientIPResolver(TRUSTED)
    assert resolver.resolve("203.0.113.9", "1.2.3.4", "5.6.7.8") == "203.0.113.9"


def test_trusted_peer_chain_walks_past_trusted_hops() -> None:
    resolver = ClientIPResolver(TRUSTED)
    # client spoofed 6.6.6.6, the real client 198.51.100.7 reached 10.1.1.1, then us.
    xff = "6.6.6.6, 198.51.100.7, 10.1.1.1"
    assert resolver.resolve("127.0.0.1", xff, None) == "198.51.100.7"


def test_trusted_peer_x_real_ip_and_header() -> None:
    assert ClientIPResolver(TRUSTED).resolve("127.0.0.1", None, "198.51.100.8") == "198.51.100.8"
    cf = ClientIPResolver(TRUSTED, "CF-Connecting-IP")
    assert cf.resolve("127.0.0.1", "1.1.1.1", None, "2001:db8::5") == "2001:db8::5"
    assert cf.resolve("192.0.2.1", "1.1.1.1", None, "2001:db8::5") == "192.0.2.1"


def test_garbage_and_all_trusted_chains() -> None:
    resolver = ClientIPResolver(TRUSTED)
    assert resolver.resolve("127.0.0.1", "not-an-ip", None) == "127.0.0.1"
    assert resolver.resolve("127.0.0.1", "10.0.0.2, 10.0.0.3", None) == "10.0.0.2"
    assert resolver.resolve("127.0.0.1", "198.51.100.1:5555", None) == "198.51.100.1"
    assert resolver.resolve("::ffff:127.0.0.1", "198.51.100.2", None) == "198.51.100.2"


def test_no_trusted_proxies_means_peer_only() -> None:
    assert ClientIPResolver(()).resolve("127.0.0.1", "1.2.3.4", "1.2.3.4") == "127.0.0.1"
