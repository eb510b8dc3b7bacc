"""Serve the msgpack-RPC IPC protocol on a trio listener.

Each connection is handled on its own: a malformed, truncated or oversize frame, an unknown method,
or a handler bug closes or fails *that* client only, never the agent (a supervision point, so
``except Exception`` is allowed here and logged). Requests on one connection run one at a time; the
first must be ``hello`` so that version mismatches are caught before anything else is said.
Streaming handlers send Notify messages through their ``CallContext`` before their final response.
A client may send notifies while one of its calls runs (``shell.input``): each goes to the inbox of the
call it follows (``CallContext.inbox``, bounded: a client that floods it is backpressured, its socket
stops being read); a notify after that call answered is a protocol error.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from ..core import framing, rpc
from ..core.errors import HermesError, RemoteProtocolError, UsageError
from .ipc_endpoint import IpcListener

log = logging.getLogger(__name__)

FIRST_FRAME_TIMEOUT = 10.0  # a client that connects and says nothing is dropped
READ_CHUNK = 65536
MAX_QUEUED = 16  # requests read ahead of the one being handled
INBOX_SIZE = 64  # client notifies waiting for the running call before the reader waits too


@dataclass
class CallContext:
    """What a handler gets besides its params: a way to stream notifies and the connection's state."""

    _send: Callable[[Any], Awaitable[None]]
    closed: trio.Event = field(default_factory=trio.Event)
    peer: dict[str, Any] = field(default_factory=dict)
    inbox: trio.MemoryReceiveChannel[rpc.Notify] | None = None  # the running call's client notifies

    async def notify(self, method: str, params: dict[str, Any]) -> None:
        await self._send(rpc.Notify(method, params).to_wire())


Handler = Callable[[dict[str, Any], CallContext], Awaitable[Any]]


@dataclass(frozen=True)
class AfterResponse:
    """A handler result whose ``then`` runs once the response is on the wire (e.g. ``agent.stop``)."""

    result: Any
    then: Callable[[], None]


class _Conn:
    def __init__(self, stream: trio.abc.Stream):
        self.stream = stream
        self.decoder = framing.FrameDecoder(**framing.REQUEST_LIMITS)
        self.send_lock = trio.Lock()

    async def send(self, obj: Any) -> None:
        data = framing.encode_frame(obj)
        async with self.send_lock:
            await self.stream.send_all(data)

    async def messages(self) -> AsyncIterator[rpc.Message]:
        while True:
            for obj in self.decoder:
                yield rpc.parse_message(obj)
            data = await self.stream.receive_some(READ_CHUNK)
            if not data:
                if self.decoder.pending:
                    raise RemoteProtocolError(f"connection closed inside a frame ({self.decoder.pending} bytes pending)")
                return
            self.decoder.feed(data)


async def handle_connection(stream: trio.abc.Stream, handlers: dict[str, Handler]) -> None:
    """Serve one client until it disconnects or breaks the protocol.

    A reader task keeps reading while a request is being handled, so the end of the client's input
    is noticed even during a streaming call (``ctx.closed``): a ``watch`` whose client has gone does
    not linger until the next state change.
    """
    conn = _Conn(stream)
    ctx = CallContext(conn.send)
    send, receive = trio.open_memory_channel[_Call](MAX_QUEUED)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_read_requests, conn, ctx, send, nursery.cancel_scope)
            greeted = False
            try:
                async with receive:
                    async for msg, inbox in receive:
                        with inbox:  # closed once answered: a later notify is a protocol error
                            if not greeted and msg.method != "hello":
                                await conn.send(rpc.Response(msg.msgid, UsageError(
                                    "the first request must be hello").to_wire(), None).to_wire())
                                continue
                            greeted = True
                            ctx.inbox = inbox
                            try:
                                await _dispatch(conn, ctx, handlers, msg)
                            finally:
                                ctx.inbox = None
            except (trio.BrokenResourceError, trio.ClosedResourceError):  # the client left mid-answer
                pass
            nursery.cancel_scope.cancel()
    finally:
        ctx.closed.set()
        with trio.CancelScope(shield=True):
            await stream.aclose()


