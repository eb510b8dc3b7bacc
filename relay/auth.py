"""Deciding a WebSocket ``system/auth`` frame: which credential works, what it costs, what ``auth.ok`` says.

Credentials are tried in the order session token, refresh token, pairing code (as the reference relay).
Failures are counted per address in two buckets (codes, tokens), and failed codes also against a global
cap; a blocked address is refused before anything is tried, counted or consumed. A pairing code taken
by a session that could not be saved is put back. No I/O: the sockets whose token was retired (rotated by
a refresh, replaced by a new pairing of the same device) are returned for the server to close. A
re-paired device's old refresh token stays on standby for its new session until that session is first
used (relay/sessions.py), so a device that lost the pairing's answer can still reach it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from .pairing import PairingCodes
from .ratelimit import GlobalCap, RateLimiter
from .sessions import SaveError, Session, SessionBook

log = logging.getLogger(__name__)

DEVICE_FIELDS = ("device_name", "device_id", "device_hostname", "client_surface", "device_form_factor",
                 "device_model", "device_platform")


class State(Protocol):
    """What deciding an auth frame reads and changes (relay/core.py's RelayCore)."""

    server_version: str
    codes: PairingCodes
    book: SessionBook
    pair_limiter: RateLimiter
    token_limiter: RateLimiter
    code_cap: GlobalCap

    def now(self) -> float: ...
    def blocked_for(self, ip: str) -> float: ...


@dataclass
class Outcome:
    session: Session
    reply: dict[str, Any]  # the auth.ok payload
    retired: list[tuple[str, str]] = field(default_factory=list)  # (token hash, close reason)


def authenticate(relay: State, payload: dict[str, Any], ip: str) -> Outcome | None:
    """Try session token, then refresh token, then pairing code. Counts failures per IP."""
    device = {k: payload.get(k) for k in DEVICE_FIELDS}
    token, refresh, code = payload.get("session_token"), payload.get("refresh_token"), payload.get("pairing_code")
    now = relay.now()
    if relay.blocked_for(ip) > 0:  # refused before anything is counted or consumed
        return None
    if token:
        sess = relay.book.authenticate(token)
        if sess is not None:
            relay.book.touch(sess, device)
            relay.token_limiter.record_success(ip)
            return Outcome(sess, auth_ok(relay, sess, token, None))
    if refresh:
        old_hash = relay.book.session_hash_for_refresh(refresh)
        rotated = relay.book.refresh(refresh, device.get("device_id"))
        if rotated is not None:
            new_token, new_refresh, sess = rotated
            relay.book.touch(sess, device)
            relay.token_limiter.record_success(ip)
            retired = [(old_hash, "session token rotated")] if old_hash is not None else []
            return Outcome(sess, auth_ok(relay, sess, new_token, new_refresh), retired)
    if code and relay.code_cap.exceeded(now) == 0:
        pending = relay.codes.consume(str(code))
        if pending is not None:
            try:
                new_token, new_refresh, sess, replaced = relay.book.create(pending, device)
            except SaveError:
                relay.codes.restore(pending)  # not saved, so not spent: the device can try again
                raise
            relay.pair_limiter.record_success(ip)
            log.info("paired device=%s prefix=%s", sess.device_name, sess.token_prefix)
            retired = [(old.token_hash, "replaced by a new pairing of this device") for old in replaced]
            return Outcome(sess, auth_ok(relay, sess, new_token, new_refresh), retired)
        relay.code_cap.record_failure(now)
        if relay.pair_limiter.record_failure(ip, now):
            log.warning("rate_limit_block bucket=pairing peer=%s", ip)
    if token or refresh:
        if relay.token_limiter.record_failure(ip, now):
            log.warning("rate_limit_block bucket=session peer=%s", ip)
    if not (token or refresh or code):
        relay.token_limiter.record_failure(ip, now)
    return None


def auth_ok(relay: State, sess: Session, token: str, refresh: str | None) -> dict[str, Any]:
    reply: dict[str, Any] = {
        "session_token": token,
        "server_version": relay.server_version,
        "profiles": [],
        "expires_at": sess.expires_at,
        "grants": dict(sess.grants),
        "transport_hint": sess.transport_hint,
        "client_surface": sess.client_surface or "unknown",
        "device_form_factor": sess.device_form_factor or "unknown",
    }
    if refresh is not None:
        reply["refresh_token"] = refresh
    return reply
