"""One connection's trio I/O: the request head, an HTTP answer or a WebSocket upgrade, authentication,
the authenticated session's messages and heartbeat. Every decision is the core's (relay/core.py); this
class reads, writes, waits and closes. relay/server.py listens and hands each connection here.
"""

from __future__ import annotations

import logging
import math
import ssl
import sys
from collections import deque
from typing import Any

import trio
import trio_websocket

from ..core import envelope, wire
from ..core.errors import members
from . import capacity, desktop, desktop_http, gcpolicy, http, peers
from .config import (
    CLOSE_AUTH_FAILED,
    CLOSE_GOING_AWAY,
    CLOSE_GRACE,
    CLOSE_HEARTBEAT,
    DESKTOP_SURFACE,
    EXPIRY_SWEEP,
    SHUTDOWN_ANSWER_GRACE,
    SHUTDOWN_CLOSE_GRACE,
    RelayConfig,
)
from .core import (
    AuthAbort,
    AuthFail,
    CloseSession,
    DetachSession,
    Effect,
    Refusal,
    RelayCore,
    Send,
    ToTerminal,
    UnauthedSlot,
)
from .heartbeat import Heartbeat
from .peers import Peer
from .sessions import Session
from .term_config import TerminalHooks
from .upgrade import server_request

log = logging.getLogger(__name__)

# What a client that goes away or misbehaves on the wire can cause: routine, not worth a traceback.
_PEER_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError, trio.TooSlowError,
              trio_websocket.ConnectionClosed)
_TEXT = b"text/plain; charset=utf-8"
_NO_EVENTS: deque[Any] = deque(maxlen=0)  # wsproto's handshake queue once the upgrade is done: nothing is added
_DONE = trio.Event()  # trio-websocket's events that are set once and never waited for again (_shed_handshake)
_DONE.set()


