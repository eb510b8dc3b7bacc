"""The relay's sessions and refresh tokens, persisted to ``sessions.json`` (sans-IO apart from that file).

- Sessions: a pairing creates one. Only SHA-256 hashes of tokens are kept, so the file is useless to a
  thief; the first 8 characters are kept as the public ``token_prefix`` that ``/sessions`` names a device
  by. A new pairing from the same ``device_id`` replaces that device's older session.
- Refresh tokens (as the reference relay): 32 random bytes, valid ``REFRESH_TTL`` (180 days), bound to
  the ``device_id`` they were issued to, rotated on every use, and they outlive the session: presenting
  one after its session expired starts a new session with the same lifetime. Revoking a session kills
  its refresh token at once.
- Re-pairing (``create`` for a ``device_id`` that has a session): the old session ends at once (its token
  no longer authenticates, its sockets are closed), but its refresh token stays on *standby* for the new
  session until that session is first used (``authenticate`` with its token, or a refresh) or
  ``STANDBY_GRACE`` passes. The new tokens exist only in the relay's answer; a device killed before it
  kept them restarts with its old credentials, its old token is refused, and its old refresh token
  (still bound to its ``device_id``) rotates the new session into tokens it receives. Only the refresh
  token is kept, not the old session: nothing can act with the old credentials without turning them
  into the new session's, and the new pairing's lifetime and grants stand. Revoking the new session
  (``revoke``) drops its standby tokens with it.
- Save first: every change (create, refresh, revoke, extend) is written before it takes effect in
  memory; a failed write raises ``SaveError`` and leaves the book as it was. ``touch`` (every successful
  authentication) only changes memory and marks the book dirty; the relay's sweep and shutdown ``flush``.
- Loading checks the type of every field and refuses a file it cannot trust with ``StateCorruptError``
  naming the file, the entry and the field.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..core import fileio
from ..core.errors import AmbiguousError, NotFoundError, StateCorruptError, StateError, UsageError
from ..core.wire import MIN_PREFIX_LEN, TOKEN_PREFIX_LEN
from .pairing import GRANT_OFF, PendingCode, compute_grants, token_hash

log = logging.getLogger(__name__)
SESSIONS_VERSION = 1
REFRESH_TTL = 180 * 86400
STANDBY_GRACE = 600.0  # seconds a re-paired device's old refresh token may still claim its new session
MAX_TEXT = 128  # device names and details are cut to this many characters
Clock = Callable[[], float]
Fault = Callable[[], bool]


SaveError = StateError  # what a failed sessions.json write raises; the change was not made

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
    refresh_hash: str | None = None  # read from older files only; refresh tokens live in RefreshGrant
    session_ttl: int | None = None  # the lifetime it was created with (0 = never): a refresh reuses it
    requested_grants: dict[str, int] | None = None
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


@dataclass
class RefreshGrant:
    refresh_hash: str
    session_hash: str  # the session it belongs to; that session may have expired since
    device_id: str
    expires_at: float
    standby_of: str | None = None  # the token prefix of the session a re-pairing replaced (see the header)


_NUM = (int, float)
_SESSION_TYPES: dict[str, tuple[tuple[type, ...], bool]] = {  # field -> (types, may be null)
    "token_hash": ((str,), False), "token_prefix": ((str,), False), "device_name": ((str,), False),
    "device_id": ((str,), False), "created_at": (_NUM, False), "first_seen": (_NUM, False),
    "last_seen": (_NUM, False), "expires_at": (_NUM, True), "grants": ((dict,), False),
    "transport_hint": ((str,), False), "client_surface": ((str,), True), "device_form_factor": ((str,), True),
    "device_model": ((str,), True), "device_platform": ((str,), True), "device_hostname": ((str,), True),
    "refresh_hash": ((str,), True), "session_ttl": ((int,), True), "requested_grants": ((dict,), True),
    "extra": ((dict,), False),
}
_GRANT_TYPES: dict[str, tuple[tuple[type, ...], bool]] = {
    "refresh_hash": ((str,), False), "session_hash": ((str,), False), "device_id": ((str,), False),
    "expires_at": (_NUM, False), "standby_of": ((str,), True),
}
_GRANT_REQUIRED = ("refresh_hash", "session_hash", "device_id", "expires_at")
_SESSION_REQUIRED = ("token_hash", "token_prefix", "device_name", "device_id", "created_at", "first_seen",
                     "last_seen", "expires_at", "grants", "transport_hint")


def _check(item: Any, where: str, types: dict[str, tuple[tuple[type, ...], bool]], required: tuple[str, ...]) -> dict[str, Any]:
    """The known fields of one stored entry, or a message (ValueError) naming the first wrong one."""
    if not isinstance(item, dict):
        raise ValueError(f"{where} is {type(item).__name__}, not an object")
    for name in required:
        if name not in item:
            raise ValueError(f"{where} has no '{name}'")
    out: dict[str, Any] = {}
    for name, value in item.items():
        if name not in types:
            continue
        kinds, nullable = types[name]
        if value is None and nullable:
            out[name] = value
            continue
        if not isinstance(value, kinds) or isinstance(value, bool):
            wanted = " or ".join(k.__name__.replace("dict", "object").replace("str", "string") for k in kinds)
            raise ValueError(f"{where} field '{name}' must be {wanted}{' or null' if nullable else ''}, "
                             f"not {type(value).__name__} {str(value)[:40]!r}")
        out[name] = value
    return out


def _session_from(item: Any, i: int) -> Session:
    fields = _check(item, f"sessions[{i}]", _SESSION_TYPES, _SESSION_REQUIRED)
    for ch, exp in fields["grants"].items():
        if not isinstance(exp, _NUM) and exp is not None or isinstance(exp, bool):
            raise ValueError(f"sessions[{i}] grant '{ch}' must be a number or null, not {type(exp).__name__}")
    for ch, secs in (fields.get("requested_grants") or {}).items():
        if not isinstance(secs, int) or isinstance(secs, bool) or secs < GRANT_OFF:
            raise ValueError(f"sessions[{i}] requested grant '{ch}' must be whole seconds, not {str(secs)[:40]!r}")
    return Session(**fields)


class SessionBook:
    """Live sessions and refresh tokens, persisted to a JSON file of token hashes."""

    def __init__(self, path: Path | None, clock: Clock = time.time, fault: Fault | None = None,
                 withheld: tuple[str, ...] = ()):
        self.path = path
        self.withheld = withheld  # channels new sessions get no default grant for (--terminal: terminal)
        self.clock = clock
        self.fault = fault  # test-only: returns True to make the next write fail as a full disk would
        self._by_hash: dict[str, Session] = {}
        self._refresh: dict[str, RefreshGrant] = {}
        self._standby_for: set[str] = set()  # sessions that old refresh tokens are on standby for
        self.dirty = False  # in-memory changes (last_seen, device details) not yet written
        if path is not None:
            try:
                self._load()
            except StateCorruptError as exc:
                # The generic hint points at `hermes-relay doctor --fix`, which repairs the client's
                # store, not this file: say what to do with the relay's own.
                exc.hint = (f"fix or move {path} aside (e.g. `mv {path} {path}.bad`) and start the relay again, "
                            "or start it with --state-dir pointing elsewhere; paired devices will need to pair again")
                raise

    # -- persistence ---------------------------------------------------------------------------
    def _load(self) -> None:
        assert self.path is not None
        doc = fileio.read_json_versioned(self.path, supported=SESSIONS_VERSION)
        if doc is None:
            return
        raw, raw_refresh = doc.get("sessions", []), doc.get("refresh_tokens", [])
        if not isinstance(raw, list):
            raise StateCorruptError(str(self.path), "'sessions' must be a list")
        if not isinstance(raw_refresh, list):
            raise StateCorruptError(str(self.path), "'refresh_tokens' must be a list")
        now = self.clock()
        try:
            sessions = [_session_from(item, i) for i, item in enumerate(raw)]
            grants = [RefreshGrant(**_check(item, f"refresh_tokens[{i}]", _GRANT_TYPES, _GRANT_REQUIRED))
                      for i, item in enumerate(raw_refresh)]
        except ValueError as exc:
            raise StateCorruptError(str(self.path), str(exc)) from None
        for sess in sessions:
            if sess.refresh_hash:  # an older file: the refresh token lived inside the session
                grants.append(RefreshGrant(sess.refresh_hash, sess.token_hash, sess.device_id,
                                           sess.created_at + REFRESH_TTL))
                sess.refresh_hash = None
        self._refresh = {g.refresh_hash: g for g in grants if g.expires_at > now}
        self._by_hash = {s.token_hash: s for s in sessions if self._kept(s, now, self._refresh)}
        self._note_standby()

    def _write(self, sessions: dict[str, Session], grants: dict[str, RefreshGrant]) -> None:
        if self.path is None:
            return
        doc = {"version": SESSIONS_VERSION, "sessions": [asdict(s) for s in sessions.values()],
               "refresh_tokens": [asdict(g) for g in grants.values()]}
        try:
            if self.fault is not None and self.fault():
                raise OSError(errno.ENOSPC, "No space left on device (injected fault)")
            fileio.atomic_write(self.path, fileio.dump_json(doc))
        except OSError as exc:
            raise SaveError(f"cannot save {self.path}: {exc.strerror or exc}; nothing was changed",
                            hint="free disk space or fix the state directory's permissions, then retry") from exc

    def _commit(self, sessions: dict[str, Session], grants: dict[str, RefreshGrant]) -> None:
        self._write(sessions, grants)
        self._by_hash, self._refresh = sessions, grants
        self._note_standby()
        self.dirty = False

    def _note_standby(self) -> None:
        self._standby_for = {g.session_hash for g in self._refresh.values() if g.standby_of}

    def save(self) -> None:
        self._commit(self._by_hash, self._refresh)

    def flush(self) -> bool:
        """Write pending in-memory changes (from ``touch``), if any. Returns True when it wrote."""
        if not self.dirty:
            return False
        self.save()
        return True

    # -- operations ----------------------------------------------------------------------------
    def _new_token(self) -> str:
        taken = {s.token_prefix for s in self._by_hash.values()}
        token = secrets.token_urlsafe(32)
        while token[:TOKEN_PREFIX_LEN] in taken:
            token = secrets.token_urlsafe(32)
        return token

    def _grant_for(self, sess: Session, now: float) -> tuple[str, RefreshGrant]:
        refresh = secrets.token_urlsafe(32)
        return refresh, RefreshGrant(token_hash(refresh), sess.token_hash, sess.device_id, now + REFRESH_TTL)

    def _without(self, dead: list[Session]) -> tuple[dict[str, Session], dict[str, RefreshGrant]]:
        hashes = {s.token_hash for s in dead}
        sessions = {h: s for h, s in self._by_hash.items() if h not in hashes}
        grants = {h: g for h, g in self._refresh.items() if g.session_hash not in hashes}
        return sessions, grants

    def create(self, pending: PendingCode, device: dict[str, Any]) -> tuple[str, str, Session, list[Session]]:
        """Start a session from a consumed code. Returns (token, refresh_token, session, replaced)."""
        now = self.clock()
        device_id = device_id_of(device.get("device_id"))
        replaced = [s for s in self._by_hash.values() if device_id and s.device_id == device_id]
        token = self._new_token()
        expires_at = None if pending.ttl_seconds == 0 else now + pending.ttl_seconds
        sess = Session(
            token_hash=token_hash(token),
            token_prefix=token[:TOKEN_PREFIX_LEN],
            device_name=str(device.get("device_name") or "unknown device")[:MAX_TEXT],
            device_id=device_id,
            created_at=now,
            first_seen=now,
            last_seen=now,
            expires_at=expires_at,
            grants=compute_grants(pending.grants, now, expires_at, withheld=self.withheld),
            transport_hint=pending.transport_hint or str(device.get("transport_hint") or "ws"),
            client_surface=_opt_str(device.get("client_surface")),
            device_form_factor=_opt_str(device.get("device_form_factor")),
            device_model=_opt_str(device.get("device_model")),
            device_platform=_opt_str(device.get("device_platform")),
            device_hostname=_opt_str(device.get("device_hostname")),
            session_ttl=pending.ttl_seconds,
            requested_grants=pending.grants,
        )
        refresh, grant = self._grant_for(sess, now)
        standby = self._standby(replaced, sess, now)
        sessions, grants = self._without(replaced)
        self._commit({**sessions, sess.token_hash: sess}, {**grants, grant.refresh_hash: grant, **standby})
        return token, refresh, sess, replaced

    def _standby(self, replaced: list[Session], new: Session, now: float) -> dict[str, RefreshGrant]:
        """The replaced sessions' live refresh tokens, bound to ``new`` for at most STANDBY_GRACE."""
        prefixes = {s.token_hash: s.token_prefix for s in replaced}
        return {h: RefreshGrant(h, new.token_hash, g.device_id, min(g.expires_at, now + STANDBY_GRACE),
                                standby_of=g.standby_of or prefixes[g.session_hash])
                for h, g in self._refresh.items() if g.session_hash in prefixes and g.expires_at > now}

    def _first_use(self, sess: Session) -> None:
        """The new session of a re-pairing is used: the old refresh tokens on standby for it end."""
        if sess.token_hash not in self._standby_for:
            return  # the common case: no set is built on every authentication
        grants = {h: g for h, g in self._refresh.items() if not (g.standby_of and g.session_hash == sess.token_hash)}
        try:
            self._commit(self._by_hash, grants)
        except SaveError as exc:  # ended in memory at once; written by the next flush
            log.error("standby_end_not_saved prefix=%s error=%s", sess.token_prefix, exc.message)
            self._refresh = grants
            self._note_standby()
            self.dirty = True

    def authenticate(self, token: str) -> Session | None:
        if not isinstance(token, str) or not token:
            return None
        sess = self._by_hash.get(token_hash(token))
        if sess is None or sess.expired(self.clock()):
            return None  # an expired session is dropped by purge_expired; its refresh token lives on
        self._first_use(sess)
        return sess

    def session_hash_for_refresh(self, refresh_token: str) -> str | None:
        """The token hash of the session a refresh token belongs to (before it rotates)."""
        if not isinstance(refresh_token, str) or not refresh_token:
            return None
        grant = self._refresh.get(token_hash(refresh_token))
        return grant.session_hash if grant is not None else None

    def refresh(self, refresh_token: str, device_id: Any = None) -> tuple[str, str, Session] | None:
        """Rotate a refresh token: a new session token (and a new session if the old one expired).

        The refresh token must be unexpired and presented with the ``device_id`` it was issued to.
        """
        if not isinstance(refresh_token, str) or not refresh_token:
            return None
        now = self.clock()
        grant = self._refresh.get(token_hash(refresh_token))
        if grant is None or grant.expires_at <= now:
            return None
        if grant.device_id and grant.device_id != device_id_of(device_id):
            return None
        old = self._by_hash.get(grant.session_hash)
        if old is None:
            return None
        token = self._new_token()
        alive = not old.expired(now)
        if alive:
            new = dataclasses.replace(old, token_hash=token_hash(token), token_prefix=token[:TOKEN_PREFIX_LEN])
        else:
            new = self._revived(old, token, now)
        refresh, new_grant = self._grant_for(new, now)
        if grant.standby_of:
            log.info("repair_recovered prefix=%s replaced=%s", old.token_prefix, grant.standby_of)
        sessions = {h: s for h, s in self._by_hash.items() if h != grant.session_hash}
        # Every refresh token of the session is retired: the one used, and the standby ones of a
        # re-pairing (or, when a standby one is used, the new pairing's own, lost with its answer).
        grants = {h: g for h, g in self._refresh.items() if g.session_hash != grant.session_hash}
        self._commit({**sessions, new.token_hash: new}, {**grants, new_grant.refresh_hash: new_grant})
        if alive:
            old.__dict__.update(new.__dict__)  # sockets holding this session see the new token
            self._by_hash[new.token_hash] = old
            new = old
        return token, refresh, new

    def _revived(self, old: Session, token: str, now: float) -> Session:
        """A new session for a refresh token whose session expired: same device, same lifetime."""
        ttl = old.session_ttl
        if ttl is None:
            ttl = 0 if old.expires_at is None else max(1, int(old.expires_at - old.created_at))
        expires_at = None if ttl == 0 else now + ttl
        return dataclasses.replace(
            old, token_hash=token_hash(token), token_prefix=token[:TOKEN_PREFIX_LEN], created_at=now, last_seen=now,
            expires_at=expires_at, grants=compute_grants(old.requested_grants, now, expires_at, withheld=self.withheld),
            extra=dict(old.extra))

    def touch(self, sess: Session, device: dict[str, Any] | None = None) -> None:
        """Record activity in memory only; ``flush`` (periodic and at shutdown) writes it."""
        sess.last_seen = self.clock()
        if device:
            # Identity (device_id, name, host name, client surface) is what the session was paired with: a
            # later auth frame may not rename it, or turn a phone into a desktop. Descriptive details may change.
            for key in ("device_form_factor", "device_model", "device_platform"):
                if isinstance(device.get(key), str) and device[key]:
                    setattr(sess, key, device[key][:MAX_TEXT])
        self.dirty = True

    def find_prefix(self, prefix: str) -> Session:
        """The one session (of ``all``) whose token prefix starts with exactly ``prefix``.

        UsageError for a prefix shorter than MIN_PREFIX_LEN or longer than TOKEN_PREFIX_LEN (only that
        much of a token is known here), NotFoundError, AmbiguousError.
        """
        if not isinstance(prefix, str) or len(prefix) < MIN_PREFIX_LEN:
            raise UsageError(f'session prefix "{prefix}" is too short: give at least {MIN_PREFIX_LEN} characters '
                             "from the PREFIX column of the device list")
        if len(prefix) > TOKEN_PREFIX_LEN:
            raise UsageError(f'session prefix "{prefix[:16]}" is too long: sessions are named by the first '
                             f"{TOKEN_PREFIX_LEN} characters of their token")
        matches = [s for s in self.all() if s.token_prefix.startswith(prefix)]
        if not matches:
            raise NotFoundError(f'no session matches prefix "{prefix}"')
        if len(matches) > 1:
            raise AmbiguousError(f'{len(matches)} sessions match "{prefix}"; use a longer prefix')
        return matches[0]

    def revoke(self, sess: Session) -> None:
        """End a session and its refresh token (saved first: SaveError leaves it alive)."""
        self._commit(*self._without([sess]))

    def preview_extend(self, sess: Session, ttl_seconds: int | None, grants: dict[str, int] | None) -> Session:
        """What ``extend`` would make of ``sess``, without changing anything.

        Grants that lasted as long as the session follow it to its new expiry; shorter grants keep
        their own expiry. No grant ever outlives the session.
        """
        now = self.clock()
        expires_at, new_grants = sess.expires_at, dict(sess.grants)
        if ttl_seconds is not None:
            expires_at = None if ttl_seconds == 0 else now + ttl_seconds
            new_grants = {ch: (expires_at if exp is None or exp == sess.expires_at else exp) for ch, exp in new_grants.items()}
        for ch, secs in (grants or {}).items():
            if secs == GRANT_OFF:
                new_grants.pop(ch, None)
            else:
                new_grants[ch] = None if secs == 0 else now + secs
        if expires_at is not None:
            new_grants = {ch: (expires_at if exp is None or exp > expires_at else exp) for ch, exp in new_grants.items()}
        return dataclasses.replace(sess, expires_at=expires_at, grants=new_grants)

    def extend(self, sess: Session, ttl_seconds: int | None, grants: dict[str, int] | None) -> Session:
        """Give a session a new lifetime (0 = never) and/or grant durations; saved before it applies."""
        new = self.preview_extend(sess, ttl_seconds, grants)
        self._commit({**self._by_hash, sess.token_hash: new}, self._refresh)
        sess.expires_at, sess.grants = new.expires_at, new.grants
        self._by_hash[sess.token_hash] = sess
        return sess

    def _kept(self, sess: Session, now: float, grants: dict[str, RefreshGrant]) -> bool:
        """Unexpired, or expired but still needed by a live refresh token (which may revive it)."""
        return not sess.expired(now) or any(g.session_hash == sess.token_hash for g in grants.values())

    def purge_expired(self) -> int:
        """Drop expired refresh tokens, and expired sessions no live refresh token can revive."""
        now = self.clock()
        grants = {h: g for h, g in self._refresh.items() if g.expires_at > now}
        sessions = {h: s for h, s in self._by_hash.items() if self._kept(s, now, grants)}
        dropped = len(self._by_hash) - len(sessions)
        if dropped or len(grants) != len(self._refresh):
            self._commit(sessions, grants)
        return dropped

    def holds(self, sess: Session) -> bool:
        """Whether ``sess`` (this very object) is still one of the book's sessions: not revoked or replaced."""
        return self._by_hash.get(sess.token_hash) is sess

    def all(self) -> list[Session]:
        """Every session held, expired ones included while a refresh token could revive them (so they can be
        seen and revoked)."""
        return sorted(self._by_hash.values(), key=lambda s: s.created_at)

    def __len__(self) -> int:
        now = self.clock()
        return sum(1 for s in self._by_hash.values() if not s.expired(now))


def _opt_str(v: Any) -> str | None:
    return v[:MAX_TEXT] if isinstance(v, str) and v else None


def device_id_of(raw: Any) -> str:
    """A device_id as sessions keep it (text, at most MAX_TEXT characters; "" for none), so the refresh
    check compares what was stored with the same normalisation."""
    return str(raw or "")[:MAX_TEXT]