_Call = tuple[rpc.Request, trio.MemoryReceiveChannel[rpc.Notify]]


async def _read_requests(conn: _Conn, ctx: CallContext, send: trio.MemorySendChannel[_Call],
                         scope: trio.CancelScope) -> None:
    """Feed requests to the dispatcher, and each notify to the inbox of the request it follows; on
    garbage, drop the client; at end of input, say so."""
    inbox: trio.MemorySendChannel[rpc.Notify] | None = None
    async with send:
        try:
            agen = conn.messages()
            with trio.move_on_after(FIRST_FRAME_TIMEOUT) as first_scope:
                first = await agen.__anext__()
            if first_scope.cancelled_caught:
                log.debug("ipc_client_idle_dropped")
                scope.cancel()
                return
            pending = [first]
            while True:
                msg = pending.pop() if pending else await agen.__anext__()
                if isinstance(msg, rpc.Notify):
                    if inbox is None:
                        raise RemoteProtocolError("a client notify outside a call")
                    try:
                        await inbox.send(msg)  # a full inbox stops the reading: backpressure, nothing dropped
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        raise RemoteProtocolError(f"a client notify ({msg.method}) after its call answered") from None
                    continue
                if not isinstance(msg, rpc.Request):
                    raise RemoteProtocolError("clients may only send requests and notifies")
                if inbox is not None:
                    inbox.close()
                inbox, receive_inbox = trio.open_memory_channel[rpc.Notify](INBOX_SIZE)
                await send.send((msg, receive_inbox))
        except StopAsyncIteration:
            ctx.closed.set()  # the client will send nothing more; queued requests still run
        except RemoteProtocolError as exc:
            log.warning("ipc_client_protocol_error error=%s", exc)
            scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            scope.cancel()
        finally:
            if inbox is not None:
                inbox.close()  # the running call sees the end of its client's notifies


async def _dispatch(conn: _Conn, ctx: CallContext, handlers: dict[str, Handler], msg: rpc.Request) -> None:
    handler = handlers.get(msg.method)
    error: dict[str, Any] | None = None
    result: Any = None
    if handler is None:
        error = UsageError(f"unknown method {msg.method!r}", hint="the CLI and agent versions may differ").to_wire()
        error["code"] = "unknown_method"
    else:
        try:
            result = await handler(msg.params, ctx)
        except HermesError as exc:
            error = exc.to_wire()
        except Exception as exc:  # supervision point: a handler bug fails this call only
            log.exception("ipc_handler_crashed method=%s", msg.method)
            error = {"code": "internal_error", "message": f"agent error in {msg.method}: {exc!r}", "data": {}}
    then = None
    if isinstance(result, AfterResponse):
        result, then = result.result, result.then
    try:
        await conn.send(rpc.Response(msg.msgid, error, result).to_wire())
    finally:
        if then is not None:
            then()


async def serve_ipc(
    ipc: IpcListener,
    handlers: dict[str, Handler],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept clients forever, each in its own task."""

    async def one(stream: trio.SocketStream) -> None:
        try:
            if not await ipc.admit(stream):
                log.warning("ipc_peer_rejected path=%s", ipc.path)
                await stream.aclose()
                return
            await handle_connection(stream, handlers)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception:  # supervision point: one client can never take the agent down
            log.exception("ipc_connection_crashed")

    async with trio.open_nursery() as nursery:
        ipc.clients = nursery
        task_status.started()
        async with ipc.listener as listener:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:  # EMFILE and friends: back off instead of spinning
                    log.warning("ipc_accept_failed error=%s", exc)
                    await trio.sleep(0.1)
                    continue
                nursery.start_soon(one, stream)
