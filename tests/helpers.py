"""Client-side helpers for tests that talk to a real relay over loopback sockets.

Importable as ``helpers`` (``pythonpath = ["tests"]`` in pyproject). Everything here speaks the wire
protocol the way an outside client would: raw HTTP/1.1 through h11 and WebSocket through
trio-websocket, so the tests exercise the relay's real parsing and never its internals.

WebSocket clients need a nursery for their reader task. ``ws_auth`` takes one explicitly or uses the
one published by the ``relay_factory`` fixture (``CLIENT_NURSERY``); that fixture also closes every
client it opened before stopping the relays, so tests need no teardown of their own.
"""

from __future__ import annotations

import json
import os
import ssl
import uuid
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import h11
import trio
import trio_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Event, Request, TextMessage

HANDSHAKE_TIMEOUT = 5.0  # trio-websocket waits forever for a 101 if the server just hangs up

CLIENT_NURSERY: ContextVar[trio.Nursery] = ContextVar("CLIENT_NURSERY")
OPEN_CLIENTS: ContextVar[list[trio.abc.AsyncResource]] = ContextVar("OPEN_CLIENTS")


class FakeWallClock:
    """A wall clock for ``RelayConfig(wall_clock=...)`` that only moves when the test says so."""

    def __init__(self, start: float = 1_800_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def run_inline(fn: Any, *args: Any) -> Any:
    """A ``run_sync`` seam (trio.to_thread.run_sync's shape) that runs ``fn`` on the loop: for tests under
    trio's autojump clock, which jumps ahead while a worker thread runs (trio sees the run idle)."""
    await trio.lowlevel.checkpoint()
    return fn(*args)


def client_ssl_context() -> ssl.SSLContext:
    """A client context that accepts any certificate: tests check the pin themselves."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def open_stream(url: str, ssl_context: ssl.SSLContext | None = None) -> trio.abc.Stream:
    """A TCP (or TLS, for https/wss URLs or an explicit context) stream to the URL's host and port."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    secure = parts.scheme in ("https", "wss")
    port = parts.port or (443 if secure else 80)
    stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
    if secure or ssl_context is not None:
        # https_compatible: the relay (like most HTTPS servers) closes without a TLS close_notify.
        stream = trio.SSLStream(stream, ssl_context or client_ssl_context(), server_hostname=host, https_compatible=True)
    return stream


async def accepted_pair(request: bytes = b"") -> tuple[trio.SocketStream, trio.SocketStream]:
    """(client, server) ends of one loopback TCP connection, the listener closed; ``request`` sent by the
    client and readable at the server's end when this returns."""
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    client = await trio.open_tcp_stream("127.0.0.1", listener.socket.getsockname()[1])
    server = await listener.accept()
    await listener.aclose()
    if request:
        await client.send_all(request)
        await trio.lowlevel.wait_readable(server.socket)
    return client, server


async def accept_websocket(listener: trio.SocketListener) -> tuple[trio.SocketStream, Any]:
    """The next connection on ``listener``, its WebSocket upgrade read and accepted by the relay's own code
    (relay/upgrade.py): the stream and the ``Accepted`` answer (its ``reply`` not sent yet)."""
    from hermes_relay.relay import http, upgrade

    stream = await listener.accept()
    req = await http.read_request_head(stream)
    assert req is not None
    answer = upgrade.answer(req)
    assert isinstance(answer, upgrade.Accepted)
    return stream, answer


async def close_from_client(server: Any, client_aclose: Any) -> None:
    """The client closes (``client_aclose``); the relay side's reader answers it: ``server`` is a
    relay/ws.py ServerSocket and nothing else reads its end. Its TCP stream is then closed (the stream is
    its owner's to close, relay/conn.py)."""
    from hermes_relay.relay.ws import ConnectionClosed

    with trio.fail_after(5):
        async with trio.open_nursery() as both:
            both.start_soon(client_aclose)
            try:
                while True:
                    await server.get_message()
            except ConnectionClosed:
                pass
    await server.stream.aclose()


async def read_to_eof(stream: trio.abc.Stream) -> bytes:
    data = bytearray()
    while True:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return bytes(data)
        data += chunk


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Parse one complete HTTP/1.1 response with h11: (status, lower-cased headers, body)."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(raw)
    conn.receive_data(b"")
    status, headers, body = 0, {}, bytearray()
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Response):
            status = event.status_code
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers}
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)) or event is h11.NEED_DATA:
            return status, headers, bytes(body)


async def raw_http(url: str, data: bytes, ssl_context: ssl.SSLContext | None = None) -> bytes:
    """Send ``data`` as-is and return every byte the server sends until it closes."""
    stream = await open_stream(url, ssl_context)
    async with stream:
        await stream.send_all(data)
        return await read_to_eof(stream)


