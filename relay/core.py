"""The relay's state and decisions without I/O: the core that the trio driver (relay/server.py) runs.

h11's "core plus driver" split: every method here takes a parsed input (a peer's address, an HTTP
request head and body, a WebSocket message, the config's clock) and returns what to do (an HTTP
reply, "send this envelope", "close with this code", "close these sessions' sockets"); the driver
performs it. Nothing here awaits, opens a socket or imports trio, so every decision is tested with a
fake clock and no sockets (tests/relay/test_relay_core.py).

State: pairing codes, the session book (saved by relay/sessions.py before a change is answered), the
per-address limiters and the global code cap, the connection budgets (pending request heads,
unauthenticated upgrades) and the live table (session token hash -> the driver's socket handles,
opaque here). relay/api.py and relay/auth.py take this object through the narrow Protocols they declare.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core import desktop as desktop_wire
from ..core import envelope
from ..core.errors import RemoteProtocolError
from . import api, auth, capacity, identity, peers, rawenv, term_config, unserved
from .config import (
    AUTH_FAIL_REASON,
    AUTH_TIMEOUT_REASON,
    BUSY_BODY,
    BUSY_PER_IP_BODY,
    CLOSE_AUTH_FAILED,
    CLOSE_INTERNAL_ERROR,
    CLOSE_POLICY,
    CLOSE_TRY_AGAIN_LATER,
    CODE_FAILS_PER_MINUTE,
    HTTP_BLOCK,
    HTTP_FAIL_LIMIT,
    HTTP_FAIL_WINDOW,
    PAIRING_BLOCK,
    PAIRING_FAIL_LIMIT,
    PAIRING_FAIL_WINDOW,
    RATE_LIMIT_BODY,
    SERVER_VERSION,
    SESSION_BLOCK,
    SESSION_FAIL_LIMIT,
    SESSION_FAIL_WINDOW,
    WS_PATHS,
    RelayConfig,
)
from .httpmsg import HttpRequest
from .pairing import PairingCodes
from .peers import Peer
from .ratelimit import GlobalCap, RateLimiter, rate_key
from .sessions import SaveError, Session, SessionBook

log = logging.getLogger(__name__)


# -- effects ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CloseSession:
    """Close every live socket of the session ``key`` (code 4001, ``reason``)."""

    key: str
    reason: str


@dataclass(frozen=True)
class DetachSession:
    """The session's live sockets serve no desktop tools from now on (they may stay open)."""

    key: str


Effect = CloseSession | DetachSession


@dataclass(frozen=True)
class HttpReply:
    status: int
    body: dict[str, Any]
    effects: tuple[Effect, ...] = ()


@dataclass(frozen=True)
class Refusal:
    """A plain-text HTTP answer given instead of serving the connection (busy, blocked, no such endpoint)."""

    status: int
    text: str
    retry_after: int | None = None
    json: bool = False  # answer {"ok": false, "error": text} instead of text/plain


@dataclass(frozen=True)
class AuthFail:
    """Send ``system/auth.fail {reason}``, then close with ``code``."""

    reason: str
    code: int


@dataclass(frozen=True)
class AuthAbort:
    """Close with ``code`` and ``reason`` and no auth.fail: nothing was decided about the credentials."""

    code: int
    reason: str


@dataclass(frozen=True)
class AuthOk:
    """Send ``auth.ok`` (``reply``, answering ``msg_id``) after the ``effects`` (retired tokens' sockets)."""

    session: Session
    reply: dict[str, Any]
    msg_id: str | None
    effects: tuple[Effect, ...] = ()


@dataclass(frozen=True)
class Send:
    env: envelope.Envelope


@dataclass(frozen=True)
class ToDesktop:
    """A desktop-channel envelope for the desktop router (relay/desktop.py)."""

    env: envelope.Envelope


@dataclass(frozen=True)
class ToTerminal:
    """A terminal-channel envelope for the terminal service (relay/terminal.py); the grant was checked."""

    env: envelope.Envelope