class Relay:
    """The trio driver: reads connections and messages, asks the core (relay/core.py) what to do, does it."""

    def __init__(self, config: RelayConfig):
        self.config = config
        self.desktop = desktop.DesktopRouter(config.wall_clock, config.desktop_timeout)
        self.core = RelayCore(config, nofile=capacity.fd_limit(), pending_calls=lambda: self.desktop.pending_count)
        self.heartbeat = Heartbeat(config.heartbeat)  # pings nobody until serve_relay runs it
        self.terminal: TerminalHooks | None = None
        if config.terminal is not None and sys.platform != "win32":  # POSIX only: imported only when asked for
            from .terminal import TerminalService

            self.terminal = TerminalService(config.terminal, self.core.session_live, _PEER_GONE,
                                            self.core.now)  # serve_relay runs it

    # -- connections ---------------------------------------------------------------------------
    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        ip = _peer_ip(stream)
        try:
            await self._handle_stream(stream, ip)
        except Exception as exc:  # supervision point: one broken connection never stops the relay
            if not all(isinstance(e, _PEER_GONE) for e in members(exc)):
                log.exception("connection_crashed peer=%s", ip)
        finally:
            if type(stream) is trio.SocketStream:
                stream.socket.close()  # all that its aclose does, but for a checkpoint: no scopes to set up
            else:
                with _shielded(1):
                    await stream.aclose()

    async def _handle_stream(self, stream: trio.abc.Stream, ip: str) -> None:
        key, refused = self.core.admit(ip)
        if refused is not None:
            with trio.move_on_after(SHUTDOWN_CLOSE_GRACE):
                await _refuse(stream, refused)
            return
        try:
            req, body, upgrade, peer = await self._read_request(stream, ip)
        finally:
            self.core.pending.leave(key)
        if req is None or peer is None:
            return
        if upgrade:
            # Nothing of the request outlives the handshake: its parse goes to the WebSocket layer
            # (relay/upgrade.py), the headers are dropped here (an idle socket kept them for its life).
            path, head = req.path, [req.event, req.conn, req.raw]  # emptied by _upgrade
            del req
            await self._upgrade(stream, path, head, peer.addr)
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

    async def _upgrade(self, stream: trio.abc.Stream, path: str, head: list[Any], ip: str) -> None:
        event, parser, raw = head
        head.clear()
        slot = self.core.upgrade(path, ip)
        if isinstance(slot, Refusal):
            await _refuse(stream, slot)
            return
        try:
            async with trio.open_nursery() as nursery:
                ws = None
                # A request trio-websocket refuses (no Sec-WebSocket-Key, wrong version) gets its 400
                # and then nothing more: bound the wait so the slot is always given back.
                with trio.move_on_after(self.config.head_timeout):
                    try:
                        request = await server_request(nursery, stream, event, parser, raw,
                                                       max_message_size=self.config.max_message)
                        del event, parser, raw
                        ws = await request.accept()
                        del request
                        _shed_handshake(ws)
                    except trio_websocket.ConnectionClosed:  # the client left mid-handshake
                        pass
                if ws is None:
                    nursery.cancel_scope.cancel()
                    return
                await self._ws_session_then_close(ws, ip, slot)
        finally:
            slot.release()

    async def _ws_session_then_close(self, ws: trio_websocket.WebSocketConnection, ip: str,
                                     slot: UnauthedSlot | None = None) -> None:
        try:
            await self.ws_session(ws, ip, slot)
        except trio_websocket.ConnectionClosed:
            pass
        except trio.Cancelled:
            # Shutting down: say "going away" but do not wait for the reply, which the cancelled
            # reader task can no longer receive (waiting stalled every restart by CLOSE_GRACE).
            with trio.CancelScope(shield=True):
                if self.terminal is not None:  # first a final ack and `detached`, so no input is in doubt
                    with trio.move_on_after(SHUTDOWN_ANSWER_GRACE):
                        await self.terminal.socket_closing(ws)
                with trio.move_on_after(SHUTDOWN_CLOSE_GRACE):
                    await ws.aclose(CLOSE_GOING_AWAY, "relay shutting down")
            raise
        finally:
            with _shielded(CLOSE_GRACE):
                await ws.aclose()

    async def _send(self, ws: trio_websocket.WebSocketConnection, channel: str, typ: str, payload: dict[str, Any],
                    msg_id: str | None = None) -> None:
        env = envelope.Envelope(channel, typ, payload) if msg_id is None else envelope.Envelope(channel, typ, payload, msg_id)
        await ws.send_message(env.encode())

    async def _fail(self, ws: trio_websocket.WebSocketConnection, reason: str, code: int = CLOSE_AUTH_FAILED) -> None:
        await self._send(ws, envelope.SYSTEM, envelope.AUTH_FAIL, {"reason": reason})
        await ws.aclose(code, reason[:120])

    async def ws_session(self, ws: trio_websocket.WebSocketConnection, ip: str, slot: UnauthedSlot | None = None) -> None:
        """Authenticate, then serve. ``slot`` is released once authentication is decided. The relay's
        heartbeat (relay/heartbeat.py) pings the socket once authenticated, if it is running."""
        first: str | bytes | None = None
        with trio.move_on_after(self.config.auth_timeout):
            first = await ws.get_message()
        if slot is not None:
            slot.release()
        decision = self.core.first_message(first, ip)
        if isinstance(decision, AuthFail):
            await self._fail(ws, decision.reason, decision.code)
            return
        if isinstance(decision, AuthAbort):
            await ws.aclose(decision.code, decision.reason)
            return
        self._apply(decision.effects)
        sess, reply, reply_id = decision.session, decision.reply, decision.msg_id
        del first, decision  # the auth frame is not kept for the socket's life
        # Register the socket in `live` before the first await: a DELETE /sessions landing while
        # auth.ok is on its way must find it and close it (the decision above is synchronous).
        key = sess.token_hash
        self.core.attach(key, ws)
        # Who this socket is comes from its session (what it was paired as), never from this frame.
        self.desktop.authed(ws, device_id=sess.device_id, name=sess.device_name, hostname=sess.device_hostname or "",
                            session_key=sess.token_hash, desktop=sess.client_surface == DESKTOP_SURFACE)
        # trio-websocket has no public setters; the small pre-auth cap and 4 KiB reads only guard
        # unauthenticated memory, an authenticated socket reads big results in 64 KiB pieces.
        ws._max_message_size = self.config.max_message_authed
        ws._receive_buffer_size = wire.WS_RECEIVE_BYTES
        epoch = gcpolicy.opened()  # the collector policy freezes long-lived connections (relay/gcpolicy.py)
        try:
            await self._send(ws, envelope.SYSTEM, envelope.AUTH_OK, reply, reply_id)
            del reply
            log.info("auth_ok device=%s prefix=%s peer=%s", sess.device_name, sess.token_prefix, ip)
            await self._serve_authed(ws, sess)
        finally:
            self.core.detach(key, ws)
            self.desktop.detach(ws)
            if self.terminal is not None:
                self.terminal.socket_gone(ws)
            gcpolicy.ended(epoch)

    async def _serve_authed(self, ws: trio_websocket.WebSocketConnection, sess: Session) -> None:
        beat = self.heartbeat.add(ws, lambda: self.core.expires_in(sess))
        # PATCH /sessions may move the expiry: it is re-read at least once per sweep interval, by the relay's
        # heartbeat when it beats that often (an idle connection then has no timer of its own). A heartbeat
        # timeout cancels the current wait (one scope per connection, not a serving scope around it too).
        reread = math.inf if beat is not None and self.heartbeat.interval <= EXPIRY_SWEEP else EXPIRY_SWEEP
        try:
            while beat is None or not beat.timed_out:
                remaining = self.core.expires_in(sess)
                if remaining <= 0:
                    await ws.aclose(CLOSE_AUTH_FAILED, "session expired")
                    return
                with trio.move_on_after(min(remaining, reread)) as wait:
                    if beat is not None:
                        beat.wait = wait
                    message = await ws.get_message()
                    await self._on_message(ws, sess, message)
        finally:
            if beat is not None:
                beat.stop()
        if beat is not None and beat.timed_out:  # the heartbeat gave up on this client
            log.info("heartbeat_timeout prefix=%s", sess.token_prefix)
            self.core.detach(sess.token_hash, ws)  # gone from /health before the client sees the close
            # The peer is not answering, so do not wait long for its half of the close handshake.
            with trio.move_on_after(min(CLOSE_GRACE, self.config.heartbeat)):
                await ws.aclose(CLOSE_HEARTBEAT, "heartbeat timeout")

    async def _on_message(self, ws: trio_websocket.WebSocketConnection, sess: Session, message: str | bytes) -> None:
        for effect in self.core.message(sess, message):
            if isinstance(effect, Send):
                await ws.send_message(effect.env.encode())
            elif isinstance(effect, ToTerminal):
                if self.terminal is not None:
                    await self.terminal.on_envelope(ws, sess, effect.env)
            else:
                self.desktop.on_envelope(ws, effect.env)

    def route_http(self, req: http.HttpRequest, body: bytes, peer: Peer) -> tuple[int, dict[str, Any]]:
        """One HTTP API request: the core's reply, after what it decided about live sockets was done."""
        reply = self.core.http(req, body, peer)
        self._apply(reply.effects)
        return reply.status, reply.body

    def _apply(self, effects: tuple[Effect, ...]) -> None:
        """Carry out what the core decided about live sockets (from synchronous code: closes run later)."""
        for effect in effects:
            if isinstance(effect, DetachSession):
                for ws in self.core.live.get(effect.key, ()):
                    self.desktop.detach(ws)
            elif isinstance(effect, CloseSession):
                self._close_live(effect.key, effect.reason)
        if effects and self.terminal is not None:
            self.terminal.check_sessions()  # a revoked or replaced session's shells close

    def _close_live(self, key: str, reason: str) -> None:
        for ws in self.core.take_live(key):
            _spawn_close(ws, reason, self.terminal.goodbye(ws, "revoked") if self.terminal is not None else [])


