"""The link against a scripted relay: exactly what the agent sends in ``auth``, how it answers
``system/ping``, what reaches the desktop service (and that the service cannot take the link down),
and refresh tokens kept in the agent's own file. The relay here is a few lines of trio-websocket over
a real loopback socket, so each test decides every frame the agent sees."""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
import trio_websocket
from helpers import ScriptedServer

from hermes_relay.agent import runner
from hermes_relay.agent.backend import AgentBackend
from hermes_relay.agent.config import AgentConfig
from hermes_relay.agent.credentials import Credentials
from hermes_relay.core import api, wire

DEADLINE = 5.0
Accept = Callable[[dict[str, Any]], "dict[str, Any] | None"]


class ScriptedRelay(ScriptedServer):
    """Answers ``auth`` as ``accept(payload)`` says (None: auth.fail + close 4001) and hands each
    authenticated socket to the test through ``sockets``."""

    def __init__(self, accept: Accept):
        self.accept = accept
        self.auths: list[dict[str, Any]] = []
        self._send, self.sockets = trio.open_memory_channel[trio_websocket.WebSocketConnection](10)
        self.done = trio.Event()
        self.port = 0

    async def _handler(self, request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        frame = json.loads(await ws.get_message())
        assert (frame["channel"], frame["type"]) == ("system", "auth")
        self.auths.append(frame["payload"])
        ok = self.accept(frame["payload"])
        if ok is None:
            await send(ws, "system", "auth.fail", {"reason": "invalid token"})
            await ws.aclose(wire.CLOSE_AUTH_FAILED, "auth failed")
            return
        await send(ws, "system", "auth.ok", {"server_version": "scripted", "expires_at": None, "grants": {}, **ok})
        await self._send.send(ws)
        await self.done.wait()


async def send(ws: trio_websocket.WebSocketConnection, channel: str, typ: str, payload: dict[str, Any],
               msg_id: str | None = None) -> None:
    await ws.send_message(json.dumps({"channel": channel, "type": typ, "id": msg_id or str(uuid.uuid4()),
                                      "payload": payload}))


async def receive(ws: trio_websocket.WebSocketConnection) -> dict[str, Any]:
    obj = json.loads(await ws.get_message())
    assert isinstance(obj, dict)
    return obj


class RecordingDesktop:
    """A desktop service that records what the link hands it, answers ``desktop.command`` through the
    port, and fails on a ``boom`` message."""

    def __init__(self) -> None:
        self._send, self.received = trio.open_memory_channel[dict[str, Any]](100)
        self.ports: list[Any] = []

    async def watch(self) -> None:  # the runner's policy-file watch: nothing to watch here
        await trio.sleep_forever()

    async def serve_link(self, port: Any, inbound: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:
        self.ports.append(port)
        async for message in inbound:
            await self._send.send(message)
            if message["type"] == "boom":
                raise RuntimeError("desktop service bug")
            if message["type"] == "desktop.command":
                await port.send({"channel": "desktop", "type": "desktop.response", "id": message["id"],
                                 "payload": {"request_id": message["payload"].get("request_id"), "ok": True}})


def agent_for(tmp_path: Path, **overrides: Any) -> AgentBackend:
    run_dir = Path(tempfile.mkdtemp(prefix="hr-"))
    env = {"HERMES_HOME": str(tmp_path / "home"), "HERMES_RELAY_RUNTIME_DIR": str(run_dir)}
    return AgentBackend(AgentConfig.from_env(env, netwatch=False, **overrides))


async def start(agent: AgentBackend, nursery: trio.Nursery) -> trio.MemoryReceiveChannel[dict[str, Any]]:
    send_states, states = trio.open_memory_channel[dict[str, Any]](100)
    agent.watchers.add(send_states)
    await nursery.start(runner.run, agent)
    return states


async def until(states: trio.MemoryReceiveChannel[dict[str, Any]], state: str) -> dict[str, Any]:
    async for s in states:
        if s["state"] == state:
            return s
    raise AssertionError("watch channel closed")


def store_record(agent: AgentBackend, url: str, **record: Any) -> None:
    agent.store.update(lambda sessions: sessions.__setitem__(url, {"paired_at": 1_700_000_000, **record}))


async def test_auth_payload_and_the_desktop_seam(tmp_path: Path) -> None:
    relay = ScriptedRelay(lambda payload: {} if payload.get("session_token") == "T1" else None)
    agent = agent_for(tmp_path)
    desktop = RecordingDesktop()
    agent.desktop = desktop
    shared_id = str(uuid.uuid4())
    agent.config.device_id_file.parent.mkdir(parents=True, exist_ok=True)
    agent.config.device_id_file.write_text(shared_id + "\n")  # written by another Hermes client
    async with trio.open_nursery() as nursery:
        with trio.fail_after(DEADLINE):
            await relay.serve(nursery)
            store_record(agent, relay.url, token="T1", refresh_token="R0", device_name="office-desktop")
            states = await start(agent, nursery)
            ws = await relay.sockets.receive()
            await until(states, api.CONNECTED)
            (auth,) = relay.auths
            assert auth["session_token"] == "T1"
            assert (auth["client_surface"], auth["device_form_factor"]) == ("desktop", "desktop")
            assert auth["supports"] == {"typed_stream_events": True, "event_schema_version": 1}
            assert auth["device_id"] == shared_id
            assert auth["device_name"] == "office-desktop"  # the name chosen at pairing, not the host name
            # The store's refresh token is copied where a rewriting client cannot drop it.
            assert Credentials(agent.config.credentials_file).refresh_token(relay.url, "T1") == "R0"

            await ws.send_message("not json at all")
            await ws.send_message('{"channel": "desktop", "type": "x", "payload": {"n": ' + "9" * 5000 + "}}")  # int() limit
            await ws.send_message(json.dumps({"channel": "desktop", "type": 5}))
            await send(ws, "system", "ping", {"ts": 1234}, "p-1")
            pong = await receive(ws)
            assert (pong["channel"], pong["type"], pong["id"], pong["payload"]) == ("system", "pong", "p-1", {"ts": 1234})

            await send(ws, "system", "something.new", {})
            await send(ws, "desktop", "desktop.command", {"request_id": "r-1", "tool": "desktop_checksum"}, "c-1")
            got = await desktop.received.receive()
            assert got == {"channel": "desktop", "type": "desktop.command", "id": "c-1",
                           "payload": {"request_id": "r-1", "tool": "desktop_checksum"}}
            answer = await receive(ws)
            assert (answer["type"], answer["id"], answer["payload"]) == ("desktop.response", "c-1",
                                                                          {"request_id": "r-1", "ok": True})
            (port,) = desktop.ports
            assert (port.url, port.route_url) == (relay.url, relay.url)

            big = "x" * (wire.MAX_WS_MESSAGE - 1024)  # above trio-websocket's 1 MiB default
            await send(ws, "tui", "tui.event", {"blob": big})
            assert len((await desktop.received.receive())["payload"]["blob"]) == len(big)

            await send(ws, "system", "ping", {}, "p-2")
            pong = await receive(ws)
            assert (pong["type"], pong["id"]) == ("pong", "p-2") and isinstance(pong["payload"]["ts"], int)
            assert len(relay.auths) == 1
            await send(ws, "desktop", "boom", {})
            assert (await desktop.received.receive())["type"] == "boom"
            # The service is gone: the link drops this connection (a relay must never route calls to a
            # connection nobody serves) and connects again with a fresh service.
            again = await relay.sockets.receive()
            await until(states, api.CONNECTED)
            assert len(relay.auths) == 2
            await send(again, "desktop", "desktop.command", {"request_id": "r-2"}, "c-2")
            assert (await desktop.received.receive())["id"] == "c-2"
            assert len(desktop.ports) == 2  # a fresh service for the new connection
            assert (await receive(again))["payload"] == {"request_id": "r-2", "ok": True}
        relay.done.set()
        nursery.cancel_scope.cancel()


async def test_a_refused_token_is_refreshed_from_the_agents_own_file(tmp_path: Path) -> None:
    def accept(payload: dict[str, Any]) -> dict[str, Any] | None:
        if payload.get("refresh_token") == "R1":
            return {"session_token": "T2", "refresh_token": "R2", "expires_at": 1_900_000_000}
        return {} if payload.get("session_token") == "T2" else None

    relay = ScriptedRelay(accept)
    agent = agent_for(tmp_path)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(DEADLINE):
            await relay.serve(nursery)
            # A reference CLI rewrote the store and dropped the refresh token; the agent kept its copy.
            store_record(agent, relay.url, token="T1", device_name="vm")
            Credentials(agent.config.credentials_file).save(relay.url, "T1", "R1", 1.0)
            states = await start(agent, nursery)
            await relay.sockets.receive()
            await until(states, api.CONNECTED)
            assert [(a.get("session_token"), a.get("refresh_token")) for a in relay.auths] == [("T1", None), (None, "R1")]
            assert relay.auths[1]["device_name"] == "vm"
            record = agent.store.sessions()[relay.url]
            assert (record["token"], record["refresh_token"], record["ttl_expires_at"]) == ("T2", "R2", 1_900_000_000)
            creds = Credentials(agent.config.credentials_file)
            assert creds.refresh_token(relay.url, "T2") == "R2"  # the rotated one, for the new session
            assert creds.refresh_token(relay.url, "T1") is None
            assert '"T2"' not in agent.config.credentials_file.read_text()  # the session token is only hashed
            assert agent.config.credentials_file.stat().st_mode & 0o777 == 0o600
        relay.done.set()
        nursery.cancel_scope.cancel()


async def test_without_a_refresh_token_a_refused_token_is_revoked_and_kept(tmp_path: Path) -> None:
    relay = ScriptedRelay(lambda payload: None)
    agent = agent_for(tmp_path)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(DEADLINE):
            await relay.serve(nursery)
            store_record(agent, relay.url, token="T1")
            states = await start(agent, nursery)
            revoked = await until(states, api.REVOKED)
            assert revoked["replaced_by"] is None and revoked["route"] is None
            assert len(relay.auths) == 1  # nothing else to try: no second refused auth
            assert agent.store.sessions()[relay.url]["token"] == "T1"
        relay.done.set()
        nursery.cancel_scope.cancel()


def test_a_fresh_install_gets_one_device_id_shared_through_its_file(tmp_path: Path) -> None:
    first = agent_for(tmp_path).device()["device_id"]
    assert uuid.UUID(first).version == 4
    path = agent_for(tmp_path).config.device_id_file
    assert path.read_text().strip() == first and path.stat().st_mode & 0o777 == 0o600
    assert agent_for(tmp_path).device()["device_id"] == first  # the next start (or another client) reads it


async def test_a_burst_reaches_the_desktop_service_in_order_whichever_way_each_message_is_read(tmp_path: Path) -> None:
    """The link takes most messages straight off the stream (agent/wstap.py) and leaves the rest to
    trio-websocket: pings (answered by the link), and whatever comes while the service is behind (its
    channel full). Every message still reaches the service once, in the order it was sent."""
    relay = ScriptedRelay(lambda payload: {})
    agent = agent_for(tmp_path)
    desktop = RecordingDesktop()
    agent.desktop = desktop
    count = 300
    async with trio.open_nursery() as nursery:
        with trio.fail_after(DEADLINE * 4):
            await relay.serve(nursery)
            store_record(agent, relay.url, token="T1")
            states = await start(agent, nursery)
            ws = await relay.sockets.receive()
            await until(states, api.CONNECTED)
            pongs: list[str] = []
            all_pongs = trio.Event()

            async def read_pongs() -> None:
                while len(pongs) < count // 10:
                    frame = await receive(ws)
                    assert frame["type"] == "pong"
                    pongs.append(frame["id"])
                all_pongs.set()

            nursery.start_soon(read_pongs)
            for i in range(count):
                await send(ws, "desktop", "burst", {"n": i, "text": "é" * (i % 7)})
                if i % 10 == 0:
                    await send(ws, "system", "ping", {"ts": i}, f"p-{i}")
            got = [(await desktop.received.receive())["payload"]["n"] for _ in range(count)]
            assert got == list(range(count))
            await all_pongs.wait()
            assert pongs == [f"p-{i}" for i in range(0, count, 10)]
        relay.done.set()
        nursery.cancel_scope.cancel()
