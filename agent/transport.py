"""Reaching a relay: TCP (+TLS with a pin check), the WebSocket handshake, auth, and HTTP calls.

This is the boundary where library exceptions (OSError, ssl, trio-websocket) become HermesErrors
that say which step failed: refused, unknown host, timed out, TLS, pin mismatch, HTTP status at the
upgrade (429 is RateLimitedError), or credentials rejected. Nothing above this module sees a library
exception type, and only this module (and the relay) imports trio_websocket: a link holds a
``Connection`` (send_text, send_utf8, get_message, ping, aclose) whose failures are ConnectionLostError,
with the relay's close code in ``close_code(exc)``. Its messages go out in frames of our own
(agent/wsframe.py: trio-websocket's cost a 3 MB answer ~5 ms more); pings, pongs and the close are
trio-websocket's, and every write takes the stream's one lock. Coming in, a plain text message is read
off the stream by agent/wstap.py and handed to the link in the reading task's step while the link waits
for one (``Connection.deliver_to``); everything else is trio-websocket's, in order. The dial steps (``resolve``,
``connect_tcp``, ``start_tls``) are public so doctor can time each one.

Certificates are trusted by pin, not by CA: the relay typically runs a self-signed certificate on a
LAN or tailnet. The pin is checked right after the TLS handshake, before a single byte of HTTP (and
so before any token) is sent.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import math
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import h11
import trio
import trio_websocket

from ..core import envelope, wire
from ..core.errors import (
    AmbiguousError,
    AuthRejectedError,
    ConnectionLostError,
    ConnectRefusedError,
    ConnectTimeoutError,
    HandshakeRejectedError,
    HermesError,
    HostNotFoundError,
    HttpStatusError,
    NotFoundError,
    PinMismatchError,
    RateLimitedError,
    RemoteProtocolError,
    TlsError,
    TransportError,
    members,
)
from ..core.pin import pinned_trust_context, spki_pin_from_der
from ..core.routes import Route, host_port
from . import wsframe, wstap

DIAL_TIMEOUT = 4.0  # per candidate: connect + TLS
HANDSHAKE_TIMEOUT = 10.0  # WebSocket upgrade
AUTH_TIMEOUT = 15.0  # first reply to system/auth
HTTP_TIMEOUT = 10.0
MAX_HTTP_BODY = 4 << 20
log = logging.getLogger(__name__)
RATE_LIMIT_DEFAULT_WAIT = 300.0  # the reference relay's longest block, when a 429 does not say
# Our relay refuses auth on a socket opened before its address was blocked with this reason and
# close code 1013; the reference relay blocks at the upgrade (HTTP 429) only.
RATE_LIMIT_REASON_PREFIX = "Too many failed authentication attempts"
SILENT_HOST_HINT = ("nothing answered at all: the host is off or asleep, a firewall drops the packets, or the address "
                    "is not reachable from this network; run `hermes-relay doctor` for step-by-step checks")


class OSErrorGroup(OSError):
    """Every address of a host failed; ``exceptions`` are the failures (``_leaves`` reads them)."""

    def __init__(self, message: str, exceptions: list[OSError]):
        super().__init__(message)
        self.exceptions = exceptions


@dataclass
class Dialed:
    """A connected byte stream to one route, with the certificate pin it presented (wss only)."""

    route: Route
    stream: trio.abc.Stream
    pin: str | None
    elapsed: float

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            with trio.move_on_after(1):
                await self.stream.aclose()


Address = tuple[int, Any]  # (socket family, sockaddr)
CONNECT_STAGGER = 0.25  # the next address is tried after a failure or this long (RFC 8305's default)


async def resolve(host: str, port: int) -> list[Address]:
    """The addresses of ``host`` in resolver order, without a lookup for an IP literal. Raises OSError."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        if ip.version == 6:
            return [(trio.socket.AF_INET6, (host, port, 0, 0))]
        return [(trio.socket.AF_INET, (host, port))]
    infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
    addrs: list[Address] = []
    for family, _, _, _, sockaddr in infos:
        if (family, sockaddr) not in addrs:
            addrs.append((family, sockaddr))
    return addrs


def format_address(sockaddr: Any) -> str:
    host, port = sockaddr[0], sockaddr[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


async def connect_tcp(addrs: list[Address], errors: list[tuple[str, OSError]]) -> tuple[trio.SocketStream, str] | None:
    """Try ``addrs`` staggered (the next starts after a failure or CONNECT_STAGGER); the first to connect
    wins and the rest are cancelled. Each failure is appended to ``errors``; None when all failed."""
    won: list[tuple[trio.SocketStream, str]] = []

    async def attempt(family: int, sockaddr: Any, failed: trio.Event, scope: trio.CancelScope) -> None:
        try:
            sock = trio.socket.socket(family, trio.socket.SOCK_STREAM)
        except OSError as exc:  # e.g. no IPv6 on this host
            errors.append((format_address(sockaddr), exc))
            failed.set()
            return
        try:
            await sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            errors.append((format_address(sockaddr), exc))
            failed.set()
            return
        except BaseException:
            sock.close()
            raise
        if won:
            sock.close()
            return
        won.append((trio.SocketStream(sock), format_address(sockaddr)))
        scope.cancel()

    try:
        async with trio.open_nursery() as nursery:
            for family, sockaddr in addrs:
                failed = trio.Event()
                nursery.start_soon(attempt, family, sockaddr, failed, nursery.cancel_scope)
                with trio.move_on_after(CONNECT_STAGGER):
                    await failed.wait()
    except BaseException:  # cancelled from outside: a connection won at that instant must not leak
        for stream, _ in won:
            await trio.aclose_forcefully(stream)
        raise
    return won[0] if won else None


async def start_tls(stream: trio.abc.Stream, host: str) -> tuple[trio.SSLStream[trio.abc.Stream], str]:
    """The TLS handshake over ``stream`` and the certificate pin it presented. On any failure the
    stream is closed and the error raised (ssl.SSLError, trio.BrokenResourceError, OSError, TlsError)."""
    tls = trio.SSLStream(stream, pinned_trust_context(), server_hostname=host, https_compatible=True)
    try:
        await tls.do_handshake()
        der = tls.getpeercert(binary_form=True)
        if not der:
            raise TlsError("the relay presented no certificate")
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return tls, spki_pin_from_der(der)


async def dial(route: Route, *, expected_pin: str | None, timeout: float = DIAL_TIMEOUT) -> Dialed:
    """Open TCP (and TLS for wss) to ``route``. A wss pin that differs from ``expected_pin`` refuses."""
    host, port = host_port(route.url)
    started = trio.current_time()
    stream: trio.abc.Stream
    try:
        with trio.fail_after(timeout):
            errors: list[tuple[str, OSError]] = []
            won = await connect_tcp(await resolve(host, port), errors)
            if won is None:
                failures = [e for _, e in errors]
                raise failures[0] if len(failures) == 1 else OSErrorGroup("cannot connect", failures)
            stream = won[0]
            pin = None
            if route.secure:
                tls, pin = await start_tls(stream, host)
                if expected_pin and pin != expected_pin:
                    await trio.aclose_forcefully(tls)
                    raise PinMismatchError(route.url, expected_pin, pin)
                stream = tls
    except trio.TooSlowError:
        raise ConnectTimeoutError(f"{route.url}: no answer within {timeout:g}s (host down, firewalled or black-holed)",
                                  hint=SILENT_HOST_HINT) from None
    except TlsError as exc:
        raise TlsError(f"{route.url}: {exc.message}") from None
    except HermesError:
        raise
    except (ssl.SSLError, trio.BrokenResourceError) as exc:
        text = _reason(exc)
        if "WRONG_VERSION_NUMBER" in text.upper() or "wrong version number" in text:
            plain = "ws://" + route.url.split("://", 1)[1]
            raise TlsError(f"{route.url}: the server does not speak TLS (it answered in plain text)",
                           hint=f"it is probably a plain relay: use {plain}") from None
        raise TlsError(f"{route.url}: TLS handshake failed: {text}",
                       hint="is this a wss:// relay? for a plain relay use ws://") from None
    except OSError as exc:
        raise _os_error(route.url, host, port, exc) from None
    return Dialed(route, stream, pin, trio.current_time() - started)


def _reason(exc: BaseException) -> str:
    inner = exc.__cause__ or exc.__context__
    text = str(exc) or type(exc).__name__
    return f"{text} ({inner})" if inner is not None and str(inner) not in text else text


def describe(exc: BaseException) -> str:
    """A library exception in one line, with its cause when that adds something (for step reports)."""
    return _reason(exc)


def _os_error(url: str, host: str, port: int, exc: OSError) -> TransportError:
    if isinstance(exc, socket.gaierror) or "Name or service not known" in str(exc) or "nodename" in str(exc):
        return HostNotFoundError(f"{url}: cannot resolve {host}", hint="check the host name, or use its IP address")
    leaves = _leaves(exc)
    if any(isinstance(c, ConnectionRefusedError) for c in leaves):
        return ConnectRefusedError(f"{url}: connection refused on port {port}",
                                   hint="the relay is not running there, or the port is wrong (the relay's default is 8767)")
    detail = next((c.strerror for c in leaves if isinstance(c, OSError) and c.strerror), None) or str(exc)
    return TransportError(f"{url}: cannot connect: {detail}", hint="check the network and the relay address")


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exception, its causes, and every member of a group among them (a staggered connect raises a group)."""
    out: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or e in out:
            continue
        out.append(e)
        if isinstance(e, (BaseExceptionGroup, OSErrorGroup)):
            todo.extend(e.exceptions)
        todo.extend([e.__cause__, e.__context__])
    return out


async def open_websocket(nursery: trio.Nursery, dialed: Dialed, *, timeout: float = HANDSHAKE_TIMEOUT) -> Connection:
    """Run the WebSocket upgrade over ``dialed``; the connection lives in a task of ``nursery``.

    trio-websocket raises a rejected upgrade (e.g. HTTP 429) from its reader task, i.e. into the
    nursery it was given, not to the caller. So each connection gets a nursery of its own inside a
    host task: failures before the handshake completes come back from ``nursery.start`` as one
    HermesError, and nothing the reader task does later can take the caller's nursery down.
    """
    ws, watched = await nursery.start(_host_websocket, dialed, timeout)
    return Connection(dialed, ws, watched)


class _WatchedStream(trio.abc.Stream):
    """The dialed stream, noting when the peer closes or resets it, with the lock of its writes.

    trio-websocket does not end its upgrade when the peer hangs up first; it waits for the timeout.
    This wrapper lets the upgrade fail at once and say what happened. ``lock`` is taken by every write:
    trio-websocket's (through ``send_all``) and the Connection's own frames (``send_locked``), so no two
    frames are ever interleaved.
    """

    def __init__(self, stream: trio.abc.Stream):
        self._stream = stream
        self.ended = trio.Event()
        self.how = ""
        self.lock = SendLock()
        self._reads_now = 0  # reads since the last that went through trio (and its pass of the scheduler)
        self.tap = wstap.Tap(wire.MAX_WS_MESSAGE)  # takes the relay's plain messages for a waiting link
        self._out: bytes | bytearray = b""  # what the tap handed on beyond what the last read could return

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        async with self.lock:
            await self._stream.send_all(data)

    async def send_locked(self, data: bytes | bytearray | memoryview) -> None:
        """``send_all`` for a caller that holds ``lock``. On a plain socket what the kernel takes at once is
        written straight away (trio's ``send_all`` yields to the scheduler after every write: a pass a call);
        the rest, and any error, go through ``send_all``."""
        assert self.lock.locked()
        if _RAW and isinstance(self._stream, trio.SocketStream):
            data = _write_now(self._stream.socket, data)
            if not data:
                return
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """The next bytes for wsproto: what the socket gave, less the messages the tap took (a read whose
        bytes were all taken, or kept back, reads again)."""
        limit = max_bytes or RECEIVE_SIZE
        while not self._out:
            data = await self._receive(limit)
            if not data:
                held = self.tap.release()  # wsproto sees the frame the end cut short, as without the tap
                if held:
                    self._out = held
                    break
                return data
            self._out = self.tap.feed(data)
        out = self._out
        if len(out) <= limit:
            self._out = b""
            return out
        self._out = out[limit:]
        return out[:limit]

    async def _receive(self, max_bytes: int) -> bytes | bytearray:
        try:
            if _RAW and isinstance(self._stream, trio.SocketStream):
                data = await self._receive_raw(self._stream.socket, max_bytes)
            else:
                data = await self._stream.receive_some(max_bytes)
        except (trio.BrokenResourceError, OSError) as exc:
            self.how = f"reset the connection ({_reason(exc)})"
            self.ended.set()
            raise
        if not data:
            self.how = "closed the connection"
            self.ended.set()
        return data

    async def _receive_raw(self, sock: trio.socket.SocketType, max_bytes: int) -> bytes | bytearray:
        """``receive_some`` of a plain socket without the pass of the scheduler trio's takes after every read
        (a call's command arrives in one): it waits until the socket is readable, then reads. After
        ``MAX_READS_NOW`` reads without a pass, one yields first, so a peer that never stops sending cannot
        keep the other tasks waiting; a cancelled reader stops before it reads; an error is trio's."""
        if self._reads_now >= MAX_READS_NOW:
            self._reads_now = 0
            await trio.lowlevel.checkpoint()
        elif trio.current_effective_deadline() == -math.inf:
            await trio.lowlevel.checkpoint()  # raises Cancelled
        while True:
            try:
                data = os.read(sock.fileno(), max_bytes)
            except BlockingIOError:
                self._reads_now = 0
                await trio.lowlevel.wait_readable(sock)
                continue
            except OSError as exc:  # closed, reset: said as trio's read says it
                raise _stream_error(exc) from exc
            self._reads_now += 1
            return data

    async def aclose(self) -> None:
        await self._stream.aclose()


MAX_READS_NOW = 16  # reads in a row without a pass of the scheduler
_RAW = os.name == "posix"  # a socket is a file descriptor (os.read, os.write); not so on Windows
RECEIVE_SIZE = 65536  # trio's default for a receive_some without a size


def _write_now(sock: trio.socket.SocketType, data: bytes | bytearray | memoryview) -> bytes | bytearray | memoryview:
    """What is left of ``data`` after one non-blocking write to ``sock`` (all of it when the socket takes
    nothing now: trio's ``send_all`` then waits for room)."""
    try:
        sent = os.write(sock.fileno(), data)
    except BlockingIOError:
        return data
    except OSError as exc:  # closed, reset: said as trio's send_all says it
        raise _stream_error(exc) from exc
    return memoryview(data)[sent:] if sent < len(data) else b""


def _stream_error(exc: OSError) -> trio.ClosedResourceError | trio.BrokenResourceError:
    """A socket's error as trio's streams raise it."""
    if exc.errno in (errno.EBADF, errno.ENOTSOCK):
        return trio.ClosedResourceError("this socket was already closed")
    return trio.BrokenResourceError(f"socket connection broken: {exc}")


async def _end_upgrade_on_hangup(stream: _WatchedStream, upgrade: trio.CancelScope, watch: trio.CancelScope) -> None:
    with watch:  # cancelled as soon as the upgrade is answered: this task lives only as long as the upgrade
        await stream.ended.wait()
        upgrade.cancel()


async def _host_websocket(dialed: Dialed, timeout: float, *,
                          task_status: trio.TaskStatus[tuple[trio_websocket.WebSocketConnection, _WatchedStream]]) -> None:
    host, port = host_port(dialed.route.url)
    path = urlsplit(dialed.route.url).path or "/"
    started = False
    watched = _WatchedStream(dialed.stream)
    try:
        async with trio.open_nursery() as own:
            ws = None
            with trio.fail_after(timeout):
                watch = trio.CancelScope()
                with trio.CancelScope() as upgrade:
                    own.start_soon(_end_upgrade_on_hangup, watched, upgrade, watch)
                    ws = await trio_websocket.wrap_client_stream(
                        own, watched,  # type: ignore[arg-type]  # any trio Stream works; the stub names two
                        f"{host}:{port}", path, max_message_size=wire.MAX_WS_MESSAGE,
                        receive_buffer_size=wire.WS_RECEIVE_BYTES,
                    )
                watch.cancel()
            if ws is None:
                raise ConnectionLostError(
                    f"{dialed.route.url}: the port accepted the connection, then {watched.how} without answering "
                    "the WebSocket upgrade",
                    hint="a relay that is shutting down or restarting, a proxy with no relay behind it, or a "
                         "service on this port that is not a Hermes relay; run `hermes-relay doctor` for step-by-step checks")
            task_status.started((ws, watched))
            started = True
    except BaseException as exc:
        leaves = members(exc)
        if any(isinstance(e, trio.Cancelled) for e in leaves):
            await dialed.aclose()
            raise
        if started:  # the link notices through get_message/ping; the reader's own failure is only logged
            log.debug("websocket_reader_ended url=%s error=%r", dialed.route.url, exc)
            return
        await dialed.aclose()
        raise _handshake_error(dialed.route.url, leaves, timeout) from None


def close_code(exc: ConnectionLostError) -> int | None:
    """The relay's close code behind ``exc`` (None: no close frame, or not a close)."""
    code = exc.data.get("close_code")
    return code if isinstance(code, int) else None


def _close_words(code: int | None, reason: str) -> str:
    return "no close frame" if code is None else f"code {code}{': ' + reason if reason else ''}"


def close_text(exc: ConnectionLostError) -> str:
    return _close_words(close_code(exc), str(exc.data.get("reason") or ""))


def closed_error(url: str, code: int | None, reason: str) -> ConnectionLostError:
    """The relay closed the WebSocket: a ConnectionLostError whose data carries the close code."""
    return ConnectionLostError(f"{url}: the relay closed the connection ({_close_words(code, reason)})",
                               data={"close_code": code, "reason": reason})


class SendLock:
    """A FIFO lock whose acquire costs no pass of the scheduler when the lock is free (trio.Lock's always
    yields: with the desktop channel's sends, two passes a call). A cancelled caller still stops at it;
    a busy lock is waited for in turn (trio hands a released lock to its first waiter)."""

    def __init__(self) -> None:
        self._lock = trio.StrictFIFOLock()

    async def __aenter__(self) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()


class Connection:
    """One WebSocket to a relay. Sends are serialised; every failure is a ConnectionLostError (its
    ``close_code(exc)`` says how the relay closed)."""

    def __init__(self, dialed: Dialed, ws: trio_websocket.WebSocketConnection, stream: _WatchedStream):
        self.dialed = dialed
        self._ws = ws
        self._stream = stream  # what ws writes to (its frames take stream.lock too)
        self._waiting = False  # a task waits in get_message
        self._got = 0  # messages get_message returned
        stream.tap.ready = self._ready

    def deliver_to(self, deliver: Callable[[str], bool] | None) -> None:
        """While set, a plain text message the stream's tap reads is handed to ``deliver`` in the reading
        task's step, when a task waits in get_message and nothing read before it waits in trio-websocket:
        the order of messages holds. ``deliver`` answers False to leave one to get_message."""
        self._stream.tap.deliver = deliver

    def _ready(self) -> bool:
        return self._waiting and self._got == self._stream.tap.handed

    @property
    def route(self) -> Route:
        return self.dialed.route

    def _closed(self, exc: trio_websocket.ConnectionClosed) -> ConnectionLostError:
        return self._closed_by(exc.reason)

    def _closed_by(self, reason: trio_websocket.CloseReason | None) -> ConnectionLostError:
        return closed_error(self.route.url, reason.code if reason is not None else None,
                            (reason.reason or "") if reason is not None else "")

    async def send_text(self, text: str) -> None:
        """One text message (UnicodeEncodeError for a lone surrogate, as trio-websocket raised)."""
        await self.send_utf8(text.encode("utf-8"))

    async def send_utf8(self, data: bytes) -> None:
        """One text message whose text is ``data``, UTF-8 already (core/envelope.py ``utf8``), in one frame
        written under the stream's lock; none once the WebSocket is closing (as trio-websocket refuses). The
        frame is built under the lock too: one big frame in memory at a time, however many answers wait."""
        async with self._stream.lock:
            if self._ws.closed is not None:
                raise self._closed_by(self._ws.closed)
            frame = wsframe.client_frame(data)
            try:
                await self._stream.send_locked(frame)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                # A frame may be cut short: nothing more can go out, and the reader must see the end at once
                # (trio-websocket marks the WebSocket closed when its own write fails, the same way).
                await trio.aclose_forcefully(self._stream)
                raise ConnectionLostError(f"{self.route.url}: the connection is closed ({exc!r})") from None

    async def get_message(self) -> str | bytes:
        self._waiting = True
        try:
            message: str | bytes = await self._ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise self._closed(exc) from None
        finally:
            self._waiting = False
        self._got += 1
        return message

    async def ping(self) -> None:
        try:
            await self._ws.ping()
        except trio_websocket.ConnectionClosed as exc:
            raise self._closed(exc) from None
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionLostError(f"{self.route.url}: the connection is closed ({exc!r})") from None

    async def aclose(self) -> None:
        """Close the WebSocket, then the stream under it: trio-websocket leaves the socket open when
        the peer closed first, so the stream is always closed explicitly."""
        with trio.CancelScope(shield=True):
            with trio.move_on_after(1):
                try:
                    await self._ws.aclose()
                except Exception:  # already broken: nothing left to close politely
                    pass
        await self.dialed.aclose()


def _handshake_error(url: str, leaves: list[BaseException], timeout: float) -> HermesError:
    for exc in leaves:
        if isinstance(exc, HermesError):
            return exc
        if isinstance(exc, trio_websocket.ConnectionRejected):
            body = (exc.body or b"").decode("utf-8", "replace")[:200]
            if exc.status_code == 429:
                return RateLimitedError(body, retry_after=_retry_after(exc.headers))
            parts = urlsplit(url)
            if exc.status_code == 404 and parts.path not in ("", "/", "/ws"):
                hint = (f"no WebSocket endpoint at {parts.path}: use {parts.scheme}://{parts.netloc} "
                        "(a Hermes relay listens at / on its port)")
            else:
                hint = "this port answers HTTP but not as a Hermes relay: check the port (the relay's default is 8767)"
            return HandshakeRejectedError(exc.status_code, " ".join(body.split())[:120], hint=hint)
    if any(isinstance(exc, trio.TooSlowError) for exc in leaves):
        return ConnectTimeoutError(
            f"{url}: the port accepted the connection but the WebSocket upgrade got no answer within {timeout:g}s",
            hint=(("if the relay uses TLS, use wss://; otherwise " if url.startswith("ws://") else "")
                  + "this port is not a Hermes relay; run `hermes-relay doctor` for step-by-step checks"))
    return TransportError(f"{url}: WebSocket upgrade failed: {_reason(leaves[0])}",
                          hint="is this port a Hermes relay? (wrong port or wrong scheme)")




async def connect(nursery: trio.Nursery, route: Route, *, expected_pin: str | None,
                  timeout: float = DIAL_TIMEOUT) -> Connection:
    """Dial and upgrade: a route counts as reachable only once a relay has answered the upgrade, so a
    port that accepts TCP and then stays silent (a black hole, a dead proxy) loses the race."""
    dialed = await dial(route, expected_pin=expected_pin, timeout=timeout)
    return await open_websocket(nursery, dialed, timeout=timeout)


async def discard(conn: Connection) -> None:
    await conn.aclose()


def _retry_after(headers: Any) -> float | None:
    for name, value in headers or ():
        if bytes(name).lower() == b"retry-after":
            try:
                return float(bytes(value).decode())
            except ValueError:
                return None
    return None


async def authenticate(conn: Connection, payload: dict[str, Any], *, timeout: float = AUTH_TIMEOUT,
                       url: str = "", arrived: Callable[[], None] | None = None) -> dict[str, Any]:
    """Send ``system/auth`` and return the ``auth.ok`` payload, or raise AuthRejectedError/transport errors.
    ``arrived`` (tests' crash points) runs when the relay's first answer has arrived, before it is read."""
    try:
        await conn.send_text(envelope.Envelope(envelope.SYSTEM, envelope.AUTH, payload).encode())
        with trio.fail_after(timeout):
            while True:
                raw = await conn.get_message()
                if arrived is not None:
                    arrived()
                    arrived = None
                reply = envelope.decode(raw, max_size=wire.MAX_WS_MESSAGE)
                if reply.channel != envelope.SYSTEM:
                    continue
                if reply.type == envelope.AUTH_OK:
                    return reply.payload
                if reply.type == envelope.AUTH_FAIL:
                    reason = str(reply.payload.get("reason") or "auth failed")
                    if reason.startswith(RATE_LIMIT_REASON_PREFIX):  # "wait", not "your token is bad"
                        raise RateLimitedError(reason)
                    raise AuthRejectedError(f"{url or 'relay'} rejected the credentials: {reason}", data={"reason": reason})
    except trio.TooSlowError:
        raise ConnectTimeoutError(f"{url}: no auth reply within {timeout:g}s",
                                  hint="the relay may be overloaded; it will be retried") from None
    except ConnectionLostError as exc:
        reason = str(exc.data.get("reason") or "")
        if close_code(exc) == wire.CLOSE_TRY_AGAIN_LATER:
            raise RateLimitedError(reason) from None
        if close_code(exc) == wire.CLOSE_AUTH_FAILED:
            raise AuthRejectedError(f"{url or 'relay'} rejected the credentials: {reason or 'auth failed'}",
                                    data={"reason": reason}) from None
        raise ConnectionLostError(f"{url}: the relay closed the connection during auth ({close_text(exc)})") from None
    except RemoteProtocolError as exc:
        raise RemoteProtocolError(f"{url}: the relay sent a malformed auth reply: {exc.message}") from None


async def http_request(dialed: Dialed, method: str, path: str, *, token: str | None = None,
                       body: dict[str, Any] | None = None, timeout: float = HTTP_TIMEOUT) -> tuple[int, Any]:
    """One HTTP/1.1 request over ``dialed`` (closed afterwards); returns (status, parsed JSON or text)."""
    host, port = host_port(dialed.route.url)
    data = json.dumps(body).encode() if body is not None else b""
    headers = [("Host", f"{host}:{port}"), ("Connection", "close"), ("Accept", "application/json"),
               ("Content-Length", str(len(data)))]
    if body is not None:
        headers.append(("Content-Type", "application/json"))
    if token:
        headers.append(("Authorization", f"Bearer {token}"))
    conn = h11.Connection(h11.CLIENT)
    try:
        with trio.fail_after(timeout):
            out = conn.send(h11.Request(method=method, target=path, headers=headers))
            out += conn.send(h11.Data(data=data)) if data else b""
            out += conn.send(h11.EndOfMessage())
            await dialed.stream.send_all(out)
            status, chunks, size = 0, [], 0
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await dialed.stream.receive_some(65536))  # type: ignore[arg-type]  # h11 takes any bytes-like
                    continue
                if isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    size += len(event.data)
                    if size > MAX_HTTP_BODY:
                        raise RemoteProtocolError(f"{dialed.route.url}: HTTP response larger than {MAX_HTTP_BODY} bytes")
                    chunks.append(bytes(event.data))
                elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    break
    except trio.TooSlowError:
        raise ConnectTimeoutError(f"{dialed.route.url}: {method} {path} got no answer within {timeout:g}s") from None
    except h11.RemoteProtocolError as exc:
        raise RemoteProtocolError(f"{dialed.route.url}: bad HTTP response to {method} {path}: {exc}") from None
    except (trio.BrokenResourceError, OSError, ssl.SSLError) as exc:
        raise ConnectionLostError(f"{dialed.route.url}: connection lost during {method} {path}: {_reason(exc)}") from None
    finally:
        await dialed.aclose()
    raw = b"".join(chunks)
    try:
        parsed: Any = json.loads(raw) if raw else {}
    except ValueError:
        parsed = raw.decode("utf-8", "replace")
    return status, parsed


def http_error(dialed_url: str, method: str, path: str, status: int, obj: Any) -> HermesError:
    """The HermesError for a non-2xx answer from the relay's HTTP API."""
    text = obj.get("error") if isinstance(obj, dict) else str(obj)
    if status == 429:
        return RateLimitedError(str(text))
    if status == 401:
        return AuthRejectedError(f"{dialed_url} rejected the stored token ({text})",
                                 hint="the session was revoked or expired; pair again with `hermes-relay pair`")
    if status == 404:
        return NotFoundError(f"{dialed_url}: {text}", hint="list the sessions with `hermes-relay devices`")
    if status == 409:
        return AmbiguousError(f"{dialed_url}: {text}", hint="give more characters of the token prefix")
    return HttpStatusError(method, path, status, str(text))