async def _refuse(stream: trio.abc.Stream, refusal: Refusal) -> None:
    if refusal.json:
        await http.send_json(stream, refusal.status, {"ok": False, "error": refusal.text})
        return
    extra = [(b"retry-after", str(refusal.retry_after).encode())] if refusal.retry_after is not None else []
    await http.send_response(stream, refusal.status, refusal.text.encode(), _TEXT, extra_headers=extra)


def _shed_handshake(ws: trio_websocket.WebSocketConnection) -> None:
    """Drop what only the upgrade used, once it is done: an idle socket kept it for its whole life
    (wsproto's HTTP parser and its buffers, the request it answered, an empty event queue; the
    open-handshake event trio-websocket sets once and a test-only one, swapped for one shared set
    event). Attributes a later version lacks are left alone."""
    handshake = getattr(getattr(ws, "_wsproto", None), "handshake", None)
    if getattr(handshake, "connection", None) is not None and hasattr(handshake, "_h11_connection"):
        handshake._h11_connection = None  # type: ignore[union-attr]
        if getattr(handshake, "_initiating_request", None) is not None:
            handshake._initiating_request = None  # type: ignore[union-attr]
        if not getattr(handshake, "_events", True):
            handshake._events = _NO_EVENTS  # type: ignore[union-attr]
    opened = getattr(ws, "_open_handshake", None)
    if isinstance(opened, trio.Event) and opened.is_set():
        ws._open_handshake = _DONE
    testing = getattr(ws, "_for_testing_peer_closed_connection", None)
    if isinstance(testing, trio.Event) and not testing.statistics().tasks_waiting:
        ws._for_testing_peer_closed_connection = _DONE  # only set, never waited for, outside its own tests


def _shielded(seconds: float) -> trio.CancelScope:
    """A scope no outer cancellation reaches, that gives up after ``seconds`` (one scope, not two: a
    handshake set up a dozen, a third of its CPU)."""
    return trio.CancelScope(shield=True, deadline=trio.current_time() + seconds)


def _spawn_close(ws: trio_websocket.WebSocketConnection, reason: str, first: list[envelope.Envelope]) -> None:
    """Close a live socket from synchronous code: the close (after the messages ``first``) runs in the system
    nursery."""

    async def close() -> None:
        with trio.move_on_after(2):
            try:
                for env in first:
                    await ws.send_message(env.encode())
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
