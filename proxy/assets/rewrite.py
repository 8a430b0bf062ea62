"""Optional URL rewriting of the served loader: the SDK's built-in defaults for `lib_base_path`
(and `api_host`) become this relay's public URLs, so a site that only points
`MIXPANEL_CUSTOM_LIB_URL` at the relay gets the recorder, targeting bundle and API through it too.

Only the quoted string literals are replaced, exactly as mixpanel-browser 2.83.0 spells its
defaults (`DEFAULT_CONFIG` in `mixpanel-core.js`); source maps are never touched.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SDK_API_HOST", "SDK_LIB_BASE", "Rewriter"]

SDK_LIB_BASE = "https://cdn.mxpnl.com/libs/"
SDK_API_HOST = "https://api-js.mixpanel.com"


@dataclass(frozen=True)
class Rewriter:
    """Replaces each `old` URL literal (in either quote style) by its `new` one."""

    pairs: tuple[tuple[str, str], ...] = ()

    @classmethod
    def for_relay(cls, lib_base: str | None, api_host: str | None) -> Rewriter:
        pairs = []
        if lib_base is not None:
            pairs.append((SDK_LIB_BASE, lib_base))
        if lib_base is not None and api_host is not None:
            pairs.append((SDK_API_HOST, api_host))
        return cls(tuple(pairs))

    @property
    def enabled(self) -> bool:
        return bool(self.pairs)

    def applies_to(self, name: str) -> bool:
        return self.enabled and name.endswith(".js")

    def rewrite(self, body: bytes) -> bytes:
        for old, new in self.pairs:
            for quote in ('"', "'"):
                old_literal = f"{quote}{old}{quote}".encode()
                new_literal = f"{quote}{_escaped(new, quote)}{quote}".encode()
                body = body.replace(old_literal, new_literal)
        return body


def _escaped(url: str, quote: str) -> str:
    # The URLs come from validated config, but a quote or backslash must never end the literal.
    return url.replace("\\", "\\\\").replace(quote, "\\" + quote)
