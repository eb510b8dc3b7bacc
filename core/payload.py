"""Pairing invites (the QR payload): parse, build, sign and verify (pure).

An invite is a JSON object with ``"hermes": 1|2|3``. It travels as compact JSON, as base64 of that
JSON (standard or URL-safe), or inside ``hermes-relay://pair?payload=...`` (``?p=`` too). Version 3
adds ``endpoints``: the same relay reached over several routes, each with a role and a priority.

Signatures are HMAC-SHA256 over the canonical form of the payload without ``sig``: keys sorted at
every depth, no whitespace, ASCII-escaped, NaN refused. That is byte-for-byte what the reference
relay signs, so invites minted by either side verify on the other. The secret never leaves the relay
host; a client can verify only when it runs there (it finds the secret file) and otherwise says the
invite was not verified.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from . import codes, fileio
from .errors import PayloadError, UsageError
from .pin import is_valid_pin
from .routes import ROLE_PRIORITY, Route, make_routes, normalize_relay_url

SIG_FIELD = "sig"
SECRET_BYTES = 32
MIN_SECRET_BYTES = 16
MAX_INVITE_CHARS = 64 * 1024
INVITE_SCHEME = "hermes-relay"
PLUGIN_PROXY = "plugin_proxy"  # the reference's pinned-TLS route: a proxy object, no relay object
PROXY_WS_PATH = "/relay/ws"  # where a client of such a route connects
_BASE64 = re.compile(r"^[A-Za-z0-9+/=_-]+$")


# -- signing ---------------------------------------------------------------------------------------
def canonicalize(payload: dict[str, Any]) -> bytes:
    """The exact bytes that get signed: ``payload`` minus ``sig``, sorted, compact, ASCII."""
    if not isinstance(payload, dict):
        raise TypeError("canonicalize() needs a dict")
    unsigned = {k: v for k, v in payload.items() if k != SIG_FIELD}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def sign(payload: dict[str, Any], secret: bytes) -> str:
    return base64.b64encode(hmac.new(secret, canonicalize(payload), hashlib.sha256).digest()).decode("ascii")


def verify(payload: dict[str, Any], secret: bytes) -> bool:
    """True only when ``payload["sig"]`` is a valid signature under ``secret``. Never raises."""
    sig = payload.get(SIG_FIELD)
    if not isinstance(sig, str):
        return False
    try:
        expected = hmac.new(secret, canonicalize(payload), hashlib.sha256).digest()
        given = base64.b64decode(sig, validate=True)
    except (TypeError, ValueError, binascii.Error):
        return False
    return hmac.compare_digest(expected, given)


def load_secret(path: Path) -> bytes | None:
    """The signing secret if this host has one (it is the relay host), else None."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PayloadError(f"cannot read the pairing secret {path}: {exc.strerror or exc}") from exc
    return data if len(data) >= MIN_SECRET_BYTES else None


def load_or_create_secret(path: Path) -> bytes:
    """Read the relay host's signing secret, creating 32 random bytes (mode 0600) the first time."""
    import secrets as _secrets

    existing = load_secret(path)
    if existing is not None:
        return existing
    secret = _secrets.token_bytes(SECRET_BYTES)
    fileio.atomic_write(path, secret)
    return secret


