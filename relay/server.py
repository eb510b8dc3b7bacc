"""The relay server's trio I/O: WebSocket at ``/``, ``/ws`` and ``/relay/ws`` plus the HTTP API (relay/api.py), on one port.

Each connection starts with an h11-parsed request head. A WebSocket upgrade is replayed into
trio-websocket (the only module here that speaks WebSocket); anything else is one HTTP request and
one JSON response from ``api.route``. The client's address comes from ``peers.resolve`` (forwarding
headers count only from ``--trusted-proxy`` addresses). The first WebSocket frame must be ``system/auth`` within ``auth_timeout``;
credentials are tried in the order session token, refresh token, pairing code. Failures are
counted per IP in two buckets (codes, tokens); a blocked IP gets HTTP 429 before any upgrade, and
``auth.fail`` (with nothing tried or counted) on a connection it opened before the block.
Every per-connection failure is contained to that connection (a supervision point).

Resource bounds before authentication: a WebSocket message is at most ``MAX_MESSAGE`` (64 KiB; after
authentication 4 MiB, for desktop tool results, see relay/desktop.py), and at
most ``MAX_UNAUTHED_PER_IP`` upgraded-but-unauthenticated connections per address (IPv6: per /64) and
``MAX_UNAUTHED`` in all may be open at once. An upgrade over either cap gets HTTP 503 with
``Retry-After: 1`` and a text body: 503 rather than 429 because it is a capacity limit, not a verdict
on the address, so clients treat it as a transient failure and retry with backoff instead of waiting
out an authentication block.

After authentication the relay sends a WebSocket ping every ``heartbeat`` seconds; a client whose pong
has not arrived within another ``heartbeat`` is presumed gone (half-open TCP) and closed with
``CLOSE_HEARTBEAT`` (4000, "heartbeat timeout"): an application code distinct from 1001 (the relay
shutting down) and from 4001 (credentials rejected, which makes clients stop), so clients reconnect.

Channels this relay does not serve (``tui``, ``terminal``, ``chat``) are answered on their own channel
(relay/unserved.py) so clients fail at once instead of waiting for a reply that never comes.
"""

from __future__ import annotations

import errno
import logging
import math
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
import trio_websocket

from hermes_relay import __version__
from hermes_relay.core import envelope, fileio, wire
from hermes_relay.core.errors import HermesError, RemoteProtocolError, members
from hermes_relay.relay import api, auth, capacity, desktop, desktop_http, http, identity, peers, unserved
from hermes_relay.relay.api import RATE_LIMIT_BODY
from hermes_relay.relay.pairing import PairingCodes
from hermes_relay.relay.peers import Peer
from hermes_relay.relay.ratelimit import GlobalCap, RateLimiter, rate_key
from hermes_relay.relay.sessions import SaveError, Session, SessionBook

log = logging.getLogger(__name__)

SERVER_VERSION = __version__
AUTH_TIMEOUT = 30.0  # seconds without an auth frame before the relay gives up (reference: 30 s)
HEAD_TIMEOUT = 10.0  # seconds to send a request head; slow-loris clients are dropped
# 64 KiB per WebSocket message. This relay serves only system messages (auth, ping, errors), each a
# few hundred bytes, and until authentication every connection may hold a partial message in memory:
# a 1 MiB limit let a few hundred idle sockets pin hundreds of MiB for the whole auth window.
MAX_MESSAGE = wire.MAX_PREAUTH_MESSAGE
MAX_UNAUTHED_PER_IP = 32  # upgraded, not yet authenticated connections per address (IPv6: per /64)
MAX_UNAUTHED = 1024  # the same, over all addresses
HEARTBEAT = 30.0  # seconds between pings to an authenticated client, and to wait for its pong
AUTH_FAIL_REASON = "Invalid pairing code or session token"
AUTH_TIMEOUT_REASON = "Authentication timeout"
BUSY_PER_IP_BODY = "Too many unauthenticated connections from this address. Authenticate or close some, then retry."
BUSY_BODY = "The relay has too many unauthenticated connections right now. Retry shortly."
CLOSE_AUTH_FAILED = wire.CLOSE_AUTH_FAILED
CLOSE_POLICY = 1008
CLOSE_GOING_AWAY = wire.CLOSE_GOING_AWAY
CLOSE_TRY_AGAIN_LATER = wire.CLOSE_TRY_AGAIN_LATER
CLOSE_INTERNAL_ERROR = 1011  # the relay could not save the new session: retry later, nothing was lost
# What a client that goes away or misbehaves on the wire can cause: routine, not worth a traceback.
_PEER_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError, trio.TooSlowError,
              trio_websocket.ConnectionClosed)
