"""A real agent process served by a scripted relay that speaks the reference relay's desktop channel.

The script plays what relay 1.9.0 does on the wire (desktop-channel.md §1-§3): it checks the agent's
``auth`` payload, answers ``auth.ok``, waits for the ``desktop.status`` heartbeat, then sends
``desktop.command`` envelopes (envelope id = request_id), including the duplicates and malformed
commands our own relay never sends, and reads the ``desktop.response`` frames.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_websocket
from procs import AgentEnv

from hermes_relay.core import fileio, paths, policy

pytestmark = pytest.mark.integration


class ScriptedRelay:
    def __init__(self) -> None:
        self.auth: dict[str, Any] | None = None
        self.ws: trio_websocket.WebSocketConnection | None = None
        self.connected = trio.Event()
        self.statuses: list[dict[str, Any]] = []
        self.others: list[dict[str, Any]] = []
        self._status_seen = trio.Event()
        self._responses: trio.MemorySendChannel[dict[str, Any]]
        self._responses, self.responses = trio.open_memory_channel[dict[str, Any]](100)

    async def handler(self, request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        frame = json.loads(await ws.get_message())
        assert (frame["channel"], frame["type"]) == ("system", "auth")
        self.auth = frame["payload"]
        await ws.send_message(json.dumps({"channel": "system", "type": "auth.ok", "id": str(uuid.uuid4()), "payload": {
            "session_token": self.auth["session_token"], "server_version": "1.9.0", "profiles": [],
            "expires_at": None, "grants": {}, "transport_hint": "ws", "client_surface": "desktop",
            "device_form_factor": "desktop"}}))
        self.ws = ws
        self.connected.set()
        try:
            while True:
                msg = json.loads(await ws.get_message())
                if msg["type"] == "desktop.status":
                    self.statuses.append(msg["payload"])
                    self._status_seen.set()
                elif msg["type"] == "desktop.response":
                    await self._responses.send(msg)
                else:
                    self.others.append(msg)
        except trio_websocket.ConnectionClosed:
            pass

    async def status(self) -> dict[str, Any]:
        await self._status_seen.wait()
        return self.statuses[-1]

    async def command(self, request_id: Any, tool: str, args: Any, *, envelope_id: str | None = None,
                      drop: tuple[str, ...] = ()) -> None:
        assert self.ws is not None
        payload = {"request_id": request_id, "tool": tool, "args": args, "target_device_id": None}
        for key in drop:
            payload.pop(key)
        await self.ws.send_message(json.dumps({"channel": "desktop", "type": "desktop.command",
                                               "id": envelope_id or str(request_id), "payload": payload}))

    async def response(self) -> dict[str, Any]:
        with trio.fail_after(20):
            msg = await self.responses.receive()
        assert msg["channel"] == "desktop"
        return msg["payload"]


@pytest.fixture
def relay_test_guard() -> float:
    return 60.0


async def test_the_agent_serves_a_relay_that_behaves_like_the_reference(
        make_agent_env: Callable[..., AgentEnv], tmp_path: Path) -> None:
    relay = ScriptedRelay()
    env = make_agent_env(HERMES_RELAY_NOTIFY="0")
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio_websocket.serve_websocket, relay.handler, "127.0.0.1", 0, None)
        url = f"ws://127.0.0.1:{listeners.port}"
        store = {"version": 1, "sessions": {url: {"token": "3f2a9c1e-7d44-4b1e-9a0f-2c8e5b7d9e10",
                                                   "server_version": "1.9.0", "device_name": "office-desktop"}}}
        fileio.atomic_write(paths.sessions_file(env.env), fileio.dump_json(store))
        policy.set_mode(policy.policy_file(env.env), url, policy.TRUSTED)
        await trio.to_thread.run_sync(lambda: env.client().close())
        with trio.fail_after(30):
            await relay.connected.wait()
            status = await relay.status()

        auth = relay.auth or {}
        assert auth["client_surface"] == "desktop"
        assert auth["supports"] == {"typed_stream_events": True, "event_schema_version": 1}
        assert str(uuid.UUID(auth["device_id"])) == auth["device_id"]
        assert auth["device_name"] == "office-desktop"
        assert paths.device_id_file(env.env).read_text().strip() == auth["device_id"]
        assert status["device_id"] == auth["device_id"]
        assert status["interactive"] is False
        assert {"desktop_terminal", "desktop_read_file", "desktop_job_start"} <= set(status["advertised_tools"])
        assert not [m for m in relay.others if m["channel"] == "tui"]  # no tui channel unless a feature needs it

        # A command and its answer, correlated by request_id.
        await relay.command("r-1", "desktop_terminal", {"command": "echo one"})
        first = await relay.response()
        assert first["request_id"] == "r-1" and first["ok"] is True and first["result"]["stdout"] == "one\n"

        # The same request id again is refused, never run twice.
        marker = tmp_path / "twice"
        await relay.command("r-2", "desktop_terminal", {"command": f"echo x >> {marker}"})
        assert (await relay.response())["ok"] is True
        await relay.command("r-2", "desktop_terminal", {"command": f"echo x >> {marker}"})
        dup = await relay.response()
        assert dup["request_id"] == "r-2" and dup["ok"] is False
        assert marker.read_text() == "x\n"

        # Malformed commands: answered when they carry a request_id, dropped otherwise; the link stays.
        await relay.command("r-3", "desktop_terminal", "not an object")
        bad_args = await relay.response()
        assert bad_args["request_id"] == "r-3" and bad_args["ok"] is False
        await relay.command("r-4", "desktop_no_such_tool", {})
        assert await relay.response() == {"request_id": "r-4", "ok": False, "error": "unknown tool: desktop_no_such_tool"}
        await relay.command("x" * 300, "desktop_terminal", {"command": "true"})
        await relay.command(None, "desktop_terminal", {"command": "true"}, drop=("request_id",))
        assert relay.ws is not None
        await relay.ws.send_message("this is not json")
        await relay.ws.send_message(json.dumps({"channel": "system", "type": "ping", "id": "p-1", "payload": {"ts": 5}}))
        await relay.command("r-5", "desktop_terminal", {"command": "echo alive"})
        after = await relay.response()
        if after["request_id"] != "r-5":  # the over-long id may be answered as invalid first
            assert after["ok"] is False
            after = await relay.response()
        assert after["request_id"] == "r-5" and after["result"]["stdout"] == "alive\n"
        pongs = [m for m in relay.others if (m["channel"], m["type"]) == ("system", "pong")]
        assert pongs and pongs[0]["id"] == "p-1"

        # Lone surrogates, as the reference relay's json.dumps writes a non-UTF-8 file name ("\udce9"), in an
        # argument and in a tool's output: each call is answered and the service goes on (it used to die).
        odd = str(tmp_path / "caf\udce9.txt")
        await relay.command("r-6", "desktop_read_file", {"path": odd})
        missing = await relay.response()
        assert missing["request_id"] == "r-6" and missing["ok"] is False
        await relay.command("r-7", "desktop_terminal", {"command": "printf 'caf\\351\\n'"})  # Latin-1 bytes
        latin = await relay.response()
        assert latin["request_id"] == "r-7" and latin["ok"] is True and latin["result"]["stdout"].startswith("caf")
        await relay.command("r-8", "desktop_terminal", {"command": "echo still-serving"})
        last = await relay.response()
        assert last["request_id"] == "r-8" and last["result"]["stdout"] == "still-serving\n"
        nursery.cancel_scope.cancel()
