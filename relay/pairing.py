"""Relay-side pairing codes and sessions (sans-IO: the wall clock is passed in or injected).

- Pairing codes: 6 characters A-Z0-9, single use, valid for ``CODE_TTL`` seconds. A code carries the
  session TTL, grants and transport hint the minting side asked for.
- Sessions: a pairing (or a refresh) creates one. Only SHA-256 hashes of tokens are kept, so the
  sessions file is useless to a thief; the first 8 characters are kept as the public ``token_prefix``
  used by ``/sessions`` to name a device. A new pairing from the same ``device_id`` replaces that
  device's older session, so re-pairing a machine does not pile up stale devices while several
  machines stay paired side by side.
- Refresh tokens are issued with every session and rotate on use.
- Persistence: ``sessions.json`` (0600) written atomically whenever a session is created, refreshed,
  revoked or extended. ``touch`` (every successful authentication) only updates the session in memory
  and marks the book dirty: the relay's periodic sweep and its shutdown call ``flush``, so a busy relay
  does not fsync on the event loop for every reconnect. Expired sessions are dropped on load and by
  ``purge_expired``.
- Durations (session TTLs and grants) are whole seconds from 0 to ``MAX_DURATION`` (10 years), so an
  absurd value gets a 400 instead of overflowing a float later.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hermes_relay.core import fileio
from hermes_relay.core.codes import generate_code, is_valid_code
from hermes_relay.core.errors import AmbiguousError, NotFoundError, StateCorruptError, UsageError

CODE_TTL = 600.0  # seconds; the reference relay's pairing code validity (10 minutes)
MAX_PENDING_CODES = 1000  # bound memory if a local script registers codes in a loop
DEFAULT_SESSION_TTL = 30 * 86400  # hermes-pair's default session lifetime (30 days)
TOKEN_PREFIX_LEN = 8
SESSIONS_VERSION = 1
DEFAULT_CHANNELS = ("chat", "terminal", "bridge", "tui", "voice:config", "voice:stt", "voice:tts", "voice:realtime")
# Per-channel caps the reference relay applies to default grants (seconds); others follow the session.
DEFAULT_GRANT_CAPS = {"terminal": 30 * 86400, "bridge": 7 * 86400}
TRANSPORT_HINTS = ("ws", "wss", "unknown")  # what the reference relay accepts; stored as given
MAX_DURATION = 10 * 365 * 86400  # 315360000 s: the longest session TTL or grant accepted (10 years)

Clock = Callable[[], float]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass
class PendingCode:
    code: str
    created_at: float
    expires_at: float
    ttl_seconds: int
    grants: dict[str, int] | None
    transport_hint: str | None


@dataclass
class Session:
    token_hash: str
    token_prefix: str
    device_name: str
    device_id: str
    created_at: float
    first_seen: float
    last_seen: float
    expires_at: float | None
    grants: dict[str, float | None]
    transport_hint: str
    client_surface: str | None = None
    device_form_factor: str | None = None
    device_model: str | None = None
    device_platform: str | None = None
    device_hostname: str | None = None
    refresh_hash: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def public(self, *, current: bool) -> dict[str, Any]:
        """The ``GET /sessions`` view: never a token or a hash."""
        return {
            "token_prefix": self.token_prefix,
            "device_name": self.device_name,
            "device_id": self.device_id,
            "created_at": self.created_at,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "expires_at": self.expires_at,
            "grants": dict(self.grants),
            "transport_hint": self.transport_hint,
            "client_surface": self.client_surface,
            "device_form_factor": self.device_form_factor,
            "device_model": self.device_model,
            "device_platform": self.device_platform,
            "is_current": current,
        }


def compute_grants(
    requested: dict[str, int] | None, now: float, expires_at: float | None
) -> dict[str, float | None]:
    """Grant expiries per channel: requested durations, else defaults with caps; never past the session."""
    out: dict[str, float | None] = {}
    for channel in DEFAULT_CHANNELS:
        cap = DEFAULT_GRANT_CAPS.get(channel)
        out[channel] = None if cap is None else now + cap
    for channel, seconds in (requested or {}).items():
        out[channel] = None if seconds == 0 else now + seconds
    if expires_at is not None:
        out = {ch: (expires_at if exp is None or exp > expires_at else exp) for ch, exp in out.items()}
    return out


def validate_seconds(value: Any, what: str) -> int:
    """A duration in whole seconds (an int, or a float with no fraction such as 86400.0), at most
    MAX_DURATION: longer ones are clamped, not refused, because the reference relay accepts any
    non-negative number (its hermes-pair sends e.g. 20 years) and clamping keeps the arithmetic sane."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise UsageError(f"{what} must be a whole, non-negative number of seconds; 0 = never expire")
    return min(value, MAX_DURATION)


def validate_grants(raw: Any) -> dict[str, int] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise UsageError("grants must be an object of channel -> seconds")
    out = {}
    for ch, secs in raw.items():
        if not isinstance(ch, str) or not ch or len(ch) > 64:
            raise UsageError(f"invalid grant channel {ch!r}")
        out[ch] = validate_seconds(secs, f"grant for {ch}")
    return out