CLOSE_HEARTBEAT = 4000  # no pong within the heartbeat: the client is presumed gone; it may reconnect
CLOSE_GRACE = 2.0  # seconds to wait for a client's close reply
SHUTDOWN_CLOSE_GRACE = 0.05  # on shutdown: send the close frame, do not wait for the reply
SHUTDOWN_ANSWER_GRACE = 1.0  # on shutdown: seconds to answer a desktop call still in flight
# Reference relay: 5 bad tokens in 60 s block for 5 min; 10 bad codes in 60 s block for 2 min.
SESSION_FAIL_LIMIT, SESSION_FAIL_WINDOW, SESSION_BLOCK = 5, 60.0, 300.0
PAIRING_FAIL_LIMIT, PAIRING_FAIL_WINDOW, PAIRING_BLOCK = 10, 60.0, 120.0
# Failed bearer checks on the HTTP API: a gentler bucket of its own, never the WebSocket limiter's.
HTTP_FAIL_LIMIT, HTTP_FAIL_WINDOW, HTTP_BLOCK = 20, 60.0, 60.0
# Failed pairing codes over ALL addresses: 60 a minute makes guessing a 6-character code take centuries.
CODE_FAILS_PER_MINUTE = 60
EXPIRY_SWEEP = 60.0  # seconds between expired-session sweeps
# /relay/ws: where the reference desktop CLI connects on a pinned-TLS (plugin_proxy) route. It also sends
# X-Hermes-Relay-Session (its session token) on that upgrade and on /relay/health: the reference's TLS
# proxy drops that header, and so does this relay (only the first frame authenticates; never logged).
WS_PATHS = ("/", "/ws", "/relay/ws")
DESKTOP_SURFACE = "desktop"  # the client_surface a session must be paired with to serve desktop tools


@dataclass(frozen=True)
class RelayConfig:
    host: str = "127.0.0.1"
    port: int = 8767
    state_dir: Path | None = None  # None: sessions live in memory only
    ssl_context: ssl.SSLContext | None = None
    cert_pin: str | None = None
    cert_der: str | None = None  # the leaf certificate, base64 DER: invites carry it for pinned-TLS clients
    auth_timeout: float = AUTH_TIMEOUT
    head_timeout: float = HEAD_TIMEOUT
    max_message: int = MAX_MESSAGE
    max_unauthed_per_ip: int = MAX_UNAUTHED_PER_IP
    max_unauthed: int = MAX_UNAUTHED
    max_pending: int = capacity.MAX_PENDING  # connections whose request head has not arrived yet
    max_pending_per_ip: int = capacity.MAX_PENDING_PER_IP
    heartbeat: float = HEARTBEAT  # 0 disables the relay's pings
    max_message_authed: int = wire.MAX_WS_MESSAGE  # after auth: desktop tool results are up to 4 MiB
    desktop_timeout: float | None = None  # None: each desktop tool's class timeout (30/180/300 s)
    wall_clock: Callable[[], float] = field(default=time.time)
    close_on_revoke: bool = True  # False keeps revoked sockets open, as the reference relay does (tests)
    trusted_proxies: tuple[Any, ...] = ()  # peers.parse_trusted(--trusted-proxy ...)
    save_fault: Callable[[], bool] | None = None  # test-only: True makes sessions.json writes fail

    @property
    def scheme(self) -> str:
        return "wss" if self.ssl_context else "ws"


@dataclass(frozen=True)
class RelayInfo:
    """What ``nursery.start(serve_relay, cfg)`` returns."""

    host: str
    port: int
    scheme: str
    cert_pin: str | None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


class _UnauthedSlot:
    """One counted unauthenticated connection; ``release`` (idempotent) gives the place back."""

    def __init__(self, relay: Relay, key: str):
        self._relay: Relay | None = relay
        self._key = key

    def release(self) -> None:
        relay, self._relay = self._relay, None
        if relay is None:
            return
        relay.unauthed -= 1
        left = relay.unauthed_by_key.get(self._key, 0) - 1
        if left > 0:
            relay.unauthed_by_key[self._key] = left
        else:
            relay.unauthed_by_key.pop(self._key, None)


class Relay:
    """The relay's state and request handlers, independent of how connections arrive."""

    def __init__(self, config: RelayConfig):
        self.config = config
        clock = config.wall_clock
        self.codes = PairingCodes(clock)
        sessions_path = config.state_dir / "sessions.json" if config.state_dir else None
        self.book = SessionBook(sessions_path, clock, fault=config.save_fault)
        self.pair_limiter = RateLimiter(limit=PAIRING_FAIL_LIMIT, window=PAIRING_FAIL_WINDOW, block=PAIRING_BLOCK)
        self.token_limiter = RateLimiter(limit=SESSION_FAIL_LIMIT, window=SESSION_FAIL_WINDOW, block=SESSION_BLOCK)
        self.http_limiter = RateLimiter(limit=HTTP_FAIL_LIMIT, window=HTTP_FAIL_WINDOW, block=HTTP_BLOCK)
        self.code_cap = GlobalCap(limit=CODE_FAILS_PER_MINUTE, window=60.0)
        self.server_version = SERVER_VERSION
        self.relay_id = identity.relay_id(config.state_dir)  # stable across restarts (relay/identity.py)
        self.port = config.port  # the bound port once listening
        self.live: dict[str, set[trio_websocket.WebSocketConnection]] = {}
        nofile = capacity.fd_limit()
        self.pending = capacity.Gate(capacity.phase_cap(config.max_pending, nofile), config.max_pending_per_ip)
        self.max_unauthed = capacity.phase_cap(config.max_unauthed, nofile)
        self.unauthed = 0  # upgraded connections that have not finished authenticating
        self.unauthed_by_key: dict[str, int] = {}  # the same per rate_key(ip)
        self.desktop = desktop.DesktopRouter(config.wall_clock, config.desktop_timeout)
        self.started = time.monotonic()

    def now(self) -> float:
        return self.config.wall_clock()

    def blocked_for(self, ip: str) -> float:
        now = self.now()
        return max(self.pair_limiter.blocked_for(ip, now), self.token_limiter.blocked_for(ip, now))

    # -- connections ---------------------------------------------------------------------------
    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        ip = _peer_ip(stream)
        try:
            await self._handle_stream(stream, ip)
        except Exception as exc:  # supervision point: one broken connection never stops the relay
            if not all(isinstance(e, _PEER_GONE) for e in members(exc)):
                log.exception("connection_crashed peer=%s", ip)
        finally:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(1):
                    await stream.aclose()

    async def _handle_stream(self, stream: trio.abc.Stream, ip: str) -> None:
        key = rate_key(ip)
        if not self.pending.enter(key, per_key=not peers.in_networks(ip, self.config.trusted_proxies)):
            log.warning("connection_refused_busy peer=%s pending=%d", ip, self.pending.count)
            with trio.move_on_after(SHUTDOWN_CLOSE_GRACE):
                await http.send_response(stream, 503, BUSY_BODY.encode(), b"text/plain; charset=utf-8",
                                         extra_headers=[(b"retry-after", b"1")])
            return
        try:
            req, body, upgrade, peer = await self._read_request(stream, ip)
        finally:
            self.pending.leave(key)
        if req is None or peer is None:
            return
        if upgrade:
            await self._upgrade(stream, req, peer.addr)
            return
        if desktop_http.is_desktop_path(req.path):
            try:
                status, obj = await desktop_http.handle(self.desktop, req, body, loopback=peer.loopback)
            except trio.Cancelled:  # only a shutdown cancels a request: the caller still gets its answer
                with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_ANSWER_GRACE):
                    await http.send_json(stream, 502, {"ok": False, "error": desktop.SHUTTING_DOWN}, req.conn)
                raise
        else:
            status, obj = self.route_http(req, body, peer)
        await http.send_json(stream, status, obj, req.conn)

    async def _read_request(self, stream: trio.abc.Stream,
                            ip: str) -> tuple[http.HttpRequest | None, bytes, bool, Peer | None]:
        """The request head, its sender, and a small body; None once any error was answered."""
        # head_timeout bounds reading the request only: an upgraded WebSocket lives on past it.
        try:
            with trio.fail_after(self.config.head_timeout):
                req = await http.read_request_head(stream)
                if req is None:
                    return None, b"", False, None
                peer = peers.resolve(ip, req.headers, self.config.trusted_proxies)
                upgrade = req.is_websocket_upgrade()
                body = b""
                if not upgrade and req.method in ("POST", "PATCH", "PUT", "DELETE"):
                    body = await http.read_body(stream, req, desktop_http.body_limit(req, loopback=peer.loopback),
                                                refuse_from_head=not peer.loopback)
        except http.BadRequest as exc:
            with trio.move_on_after(1):
                await http.send_json(stream, exc.status, {"ok": False, "error": exc.message})
            return None, b"", False, None
        except trio.TooSlowError:
            with trio.move_on_after(1):
                await http.send_json(stream, 408, {"ok": False, "error": "request head not received in time"})
            return None, b"", False, None
        return req, body, upgrade, peer

    async def _upgrade(self, stream: trio.abc.Stream, req: http.HttpRequest, ip: str) -> None:
        if req.path not in WS_PATHS:
            await http.send_json(stream, 404, {"ok": False, "error": f"no WebSocket endpoint at {req.path}; use / or /ws"})
            return
        blocked = self.blocked_for(ip)
        if blocked > 0:
            log.info("upgrade_rate_limited peer=%s seconds_left=%d", ip, blocked)
            await http.send_response(stream, 429, RATE_LIMIT_BODY.encode(), b"text/plain; charset=utf-8",
                                     extra_headers=[(b"retry-after", str(math.ceil(blocked)).encode())])
            return
        slot = self._take_unauthed_slot(ip)
        if isinstance(slot, str):
            log.warning("upgrade_refused_busy peer=%s unauthenticated=%d", ip, self.unauthed)
            await http.send_response(stream, 503, slot.encode(), b"text/plain; charset=utf-8",
                                     extra_headers=[(b"retry-after", b"1")])
            return
        try:
            replay = http.ReplayStream(req.raw, stream)
            async with trio.open_nursery() as nursery:
                ws = None
                # A request trio-websocket refuses (no Sec-WebSocket-Key, wrong version) gets its 400
                # and then nothing more: bound the wait so the slot is always given back.
                with trio.move_on_after(self.config.head_timeout):
                    try:
                        request = await trio_websocket.wrap_server_stream(
                            nursery, replay, max_message_size=self.config.max_message)
                        ws = await request.accept()
                    except trio_websocket.ConnectionClosed:  # the client left mid-handshake
                        pass
                if ws is None:
                    nursery.cancel_scope.cancel()
                    return
                await self._ws_session_then_close(ws, ip, slot, nursery)
        finally:
            slot.release()

    def _take_unauthed_slot(self, ip: str) -> _UnauthedSlot | str:
        """Count one more unauthenticated connection, or the 503 body when a cap is reached."""
        key = rate_key(ip)
        if self.unauthed_by_key.get(key, 0) >= self.config.max_unauthed_per_ip:
            return BUSY_PER_IP_BODY
        if self.unauthed >= self.max_unauthed:
            return BUSY_BODY
        self.unauthed += 1
        self.unauthed_by_key[key] = self.unauthed_by_key.get(key, 0) + 1
        return _UnauthedSlot(self, key)

    async def _ws_session_then_close(self, ws: trio_websocket.WebSocketConnection, ip: str,
                                     slot: _UnauthedSlot | None = None, nursery: trio.Nursery | None = None) -> None:
        try:
            await self.ws_session(ws, ip, slot, nursery)
        except trio_websocket.ConnectionClosed:
            pass
        except trio.Cancelled:
            # Shutting down: say "going away" but do not wait for the reply, which the cancelled
            # reader task can no longer receive (waiting stalled every restart by CLOSE_GRACE).
            with trio.CancelScope(shield=True):
                with trio.move_on_after(SHUTDOWN_CLOSE_GRACE):
                    await ws.aclose(CLOSE_GOING_AWAY, "relay shutting down")
            raise
        finally:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(CLOSE_GRACE):
                    await ws.aclose()

    async def _send(self, ws: trio_websocket.WebSocketConnection, channel: str, typ: str, payload: dict[str, Any],
                    msg_id: str | None = None) -> None:
        env = envelope.Envelope(channel, typ, payload) if msg_id is None else envelope.Envelope(channel, typ, payload, msg_id)
        await ws.send_message(env.encode())

    async def _fail(self, ws: trio_websocket.WebSocketConnection, reason: str, code: int = CLOSE_AUTH_FAILED) -> None:
        await self._send(ws, envelope.SYSTEM, envelope.AUTH_FAIL, {"reason": reason})
        await ws.aclose(code, reason[:120])

    async def ws_session(self, ws: trio_websocket.WebSocketConnection, ip: str, slot: _UnauthedSlot | None = None,
                         nursery: trio.Nursery | None = None) -> None:
        """Authenticate, then serve. ``slot`` is released once authentication is decided; ``nursery``
        (the connection's own) runs the heartbeat, which is skipped without one."""
        first: str | bytes | None = None
        with trio.move_on_after(self.config.auth_timeout):
            first = await ws.get_message()
        if slot is not None:
            slot.release()
        if first is None:
            await self._fail(ws, AUTH_TIMEOUT_REASON, CLOSE_POLICY)
            return
        try:
            env = envelope.decode(first, max_size=self.config.max_message)
        except RemoteProtocolError as exc:
            await self._fail(ws, f"Malformed auth frame: {exc}", CLOSE_POLICY)
            return
        if env.channel != envelope.SYSTEM or env.type != envelope.AUTH:
            await self._fail(ws, "First message must be system/auth", CLOSE_POLICY)
            return
        if self.blocked_for(ip) > 0:
            # Opened before the block started: no more tries, nothing counted or consumed. The
            # reason and close code say "wait", so a client does not take it for a revoked token.
            log.info("auth_refused_rate_limited peer=%s", ip)
            await self._fail(ws, RATE_LIMIT_BODY, CLOSE_TRY_AGAIN_LATER)
            return
        p = env.payload
        if p.get("pairing_code") and not (p.get("session_token") or p.get("refresh_token")) \
                and self.code_cap.exceeded(self.now()) > 0:
            log.warning("auth_refused_code_cap peer=%s", ip)
            await self._fail(ws, RATE_LIMIT_BODY, CLOSE_TRY_AGAIN_LATER)
            return
        try:
            outcome = self.authenticate(env.payload, ip)
        except SaveError as exc:
            log.error("sessions_save_failed during=auth peer=%s error=%s", ip, exc.message)
            # No auth.fail: clients take that for rejected credentials. A close with 1011 reads as a
            # transient failure, and nothing was spent or changed.
            await ws.aclose(CLOSE_INTERNAL_ERROR, "relay could not save the session; try again later")
            return
        if outcome is None:
            await self._fail(ws, AUTH_FAIL_REASON)
            return
        sess, reply = outcome
        # Register the socket in `live` before the first await: a DELETE /sessions landing while
        # auth.ok is on its way must find it and close it (authenticate above is synchronous).
        key = sess.token_hash
        self.live.setdefault(key, set()).add(ws)
        # Who this socket is comes from its session (what it was paired as), never from this frame.
        self.desktop.authed(ws, device_id=sess.device_id, name=sess.device_name, hostname=sess.device_hostname or "",
                            session_key=sess.token_hash, desktop=sess.client_surface == DESKTOP_SURFACE)
        # trio-websocket has no public setter; the small pre-auth cap only guards unauthenticated memory.
        ws._max_message_size = self.config.max_message_authed
        try:
            await self._send(ws, envelope.SYSTEM, envelope.AUTH_OK, reply, env.id or None)
            log.info("auth_ok device=%s prefix=%s peer=%s", sess.device_name, sess.token_prefix, ip)
            await self._serve_authed(ws, sess, nursery)
        finally:
            self._unregister(key, ws)
            self.desktop.detach(ws)

    def _unregister(self, key: str, ws: trio_websocket.WebSocketConnection) -> None:
        conns = self.live.get(key)
        if conns is not None:
            conns.discard(ws)
            if not conns:
                self.live.pop(key, None)

    async def _serve_authed(self, ws: trio_websocket.WebSocketConnection, sess: Session,
                            nursery: trio.Nursery | None = None) -> None:
        serving = trio.CancelScope()
        heartbeat = trio.CancelScope()
        if nursery is not None and self.config.heartbeat > 0:
            nursery.start_soon(self._heartbeat, ws, heartbeat, serving)
        try:
            with serving:
                while True:
                    remaining = sess.expires_at - self.now() if sess.expires_at is not None else float("inf")
                    if remaining <= 0:
                        await ws.aclose(CLOSE_AUTH_FAILED, "session expired")
                        return
                    # Re-read the expiry at least once per sweep interval: PATCH /sessions may have moved it.
                    with trio.move_on_after(min(remaining, EXPIRY_SWEEP)):
                        message = await ws.get_message()
                        await self._on_message(ws, sess, message)
        finally:
            heartbeat.cancel()
        if serving.cancelled_caught:  # the heartbeat gave up on this client
            log.info("heartbeat_timeout prefix=%s", sess.token_prefix)
            self._unregister(sess.token_hash, ws)  # gone from /health before the client sees the close
            # The peer is not answering, so do not wait long for its half of the close handshake.
            with trio.move_on_after(min(CLOSE_GRACE, self.config.heartbeat)):
                await ws.aclose(CLOSE_HEARTBEAT, "heartbeat timeout")

    async def _heartbeat(self, ws: trio_websocket.WebSocketConnection, scope: trio.CancelScope,
                         on_timeout: trio.CancelScope) -> None:
        """Ping every ``heartbeat`` s; no pong within another ``heartbeat`` cancels ``on_timeout``.

        Runs in the connection's nursery, so it never raises: a closed socket just ends it.
        """
        interval = self.config.heartbeat
        with scope:
            try:
                while True:
                    await trio.sleep(interval)
                    with trio.move_on_after(interval) as wait:
                        await ws.ping()
                    if wait.cancelled_caught:
                        on_timeout.cancel()
                        return
            except trio_websocket.ConnectionClosed:
                return
            except Exception:  # supervision point: a heartbeat failure must not crash the connection
                log.exception("heartbeat_crashed")
                on_timeout.cancel()

    async def _on_message(self, ws: trio_websocket.WebSocketConnection, sess: Session, message: str | bytes) -> None:
        try:
            env = envelope.decode(message, max_size=self.config.max_message_authed)
        except (RemoteProtocolError, ValueError) as exc:  # ValueError: e.g. an integer of 5000 digits
            await self._send(ws, envelope.SYSTEM, "error", {"reason": f"malformed message: {str(exc)[:200]}"})
            return
        if env.channel == desktop.CHANNEL:
            self.book.touch(sess)
            self.desktop.on_envelope(ws, env)
            return
        if env.channel == envelope.SYSTEM and env.type == "ping":
            self.book.touch(sess)
            ts = env.payload.get("ts")
            await self._send(ws, envelope.SYSTEM, "pong", {"ts": self.now() if ts is None else ts}, env.id or None)
            return
        if env.channel == envelope.SYSTEM and env.type == envelope.AUTH:
            await self._send(ws, envelope.SYSTEM, "error", {"reason": "already authenticated"}, env.id or None)
            return
        answers = unserved.replies(env, SERVER_VERSION)
        for answer in answers:
            await ws.send_message(answer.encode())
        if not answers and env.channel not in unserved.CHANNELS:
            await self._send(
                ws, envelope.SYSTEM, "error",
                {"reason": f"channel {env.channel!r} is not served by this relay", "channel": env.channel,
                 "message": f"Unknown channel: {env.channel}"}, env.id or None,
            )

    # -- authentication (relay/auth.py) --------------------------------------------------------
    def authenticate(self, payload: dict[str, Any], ip: str) -> tuple[Session, dict[str, Any]] | None:
        """Decide an auth frame (auth.authenticate), then close the sockets whose token it retired."""
        result = auth.authenticate(self, payload, ip)
        if result is None:
            return None
        for key, reason in result.retired:
            self._close_live(key, reason)
        return result.session, result.reply

    def _close_live(self, key: str, reason: str) -> None:
        for ws in list(self.live.pop(key, ())):
            _spawn_close(ws, reason)

    # -- HTTP API (relay/api.py) -------------------------------------------------------------
    def route_http(self, req: http.HttpRequest, body: bytes, peer: Peer) -> tuple[int, dict[str, Any]]:
        return api.route(self, req, body, peer)

    def session_revoked(self, sess: Session) -> None:
        """A revoked session's sockets are closed at once, unless configured to keep them as the reference does;
        kept or not, they serve no desktop tools from now on."""
        for ws in self.live.get(sess.token_hash, ()):
            self.desktop.detach(ws)
        if self.config.close_on_revoke:
            self._close_live(sess.token_hash, "session revoked")


