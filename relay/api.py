"""The relay's HTTP API: one parsed request in, one ``(status, JSON object)`` out. No I/O here.

- ``GET /health`` (also ``/relay/health``, where reference clients probe a pinned route): version and
  counts, the certificate's pin and the certificate (public, no secrets).
- ``GET /relay/info`` (loopback only, as ``/desktop``): version, uptime, sessions, pending calls, in the
  reference relay's shape.
- ``POST /pairing/register`` (``{"code", "ttl_seconds"?, "grants"?, "transport_hint"?}``) and
  ``POST /pairing/mint`` (the relay picks the code): for ``hermes-pair`` on the relay host only. Besides
  the loopback peer check (a proxied request is never loopback), anything a web browser could send
  cross-site is refused: an ``Origin`` header or a ``Sec-Fetch-Site`` other than ``none``/``same-origin``
  (403), a ``Host`` that is not a loopback name (403: DNS rebinding), a body that is not
  ``Content-Type: application/json`` (415).
- ``/sessions``: ``GET`` lists, ``DELETE /sessions/{prefix}`` revokes, ``PATCH /sessions/{prefix}``
  changes expiry and grants. A bearer token may list, revoke any session, and only REDUCE its own
  session (as the reference relay: 403 otherwise). The operator (a direct loopback caller with no
  ``Authorization`` header) may do everything, including extending any session. Failed bearer checks
  count in an HTTP bucket of their own, never in the WebSocket authentication limiter.
- Every state change is saved before it is answered; a failed save is a 500 and changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

from ..core import paths, payload
from ..core.errors import AmbiguousError, NotFoundError, PayloadError, UsageError
from ..core.routes import infer_role
from . import gcpolicy, httpmsg, peers, tls
from .capacity import Gate
from .config import RATE_LIMIT_BODY, RelayConfig
from .pairing import (
    DEFAULT_SESSION_TTL,
    GRANT_OFF,
    TRANSPORT_HINTS,
    PairingCodes,
    validate_grants,
    validate_seconds,
)
from .peers import Peer, lan_address
from .ratelimit import RateLimiter
from .sessions import SaveError, Session, SessionBook

log = logging.getLogger(__name__)

Reply = tuple[int, dict[str, Any]]
__all__ = ["RATE_LIMIT_BODY", "Reply", "State", "route"]


class State(Protocol):
    """What the HTTP API reads and changes (relay/core.py's RelayCore)."""

    config: RelayConfig
    server_version: str
    relay_id: str
    port: int
    codes: PairingCodes
    book: SessionBook
    pair_limiter: RateLimiter
    token_limiter: RateLimiter
    http_limiter: RateLimiter
    pending: Gate
    unauthed: int

    def now(self) -> float: ...
    def uptime(self) -> float: ...
    def pending_calls(self) -> int: ...
    def idle_reads(self) -> dict[str, int] | None: ...
    def connections(self) -> int: ...
    def connected(self, key: str) -> bool: ...
    def session_revoked(self, sess: Session) -> None: ...

NOT_LOOPBACK = "pairing codes can only be registered from the relay host (loopback, not through a proxy)"
INFO_NOT_LOCAL = "/relay/info is loopback-only: run this on the relay host"


def route(relay: State, req: httpmsg.HttpRequest, body: bytes, peer: Peer) -> Reply:
    path, method = req.path, req.method
    try:
        if path.rstrip("/") in ("/health", "/relay/health") and method == "GET":  # the second: reference proxy probe
            return 200, health(relay)
        if path.rstrip("/") == "/relay/info":
            if method != "GET":
                return 405, {"ok": False, "error": "use GET /relay/info"}
            refused = peers.local_request_refusal(req.headers, path, loopback=peer.loopback, not_local=INFO_NOT_LOCAL,
                                                  action="relay info cannot be read", purpose="read relay info",
                                                  json_body=False)
            return refused or (200, relay_info(relay))
        if path.rstrip("/") in ("/pairing/register", "/pairing/mint"):
            if method != "POST":
                return 405, {"ok": False, "error": "use POST"}
            refused = register_request_refusal(req, peer)
            if refused is not None:
                log.warning("pairing_register_refused peer=%s status=%d", peer.addr, refused[0])
                return refused
            obj = httpmsg.parse_json_body(body)
            if path.rstrip("/") == "/pairing/mint":
                return pairing_mint(relay, obj, peer)
            return pairing_register(relay, obj, peer)
        if path.rstrip("/") == "/sessions" or path.startswith("/sessions/"):
            return sessions_api(relay, method, path, req.headers, body, peer)
    except httpmsg.BadRequest as exc:
        return exc.status, {"ok": False, "error": exc.message}
    except UsageError as exc:
        return 400, {"ok": False, "error": exc.message}
    except SaveError as exc:
        log.error("sessions_save_failed error=%s", exc.message)
        return 500, {"ok": False, "error": exc.message, "hint": exc.hint}
    return 404, {"ok": False, "error": f"no route for {method} {req.path}"}


def health(relay: State) -> dict[str, Any]:
    return {
        "status": "ok",
        "version": relay.server_version,
        "sessions": len(relay.book),
        "connections": relay.connections(),
        "unauthenticated": relay.unauthed,  # upgraded, not yet authenticated (capped)
        "pending": relay.pending.count,  # connected, request not yet received (capped)
        "pending_codes": len(relay.codes),
        "tls": relay.config.ssl_context is not None,
        "cert_pin": relay.config.cert_pin,  # public (every TLS client sees the certificate): hermes-pair puts it in invites
        "cert_der": relay.config.cert_der,  # the certificate itself, for the invite's pinned-TLS (plugin_proxy) route
        "host": relay.config.host,  # the bind address: hermes-pair warns when it is loopback only
        "relay_id": relay.relay_id,  # stable: clients recognise this relay under any spelling of its URL
        "terminal": relay.config.terminal is not None,  # --terminal: shells on this host (relay/terminal.py)
        # The collector's worst pause and frozen objects (relay/gcpolicy.py): the relay server only.
        **({"gc": gc} if (gc := gcpolicy.stats()) is not None else {}),
    }


def relay_info(relay: State) -> dict[str, Any]:
    """``GET /relay/info`` (loopback only), in the reference relay's shape: what its CLI's ``relay info`` shows."""
    sessions = len(relay.book)
    return {
        "version": relay.server_version,
        "plugin_version": relay.server_version,
        "protocol_version": 1,
        "capabilities": ["desktop"],
        "profiles": [],
        "uptime_seconds": int(relay.uptime()),
        "session_count": sessions,
        "paired_device_count": sessions,  # sessions are paired devices, as in the reference
        "pending_commands": relay.pending_calls(),
        "media_entry_count": 0,
        "health": "ok",
        "relay_id": relay.relay_id,
        **({"gc": gc} if (gc := gcpolicy.stats(frozen=True)) is not None else {}),  # relay/gcpolicy.py
        # Connections parked with the idle reader now, the pongs it read for them, the reads it handed back.
        **({"idle_reads": idle} if (idle := relay.idle_reads()) is not None else {}),  # relay/idleread.py
    }


def _pairing_options(relay: State, obj: dict[str, Any]) -> tuple[int, dict[str, int] | None, str]:
    ttl = validate_seconds(obj.get("ttl_seconds", DEFAULT_SESSION_TTL), "ttl_seconds")
    hint = obj.get("transport_hint")
    if hint is not None and hint not in TRANSPORT_HINTS:
        raise UsageError("transport_hint must be 'ws', 'wss' or 'unknown'")
    return ttl, validate_grants(obj.get("grants")), hint or relay.config.scheme


def _registered(relay: State, code: str | None, obj: dict[str, Any]) -> Reply:
    ttl, grants, hint = _pairing_options(relay, obj)
    pending = relay.codes.register(code, ttl_seconds=ttl, grants=grants, transport_hint=hint)
    # As the reference relay does: the operator is at the relay host minting a code for someone, so
    # lift every address's WebSocket authentication block: the device about to use this code may be
    # the one that tripped it, and its address is unknown here.
    relay.pair_limiter.clear()
    relay.token_limiter.clear()
    log.info("pairing_code_registered ttl=%s", pending.ttl_seconds)
    return 200, {"ok": True, "code": pending.code, "expires_at": pending.expires_at, "ttl_seconds": pending.ttl_seconds}


def pairing_register(relay: State, obj: dict[str, Any], peer: Peer) -> Reply:
    if not peer.loopback:
        return 403, {"ok": False, "error": NOT_LOOPBACK}
    code = obj.get("code")
    if code is None or code == "":
        return 400, {"ok": False,
                     "error": "missing 'code': send {\"code\": \"ABC123\"}, or POST /pairing/mint to have the relay pick one"}
    if not isinstance(code, str):
        return 400, {"ok": False, "error": "code must be a string"}
    return _registered(relay, code.strip(), obj)


def pairing_mint(relay: State, obj: dict[str, Any], peer: Peer) -> Reply:
    """The relay picks the code and answers with an invite for it, shaped like the reference relay's answer:
    ``qr_payload`` (the invite as JSON text, signed when this host has the pairing secret), ``pairing_url``,
    ``relay_url`` and the relay's own ``host``/``port``/``tls``."""
    if not peer.loopback:
        return 403, {"ok": False, "error": NOT_LOOPBACK}
    if obj.get("endpoints") is not None and not isinstance(obj["endpoints"], list):
        return 400, {"ok": False, "error": "endpoints must be an array"}
    status, reply = _registered(relay, None, obj)
    url = relay_url(relay)
    try:
        secret = payload.load_secret(paths.qr_secret_file())
    except PayloadError:
        secret = None  # an unreadable secret: the invite goes unsigned, which clients accept
    der = relay.config.cert_der
    named = der is not None and tls.names_host(der, urlsplit(url).hostname or "")
    invite = payload.build(code=reply["code"], ttl_seconds=reply["ttl_seconds"], transport_hint=relay.config.scheme,
                           endpoints=[(infer_role(url), url)], secret=secret, cert_pin=relay.config.cert_pin,
                           cert_der=der if named else None)
    reply.update(relay_url=url, qr_payload=payload.encode(invite), pairing_url=payload.invite_url(invite),
                 host=invite["host"], port=invite["port"], tls=invite["tls"])
    return status, reply


def relay_url(relay: State) -> str:
    """Where other machines reach this relay: the bind address, or this host's LAN address for a wildcard."""
    host = relay.config.host
    if host in ("0.0.0.0", "::", ""):
        host = lan_address() or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"{relay.config.scheme}://{host}:{relay.port}"


# -- /sessions ---------------------------------------------------------------------------------------

def sessions_api(relay: State, method: str, path: str, headers: Mapping[str, str], body: bytes, peer: Peer) -> Reply:
    now = relay.now()
    auth = headers.get("authorization")
    operator = auth is None and peer.loopback
    caller: Session | None = None
    if operator:  # the relay host's own tools; a web page on this host must not borrow that standing
        refused = peers.local_request_refusal(headers, path, loopback=True, not_local="", action="sessions cannot be "
                                              "managed", purpose="manage sessions without a bearer token",
                                              json_body=method == "PATCH")
        if refused is not None:
            log.warning("operator_request_refused peer=%s status=%d", peer.addr, refused[0])
            return refused
    else:
        if relay.http_limiter.blocked_for(peer.addr, now) > 0:
            return 429, {"ok": False, "error": RATE_LIMIT_BODY}
        scheme, _, token = (auth or "").partition(" ")
        caller = relay.book.authenticate(token.strip()) if scheme.lower() == "bearer" else None
        if caller is None:
            if relay.http_limiter.record_failure(peer.addr, now):
                log.warning("rate_limit_block bucket=http peer=%s", peer.addr)
            return 401, {"ok": False, "error": "missing or invalid bearer token"}
        relay.http_limiter.record_success(peer.addr)
    if path.rstrip("/") == "/sessions" and not path.endswith("/sessions/"):
        if method != "GET":
            return 405, {"ok": False, "error": "use GET /sessions to list sessions"}
        return 200, {"sessions": [{**s.public(current=s is caller), "connected": relay.connected(s.token_hash)}
                                  for s in relay.book.all()]}
    prefix = path[len("/sessions/"):]
    if not prefix:
        return 404, {"ok": False, "error": "no session prefix given: use /sessions/PREFIX"}
    if method not in ("DELETE", "PATCH"):
        return 405, {"ok": False, "error": f"use DELETE (revoke) or PATCH (change expiry) on /sessions/{prefix[:16]}"}
    try:
        target = relay.book.find_prefix(prefix)
    except NotFoundError as exc:
        return 404, {"ok": False, "error": exc.message}
    except AmbiguousError as exc:
        return 409, {"ok": False, "error": exc.message}
    by = caller.token_prefix if caller is not None else "operator"
    if method == "DELETE":
        relay.book.revoke(target)
        relay.session_revoked(target)
        log.info("session_revoked prefix=%s by=%s", target.token_prefix, by)
        current = target is caller
        return 200, {"ok": True, "revoked": target.token_prefix, "revoked_self": current, "is_current": current}
    return _patch(relay, target, caller, httpmsg.parse_json_body(body), by)


def _patch(relay: State, target: Session, caller: Session | None, obj: dict[str, Any], by: str) -> Reply:
    ttl = obj.get("ttl_seconds")
    if ttl is not None:
        ttl = validate_seconds(ttl, "ttl_seconds")
    grants = validate_grants(obj.get("grants"))
    if ttl is None and not grants:
        return 400, {"ok": False, "error": "nothing to change: pass ttl_seconds and/or grants (seconds; 0 = never)"}
    if caller is not None:
        if target is not caller:
            return 403, {"ok": False, "error": "cannot modify another session"}
        if _lengthens(target, relay.book.preview_extend(target, ttl, grants), grants, relay.now()):
            return 403, {"ok": False, "error": "operator approval required to extend session",
                         "hint": "run `hermes-relay-server sessions extend PREFIX --ttl 30d` on the relay host"}
    relay.book.extend(target, ttl, grants)
    log.info("session_changed prefix=%s by=%s", target.token_prefix, by)
    return 200, {"ok": True, "token_prefix": target.token_prefix, "expires_at": target.expires_at,
                 "grants": dict(target.grants), "session": target.public(current=target is caller)}


def _later(new: float | None, old: float | None) -> bool:
    if new is None:
        return old is not None
    return old is not None and new > old


def _lengthens(old: Session, new: Session, requested: dict[str, int] | None, now: float) -> bool:
    """True when the change makes the session or any grant last longer (requested grants judged as asked,
    before the session's expiry caps them)."""
    if _later(new.expires_at, old.expires_at):
        return True
    for ch, secs in (requested or {}).items():
        if secs != GRANT_OFF and (ch not in old.grants or _later(None if secs == 0 else now + secs, old.grants[ch])):
            return True
    return False


# -- request checks ----------------------------------------------------------------------------------

def register_request_refusal(req: httpmsg.HttpRequest, peer: Peer) -> Reply | None:
    """Why a pairing registration must be refused before its body is looked at, or None."""
    return peers.local_request_refusal(req.headers, req.path, loopback=peer.loopback, not_local=NOT_LOOPBACK,
                                       action="pairing codes cannot be registered", purpose="register a pairing code",
                                       remedy="run hermes-pair on the relay host")
