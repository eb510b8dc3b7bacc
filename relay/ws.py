"""The relay's side of a WebSocket: wsproto's frame protocol driven from the connection's own task.

trio-websocket gives each connection a reader task, a nursery, a memory channel, a send lock and
five events, and hands every message from its reader to the consumer through the channel (two task
switches per message). A relay holds thousands of idle sockets and answers small messages, so here
one task does it all: ``get_message`` reads the stream and feeds wsproto (``wsproto.connection.Connection``,
the engine trio-websocket drives) until a whole message is there, answering pings and noting pongs on
the way (a read of whole one-frame messages, nearly every read, skips wsproto: relay/wsframe.py); any
task may ``send_message``; ``aclose`` runs the closing handshake. The agent keeps trio-websocket as its
client.

Who reads: one task, the last to call ``get_message`` (the connection's task). A close begun by another
task (a revocation) sends the close frame and then shortens the reader's current wait (``wait``, the
scope the reader registers) to ``CLOSE_GRACE``, so the reader sees the peer's answer or gives up. While an
authenticated connection is quiet (nothing but control frames since its last message), its task waits
with the relay's idle reader (relay/idleread.py), which reads the heartbeat's pongs itself and wakes the
task with anything else it read.

Writes never interleave: a writer that finds another one mid-frame parks until it is handed the
socket (FIFO, as trio's locks). A write cancelled or failed midway leaves a partial frame on the
wire, so the socket is then marked broken, nothing more is written to it and the reader's wait ends.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any, Protocol

import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import CloseConnection, Message, Ping, Pong, TextMessage
from wsproto.frame_protocol import CloseReason as Code
from wsproto.utilities import LocalProtocolError

from . import wsframe
from .config import CLOSE_GRACE

BIG_READ = 1 << 20  # bytes: the largest read, while a big message streams in
MESSAGE_TOO_BIG = int(Code.MESSAGE_TOO_BIG)
NORMAL = int(Code.NORMAL_CLOSURE)
ABNORMAL = int(Code.ABNORMAL_CLOSURE)  # no close frame came: the TCP connection just ended


class CloseReason:
    """Why a WebSocket closed: the close frame's code and reason (1006, None when there was none)."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str | None):
        self.code = code
        self.reason = reason

    def __repr__(self) -> str:
        return f"CloseReason(code={self.code}, reason={self.reason!r})"


class ConnectionClosed(Exception):
    """The socket is closed or closing: nothing more can be read or sent."""

    def __init__(self, reason: CloseReason | None):
        super().__init__(reason)
        self.reason = reason


class IdleWaits(Protocol):
    """The relay's reader of quiet connections, as a socket sees it (relay/idleread.py ``IdleReader``)."""

    async def wait(self, ws: ServerSocket, raw: socket.socket, size: int) -> bytes | None: ...
    def forget(self, ws: ServerSocket, raw: socket.socket | None) -> None: ...