class PairingCodes:
    """Pending single-use pairing codes."""

    def __init__(self, clock: Clock = time.time, code_ttl: float = CODE_TTL):
        self.clock = clock
        self.code_ttl = code_ttl
        self._codes: dict[str, PendingCode] = {}

    def register(
        self,
        code: str | None,
        *,
        ttl_seconds: int = DEFAULT_SESSION_TTL,
        grants: dict[str, int] | None = None,
        transport_hint: str | None = None,
    ) -> PendingCode:
        now = self.clock()
        self._prune(now)
        if code is None:
            code = generate_code()
            while code in self._codes:
                code = generate_code()
        code = code.upper() if isinstance(code, str) else code
        if not isinstance(code, str) or not is_valid_code(code):
            raise UsageError("pairing code must be exactly 6 characters from A-Z and 0-9")
        ttl_seconds = validate_seconds(ttl_seconds, "ttl_seconds")
        if transport_hint is not None and transport_hint not in TRANSPORT_HINTS:
            raise UsageError("transport_hint must be 'ws', 'wss' or 'unknown'")
        if len(self._codes) >= MAX_PENDING_CODES and code not in self._codes:
            raise UsageError(f"too many pending pairing codes (limit {MAX_PENDING_CODES}); wait for some to expire")
        pending = PendingCode(code, now, now + self.code_ttl, ttl_seconds, grants, transport_hint)
        self._codes[code] = pending
        return pending

    def consume(self, code: str) -> PendingCode | None:
        """Take a code if valid and unexpired; a code is usable exactly once."""
        now = self.clock()
        pending = self._codes.get(code.upper()) if isinstance(code, str) else None
        if pending is None:
            return None
        del self._codes[pending.code]
        if pending.expires_at <= now:
            return None
        return pending

    def _prune(self, now: float) -> None:
        for code in [c for c, p in self._codes.items() if p.expires_at <= now]:
            del self._codes[code]

    def __len__(self) -> int:
        self._prune(self.clock())
        return len(self._codes)


class SessionBook:
    """Live sessions, persisted to a JSON file of token hashes."""

    def __init__(self, path: Path | None, clock: Clock = time.time):
        self.path = path
        self.clock = clock
        self._by_hash: dict[str, Session] = {}
        self._by_refresh: dict[str, str] = {}
        self.dirty = False  # in-memory changes (last_seen, device details) not yet written
        if path is not None:
            try:
                self._load()
            except StateCorruptError as exc:
                # The generic hint points at `hermes-relay doctor --fix`, which repairs the client's
                # store, not this file: say what to do with the relay's own.
                exc.hint = (f"move {path} aside (e.g. `mv {path} {path}.bad`) and start the relay again, "
                            "or start it with --state-dir pointing elsewhere; paired devices will need to pair again")
                raise

    # -- persistence ---------------------------------------------------------------------------
    def _load(self) -> None:
        assert self.path is not None
        doc = fileio.read_json_versioned(self.path, supported=SESSIONS_VERSION)
        if doc is None:
            return
        raw = doc.get("sessions", [])
        if not isinstance(raw, list):
            raise StateCorruptError(str(self.path), "'sessions' must be a list")
        now = self.clock()
        known = set(Session.__dataclass_fields__)
        for item in raw:
            if not isinstance(item, dict) or "token_hash" not in item:
                raise StateCorruptError(str(self.path), "a session entry is not an object with token_hash")
            try:
                sess = Session(**{k: v for k, v in item.items() if k in known})
            except TypeError as exc:
                raise StateCorruptError(str(self.path), f"bad session entry: {exc}") from exc
            if not sess.expired(now):
                self._add(sess)

    def save(self) -> None:
        if self.path is not None:
            doc = {"version": SESSIONS_VERSION, "sessions": [asdict(s) for s in self._by_hash.values()]}
            fileio.atomic_write(self.path, fileio.dump_json(doc))
        self.dirty = False  # only once written: a failed write is retried by the next flush

    def flush(self) -> bool:
        """Write pending in-memory changes (from ``touch``), if any. Returns True when it wrote."""
        if not self.dirty:
            return False
        self.save()
        return True

    def _add(self, sess: Session) -> None:
        self._by_hash[sess.token_hash] = sess
        if sess.refresh_hash:
            self._by_refresh[sess.refresh_hash] = sess.token_hash

    def _remove(self, sess: Session) -> None:
        self._by_hash.pop(sess.token_hash, None)
        if sess.refresh_hash:
            self._by_refresh.pop(sess.refresh_hash, None)

    # -- operations ----------------------------------------------------------------------------
    def create(self, pending: PendingCode, device: dict[str, Any]) -> tuple[str, str, Session, list[Session]]:
        """Start a session from a consumed code. Returns (token, refresh_token, session, replaced)."""
        now = self.clock()
        token = secrets.token_urlsafe(32)
        while token[:TOKEN_PREFIX_LEN] in {s.token_prefix for s in self._by_hash.values()}:
            token = secrets.token_urlsafe(32)
        refresh = secrets.token_urlsafe(32)
        expires_at = None if pending.ttl_seconds == 0 else now + pending.ttl_seconds
        device_id = str(device.get("device_id") or "")
        replaced = [s for s in self._by_hash.values() if device_id and s.device_id == device_id]
        for old in replaced:
            self._remove(old)
        sess = Session(
            token_hash=token_hash(token),
            token_prefix=token[:TOKEN_PREFIX_LEN],
            device_name=str(device.get("device_name") or "unknown device")[:128],
            device_id=device_id[:128],
            created_at=now,
            first_seen=now,
            last_seen=now,
            expires_at=expires_at,
            grants=compute_grants(pending.grants, now, expires_at),
            transport_hint=pending.transport_hint or str(device.get("transport_hint") or "ws"),
            client_surface=_opt_str(device.get("client_surface")),
            device_form_factor=_opt_str(device.get("device_form_factor")),
            device_model=_opt_str(device.get("device_model")),
            device_platform=_opt_str(device.get("device_platform")),
            device_hostname=_opt_str(device.get("device_hostname")),
            refresh_hash=token_hash(refresh),
        )
        self._add(sess)
        self.save()
        return token, refresh, sess, replaced

    def authenticate(self, token: str) -> Session | None:
        if not isinstance(token, str) or not token:
            return None
        sess = self._by_hash.get(token_hash(token))
        if sess is None:
            return None
        now = self.clock()
        if sess.expired(now):
            self._remove(sess)
            self.save()
            return None
        return sess

    def session_hash_for_refresh(self, refresh_token: str) -> str | None:
        """The current token hash of the session a refresh token belongs to (before it rotates)."""
        if not isinstance(refresh_token, str) or not refresh_token:
            return None
        return self._by_refresh.get(token_hash(refresh_token))

    def refresh(self, refresh_token: str) -> tuple[str, str, Session] | None:
        """Rotate a session's tokens using its refresh token; the old token stops working."""
        if not isinstance(refresh_token, str) or not refresh_token:
            return None
        key = self._by_refresh.get(token_hash(refresh_token))
        sess = self._by_hash.get(key) if key else None
        if sess is None or sess.expired(self.clock()):
            return None
        self._remove(sess)
        token, refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        sess.token_hash, sess.token_prefix, sess.refresh_hash = token_hash(token), token[:TOKEN_PREFIX_LEN], token_hash(refresh)
        self._add(sess)
        self.save()
        return token, refresh, sess

    def touch(self, sess: Session, device: dict[str, Any] | None = None) -> None:
        """Record activity in memory only; ``flush`` (periodic and at shutdown) writes it."""
        sess.last_seen = self.clock()
        if device:
            for key in ("device_name", "client_surface", "device_form_factor", "device_model", "device_platform", "device_hostname"):
                if isinstance(device.get(key), str) and device[key]:
                    setattr(sess, key, device[key][:128])
        self.dirty = True

    def find_prefix(self, prefix: str) -> Session:
        """The one session whose token prefix starts with ``prefix``; NotFoundError / AmbiguousError."""
        if not isinstance(prefix, str) or not prefix:
            raise NotFoundError("empty session prefix")
        wanted = prefix[:TOKEN_PREFIX_LEN]
        matches = [s for s in self._by_hash.values() if s.token_prefix.startswith(wanted)]
        if not matches:
            raise NotFoundError(f'no session matches prefix "{prefix}"')
        if len(matches) > 1:
            raise AmbiguousError(f'multiple sessions match "{prefix}"; use a longer prefix')
        return matches[0]

    def revoke(self, sess: Session) -> None:
        self._remove(sess)
        self.save()

    def extend(self, sess: Session, ttl_seconds: int | None, grants: dict[str, int] | None) -> Session:
        """Give a session a new lifetime (0 = never) and/or new grant durations.

        Grants that lasted as long as the session follow it to its new expiry; shorter grants keep
        their own expiry. No grant ever outlives the session.
        """
        now = self.clock()
        if ttl_seconds is not None:
            old_expiry = sess.expires_at
            sess.expires_at = None if ttl_seconds == 0 else now + ttl_seconds
            sess.grants = {
                ch: (sess.expires_at if exp is None or exp == old_expiry else exp) for ch, exp in sess.grants.items()
            }
        for ch, secs in (grants or {}).items():
            sess.grants[ch] = None if secs == 0 else now + secs
        if sess.expires_at is not None:
            sess.grants = {ch: (sess.expires_at if exp is None or exp > sess.expires_at else exp) for ch, exp in sess.grants.items()}
        self.save()
        return sess

    def purge_expired(self) -> int:
        now = self.clock()
        dead = [s for s in self._by_hash.values() if s.expired(now)]
        for s in dead:
            self._remove(s)
        if dead:
            self.save()
        return len(dead)

    def all(self) -> list[Session]:
        return sorted(self._by_hash.values(), key=lambda s: s.created_at)

    def __len__(self) -> int:
        return len(self._by_hash)


def _opt_str(v: Any) -> str | None:
    return v[:128] if isinstance(v, str) and v else None

