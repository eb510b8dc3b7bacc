"""Authenticated sockets stay accounted for: heartbeat pings drop half-open clients, and a revocation
racing the end of authentication still closes the socket.

The heartbeat tests drive the client side by hand (wsproto over a bare TCP stream) so the test decides
whether pings get a pong, which trio-websocket's client would always send on its own.
"""

from __future__ import annotations

import json

import pytest
import trio
from helpers import FakeWallClock, RawWsClient, auth_frame, http_json, register_code
from wsproto.events import CloseConnection, Ping, TextMessage

from hermes_relay.relay import peers
from hermes_relay.relay import ws as ws_mod
from hermes_relay.relay.httpmsg import HttpRequest
from hermes_relay.relay.server import CLOSE_AUTH_FAILED, CLOSE_HEARTBEAT, HEARTBEAT, Relay, RelayConfig

HB = 0.1  # seconds; the relay pings this often and waits as long for the pong


async def connections(relay) -> int:
    status, health = await http_json("GET", f"{relay.http}/health")
    assert status == 200
    return int(health["connections"])


def test_default_heartbeat_is_30_seconds():
    assert HEARTBEAT == 30.0
    assert RelayConfig().heartbeat == HEARTBEAT


async def test_client_that_stops_answering_pings_is_dropped(relay_factory):
    relay = await relay_factory(heartbeat=HB)
    code = await register_code(relay.http)
    client = await RawWsClient.connect(relay)
    try:
        assert (await client.authenticate({"pairing_code": code}))["type"] == "auth.ok"
        assert await connections(relay) == 1

        # Half-open from here: the client reads, but never answers a ping or the relay's close.
        pings = 0
        event = await client.next_event()
        while isinstance(event, Ping):
            pings += 1
            event = await client.next_event()
        assert pings == 1  # one unanswered ping is enough
        assert isinstance(event, CloseConnection)
        assert (event.code, event.reason) == (CLOSE_HEARTBEAT, "heartbeat timeout")
        assert await client.next_event() is None  # the relay hung up without waiting for our close
    finally:
        await client.aclose()
    assert await connections(relay) == 0


async def test_client_that_answers_pings_stays_connected(relay_factory):
    relay = await relay_factory(heartbeat=HB)
    code = await register_code(relay.http)
    client = await RawWsClient.connect(relay)
    try:
        assert (await client.authenticate({"pairing_code": code}))["type"] == "auth.ok"
        for _ in range(3):  # three full heartbeat periods, each answered
            event = await client.next_event()
            assert isinstance(event, Ping)
            await client.stream.send_all(client.conn.send(event.response()))
        await client.send_text(json.dumps({"channel": "system", "type": "ping", "id": "p1", "payload": {"ts": 1}}))
        event = await client.next_event()
        while isinstance(event, Ping):
            await client.stream.send_all(client.conn.send(event.response()))
            event = await client.next_event()
        assert isinstance(event, TextMessage)
        assert json.loads(event.data)["type"] == "pong"
        assert await connections(relay) == 1
    finally:
        await client.aclose()


# -- revocation racing authentication --------------------------------------------------------------

class ScriptedWs:
    """Stands in for a server-side WebSocket: yields one frame, runs ``on_send`` on each reply, then
    waits until something closes it (as the relay's ``_spawn_close`` does on revocation)."""

    def __init__(self, first: str, on_send):
        self._first: str | None = first
        self._on_send = on_send
        self._closed = trio.Event()
        self.close_reason: ws_mod.CloseReason | None = None
        self.wait = self.beat = None

    @property
    def closed(self):
        return self.close_reason

    @property
    def open(self) -> bool:
        return self.close_reason is None

    def authenticated(self, max_message: int, receive_size: int, idle=None) -> None:
        pass

    async def get_message(self) -> str:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        await self._closed.wait()
        raise ws_mod.ConnectionClosed(self.close_reason)

    async def send_message(self, data: str) -> None:
        self._on_send(json.loads(data))

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        if self.close_reason is None:
            self.close_reason = ws_mod.CloseReason(code, reason)
        self._closed.set()


async def test_revocation_while_auth_ok_is_being_sent_still_closes_the_socket():
    relay = Relay(RelayConfig(wall_clock=FakeWallClock()))
    code = relay.core.codes.register(None).code
    revoked = []

    def on_send(envelope: dict) -> None:
        # DELETE /sessions/{prefix} handled while the relay is still sending auth.ok to this client.
        if envelope["type"] == "auth.ok":
            token = envelope["payload"]["session_token"]
            path, headers = f"/sessions/{token[:8]}", {"authorization": f"Bearer {token}"}
            req = HttpRequest("DELETE", path, headers)
            revoked.append(relay.route_http(req, b"", peers.resolve("127.0.0.1", {})))

    ws = ScriptedWs(auth_frame({"pairing_code": code}), on_send)
    with trio.fail_after(1):  # before the fix the socket was never found, so this waited forever
        with pytest.raises(ws_mod.ConnectionClosed):
            await relay.ws_session(ws, "127.0.0.1")  # type: ignore[arg-type]
    assert revoked and revoked[0][0] == 200
    assert ws.close_reason is not None
    assert (ws.close_reason.code, ws.close_reason.reason) == (CLOSE_AUTH_FAILED, "session revoked")
    assert relay.core.live == {}
