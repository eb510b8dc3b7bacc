"""One connection's trio I/O: the request head, an HTTP answer or a WebSocket upgrade, authentication,
the authenticated session's messages and heartbeat. Every decision is the core's (relay/core.py); this
class reads, writes, waits and closes. relay/server.py listens and hands each connection here.
"""

from __future__ import annotations

import logging
import math
import ssl
import sys
from typing import Any

import trio

from ..core import envelope, wire
from ..core.errors import members
from . import capacity, desktop, desktop_http, gcpolicy, http, peers, rawenv
from . import upgrade as ws_upgrade
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
from .heartbeat import Beat, Heartbeat
from .idleread import IdleReader
from .peers import Peer
from .sessions import Session
from .term_config import TerminalHooks
from .ws import ConnectionClosed, ServerSocket

log = logging.getLogger(__name__)

# What a client that goes away or misbehaves on the wire can cause: routine, not worth a traceback.
_PEER_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError, trio.TooSlowError,
              ConnectionClosed)
_TEXT = b"text/plain; charset=utf-8"


class Relay:
    """The trio driver: reads connections and messages, asks the core (relay/core.py) what to do, does it."""

    def __init__(self, config: RelayConfig):
        self.config = config
        self.desktop = desktop.DesktopRouter(config.wall_clock, config.desktop_timeout)
        self.idle = IdleReader.create()  # reads quiet connections' pongs (relay/idleread.py), once serve_relay runs it
        idle = self.idle
        self.core = RelayCore(config, nofile=capacity.fd_limit(), pending_calls=lambda: self.desktop.pending_count,
                              idle_reads=idle.stats if idle is not None else lambda: None)
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
            # Nothing of the request outlives the handshake (an idle socket would keep it for its life).
            path, answer = req.path, ws_upgrade.answer(req)
            del req
            await self._upgrade(stream, path, answer, peer.addr)
            return
        if desktop_http.is_desktop_path(req.path):
            try:
                status, obj = await desktop_http.handle(self.desktop, req, body, loopback=peer.loopback)
            except trio.Cancelled:  # only a shutdown cancels a request: the caller still gets its answer
                with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_ANSWER_GRACE):
                    await http.send_json(stream, 502, {"ok": False, "error": desktop.SHUTTING_DOWN})
                raise
        else:
            status, obj = self.route_http(req, body, peer)
        await http.send_json(stream, status, obj)

    async def _read_request(self, stream: trio.abc.Stream,
                            ip: str) -> tuple[http.HttpRequest | None, bytes, bool, Peer | None]:
        """The request head, its sender, and a small body; None once any error was answered."""
        # head_timeout bounds reading the request only: an upgraded WebSocket lives on past it. (A scope
        # of our own: trio.fail_after is a generator-based context manager, ~10 us a request.)
        try:
            with trio.CancelScope(deadline=trio.current_time() + self.config.head_timeout):
                req = await http.read_request_head(stream)
                if req is None:
                    return None, b"", False, None
                peer = peers.resolve(ip, req.headers, self.config.trusted_proxies)
                upgrade = req.is_websocket_upgrade()
                body = b""
                if not upgrade and req.method in ("POST", "PATCH", "PUT", "DELETE"):
                    body = await http.read_body(stream, req, desktop_http.body_limit(req, loopback=peer.loopback),
                                                refuse_from_head=not peer.loopback)
                return req, body, upgrade, peer
        except http.BadRequest as exc:
            status, error = exc.status, exc.message
        else:  # the scope caught its own cancellation: the deadline passed
            status, error = 408, "request head not received in time"
        with trio.move_on_after(1):
            await http.send_json(stream, status, {"ok": False, "error": error})
        return None, b"", False, None

    async def _upgrade(self, stream: trio.abc.Stream, path: str, answer: ws_upgrade.Accepted | ws_upgrade.Rejected,
                       ip: str) -> None:
        slot = self.core.upgrade(path, ip)
        if isinstance(slot, Refusal):
            await _refuse(stream, slot)
            return
        try:
            if isinstance(answer, ws_upgrade.Rejected):
                with trio.move_on_after(SHUTDOWN_CLOSE_GRACE):
                    await http.send_response(stream, answer.status, answer.text.encode(), _TEXT,
                                             extra_headers=list(answer.headers))
                return
            ws = ServerSocket(stream, max_message=self.config.max_message, trailing=answer.trailing)
            if ws.write_now(answer.reply) != len(answer.reply):  # a fresh plain socket takes it at once
                with trio.move_on_after(self.config.head_timeout) as sending:  # TLS: the first write handshakes
                    await stream.send_all(answer.reply)
                if sending.cancelled_caught:
                    return
            del answer
            await self._ws_session_then_close(ws, ip, slot)
        finally:
            slot.release()

    async def _ws_session_then_close(self, ws: ServerSocket, ip: str, slot: UnauthedSlot | None = None) -> None:
        try:
            await self.ws_session(ws, ip, slot)
        except ConnectionClosed:
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
            try:
                if ws.unclosed:  # nobody began the closing handshake (a close already begun had its grace)
                    with _shielded(CLOSE_GRACE):
                        await ws.aclose()
            finally:
                ws.dispose()

    async def _send(self, ws: ServerSocket, channel: str, typ: str, payload: dict[str, Any],
                    msg_id: str | None = None) -> None:
        env = envelope.Envelope(channel, typ, payload) if msg_id is None else envelope.Envelope(channel, typ, payload, msg_id)
        await ws.send_message(rawenv.text(env))

    async def _fail(self, ws: ServerSocket, reason: str, code: int = CLOSE_AUTH_FAILED) -> None:
        await self._send(ws, envelope.SYSTEM, envelope.AUTH_FAIL, {"reason": reason})
        await ws.aclose(code, reason[:120])

    async def ws_session(self, ws: ServerSocket, ip: str, slot: UnauthedSlot | None = None) -> None:
        """Authenticate, then serve. ``slot`` is released once authentication is decided. The relay's
        heartbeat (relay/heartbeat.py) pings the socket once authenticated, if it is running."""
        # One scope for the wait for the auth frame and then for the first wait for messages (a scope
        # costs ~10 us, and a handshake set up one for each); a connection that lives on makes one more
        # whenever a wait of its ends (relay/conn.py _serve_authed).
        wait = trio.CancelScope(deadline=trio.current_time() + self.config.auth_timeout)
        authed: _Authed | None = None
        try:
            with wait:
                first = await ws.get_message()
                wait.deadline = math.inf
                authed = await self._authenticate(ws, ip, slot, first)
                del first  # the auth frame is not kept for the socket's life
                if authed is not None:
                    await self._wait_round(ws, authed, wait)
            if authed is None:
                if wait.cancelled_caught:  # no auth frame in time
                    await self._authenticate(ws, ip, slot, None)
                return
            await self._serve_authed(ws, authed)
        finally:
            if authed is not None:
                self._ended(ws, authed)

    async def _authenticate(self, ws: ServerSocket, ip: str, slot: UnauthedSlot | None,
                            first: str | bytes | None) -> _Authed | None:
        """The core's verdict on the first message (None: it did not come in time), answered: the
        authenticated connection, or None once refused."""
        if slot is not None:
            slot.release()
        decision = self.core.first_message(first, ip)
        if isinstance(decision, AuthFail):
            await self._fail(ws, decision.reason, decision.code)
            return None
        if isinstance(decision, AuthAbort):
            await ws.aclose(decision.code, decision.reason)
            return None
        self._apply(decision.effects)
        sess, reply, reply_id = decision.session, decision.reply, decision.msg_id
        del decision
        # Register the socket in `live` before the first await: a DELETE /sessions landing while
        # auth.ok is on its way must find it and close it (the decision above is synchronous).
        self.core.attach(sess.token_hash, ws)
        # Who this socket is comes from its session (what it was paired as), never from this frame.
        self.desktop.authed(ws, device_id=sess.device_id, name=sess.device_name, hostname=sess.device_hostname or "",
                            session_key=sess.token_hash, desktop=sess.client_surface == DESKTOP_SURFACE)
        # The small pre-auth cap and 4 KiB reads only guard unauthenticated memory; an authenticated
        # socket reads big results in bigger pieces.
        ws.authenticated(self.config.max_message_authed, wire.WS_RECEIVE_BYTES, self.idle)
        authed = _Authed(sess, gcpolicy.opened())  # the collector policy freezes long-lived connections
        try:
            await self._send(ws, envelope.SYSTEM, envelope.AUTH_OK, reply, reply_id)
        except BaseException:
            self._ended(ws, authed)
            raise
        log.info("auth_ok device=%s prefix=%s peer=%s", sess.device_name, sess.token_prefix, ip)
        authed.beat = self.heartbeat.add(ws, lambda: self.core.expires_in(sess))
        return authed

    def _ended(self, ws: ServerSocket, authed: _Authed) -> None:
        ws.wait = None
        if authed.beat is not None:
            authed.beat.stop()
        self.core.detach(authed.sess.token_hash, ws)
        self.desktop.detach(ws)
        if self.terminal is not None:
            self.terminal.socket_gone(ws)
        gcpolicy.ended(authed.epoch)

    async def _serve_authed(self, ws: ServerSocket, authed: _Authed) -> None:
        """The waits for messages after the first (``_wait_round``), each in a scope of its own, until the
        socket closes, the session expires or the heartbeat gives up on the client."""
        beat, sess = authed.beat, authed.sess
        while authed.serving:
            with trio.CancelScope() as wait:
                await self._wait_round(ws, authed, wait)
        ws.wait = None
        if beat is not None:
            beat.stop()
        if beat is not None and beat.timed_out:  # the heartbeat gave up on this client
            log.info("heartbeat_timeout prefix=%s", sess.token_prefix)
            self.core.detach(sess.token_hash, ws)  # gone from /health before the client sees the close
            # The peer is not answering, so do not wait long for its half of the close handshake.
            with trio.move_on_after(min(CLOSE_GRACE, self.config.heartbeat)):
                await ws.aclose(CLOSE_HEARTBEAT, "heartbeat timeout")

    async def _wait_round(self, ws: ServerSocket, authed: _Authed, wait: trio.CancelScope) -> None:
        """Serve messages inside ``wait`` (entered by the caller) until it is cancelled or the session's
        expiry moved; ``authed.serving`` turns False when no round is to follow.

        PATCH /sessions may move the expiry: it is re-read at least once per sweep interval, by the relay's
        heartbeat when it beats that often (Beat.bound_wait), which gives the wait a deadline only once
        the expiry is near: an idle connection has no timer of its own. A heartbeat timeout cancels the
        wait, a close from another task shortens it."""
        beat, sess = authed.beat, authed.sess
        if not ws.open or (beat is not None and beat.timed_out):  # not open: closed by another task, or broken
            authed.serving = False
            return
        remaining = self.core.expires_in(sess)
        if remaining <= 0:
            authed.serving = False
            await ws.aclose(CLOSE_AUTH_FAILED, "session expired")
            return
        reread = math.inf if beat is not None and self.heartbeat.interval <= EXPIRY_SWEEP else EXPIRY_SWEEP
        near = self.heartbeat.lookahead if beat is not None else math.inf
        if remaining <= near or reread < math.inf:
            wait.deadline = trio.current_time() + min(remaining, reread)
        ws.wait = wait
        while True:
            message = await ws.get_message()
            await self._on_message(ws, sess, message)
            if self.core.expires_in(sess) <= 0:  # the wall clock moved (a suspend, a PATCH)
                return

    async def _on_message(self, ws: ServerSocket, sess: Session, message: str | bytes) -> None:
        for effect in self.core.message(sess, message):
            if isinstance(effect, Send):
                await ws.send_message(rawenv.text(effect.env))
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


class _Authed:
    """An authenticated connection's session and what was set up for it (undone by Relay._ended)."""

    __slots__ = ("sess", "epoch", "beat", "serving")

    def __init__(self, sess: Session, epoch: int):
        self.sess = sess
        self.epoch = epoch  # relay/gcpolicy.py's
        self.beat: Beat | None = None  # relay/heartbeat.py's, once auth.ok is out (when the relay's heartbeat runs)
        self.serving = True  # another wait for messages is to follow the current one


def _shielded(seconds: float) -> trio.CancelScope:
    """A scope no outer cancellation reaches, that gives up after ``seconds`` (one scope, not two: a
    handshake set up a dozen, a third of its CPU)."""
    return trio.CancelScope(shield=True, deadline=trio.current_time() + seconds)


def _spawn_close(ws: ServerSocket, reason: str, first: list[envelope.Envelope]) -> None:
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