def _spawn_close(ws: trio_websocket.WebSocketConnection, reason: str) -> None:
    """Close a live socket from synchronous code: the close runs in the system nursery."""

    async def close() -> None:
        with trio.move_on_after(2):
            try:
                await ws.aclose(CLOSE_AUTH_FAILED, reason)
            except Exception:  # the socket may already be gone; nothing else to do
                pass

    trio.lowlevel.spawn_system_task(close)


def _peer_ip(stream: trio.abc.Stream) -> str:
    s = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    sock = getattr(s, "socket", None)
    try:
        return str(sock.getpeername()[0]) if sock is not None else "unknown"
    except OSError:
        return "unknown"


async def _sweep(relay: Relay) -> None:
    """Once a minute: drop expired sessions and write what ``touch`` changed in memory."""
    while True:
        await trio.sleep(EXPIRY_SWEEP)
        try:
            removed = relay.book.purge_expired()
            if removed:
                log.info("sessions_expired count=%d", removed)
            relay.book.flush()
        except (OSError, HermesError) as exc:  # a full disk must not stop the relay; retried next sweep
            log.warning("sessions_save_failed error=%s", exc)


def _final_flush(relay: Relay) -> None:
    try:
        relay.book.flush()
    except (OSError, HermesError) as exc:
        log.warning("sessions_save_failed error=%s", exc)


