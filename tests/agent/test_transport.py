"""transport.py maps every library failure at the boundary to one HermesError (real loopback sockets)."""

from __future__ import annotations

import pytest
import trio

from hermes_relay.agent import transport
from hermes_relay.core.errors import ConnectRefusedError, ConnectTimeoutError, HandshakeRejectedError, TransportError
from hermes_relay.core.routes import Route


async def _silent_server(*, task_status: trio.TaskStatus[int]) -> None:
    """Accepts TCP and never says a word (a dead proxy in front of a relay)."""
    held: list[trio.SocketStream] = []
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    try:
        async with listeners[0] as listener:
            task_status.started(listener.socket.getsockname()[1])
            while True:
                held.append(await listener.accept())
    finally:
        for stream in held:
            await trio.aclose_forcefully(stream)


async def _http_server(reply: bytes, *, task_status: trio.TaskStatus[int]) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listeners[0] as listener:
        task_status.started(listener.socket.getsockname()[1])
        while True:
            stream = await listener.accept()
            async with stream:
                await stream.receive_some(65536)
                await stream.send_all(reply)


def _route(port: int) -> Route:
    return Route(0, 0, "lan", f"ws://127.0.0.1:{port}")


async def test_silent_upgrade_is_a_timeout_not_an_exception_group() -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(_silent_server)
        dialed = await transport.dial(_route(port), expected_pin=None)
        with pytest.raises(ConnectTimeoutError) as info:
            await transport.open_websocket(nursery, dialed, timeout=0.2)
        assert "no answer within 0.2s" in info.value.message
        nursery.cancel_scope.cancel()


async def test_refused_port_names_the_cause() -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(_silent_server)
        nursery.cancel_scope.cancel()
    with pytest.raises(ConnectRefusedError) as info:
        await transport.dial(_route(port), expected_pin=None)
    assert "8767" in (info.value.hint or "")


async def test_non_websocket_http_server_is_a_rejected_handshake() -> None:
    reply = b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot here!"
    async with trio.open_nursery() as nursery:
        port = await nursery.start(_http_server, reply)
        dialed = await transport.dial(_route(port), expected_pin=None)
        with pytest.raises(HandshakeRejectedError) as info:
            await transport.open_websocket(nursery, dialed, timeout=2)
        assert info.value.status == 404 and "not here!" in info.value.message
        nursery.cancel_scope.cancel()


async def test_plain_tcp_garbage_is_a_failed_upgrade() -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(_http_server, b"SSH-2.0-OpenSSH_9.6\r\n")
        dialed = await transport.dial(_route(port), expected_pin=None)
        with pytest.raises(TransportError) as info:  # a failed or unanswered upgrade, never a library error
            await transport.open_websocket(nursery, dialed, timeout=0.5)
        assert "WebSocket upgrade" in info.value.message
        nursery.cancel_scope.cancel()


async def test_auth_refused_for_a_block_is_rate_limited_not_rejected(relay_factory) -> None:
    import helpers

    from hermes_relay.core.errors import RateLimitedError
    from hermes_relay.relay.server import SESSION_FAIL_LIMIT

    relay = await relay_factory()
    async with trio.open_nursery() as nursery:
        dialed = await transport.dial(Route(0, 0, "lan", relay.url), expected_pin=None)
        conn = await transport.open_websocket(nursery, dialed)  # opened before the block
        for i in range(SESSION_FAIL_LIMIT):
            _, reply = await helpers.ws_auth(relay.url, {"session_token": f"guess-{i}"})
            assert reply["type"] == "auth.fail"
        with pytest.raises(RateLimitedError):  # a pairing must not be marked revoked for this
            await transport.authenticate(conn, {"session_token": "whatever"}, url=relay.url)
        await conn.aclose()
        nursery.cancel_scope.cancel()


async def _hanging_up_server(how: str, *, task_status: trio.TaskStatus[int]) -> None:
    """Accepts, reads the upgrade request, then closes (or resets) without a word."""
    import socket
    import struct

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listeners[0] as listener:
        task_status.started(listener.socket.getsockname()[1])
        while True:
            stream = await listener.accept()
            await stream.receive_some(65536)
            if how == "reset":
                stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await stream.aclose()


@pytest.mark.parametrize(("how", "words"), [("close", "then closed the connection"),
                                            ("reset", "then reset the connection")])
async def test_a_port_that_hangs_up_during_the_upgrade_says_so_at_once(how: str, words: str) -> None:
    from hermes_relay.core.errors import ConnectionLostError

    async with trio.open_nursery() as nursery:
        port = await nursery.start(_hanging_up_server, how)
        dialed = await transport.dial(_route(port), expected_pin=None)
        with trio.fail_after(5):  # not the 30 s upgrade timeout: the hang-up ends the wait
            with pytest.raises(ConnectionLostError) as info:
                await transport.open_websocket(nursery, dialed, timeout=30)
        assert words in info.value.message and "without answering the WebSocket upgrade" in info.value.message
        assert "timed out" not in info.value.message and "no answer" not in info.value.message
        nursery.cancel_scope.cancel()


async def test_a_connection_closed_by_us_leaves_no_task_behind(relay_factory) -> None:
    # Probe connections are opened and discarded all the time: none of their tasks may outlive them.
    relay = await relay_factory()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:  # exits only once every task of the connection ended
            dialed = await transport.dial(Route(0, 0, "lan", relay.url), expected_pin=None)
            await transport.open_websocket(nursery, dialed)
            await dialed.aclose()  # closed under the WebSocket, as a discard that cannot wait does


async def test_the_agent_reads_its_websocket_in_large_pieces(relay_factory, monkeypatch) -> None:
    """trio-websocket's default 4 KiB reads took ~780 reads for a 3 MB desktop call."""
    import helpers

    from hermes_relay.core.wire import WS_RECEIVE_BYTES

    relay = await relay_factory()
    asked: list[int | None] = []
    real = trio.SocketStream.receive_some

    async def recording(self: trio.SocketStream, max_bytes: int | None = None) -> bytes | bytearray:
        if self.socket.getpeername()[1] == relay.info.port:  # the agent's end only
            asked.append(max_bytes)
        return await real(self, max_bytes)

    monkeypatch.setattr(trio.SocketStream, "receive_some", recording)
    code = await helpers.register_code(relay.http)
    async with trio.open_nursery() as nursery:
        dialed = await transport.dial(Route(0, 0, "lan", relay.url), expected_pin=None)
        conn = await transport.open_websocket(nursery, dialed)
        await transport.authenticate(conn, {"pairing_code": code, "device_name": "d"}, url=relay.url)
        await conn.aclose()
        nursery.cancel_scope.cancel()
    assert asked and set(asked) == {WS_RECEIVE_BYTES}