class UnauthedSlot:
    """One counted unauthenticated connection; ``release`` (idempotent) gives the place back."""

    def __init__(self, core: RelayCore, key: str):
        self._core: RelayCore | None = core
        self._key = key

    def release(self) -> None:
        core, self._core = self._core, None
        if core is None:
            return
        core.unauthed -= 1
        left = core.unauthed_by_key.get(self._key, 0) - 1
        if left > 0:
            core.unauthed_by_key[self._key] = left
        else:
            core.unauthed_by_key.pop(self._key, None)


class RelayCore:
    """The relay's state and its decisions. ``nofile`` is the descriptor limit the budgets are cut from
    (None: unknown); ``pending_calls`` counts desktop calls in flight (the driver's router); ``idle_reads``
    the driver's idle reader's counters (relay/idleread.py; None: it has none)."""

    def __init__(self, config: RelayConfig, *, nofile: int | None = None, monotonic: Callable[[], float] = time.monotonic,
                 pending_calls: Callable[[], int] = lambda: 0,
                 idle_reads: Callable[[], dict[str, int] | None] = lambda: None):
        self.config = config
        clock = config.wall_clock
        self.codes = PairingCodes(clock)
        sessions_path = config.state_dir / "sessions.json" if config.state_dir else None
        self.book = SessionBook(sessions_path, clock, fault=config.save_fault,
                                withheld=(term_config.GRANT,) if config.terminal is not None else ())
        self.pair_limiter = RateLimiter(limit=PAIRING_FAIL_LIMIT, window=PAIRING_FAIL_WINDOW, block=PAIRING_BLOCK)
        self.token_limiter = RateLimiter(limit=SESSION_FAIL_LIMIT, window=SESSION_FAIL_WINDOW, block=SESSION_BLOCK)
        self.http_limiter = RateLimiter(limit=HTTP_FAIL_LIMIT, window=HTTP_FAIL_WINDOW, block=HTTP_BLOCK)
        self.code_cap = GlobalCap(limit=CODE_FAILS_PER_MINUTE, window=60.0)
        self.server_version = SERVER_VERSION
        self.relay_id = identity.relay_id(config.state_dir)  # stable across restarts (relay/identity.py)
        self.port = config.port  # the bound port once listening (the driver sets it)
        self.live: dict[str, set[Any]] = {}  # session token hash -> the driver's sockets, opaque here
        self.pending = capacity.Gate(capacity.phase_cap(config.max_pending, nofile), config.max_pending_per_ip)
        self.max_unauthed = capacity.phase_cap(config.max_unauthed, nofile)
        self.unauthed = 0  # upgraded connections that have not finished authenticating
        self.unauthed_by_key: dict[str, int] = {}  # the same per rate_key(ip)
        self._monotonic = monotonic
        self.started = monotonic()
        self._pending_calls = pending_calls
        self._idle_reads = idle_reads
        self._effects: list[Effect] = []  # what an API call decided beyond its reply (see session_revoked)

    # -- clocks and counts (relay/api.py's and relay/auth.py's view) ----------------------------------
    def now(self) -> float:
        return self.config.wall_clock()

    def uptime(self) -> float:
        return self._monotonic() - self.started

    def pending_calls(self) -> int:
        return self._pending_calls()

    def idle_reads(self) -> dict[str, int] | None:
        return self._idle_reads()

    def connections(self) -> int:
        return sum(len(v) for v in self.live.values())

    def connected(self, key: str) -> bool:
        return bool(self.live.get(key))

    def blocked_for(self, ip: str) -> float:
        now = self.now()
        return max(self.pair_limiter.blocked_for(ip, now), self.token_limiter.blocked_for(ip, now))

    # -- a new connection ------------------------------------------------------------------------
    def admit(self, ip: str) -> tuple[str, Refusal | None]:
        """Count a connection whose request head has not arrived; the driver calls ``pending.leave(key)``
        once it has (only when admitted, i.e. no Refusal)."""
        key = rate_key(ip)
        if not self.pending.enter(key, per_key=not peers.in_networks(ip, self.config.trusted_proxies)):
            log.warning("connection_refused_busy peer=%s pending=%d", ip, self.pending.count)
            return key, Refusal(503, BUSY_BODY, retry_after=1)
        return key, None

    def http(self, req: HttpRequest, body: bytes, peer: Peer) -> HttpReply:
        """One plain HTTP request (relay/api.py), with the effects a revocation decided."""
        self._effects.clear()
        status, obj = api.route(self, req, body, peer)
        effects, self._effects = tuple(self._effects), []
        return HttpReply(status, obj, effects)

    def session_revoked(self, sess: Session) -> None:
        """A revoked session's sockets serve no desktop tools from now on, and are closed at once unless
        configured to stay open, as the reference relay keeps them."""
        self._effects.append(DetachSession(sess.token_hash))
        if self.config.close_on_revoke:
            self._effects.append(CloseSession(sess.token_hash, "session revoked"))

    def upgrade(self, path: str, ip: str) -> UnauthedSlot | Refusal:
        """May this WebSocket upgrade go ahead? A counted slot, or the answer that refuses it."""
        if path not in WS_PATHS:
            return Refusal(404, f"no WebSocket endpoint at {path}; use / or /ws", json=True)
        blocked = self.blocked_for(ip)
        if blocked > 0:
            log.info("upgrade_rate_limited peer=%s seconds_left=%d", ip, blocked)
            return Refusal(429, RATE_LIMIT_BODY, retry_after=math.ceil(blocked))
        slot = self.take_unauthed_slot(ip)
        if isinstance(slot, str):
            log.warning("upgrade_refused_busy peer=%s unauthenticated=%d", ip, self.unauthed)
            return Refusal(503, slot, retry_after=1)
        return slot

    def take_unauthed_slot(self, ip: str) -> UnauthedSlot | str:
        """Count one more unauthenticated connection, or the 503 body when a cap is reached."""
        key = rate_key(ip)
        if self.unauthed_by_key.get(key, 0) >= self.config.max_unauthed_per_ip:
            return BUSY_PER_IP_BODY
        if self.unauthed >= self.max_unauthed:
            return BUSY_BODY
        self.unauthed += 1
        self.unauthed_by_key[key] = self.unauthed_by_key.get(key, 0) + 1
        return UnauthedSlot(self, key)

    # -- authentication ----------------------------------------------------------------------------
    def first_message(self, message: str | bytes | None, ip: str) -> AuthOk | AuthFail | AuthAbort:
        """Decide a connection's first WebSocket message (None: none came within the auth timeout)."""
        if message is None:
            return AuthFail(AUTH_TIMEOUT_REASON, CLOSE_POLICY)
        try:
            env = envelope.decode(message, max_size=self.config.max_message)
        except RemoteProtocolError as exc:
            return AuthFail(f"Malformed auth frame: {exc}", CLOSE_POLICY)
        if env.channel != envelope.SYSTEM or env.type != envelope.AUTH:
            return AuthFail("First message must be system/auth", CLOSE_POLICY)
        if self.blocked_for(ip) > 0:
            # Opened before the block started: no more tries, nothing counted or consumed. The
            # reason and close code say "wait", so a client does not take it for a revoked token.
            log.info("auth_refused_rate_limited peer=%s", ip)
            return AuthFail(RATE_LIMIT_BODY, CLOSE_TRY_AGAIN_LATER)
        p = env.payload
        if p.get("pairing_code") and not (p.get("session_token") or p.get("refresh_token")) \
                and self.code_cap.exceeded(self.now()) > 0:
            log.warning("auth_refused_code_cap peer=%s", ip)
            return AuthFail(RATE_LIMIT_BODY, CLOSE_TRY_AGAIN_LATER)
        try:
            outcome = self.authenticate(p, ip)
        except SaveError as exc:
            log.error("sessions_save_failed during=auth peer=%s error=%s", ip, exc.message)
            # No auth.fail: clients take that for rejected credentials. A close with 1011 reads as a
            # transient failure, and nothing was spent or changed.
            return AuthAbort(CLOSE_INTERNAL_ERROR, "relay could not save the session; try again later")
        if outcome is None:
            return AuthFail(AUTH_FAIL_REASON, CLOSE_AUTH_FAILED)
        retired = tuple(CloseSession(key, reason) for key, reason in outcome.retired)
        return AuthOk(outcome.session, outcome.reply, env.id or None, retired)

    def authenticate(self, payload: dict[str, Any], ip: str) -> auth.Outcome | None:
        """An auth frame's credentials (relay/auth.py): the session, or None when none works."""
        return auth.authenticate(self, payload, ip)

    def attach(self, key: str, conn: Any) -> None:
        """An authenticated socket of session ``key``: counted, listed, closed on revocation."""
        self.live.setdefault(key, set()).add(conn)

    def detach(self, key: str, conn: Any) -> None:
        conns = self.live.get(key)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                self.live.pop(key, None)

    def take_live(self, key: str) -> set[Any]:
        """The session's sockets, no longer listed as live (the driver closes them)."""
        return self.live.pop(key, set())

    # -- after authentication ----------------------------------------------------------------------
    def message(self, sess: Session, message: str | bytes) -> list[Send | ToDesktop | ToTerminal]:
        """Decide one message from an authenticated socket."""
        try:
            env = rawenv.decode(message, max_size=self.config.max_message_authed)  # a big result's text is kept
        except (RemoteProtocolError, ValueError) as exc:  # ValueError: e.g. an integer of 5000 digits
            return [_send(envelope.SYSTEM, "error", {"reason": f"malformed message: {str(exc)[:200]}"})]
        if env.channel == desktop_wire.CHANNEL:
            self.book.touch(sess)
            return [ToDesktop(env)]
        if env.channel == envelope.SYSTEM and env.type == "ping":
            self.book.touch(sess)
            ts = env.payload.get("ts")
            return [_send(envelope.SYSTEM, "pong", {"ts": self.now() if ts is None else ts}, env.id or None)]
        if env.channel == envelope.SYSTEM and env.type == envelope.AUTH:
            return [_send(envelope.SYSTEM, "error", {"reason": "already authenticated"}, env.id or None)]
        if env.channel == term_config.CHANNEL and self.config.terminal is not None:
            self.book.touch(sess)
            refused = term_config.refusal(sess.grants, self.now(), env.id or None)
            return [Send(refused) if refused is not None else ToTerminal(env)]
        answers: list[Send | ToDesktop | ToTerminal] = [Send(a) for a in unserved.replies(env, SERVER_VERSION)]
        if not answers and env.channel not in unserved.CHANNELS:
            answers.append(_send(envelope.SYSTEM, "error",
                                 {"reason": f"channel {env.channel!r} is not served by this relay", "channel": env.channel,
                                  "message": f"Unknown channel: {env.channel}"}, env.id or None))
        return answers

    def session_live(self, sess: Session) -> bool:
        """Whether ``sess`` is still a live session of the book (not revoked, replaced or expired)."""
        return not sess.expired(self.now()) and self.book.holds(sess)

    def expires_in(self, sess: Session) -> float:
        """Seconds until the session expires (inf: never); PATCH /sessions may move it at any time."""
        return sess.expires_at - self.now() if sess.expires_at is not None else float("inf")


def _send(channel: str, typ: str, payload: dict[str, Any], msg_id: str | None = None) -> Send:
    env = envelope.Envelope(channel, typ, payload) if msg_id is None else envelope.Envelope(channel, typ, payload, msg_id)
    return Send(env)