async def http_request(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: list[tuple[str, str]] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request over a fresh connection: (status, headers, body)."""
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn = h11.Connection(h11.CLIENT)
    hdrs = [("Host", parts.netloc), ("Connection", "close"), *(headers or [])]
    if body is not None:
        hdrs.append(("Content-Length", str(len(body))))
    data = conn.send(h11.Request(method=method, target=target, headers=hdrs))
    if body:
        data += conn.send(h11.Data(data=body))
    data += conn.send(h11.EndOfMessage())
    return parse_response(await raw_http(url, data, ssl_context))


class RawWsClient:
    """A WebSocket client driven by hand: it reads what the relay sends and answers nothing unless told."""

    def __init__(self, stream: trio.abc.Stream, conn: WSConnection):
        self.stream = stream
        self.conn = conn
        self._pending: list[Event] = []

    @classmethod
    async def connect(cls, relay: Any) -> RawWsClient:
        stream = await open_stream(relay.http)
        conn = WSConnection(ConnectionType.CLIENT)
        client = cls(stream, conn)
        await stream.send_all(conn.send(Request(host=f"127.0.0.1:{relay.info.port}", target="/")))
        assert isinstance(await client.next_event(), AcceptConnection)
        return client

    async def send_text(self, text: str) -> None:
        await self.stream.send_all(self.conn.send(TextMessage(data=text)))

    async def next_event(self) -> Event | None:
        """The next WebSocket event from the relay, or None once it has closed the TCP connection."""
        while not self._pending:
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.conn.receive_data(data)
            self._pending.extend(self.conn.events())
        return self._pending.pop(0)

    async def authenticate(self, payload: dict[str, Any]) -> Any:
        await self.send_text(auth_frame(payload))
        event = await self.next_event()
        assert isinstance(event, TextMessage) and event.message_finished
        return json.loads(event.data)

    async def aclose(self) -> None:
        await self.stream.aclose()


async def http_json(
    method: str,
    url: str,
    body: Any = None,
    token: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[int, Any]:
    """A JSON request (``body`` is serialised unless it is already bytes): (status, decoded JSON)."""
    headers = [("Accept", "application/json")]
    if token is not None:
        headers.append(("Authorization", f"Bearer {token}"))
    raw: bytes | None = None
    if body is not None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
        headers.append(("Content-Type", "application/json"))
    status, _, payload = await http_request(method, url, raw, headers, ssl_context)
    return status, json.loads(payload) if payload else None


async def register_code(
    http_base: str,
    ttl_seconds: int | None = None,
    code: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    **extra: Any,
) -> str:
    """Register ``code`` through ``POST /pairing/register`` (as ``hermes-pair`` does), or without one have
    the relay mint it (``POST /pairing/mint``), and return the code."""
    body: dict[str, Any] = dict(extra)
    if ttl_seconds is not None:
        body["ttl_seconds"] = ttl_seconds
    if code is not None:
        body["code"] = code
    route = "register" if code is not None else "mint"
    status, obj = await http_json("POST", f"{http_base}/pairing/{route}", body, ssl_context=ssl_context)
    assert status == 200, (status, obj)
    assert obj["ok"] is True
    return str(obj["code"])


async def until(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Call ``check()`` (sync or async) until it returns something truthy, polling every 10 ms; fail after
    ``timeout`` s. For a state another process or task reaches in its own time, never a fixed sleep."""
    with trio.fail_after(timeout):
        while True:
            value = check()
            if isinstance(value, Awaitable):
                value = await value
            if value:
                return value
            await trio.sleep(0.01)


def auth_frame(payload: dict[str, Any], msg_id: str | None = None) -> str:
    return json.dumps({"channel": "system", "type": "auth", "id": msg_id or str(uuid.uuid4()), "payload": payload})


async def ws_connect(
    url: str, ssl_context: ssl.SSLContext | None = None, *, nursery: trio.Nursery | None = None
) -> trio_websocket.WebSocketConnection:
    """Open a WebSocket client in ``nursery`` (default: the ``relay_factory`` fixture's client nursery).

    The TCP/TLS stream is opened here and handed to ``trio_websocket.wrap_client_stream`` so the test
    owns it: trio-websocket leaves a client stream open after a close the server started, and the
    fixture closes every stream it registered. Raises trio_websocket.ConnectionRejected when the relay
    answers the upgrade with an HTTP status instead of 101.
    """
    if nursery is None:
        try:
            nursery = CLIENT_NURSERY.get()
        except LookupError:
            raise RuntimeError("ws_connect needs nursery= outside the relay_factory/relay fixtures") from None
    parts = urlsplit(url)
    stream = await open_stream(url, ssl_context)
    registry = OPEN_CLIENTS.get(None)
    if registry is not None:
        registry.append(stream)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        ws = await nursery.start(_hold_client, stream, parts.hostname or "127.0.0.1", resource)
    except BaseException:
        with trio.CancelScope(shield=True):
            await stream.aclose()
        raise
    if registry is not None:
        registry.append(ws)
    return ws


async def _hold_client(
    stream: trio.abc.Stream, host: str, resource: str, *, task_status: trio.TaskStatus[trio_websocket.WebSocketConnection]
) -> None:
    # trio-websocket raises a rejected handshake (e.g. HTTP 429) inside the nursery that runs the
    # reader task; a private nursery per connection turns that back into one plain exception.
    try:
        async with trio.open_nursery() as private:
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                ws = await trio_websocket.wrap_client_stream(private, stream, host, resource)
            task_status.started(ws)
    except BaseExceptionGroup as group:
        raise _sole_exception(group) from None


def _sole_exception(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def receive_json(ws: trio_websocket.WebSocketConnection) -> dict[str, Any]:
    message = await ws.get_message()
    obj = json.loads(message)
    assert isinstance(obj, dict)
    return obj


async def send_json(ws: trio_websocket.WebSocketConnection, channel: str, typ: str, payload: dict[str, Any] | None = None,
                    msg_id: str | None = None) -> str:
    msg_id = msg_id or str(uuid.uuid4())
    await ws.send_message(json.dumps({"channel": channel, "type": typ, "id": msg_id, "payload": payload or {}}))
    return msg_id


async def ws_auth(
    url: str,
    payload: dict[str, Any],
    ssl_context: ssl.SSLContext | None = None,
    *,
    nursery: trio.Nursery | None = None,
) -> tuple[trio_websocket.WebSocketConnection, dict[str, Any]]:
    """Connect, send ``system/auth`` with ``payload`` and return (ws, the relay's first reply)."""
    ws = await ws_connect(url, ssl_context, nursery=nursery)
    await ws.send_message(auth_frame(payload))
    return ws, await receive_json(ws)


async def pair(url: str, http_base: str, ssl_context: ssl.SSLContext | None = None, *, ttl_seconds: int | None = None,
               **device: Any) -> tuple[trio_websocket.WebSocketConnection, dict[str, Any]]:
    """Register a code and pair with it; returns (ws, auth.ok payload). Asserts the pairing worked."""
    code = await register_code(http_base, ttl_seconds, ssl_context=ssl_context)
    payload = {"pairing_code": code, "device_name": "test device", "device_id": uuid.uuid4().hex,
               "client_surface": "desktop", **device}
    ws, reply = await ws_auth(url, payload, ssl_context)
    assert reply["type"] == "auth.ok", reply
    return ws, reply["payload"]


async def expect_closed(ws: trio_websocket.WebSocketConnection) -> trio_websocket.CloseReason:
    """Wait (reading and discarding messages) until the relay closes ``ws``; return the close reason."""
    while True:
        try:
            await ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            assert exc.reason is not None
            return exc.reason


def bypasses_file_permissions() -> bool:
    """Whether this process reads and writes files whatever their mode (root with CAP_DAC_OVERRIDE)."""
    try:
        with open("/proc/self/status") as f:
            capeff = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    except (OSError, StopIteration, ValueError):
        return os.geteuid() == 0
    return bool(capeff & 0b110)  # CAP_DAC_OVERRIDE (1), CAP_DAC_READ_SEARCH (2)


def rerun_without_file_permission_bypass(nodeid: str) -> None:
    """Run one test again in a pytest process that cannot bypass file modes (root minus the DAC
    capabilities, via setpriv), so permission failures can be caused even when the suite runs as root."""
    import shutil
    import subprocess
    import sys

    if shutil.which("setpriv") is None:
        import pytest

        pytest.skip("running as root and setpriv is missing: file modes cannot be enforced here")
    import tempfile

    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="hr-nodac-") as base:  # pytest's shared basetemp may hold dirs it cannot clean
        done = subprocess.run(["setpriv", "--bounding-set", "-dac_override,-dac_read_search", sys.executable, "-m",
                               "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(Path(base) / "t"), nodeid],
                              cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout, done.stdout[-500:]


class ScriptedServer:
    """A WebSocket server on loopback that a test scripts in ``_handler`` (a stand-in relay); ``url`` once
    ``serve`` started it."""

    port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def serve(self, nursery: trio.Nursery) -> None:
        server = await nursery.start(trio_websocket.serve_websocket, self._handler, "127.0.0.1", 0, None)
        self.port = server.port

    async def _handler(self, request: trio_websocket.WebSocketRequest) -> None:
        raise NotImplementedError
