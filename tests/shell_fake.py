"""A fake agent for `hermes-relay shell` tests: a real Unix-socket IPC server in a thread.

It speaks the agent's framing (core/framing.py) and the ``shell.open`` call exactly as
docs/shell-protocol.md says: ``hello`` answered, ``shell.open`` params checked against
core/apitypes.py (every key, every type), the CLI's notifies checked against ``CLIENT_NOTIFIES``, and
every notify it sends checked against ``NOTIFIES``. Tests drive it: ``next_call()`` gives the next
``shell.open`` (a ``FakeShellCall``), whose ``expect()`` waits for the CLI's notifies with a deadline.
``terminal.list``/``terminal.kill`` answer from ``results``. ``crash()`` ends every connection without
a response, as a killed agent does; ``stop_listening()``/``listen()`` make it unreachable and back.
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import threading
import time
from typing import Any

from hermes_relay.core import apitypes, framing, rpc

DEADLINE = 10.0


class FakeShellCall:
    """One shell.open call on its own connection."""

    def __init__(self, agent: FakeShellAgent, sock: socket.socket, msgid: int, params: dict[str, Any]):
        self.agent = agent
        self.sock = sock
        self.msgid = msgid
        self.params = params
        self.received: list[tuple[str, dict[str, Any]]] = []
        self._cond = threading.Condition()
        self.closed = False  # the CLI closed its end
        self.out_end = int(params["out_seq"])
        self._lock = threading.Lock()

    # -- agent -> CLI
    def send(self, obj: Any) -> None:
        with self._lock:
            self.sock.sendall(framing.encode_frame(obj))

    def notify(self, method: str, params: dict[str, Any]) -> None:
        problems = apitypes.check(params, apitypes.NOTIFIES[method], where=method)
        assert not problems, problems
        self.send(rpc.Notify(method, params).to_wire())

    def output(self, data: bytes, seq_end: int) -> None:
        self.out_end = max(self.out_end, seq_end)
        self.notify("shell.output", {"d": data, "seq_end": seq_end})

    def write(self, data: bytes) -> None:
        """The next output bytes, numbered from where the CLI said it is (out_seq)."""
        self.output(data, self.out_end + len(data))

    def attached(self, **extra: Any) -> None:
        self.notify("shell.attached", {"reattach": False, "resumed": False, "tmux": True, "route": "LAN",
                                       "relay": "ours", **extra})

    def respond(self, reason: str, code: int | None = None) -> None:
        result = {"reason": reason, "code": code}
        assert not apitypes.check(result, apitypes.METHODS["shell.open"][1])
        self.send(rpc.Response(self.msgid, None, result).to_wire())

    def error(self, code: str, message: str) -> None:
        self.send(rpc.Response(self.msgid, {"code": code, "message": message, "data": {}}, None).to_wire())

    def drop(self) -> None:
        """End the connection without a response (the agent died)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    # -- CLI -> agent
    def _received(self, method: str, params: dict[str, Any]) -> None:
        with self._cond:
            self.received.append((method, params))
            self._cond.notify_all()

    def _eof(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def wait_for(self, predicate: Any, what: str, timeout: float = DEADLINE) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = predicate()
                if found:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what}; received {self.received!r:.2000}")
                self._cond.wait(left)

    def expect(self, method: str, timeout: float = DEADLINE) -> dict[str, Any]:
        """The first notify ``method`` received (waiting for it)."""
        def find() -> Any:
            return next(((p,) for m, p in self.received if m == method), None)
        return dict(self.wait_for(find, method, timeout)[0])

    def methods(self) -> list[str]:
        with self._cond:
            return [m for m, _ in self.received]

    def inputs(self) -> bytes:
        with self._cond:
            return b"".join(p["d"] for m, p in self.received if m == "shell.input")

    def wait_input(self, data: bytes, timeout: float = DEADLINE) -> bytes:
        return bytes(self.wait_for(lambda: data in self.inputs() and self.inputs(), f"input {data!r}", timeout))

    def wait_closed(self, timeout: float = DEADLINE) -> None:
        self.wait_for(lambda: self.closed, "the CLI to close the connection", timeout)


class FakeShellAgent:
    def __init__(self, path: str):
        self.path = path
        self.calls: queue.Queue[FakeShellCall] = queue.Queue()
        self.results: dict[str, Any] = {}
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.hello_count = 0
        self._listener: socket.socket | None = None
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []

    def listen(self) -> None:
        lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lst.bind(self.path)
        lst.listen(8)
        self._listener = lst
        thread = threading.Thread(target=self._accept, args=(lst,), daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop_listening(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def crash(self) -> None:
        """Every connection ends without a response and nothing listens: a killed agent."""
        self.stop_listening()
        for sock in list(self._socks):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.crash()
        for thread in self._threads:
            thread.join(5)

    def next_call(self, timeout: float = DEADLINE) -> FakeShellCall:
        try:
            return self.calls.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("the CLI did not call shell.open") from None

    def _accept(self, lst: socket.socket) -> None:
        while True:
            try:
                sock, _ = lst.accept()
            except OSError:
                return
            self._socks.append(sock)
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, sock: socket.socket) -> None:
        decoder = framing.FrameDecoder(max_frame=256 << 10)
        call: FakeShellCall | None = None
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                decoder.feed(data)
                for obj in decoder:
                    msg = rpc.parse_message(obj)
                    call = self._handle(sock, msg, call)
        except OSError:
            pass
        finally:
            if call is not None:
                call._eof()

    def _handle(self, sock: socket.socket, msg: rpc.Message, call: FakeShellCall | None) -> FakeShellCall | None:
        if isinstance(msg, rpc.Request) and msg.method == "hello":
            self.hello_count += 1
            reply = {"api_version": rpc.API_VERSION, "agent_version": "0.1.0", "pid": os.getpid(),
                     "started_at": time.time()}
            sock.sendall(framing.encode_frame(rpc.Response(msg.msgid, None, reply).to_wire()))
            return call
        if isinstance(msg, rpc.Request) and msg.method == "shell.open":
            problems = apitypes.check(msg.params, apitypes.METHODS["shell.open"][0], where="shell.open")
            assert not problems, problems
            call = FakeShellCall(self, sock, msg.msgid, msg.params)
            self.calls.put(call)
            return call
        if isinstance(msg, rpc.Request):
            self.requests.append((msg.method, msg.params))
            assert not apitypes.check(msg.params, apitypes.METHODS[msg.method][0], where=msg.method)
            result = self.results[msg.method]
            sock.sendall(framing.encode_frame(rpc.Response(msg.msgid, None, result).to_wire()))
            return call
        assert isinstance(msg, rpc.Notify) and call is not None, f"a notify outside a call: {msg!r}"
        problems = apitypes.check(msg.params, apitypes.CLIENT_NOTIFIES[msg.method], where=msg.method)
        assert not problems, problems
        call._received(msg.method, msg.params)
        return call