# -- building (relay side) -------------------------------------------------------------------------
def build(
    *,
    code: str,
    ttl_seconds: int,
    transport_hint: str,
    endpoints: list[tuple[str, str]],
    grants: dict[str, int] | None = None,
    secret: bytes | None = None,
    cert_pin: str | None = None,
    cert_der: str | None = None,
    proxy_urls: list[str] | None = None,
) -> dict[str, Any]:
    """An invite for ``endpoints`` = [(role, relay_url)], most preferred first.

    One endpoint gives a v2 invite; several give v3 with ``endpoints`` ordered by priority (lan 0,
    tailscale 1, public 2). The top-level ``host``/``port``/``tls`` and each endpoint's ``api`` name
    the relay's own HTTP port (it serves ``/health``), so clients that probe ``api`` reach it.

    ``cert_pin`` (the relay's own certificate, for a ``--tls`` relay) goes where the reference client
    looks for the expected pin of a route, ``endpoints[].proxy.pinSha256``, on every wss:// route but a
    public one (a public URL usually ends at a proxy with its own certificate), so an invite with a pin
    is always v3. Without a public route it also goes into ``relay.cert_pin_sha256`` (every route).

    ``cert_der`` (the certificate, base64 DER) adds, before each such route, the pinned-TLS endpoint the
    reference desktop CLI requires to trust a self-signed relay: ``role: "plugin_proxy"``, ``security:
    "pinned_tls"``, ``recommended: true``, ``proxy: {url: "https://HOST:PORT", pin_sha256, cert_der}``;
    it has no ``relay`` object (that client dials ``wss://HOST:PORT/relay/ws``). ``proxy_urls`` limits
    those to the routes the certificate names (a client verifies the host name against it).
    """
    if not endpoints:
        raise UsageError("an invite needs at least one relay URL")
    first_host, first_port, first_tls = _api_of(endpoints[0][1])
    relay: dict[str, Any] = {"url": endpoints[0][1], "code": code, "ttl_seconds": ttl_seconds,
                             "transport_hint": transport_hint}
    if grants:
        relay["grants"] = grants
    if cert_pin and all(role != "public" for role, _ in endpoints):
        relay["cert_pin_sha256"] = cert_pin
    payload: dict[str, Any] = {"hermes": 2, "host": first_host, "port": first_port, "key": "", "tls": first_tls,
                               "relay": relay}
    if len(endpoints) > 1 or cert_pin:
        payload["hermes"] = 3
        payload["endpoints"] = []
        for role, url in endpoints:
            host, port, tls = _api_of(url)
            entry: dict[str, Any] = {
                "role": role,
                "priority": ROLE_PRIORITY.get(role, len(ROLE_PRIORITY)),
                "api": {"host": host, "port": port, "tls": tls},
                "relay": {"url": url, "transport_hint": "wss" if tls else "ws"},
            }
            if cert_pin and tls and role != "public":  # a public URL usually ends at a proxy's own certificate
                entry["proxy"] = {"url": url, "transport_hint": "wss", "pinSha256": cert_pin}
                if cert_der and (proxy_urls is None or url in proxy_urls):
                    payload["endpoints"].append(_pinned_proxy(host, port, entry["priority"], cert_pin, cert_der))
            payload["endpoints"].append(entry)
    if secret is not None:
        payload[SIG_FIELD] = sign(payload, secret)
    return payload


def _pinned_proxy(host: str, port: int, priority: int, pin: str, cert_der: str) -> dict[str, Any]:
    # The reference client names the TLS server with the proxy's host, and its runtime refuses an IP
    # address there: a loopback route is offered as localhost, which the relay's certificate names.
    if is_loopback_ip(host):
        host = "localhost"
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return {"role": PLUGIN_PROXY, "priority": priority, "recommended": True, "security": "pinned_tls",
            "proxy": {"url": f"https://{netloc}", "transport_hint": "https", "pin_sha256": pin, "cert_der": cert_der,
                      "surfaces": ["relay"]}}


def is_loopback_ip(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def compact(invite: dict[str, Any], secret: bytes | None = None) -> dict[str, Any]:
    """The invite for a QR code: a v2 invite of its best route, with that route's certificate pin.

    Certificates, other routes and pinned-proxy entries are left out: a certificate alone is larger
    than what a QR code in an 80-column terminal holds (331 bytes at level M); the full invite travels as text.
    """
    relay = dict(invite.get("relay") or {})
    endpoints = [e for e in invite.get("endpoints") or () if isinstance(e, dict) and isinstance(e.get("relay"), dict)]
    small: dict[str, Any] = {k: invite[k] for k in ("hermes", "host", "port", "key", "tls") if k in invite}
    small["hermes"] = min(2, int(invite.get("hermes") or 2))
    if endpoints:
        best = endpoints[0]
        relay["url"] = best["relay"].get("url", relay.get("url"))
        api = best.get("api")
        if isinstance(api, dict):
            small.update({k: api[k] for k in ("host", "port", "tls") if k in api})
        proxy = best.get("proxy")
        pin = proxy.get("pinSha256") if isinstance(proxy, dict) else None
        if isinstance(pin, str):
            relay["cert_pin_sha256"] = pin
    small["relay"] = relay
    if secret is not None:
        small[SIG_FIELD] = sign(small, secret)
    return small


def _api_of(url: str) -> tuple[str, int, bool]:
    parts = urlsplit(url)
    tls = parts.scheme == "wss"
    return parts.hostname or "", parts.port or (443 if tls else 80), tls


def encode(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"))


def invite_url(payload: dict[str, Any]) -> str:
    """``hermes-relay://pair?payload=<url-safe base64>``: survives shells, chats and QR scanners."""
    b64 = base64.urlsafe_b64encode(encode(payload).encode()).decode("ascii").rstrip("=")
    return f"{INVITE_SCHEME}://pair?payload={b64}"


# -- parsing (client side) -------------------------------------------------------------------------
@dataclass(frozen=True)
class Invite:
    raw: dict[str, Any]
    version: int
    code: str
    routes: list[Route]
    ttl_seconds: int | None
    transport_hint: str | None
    cert_pin: str | None  # the expected pin of every route
    route_pins: dict[str, str] = field(default_factory=dict)  # route URL -> expected pin (endpoints[].proxy)

    def pin_for(self, url: str) -> str | None:
        """The certificate pin expected when dialing ``url`` for this pairing, if the invite names one."""
        return self.route_pins.get(url) or self.cert_pin

    @property
    def signed(self) -> bool:
        return isinstance(self.raw.get(SIG_FIELD), str)

    def route_candidates(self) -> list[dict[str, Any]]:
        """The store's ``route_candidates``: every route of this pairing, in priority order.

        The shape is the reference client's (``relay.url``, camelCase ``transportHint``): it reads
        ``candidate.relay.url`` unguarded, so any other shape would hide the record from it.
        """
        return [
            {"role": r.role, "priority": r.priority,
             "relay": {"url": r.url, "transportHint": "wss" if r.secure else "ws"}}
            for r in self.routes
        ]


def parse(text: str) -> Invite:
    """Parse an invite in any of its three wrappings; PayloadError names what is wrong."""
    return from_dict(decode(text))


def decode(text: str) -> dict[str, Any]:
    raw = (text or "").strip()
    if not raw:
        raise PayloadError("invalid --pair-qr payload: empty payload")
    if len(raw) > MAX_INVITE_CHARS:
        raise PayloadError(f"invalid --pair-qr payload: {len(raw)} characters is more than an invite can be")
    if raw.lower().startswith(f"{INVITE_SCHEME}://"):
        query = parse_qs(urlsplit(raw).query)
        values = query.get("payload") or query.get("p")
        if not values:
            raise PayloadError("invalid --pair-qr payload: the hermes-relay:// link has no payload= (or p=) parameter")
        raw = values[0].strip()
    try:
        obj = json.loads(raw)
    except ValueError:
        obj = _decode_base64_json(raw)
    if not isinstance(obj, dict):
        raise PayloadError("invalid --pair-qr payload: not a JSON object")
    return obj


def _decode_base64_json(raw: str) -> Any:
    if not _BASE64.match(raw):
        raise PayloadError("invalid --pair-qr payload: neither valid JSON nor base64")
    normalized = raw.replace("-", "+").replace("_", "/")
    normalized += "=" * (-len(normalized) % 4)
    try:
        return json.loads(base64.b64decode(normalized, validate=True).decode("utf-8"))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise PayloadError("invalid --pair-qr payload: failed base64→JSON decode") from None


def from_dict(obj: dict[str, Any]) -> Invite:
    version = obj.get("hermes", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise PayloadError(f"invalid --pair-qr payload: unsupported schema version {version!r}")
    relay = obj.get("relay")
    if not isinstance(relay, dict) or not isinstance(relay.get("code"), str) or not relay.get("code"):
        raise PayloadError(
            "invalid --pair-qr payload: pairing invite has no relay.code",
            hint="start the relay on the server and mint a new invite with `hermes-pair`",
        )
    try:
        code = codes.validate_code(relay["code"])
    except PayloadError as exc:
        raise PayloadError(f"invalid --pair-qr payload: relay.code: {exc.message}") from None
    candidates: list[tuple[str, str | None, int | None]] = []
    endpoints = obj.get("endpoints")
    if isinstance(endpoints, list):
        for entry in endpoints:
            candidate = _endpoint_candidate(entry)
            if candidate is not None:
                candidates.append(candidate)
    pins = _endpoint_pins(endpoints)
    for url, proxy_pin, priority in _pinned_proxies(endpoints):
        # The same relay as a plain wss:// route of this invite: that route gets the pin. Otherwise the
        # pinned proxy is a route of this pairing of its own, at the path its clients dial.
        origin = _origin(url)
        same = [c[0] for c in candidates if c[0].startswith("wss://") and _origin(c[0]) == origin]
        if not same:
            same = [url]
            candidates.append((url, PLUGIN_PROXY, priority))
        for route_url in same:
            pins.setdefault(route_url, proxy_pin)
    if not candidates and isinstance(relay.get("url"), str):
        candidates.append((_url(relay["url"]), None, 0))
    if not candidates:
        raise PayloadError("invalid --pair-qr payload: no relay URL in relay.url or endpoints[].relay.url")
    ttl = relay.get("ttl_seconds")
    pin = obj.get("cert_pin_sha256") or relay.get("cert_pin_sha256")
    return Invite(
        raw=obj,
        version=version,
        code=code,
        routes=make_routes(candidates),
        ttl_seconds=ttl if isinstance(ttl, int) and not isinstance(ttl, bool) else None,
        transport_hint=relay.get("transport_hint") if isinstance(relay.get("transport_hint"), str) else None,
        cert_pin=pin if isinstance(pin, str) and is_valid_pin(pin) else None,
        route_pins=pins,
    )


def _origin(url: str) -> tuple[str, int | None]:
    """(host, port) of a wss:// URL, with localhost and the loopback addresses one host (a loopback
    pinned route is offered as localhost beside the plain 127.0.0.1 route: the same relay)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if host == "localhost" or is_loopback_ip(host):
        host = "localhost"
    try:
        return host, parts.port
    except ValueError:
        return host, None


def _pinned_proxies(endpoints: Any) -> list[tuple[str, str, int | None]]:
    """``(wss://HOST:PORT/relay/ws, pin, priority)`` for each well-formed ``plugin_proxy`` endpoint."""
    found = []
    for entry in endpoints if isinstance(endpoints, list) else ():
        if not isinstance(entry, dict) or str(entry.get("role", "")).lower() != PLUGIN_PROXY:
            continue
        proxy = entry.get("proxy")
        if not isinstance(proxy, dict) or not isinstance(proxy.get("url"), str):
            continue
        pin = proxy.get("pin_sha256")
        try:
            parts = urlsplit(proxy["url"])
            port = parts.port
        except ValueError:
            continue
        if parts.scheme != "https" or not parts.hostname or not isinstance(pin, str) or not is_valid_pin(pin):
            continue
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        priority = entry.get("priority")
        if not isinstance(priority, int) or isinstance(priority, bool) or priority < 0:
            priority = None
        found.append((f"wss://{host}:{port or 443}{PROXY_WS_PATH}", pin, priority))
    return found


def _endpoint_pins(endpoints: Any) -> dict[str, str]:
    """``{route URL: pin}`` from ``endpoints[].proxy.pinSha256``, where the reference client reads it."""
    pins: dict[str, str] = {}
    for entry in endpoints if isinstance(endpoints, list) else ():
        proxy = entry.get("proxy") if isinstance(entry, dict) else None
        pin = proxy.get("pinSha256") if isinstance(proxy, dict) else None
        candidate = _endpoint_candidate(entry)
        if isinstance(pin, str) and is_valid_pin(pin) and candidate is not None:
            pins[candidate[0]] = pin
    return pins


def _endpoint_candidate(entry: Any) -> tuple[str, str | None, int | None] | None:
    """One ``endpoints[]`` record as (url, role, priority); malformed records are skipped."""
    if not isinstance(entry, dict) or not isinstance(entry.get("relay"), dict):
        return None
    url = entry["relay"].get("url")
    if not isinstance(url, str):
        return None
    try:
        url = _url(url)
    except PayloadError:
        return None
    role = entry.get("role") if isinstance(entry.get("role"), str) and entry.get("role") else None
    priority = entry.get("priority")
    if not isinstance(priority, int) or isinstance(priority, bool) or priority < 0:
        priority = None
    return url, role, priority


def _url(raw: str) -> str:
    try:
        return normalize_relay_url(raw)[0]
    except UsageError as exc:
        raise PayloadError(f"invalid --pair-qr payload: {exc.message}") from None
