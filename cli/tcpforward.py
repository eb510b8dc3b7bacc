"""A small loopback TCP forwarder that can be cut, for the demo's route change (threads, no trio).

``Forwarder(target_port)`` listens on a free loopback port and copies bytes both ways to
``127.0.0.1:target_port``; ``cut()`` closes the listener and every forwarded connection at once, as a
Wi-Fi network that goes away: both peers see their sockets closed, new connections are refused.
"""

from __future__ import annotations

import socket
import threading

_CHUNK = 65536


class Forwarder:
    def __init__(self, target_port: int, *, host: str = "127.0.0.1", port: int = 0):
        self.target = (host, target_port)
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self._cut = False
        self._listener = socket.create_server((host, port))  # port: listen again where a cut one was
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, name="tcpforward-accept", daemon=True).start()

    @property
    def url(self) -> str:
        return f"ws://{self.target[0]}:{self.port}"

    def cut(self) -> None:
        """Close the listener and every forwarded connection (both peers see their socket closed)."""
        with self._lock:
            self._cut = True
            socks, self._socks = list(self._socks), set()
        _close(self._listener)
        for sock in socks:
            _close(sock)

    close = cut

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                if self._cut:
                    _close(client)
                    _close(upstream)
                    return
                self._socks |= {client, upstream}
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), name="tcpforward-pump", daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(_CHUNK):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            _close(src)
            _close(dst)


def _close(sock: socket.socket) -> None:
    try:  # shutdown first: it wakes a thread blocked in recv on this socket, close alone does not
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass
