"""Routes to a relay: role inference, labels, URL normalisation and strict-priority tiers (pure).

A pairing may offer several URLs for one relay (LAN, Tailscale, public, custom VPN). Priority 0 is
the most preferred and priority is strict: a lower tier is used only when every higher tier has
failed. Reachability only breaks ties *inside* one tier. Roles we do not know are kept verbatim
(a custom VPN label such as ``wireguard``) and shown as ``Custom VPN (<raw>)``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .errors import UsageError

DEFAULT_RELAY_PORT = 8767  # the reference relay's default port
ROLE_PRIORITY = {"lan": 0, "tailscale": 1, "public": 2}
DEFAULT_CUSTOM_PRIORITY = 3

_TAILSCALE_NET = ipaddress.ip_network("100.64.0.0/10")
_ULA_NET = ipaddress.ip_network("fc00::/7")

ROLE_LABELS = {
    "lan": "LAN",
    "tailscale": "Tailscale",
    "public": "Public",
    "custom": "Custom VPN",
    "plugin_proxy": "Hermes Secure Link",
    "outbound_broker": "Hermes Reach (experimental)",
    "relay_broker": "Hermes Reach (experimental)",
    "broker": "Hermes Reach (experimental)",
}


@dataclass(frozen=True, order=True)
class Route:
    """One way to reach a relay. Ordered by (priority, index) so sorting keeps the offer's order."""

    priority: int
    index: int
    role: str
    url: str

    @property
    def label(self) -> str:
        return role_label(self.role)

    @property
    def secure(self) -> bool:
        return self.url.startswith("wss://")


def route_info(route: Route) -> dict[str, Any]:
    """A route as the agent reports it (status, pairing progress, doctor)."""
    return {"url": route.url, "role": route.role, "label": route.label, "priority": route.priority}


def role_label(role: str | None) -> str:
    if not role:
        return "Unknown"
    if role in ROLE_LABELS:
        return ROLE_LABELS[role]
    return f"Custom VPN ({role})"


def infer_role(url: str) -> str:
    """Guess a route's role from its host: Tailscale, LAN (private/loopback/link-local) or public."""
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    if host.endswith(".ts.net"):
        return "tailscale"
    if host == "localhost" or host.endswith(".local") or host.endswith(".localhost"):
        return "lan"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return "public"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip in _TAILSCALE_NET:
        return "tailscale"
    if ip.is_loopback or ip.is_link_local or ip.is_private or (ip.version == 6 and ip in _ULA_NET):
        return "lan"
    return "public"


def normalize_relay_url(raw: str) -> tuple[str, bool]:
    """Validate a relay URL and add the default port to a bare ``ws://host``.

    Returns ``(url, port_was_added)``. ``http(s)://`` is accepted and rewritten to ``ws(s)://``
    because users paste the relay's HTTP address; any other scheme is a UsageError that says what
    a valid URL looks like. A ``wss://`` URL without a port keeps the implied 443.
    """
    text = (raw or "").strip()
    if not text:
        raise UsageError("empty relay URL; expected ws://HOST:PORT or wss://HOST[:PORT]")
    if "://" not in text:
        slip = _MISSPELT_SCHEME.fullmatch(text)  # ws//host:port, wss:/host: a scheme typed without "://"
        if slip:
            scheme, rest = {"http": "ws", "https": "wss"}.get(slip[1].lower(), slip[1].lower()), slip[2]
            example = f"{scheme}://{rest}" if _has_port(rest) or scheme == "wss" else f"{scheme}://{rest}:{DEFAULT_RELAY_PORT}"
            raise UsageError(f'invalid relay URL "{raw}": the scheme needs "://", e.g. {example}')
        example = f"ws://{text}" if _has_port(text) else f"ws://{text}:{DEFAULT_RELAY_PORT}"
        raise UsageError(f'invalid relay URL "{raw}": add a scheme, e.g. {example}')
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    scheme = {"http": "ws", "https": "wss"}.get(scheme, scheme)
    if scheme not in ("ws", "wss"):
        raise UsageError(f'invalid relay URL "{raw}": the scheme must be ws:// or wss://, not {parts.scheme}://')
    if not parts.hostname:
        raise UsageError(f'invalid relay URL "{raw}": no host')
    try:
        port = parts.port
    except ValueError:
        port = 0  # not a number, or outside 0-65535
    netloc = parts.netloc
    if port == 0 or netloc.endswith(":"):  # urlsplit accepts ":0" and reads a bare ":" as no port
        raise UsageError(f'invalid relay URL "{raw}": the port is not a number from 1 to 65535')
    added = False
    if port is None and scheme == "ws":
        netloc = f"{netloc}:{DEFAULT_RELAY_PORT}"
        added = True
    path = parts.path if parts.path not in ("", "/") else ""
    return urlunsplit((scheme, netloc, path, parts.query, "")), added


_MISSPELT_SCHEME = re.compile(r"(wss?|https?):?/+([^/].*)", re.IGNORECASE)


def _has_port(host_port_text: str) -> bool:
    try:
        return urlsplit(f"//{host_port_text}").port is not None
    except ValueError:
        return False


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "wss" else DEFAULT_RELAY_PORT)
    return parts.hostname or "", port


def http_base(url: str) -> str:
    """The HTTP base of a relay URL (same host and port, http or https)."""
    parts = urlsplit(url)
    scheme = "https" if parts.scheme in ("wss", "https") else "http"
    return urlunsplit((scheme, parts.netloc, "", "", ""))


def make_routes(candidates: Iterable[tuple[str, str | None, int | None]]) -> list[Route]:
    """Build sorted routes from ``(url, role, priority)``; missing role/priority are inferred."""
    routes: list[Route] = []
    seen: set[str] = set()
    for index, (url, role, priority) in enumerate(candidates):
        if url in seen:
            continue
        seen.add(url)
        role = role or infer_role(url)
        if priority is None:
            priority = ROLE_PRIORITY.get(role, DEFAULT_CUSTOM_PRIORITY)
        routes.append(Route(int(priority), index, role, url))
    return sorted(routes)


def tiers(routes: Iterable[Route]) -> list[list[Route]]:
    """Group routes by priority, most preferred tier first, keeping the offer's order inside a tier."""
    out: dict[int, list[Route]] = {}
    for route in sorted(routes):
        out.setdefault(route.priority, []).append(route)
    return [out[p] for p in sorted(out)]
