"""The desktop channel against a real ``hermes-relay-server`` process (issues #17 item 8, #18 items 1 and 3).

The other desktop tests run the relay inside the test's trio run; these start the real program and
stop it with SIGTERM, as a service manager does: an impostor socket never gets the desktop's calls,
a lone surrogate travels both ways, and a call in flight when the relay stops gets the reference's 502.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import helpers
import pytest
import trio
from helpers import pair, receive_json, send_json, ws_auth
from relay_desktop_clients import TERMINAL, TOOLS, Call, advertise, answer, desktop_client, next_command, post_tool

pytestmark = pytest.mark.integration


@dataclass
class RelayProcess:
    proc: trio.Process
    url: str

    @property
    def http(self) -> str:
        return self.url.replace("ws://", "http://")


@pytest.fixture
async def relay_process(tmp_path: Path) -> AsyncIterator[RelayProcess]:
    env = {**os.environ, "HERMES_HOME": str(tmp_path / "home")}
    argv = [sys.executable, "-m", "hermes_relay.relay", "--port", "0", "--memory", "--log-level", "WARNING"]
    proc = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    try:
        with trio.fail_after(20):
            line = b""
            while b"\n" not in line:
                chunk = await proc.stdout.receive_some()
                assert chunk, "the relay exited before listening"
                line += chunk
        url = line.decode().split("\n", 1)[0].rsplit(" ", 1)[-1]
        opened: list[trio.abc.AsyncResource] = []
        async with trio.open_nursery() as clients:
            token, registry = helpers.CLIENT_NURSERY.set(clients), helpers.OPEN_CLIENTS.set(opened)
            try:
                with trio.fail_after(30):
                    yield RelayProcess(proc, url)
            finally:
                helpers.CLIENT_NURSERY.reset(token)
                helpers.OPEN_CLIENTS.reset(registry)
                with trio.CancelScope(shield=True):
                    for resource in reversed(opened):  # each WebSocket before the stream under it
                        with trio.move_on_after(1):
                            await resource.aclose()
                clients.cancel_scope.cancel()
    finally:
        if proc.returncode is None:
            proc.kill()
        with trio.CancelScope(shield=True):
            await proc.wait()


async def no_commands(ws) -> bool:
    """True when the relay sent ``ws`` no desktop.command before answering a ping sent now."""
    ping_id = await send_json(ws, "system", "ping", {})
    while True:
        env = await receive_json(ws)
        if env["type"] == "pong" and env["id"] == ping_id:
            return True
        if env["type"] == "desktop.command":
            return False


async def test_an_impostor_never_receives_the_desktops_calls(relay_process):
    relay = relay_process
    desktop, _, desktop_id = await desktop_client(relay, "WORKPC")
    _, phone = await pair(relay.url, relay.http, device_id=str(uuid.uuid4()), device_name="Pixel",
                          client_surface="android")
    impostor, reply = await ws_auth(relay.url, {"session_token": phone["session_token"], "device_id": desktop_id,
                                                "device_name": "WORKPC", "client_surface": "desktop"})
    assert reply["type"] == "auth.ok"
    await advertise(impostor, desktop_id, "WORKPC", TOOLS)

    call = Call()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(call.run, relay, TERMINAL, {"command": "id", "device_id": desktop_id})
        command = await next_command(desktop)
        await answer(desktop, command["payload"]["request_id"], "\udce9 from the desktop")
        status, body = await call.wait()
    assert (status, body["result"]) == (200, "\udce9 from the desktop")
    await desktop.aclose()
    status, _ = await post_tool(relay, TERMINAL, {"command": "id", "device_id": desktop_id})
    assert status == 503
    assert await no_commands(impostor)


async def test_a_lone_surrogate_in_a_body_is_forwarded_and_a_call_in_flight_at_sigterm_gets_502(relay_process):
    relay = relay_process
    ws, _, _ = await desktop_client(relay, "WORKPC")
    call = Call()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(call.run, relay, "desktop_read_file", {"path": "caf\udce9.txt"})
        command = await next_command(ws)
        assert command["payload"]["args"] == {"path": "caf\udce9.txt"}
        await answer(ws, command["payload"]["request_id"], "ok")
        assert (await call.wait())[0] == 200

    call = Call()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(call.run, relay, TERMINAL, {"command": "sleep 100"})
        await next_command(ws)
        relay.proc.send_signal(signal.SIGTERM)
        status, body = await call.wait()
    assert (status, body) == (502, {"ok": False, "error": "Desktop client disconnected (Relay server shutting down)"})
    assert await relay.proc.wait() == 0