class ServerSocket:
    """One accepted WebSocket. ``beat`` (relay/heartbeat.py) is told of the heartbeat's pongs;
    ``wait`` is the owner's current wait, which a close from another task shortens."""

    __slots__ = ("stream", "_raw", "_proto", "_owner", "max_message", "receive_size", "closed", "beat", "wait",
                 "_size_next", "_read_max", "_fed", "_ready", "_parts", "_size", "_writing", "_lot", "_broken",
                 "_gather", "_gather_size", "idle", "idle_armed", "_quiet")

    def __init__(self, stream: trio.abc.Stream, *, max_message: int, receive_size: int = 4096,
                 trailing: bytes = b""):
        self.stream = stream
        # The socket under a plain TCP stream, read and written directly (None: TLS, or a test's stream).
        self._raw = getattr(stream.socket, "_sock", None) if type(stream) is trio.SocketStream else None
        self._proto = Connection(ConnectionType.SERVER)
        self._fed = bool(trailing)  # wsproto may hold events not taken yet
        # Messages read without wsproto (relay/wsframe.py) and not taken yet, the next one last (None: none; an
        # idle socket keeps no empty container).
        self._ready: list[str | bytes] | None = None
        if trailing:
            self._proto.receive_data(trailing)  # frames the client sent right behind its upgrade request
        self._owner = trio.lowlevel.current_task()
        self.max_message = max_message  # characters of a text message, bytes of a binary one
        self.receive_size = receive_size  # bytes per read (once authenticated, a read that fills it grows the next)
        self._size_next = self._read_max = receive_size  # unauthenticated: small reads only (bounded memory)
        self.closed: CloseReason | None = None  # set once a close began (ours or the peer's)
        self.beat: Any = None  # the heartbeat's Beat: told of each pong
        self.wait: trio.CancelScope | None = None
        self._parts: list[Any] | None = None  # the pieces of a message that came in several
        # A frame of a whole message cut by the reads (a big desktop result), gathered until it is all
        # here and then read as the whole frames are: wsproto would copy it three times and decode it in
        # pieces. Its size, as its head says (at most max_message).
        self._gather: bytearray | None = None
        self._gather_size = 0
        self._size = 0
        self._writing = False
        self._lot: trio.lowlevel.ParkingLot | None = None  # writers waiting for the socket (made on first need)
        self._broken = False
        # The relay's reader of quiet connections (relay/idleread.py), once authenticated on a plain socket:
        # a wait while ``_quiet`` parks there, and the heartbeat's pongs are read without waking this task.
        self.idle: IdleWaits | None = None
        self.idle_armed = False  # the socket is in the idle reader's epoll set
        self._quiet = False  # nothing but control frames since the last message: the next wait is a long one

    def authenticated(self, max_message: int, receive_size: int, idle: IdleWaits | None = None) -> None:
        """Raise the pre-auth limits (a small message, small reads) to the authenticated ones; from now on a
        quiet wait parks with ``idle`` (a plain socket only)."""
        self.max_message = max_message
        self.receive_size = self._size_next = receive_size
        self._read_max = BIG_READ
        if self._raw is not None:
            self.idle = idle
            self._quiet = True  # nothing may follow the auth reply for a long while

    @property
    def quiet(self) -> bool:
        """Its next wait (or the one it is in) is with the idle reader: a pong will not wake its task."""
        return self._quiet and self.idle is not None

    @property
    def unclosed(self) -> bool:
        """Nobody began the closing handshake (or the peer did and is waiting for our answer)."""
        return not self._broken and self._proto.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING)

    @property
    def open(self) -> bool:
        return self.closed is None and not self._broken

    # -- reading (the owner task only) --------------------------------------------------------------
    async def get_message(self) -> str | bytes:
        """The next whole message. Pings are answered and pongs noted on the way; ConnectionClosed once
        the peer closed (its close frame answered), the connection ended, or the protocol was broken.
        The task that calls it is the socket's reader from then on (see ``aclose``)."""
        self._owner = trio.lowlevel.current_task()
        while True:
            ready = self._ready
            if ready is not None:  # read before anything wsproto holds
                if len(ready) == 1:
                    self._ready = None
                self._quiet = False
                return ready.pop()
            for event in self._proto.events() if self._fed else ():
                if isinstance(event, Message):
                    message = self._piece(event)
                    if message is _TOO_BIG:
                        await self._close_frame(MESSAGE_TOO_BIG, f"message over {self.max_message} bytes")
                        raise ConnectionClosed(self.closed)
                    if message is not None:
                        self._quiet = False
                        return message  # type: ignore[return-value]
                elif isinstance(event, Pong):
                    beat = self.beat
                    if beat is not None:
                        beat.pong(event.payload)
                elif isinstance(event, Ping):
                    if self._proto.state is ConnectionState.OPEN:
                        await self._write(self._proto.send(event.response()))
                elif isinstance(event, CloseConnection):
                    await self._peer_closed(event)
            self._fed = False  # every event taken: nothing to parse until the next read
            await self._receive()

    async def _receive(self) -> None:
        if self._proto.state is ConnectionState.CLOSED:
            raise ConnectionClosed(self.closed)
        size = self._size_next
        raw = self._raw
        try:
            if raw is None:
                data = await self.stream.receive_some(size)
            else:
                read = None
                if self._quiet and self.idle is not None and self._between_frames():
                    read = await self.idle.wait(self, raw, size)  # what came other than pongs (None: not parked)
                if read is not None:
                    data = read
                else:  # a plain socket: wait, then read (trio's read tries first and yields after a success)
                    await trio.lowlevel.wait_readable(raw)
                    while True:
                        try:
                            data = raw.recv(size)
                            break
                        except BlockingIOError:  # woken with nothing to read after all
                            await trio.lowlevel.wait_readable(raw)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            data = b""
        # A read that filled the buffer is likely part of a big message: read more at once next time
        # (up to BIG_READ); anything smaller goes back to the socket's own size.
        self._size_next = min(size * 4, self._read_max) if len(data) == size else self.receive_size
        if not data:
            self._proto.receive_data(None)  # wsproto: a 1006 close event, state CLOSED
            self._parts = self._gather = None
            if self.closed is None:
                self.closed = CloseReason(ABNORMAL, None)
            raise ConnectionClosed(self.closed)
        gather = self._gather
        if gather is not None:  # (nothing else read meanwhile: wsproto is idle, the state open)
            gather += data
            if len(gather) < self._gather_size:
                return
            data, self._gather = gather, None  # the whole frame, and whatever came behind it
        if self._between_frames():  # (wsproto holds nothing, nothing is gathered: the data begins a frame)
            messages, taken = wsframe.take(data, self.max_message, self._pong)  # whole one-frame messages and pongs
            if messages:
                messages.reverse()
                self._ready = messages if self._ready is None else messages + self._ready
            if taken == len(data):
                if not messages:
                    self._quiet = True  # pongs only: a quiet connection's read, its next wait a long one
                return
            whole = wsframe.frame_size(data, taken, self.max_message)
            if whole is not None and whole > len(data) - taken:  # one take reads once it is all here
                self._gather, self._gather_size = bytearray(data[taken:]), whole
                return
            data = data[taken:]  # from the first frame that is not one: wsproto's
        self._proto.receive_data(data)  # type: ignore[arg-type]  # wsproto takes any bytes-like; its stub says bytes
        self._fed = True

    def idle_read(self, size: int) -> bytes | None:
        """For the idle reader, when the parked socket has data: read it; None when it was whole pongs only
        (each told to the heartbeat here) or nothing after all, else the bytes, for the task it wakes."""
        raw = self._raw
        assert raw is not None
        try:
            data: bytes = raw.recv(size)
        except BlockingIOError:
            return None
        except OSError:
            return b""
        payloads = wsframe.pongs(data) if data else None
        if payloads is None:
            return data
        beat = self.beat
        if beat is not None:
            for payload in payloads:
                beat.pong(payload)
        return None

    def _between_frames(self) -> bool:
        """Every byte read so far was taken whole: the next byte begins a frame (the idle reader's pongs)."""
        return (self._gather is None and self._parts is None and not self._fed
                and self._proto.state is ConnectionState.OPEN and _wsproto_idle(self._proto))

    def _pong(self, payload: bytes | bytearray) -> None:
        beat = self.beat
        if beat is not None:
            beat.pong(payload)

    def _piece(self, event: Message[Any]) -> str | bytes | object | None:
        data = event.data
        if self._parts is None:
            if event.message_finished and len(data) <= self.max_message:
                return data if isinstance(event, TextMessage) else bytes(data)
            self._parts, self._size = [], 0
        self._size += len(data)
        if self._size > self.max_message:
            self._parts = None
            return _TOO_BIG
        self._parts.append(data)
        if not event.message_finished:
            return None
        parts, self._parts = self._parts, None
        return "".join(parts) if isinstance(event, TextMessage) else b"".join(parts)

    async def _peer_closed(self, event: CloseConnection) -> None:
        if self._proto.state is ConnectionState.REMOTE_CLOSING:  # the peer began: answer, then it is over
            if self.closed is None:
                self.closed = CloseReason(event.code, event.reason or None)
            try:
                await self._write(self._proto.send(event.response()))
            except ConnectionClosed:
                pass
        elif self._proto.state is ConnectionState.OPEN:  # wsproto found a protocol error: say so and stop
            await self._close_frame(event.code, event.reason)
            self._proto.receive_data(None)
        # else: the answer to our own close
        raise ConnectionClosed(self.closed)

    # -- writing (any task) ---------------------------------------------------------------------------
    async def send_message(self, message: str | bytes) -> None:
        if self.closed is not None or self._proto.state is not ConnectionState.OPEN:
            raise ConnectionClosed(self.closed)
        await self._write(wsframe.frame(message))  # the bytes wsproto would write, without its two copies

    async def send_ping(self, payload: bytes) -> None:
        if self.closed is None and self._proto.state is ConnectionState.OPEN:
            await self._write(self._proto.send(Ping(payload)))

    def write_now(self, frame: bytes) -> int:
        """Write ``frame`` from synchronous code if nobody is writing and the socket is a plain one: the
        bytes the socket took (0: none, try ``_write``). A part written leaves the socket held: the caller
        must finish it with ``finish_write``."""
        raw = self._raw
        if raw is None or self._writing or self._broken or self._proto.state is not ConnectionState.OPEN:
            return 0
        try:
            sent: int = raw.send(frame)
        except OSError:  # a full buffer or a broken socket: the awaited path sees it as it always would
            return 0
        if 0 < sent < len(frame):
            self._writing = True  # nothing may come between the frame's two halves
        return sent

    async def finish_write(self, rest: bytes) -> None:
        """The rest of a frame ``write_now`` wrote in part (the socket is held until it is out)."""
        try:
            await self._send_all(rest)
        except BaseException:  # even a cancel before a byte of the rest: half a frame is out already
            self._break()
            raise
        finally:
            self._release()

    async def _write(self, data: bytes) -> None:
        if self._writing:
            if self._lot is None:
                self._lot = trio.lowlevel.ParkingLot()
            await self._lot.park()  # handed the socket by the writer before (FIFO)
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
            self._writing = True
        try:
            if self._broken:
                raise ConnectionClosed(self.closed)
            await self._send_all(data)
        finally:
            self._release()

    async def _send_all(self, data: bytes) -> None:
        """All of ``data``; a frame left half out (a failure or a cancel midway) breaks the socket."""
        stream, raw = self.stream, self._raw
        sent = 0
        try:
            if raw is None:  # TLS, or a stream of a test: its own send_all (no telling how much went out)
                sent = -1
                await stream.send_all(data)
                return
            # A plain socket: written directly (trio's send_all yields to the scheduler after every write,
            # even one that did not wait), waiting only when the socket is full.
            view = memoryview(data)
            while True:
                try:
                    sent += raw.send(view[sent:])
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(raw)
                    continue
                if sent >= len(view):
                    return
        except BaseException as exc:
            gone = isinstance(exc, (trio.BrokenResourceError, trio.ClosedResourceError, OSError))
            if sent or gone:
                self._break()
            if gone:
                raise ConnectionClosed(self.closed or CloseReason(ABNORMAL, None)) from exc
            raise

    def _break(self) -> None:
        """No frame can follow on this socket: the reader's wait ends too (the connection then closes,
        instead of reading on for a peer it can no longer answer)."""
        self._broken = True
        if self.wait is not None:
            self.wait.cancel()

    def _release(self) -> None:
        lot = self._lot
        if lot is not None and lot:
            lot.unpark()  # the next writer owns the socket now
        else:
            self._writing = False

    def dispose(self) -> None:
        """The connection is over: break wsproto's own reference cycle (its frame parser is a generator
        that refers back to the parser), so reference counting frees the socket's objects at once. The
        relay freezes long-lived objects out of the collector (relay/gcpolicy.py): a cycle left here
        would stay frozen, about ten objects per closed connection, until the next full collection."""
        parser = getattr(getattr(self._proto, "_proto", None), "_parse_more", None)
        close = getattr(parser, "close", None)
        if close is not None:
            close()
        if self.idle is not None:
            self.idle.forget(self, self._raw)
        self.beat = self.wait = self._ready = self.idle = None

    # -- closing ---------------------------------------------------------------------------------------
    async def aclose(self, code: int = NORMAL, reason: str | None = None) -> None:
        """Begin the closing handshake (if nobody has) and, in the owner task, wait up to ``CLOSE_GRACE``
        (or the caller's deadline) for the peer's answer. From another task: send the close frame and bound the owner's
        wait by ``CLOSE_GRACE``; the owner reads the answer. The TCP stream is the caller's to close."""
        if self._proto.state is ConnectionState.OPEN:
            await self._close_frame(code, reason)
        if trio.lowlevel.current_task() is not self._owner:
            wait = self.wait
            if wait is not None:
                wait.deadline = min(wait.deadline, trio.current_time() + CLOSE_GRACE)
            return
        grace = trio.current_time() + CLOSE_GRACE  # a scope only when the caller's deadline is later
        with trio.CancelScope(deadline=grace) if trio.current_effective_deadline() > grace else _NO_SCOPE:
            while self._proto.state is ConnectionState.LOCAL_CLOSING and not self._broken:
                try:
                    await self.get_message()  # messages after our close frame are dropped
                except ConnectionClosed:
                    return

    async def _close_frame(self, code: int, reason: str | None) -> None:
        if self.closed is None:
            self.closed = CloseReason(code, reason)
        try:
            frame = self._proto.send(CloseConnection(code, reason))
        except LocalProtocolError:
            return
        try:
            await self._write(frame)
        except ConnectionClosed:
            pass


def _wsproto_idle(proto: Connection) -> bool:
    """wsproto holds nothing: no event, no byte of a frame, no part of a message (its internals, read
    defensively: another version's answer is False, and every frame then goes through wsproto)."""
    try:
        frames = proto._proto
        decoder = frames._frame_decoder
        return (not proto._events and decoder.header is None and not decoder.buffer.buffer
                and frames._message_decoder.opcode is None)
    except AttributeError:
        return False


_NO_SCOPE = contextlib.nullcontext()
_TOO_BIG = object()  # _piece: the message went over max_message
