"""The named-pipe stream over fake overlapped I/O: trio's stream contract and the IPC framing over it.

The IOCP calls exist only on Windows; ``PipeStream`` takes its I/O as ``PipeOps``, here a pair of
connected loopback sockets standing in for the two ends of a pipe instance.
"""

from __future__ import annotations

import socket as stdlib_socket

import trio
import trio.testing

from hermes_relay.agent._winpipe import PipeStream
from hermes_relay.core import framing


class SocketOps:
    """Pipe I/O on trio sockets keyed by a fake handle; errors carry a Win32 code like the IOCP's."""

    def __init__(self) -> None:
        self.sockets: dict[int, trio.socket.SocketType] = {}

    def add(self, sock: stdlib_socket.socket) -> int:
        handle = len(self.sockets) + 1
        self.sockets[handle] = trio.socket.from_stdlib_socket(sock)
        return handle

    async def readinto(self, handle: int, buffer: bytearray) -> int:
        try:
            return await self.sockets[handle].recv_into(buffer)
        except ConnectionResetError as exc:
            err = OSError(exc.errno, "The pipe has been ended")
            err.winerror = 109  # type: ignore[attr-defined]  # ERROR_BROKEN_PIPE, as ReadFile reports it
            raise err from None

    async def write(self, handle: int, data: bytes) -> int:
        return await self.sockets[handle].send(data)

    def close(self, handle: int) -> None:
        self.sockets[handle].close()


def pipe_pair() -> tuple[PipeStream, PipeStream]:
    ops = SocketOps()
    a, b = stdlib_socket.socketpair()
    return PipeStream(ops.add(a), ops), PipeStream(ops.add(b), ops)


async def test_the_pipe_stream_keeps_trios_two_way_stream_contract() -> None:
    async def maker() -> tuple[PipeStream, PipeStream]:
        return pipe_pair()

    await trio.testing.check_two_way_stream(maker, None)


async def test_ipc_frames_cross_the_pipe_whole_whatever_the_read_sizes() -> None:
    client, server = pipe_pair()
    request = [0, 1, "status", {"reveal_tokens": False, "text": "\u2603" * 5000}]
    reply = [1, 1, None, {"relays": [{"url": "ws://10.0.0.2:8767", "state": "connected"}] * 200}]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_all, framing.encode_frame(request))
        decoder = framing.FrameDecoder()
        got: list[object] = []
        while not got:
            decoder.feed(await server.receive_some(97))  # odd sizes: frames span reads
            got.extend(decoder)
        assert got == [request]
        nursery.start_soon(server.send_all, framing.encode_frame(reply))
        decoder = framing.FrameDecoder()
        got = []
        while not got:
            decoder.feed(await client.receive_some())
            got.extend(decoder)
        assert got == [reply]
    await client.aclose()
    assert await server.receive_some() == b""  # the other end went: end of stream, not an error
    await server.aclose()
