"""cli/tcpforward.py, the demo's cuttable LAN route: bytes both ways, a cut closes every connection and the
listener at once, and a new forwarder can listen on the same port again. Real loopback sockets."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from hermes_relay.cli.tcpforward import Forwarder


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=_echo, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def _echo(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    got = b""
    while len(got) < n:
        chunk = sock.recv(n - len(got))
        if not chunk:
            break
        got += chunk
    return got


def test_forwards_both_ways_then_a_cut_closes_everything(echo_port: int) -> None:
    fwd = Forwarder(echo_port)
    assert fwd.url == f"ws://127.0.0.1:{fwd.port}"
    a = socket.create_connection(("127.0.0.1", fwd.port), timeout=5)
    b = socket.create_connection(("127.0.0.1", fwd.port), timeout=5)
    payload = bytes(range(256)) * 1000
    a.sendall(payload)
    assert _recv_exactly(a, len(payload)) == payload
    b.sendall(b"hi")
    assert _recv_exactly(b, 2) == b"hi"
    fwd.cut()
    for sock in (a, b):  # both ends of every forwarded connection are closed: EOF (or a reset)
        try:
            assert sock.recv(10) == b""
        except ConnectionResetError:
            pass
        sock.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", fwd.port), timeout=5)
    again = Forwarder(echo_port, port=fwd.port)  # the route comes back where it was
    c = socket.create_connection(("127.0.0.1", again.port), timeout=5)
    c.sendall(b"back")
    assert _recv_exactly(c, 4) == b"back"
    c.close()
    again.cut()
