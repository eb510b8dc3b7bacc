"""Reading a pairing record for the link: its routes, pins, token, expiry, and whether two records
name the same relay. Kept together so the typed record view (core/record.py) can replace them in one
place. Other clients write the store too: anything malformed is skipped, never fatal.
"""

from __future__ import annotations

import logging
from typing import Any

from hermes_relay.core import linkstate
from hermes_relay.core.errors import UsageError
from hermes_relay.core.routes import Route, host_port, make_routes, normalize_relay_url

log = logging.getLogger(__name__)


def routes_for(url: str, record: dict[str, Any]) -> list[Route]:
    """The owner URL plus every alternate route of the pairing, in strict priority order."""
    candidates: list[tuple[str, str | None, int | None]] = []
    offered = record.get("route_candidates")
    for cand in offered if isinstance(offered, list) else []:
        if isinstance(cand, dict):
            given = cand.get("relay")
            relay = given if isinstance(given, dict) else {}
            c_url = relay.get("url") or cand.get("url")
            prio = cand.get("priority")
            if isinstance(c_url, str):
                candidates.append((c_url, cand.get("role") if isinstance(cand.get("role"), str) else None,
                                   prio if isinstance(prio, int) and not isinstance(prio, bool) else None))
        elif isinstance(cand, str):
            candidates.append((cand, None, None))
    if url not in [c[0] for c in candidates]:
        role = record.get("endpoint_role") if isinstance(record.get("endpoint_role"), str) else None
        candidates.insert(0, (url, role, 0 if not candidates else None))
    # Other clients write this file too: a URL we cannot use is skipped, never fatal.
    return make_routes([c for c in candidates if _usable(c[0])])


def _usable(url: str) -> bool:
    try:
        normalize_relay_url(url)
        host_port(url)
    except (UsageError, ValueError):
        log.warning("route_unusable url=%r", url)
        return False
    return True


def pin_for(owner: str, record: dict[str, Any], url: str) -> str | None:
    if url == owner:
        pin = record.get("cert_pin_sha256")
    else:
        given = record.get("route_cert_pins")
        pins = given if isinstance(given, dict) else {}
        pin = pins.get(url)
    return pin if isinstance(pin, str) and pin else None


def token_of(record: dict[str, Any]) -> str | None:
    token = record.get("token")
    return token if isinstance(token, str) and token else None


def shares_route_or_pin(url: str, record: dict[str, Any], routes: list[Route], other_url: str,
                        other: dict[str, Any], other_routes: list[Route]) -> bool:
    """Whether two pairing records name the same relay by a common route URL or certificate pin."""
    if {r.url.rstrip("/") for r in routes} & {r.url.rstrip("/") for r in other_routes}:
        return True
    pins = {pin_for(url, record, r.url) for r in routes} - {None}
    return bool(pins & ({pin_for(other_url, other, r.url) for r in other_routes} - {None}))


def record_expired(record: dict[str, Any], now: float) -> bool:
    return linkstate.expired(record.get("ttl_expires_at"), now)


def expiry_of(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None


def paired_at(record: dict[str, Any]) -> float:
    value = record.get("paired_at")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def owner_urls(sessions: dict[str, dict[str, Any]]) -> list[str]:
    """Every record that has a token (one link each); alternate routes are not separate links."""
    return [url for url, rec in sessions.items() if token_of(rec)]


def route_info(route: Route | None) -> dict[str, Any] | None:
    if route is None:
        return None
    return {"url": route.url, "role": route.role, "label": route.label, "priority": route.priority}