async def serve_relay(
    config: RelayConfig, *, task_status: trio.TaskStatus[RelayInfo] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the relay until cancelled. ``task_status.started`` receives a RelayInfo with the bound port."""
    lock = _lock_state_dir(config.state_dir) if config.state_dir is not None else None
    try:
        await _serve(config, task_status)
    finally:
        if lock is not None:
            lock.release()


def _lock_state_dir(state_dir: Path) -> fileio.FileLock:
    """An exclusive lock on the state directory: a second relay on it would overwrite the first's sessions."""
    lock = fileio.FileLock(state_dir / "relay", suffix=".lock")
    try:
        held = lock.acquire(blocking=False)
    except OSError as exc:
        raise HermesError(f"cannot lock the state directory {state_dir}: {exc.strerror or exc}",
                          hint="check its owner and permissions, or pass another --state-dir") from exc
    if not held:
        raise HermesError(f"another relay is already using the state directory {state_dir} (it holds {lock.path})",
                          hint="stop that relay first, or give this one its own --state-dir")
    return lock


async def _serve(config: RelayConfig, task_status: trio.TaskStatus[RelayInfo]) -> None:
    relay = Relay(config)
    try:
        listeners: list[Any] = await trio.open_tcp_listeners(config.port, host=config.host)
    except OSError as exc:
        if exc.errno == errno.EADDRNOTAVAIL:
            raise HermesError(f"cannot listen on {config.host}:{config.port}: {config.host} is not an address of this machine",
                              hint="use --host 0.0.0.0 (every address) or one of this machine's own addresses") from exc
        raise HermesError(
            f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}",
            hint="another relay may already be running there; pick another --port",
        ) from exc
    if config.ssl_context is not None:
        listeners = [trio.SSLListener(lst, config.ssl_context, https_compatible=True) for lst in listeners]
    port = relay.port = _bound_port(listeners[0])
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_sweep, relay)
            await nursery.start(trio.serve_listeners, relay.handle_stream, listeners)
            task_status.started(RelayInfo(config.host, port, config.scheme, config.cert_pin))
    finally:
        _final_flush(relay)  # last_seen and device details touched since the last sweep


def _bound_port(listener: Any) -> int:
    inner: Any = listener.transport_listener if isinstance(listener, trio.SSLListener) else listener
    return int(inner.socket.getsockname()[1])
