"""Scripted desktop clients for the relay's desktop-channel tests: real sockets, wire-level JSON."""

from __future__ import annotations

import json
import uuid
from typing import Any

import trio
import trio_websocket
from helpers import http_request, pair, receive_json, send_json, ws_auth

from hermes_relay.core.wire import MAX_WS_MESSAGE

TERMINAL = "desktop_terminal"
READ_FILE = "desktop_read_file"
TOOLS = (TERMINAL, READ_FILE)


async def sync(ws: trio_websocket.WebSocketConnection) -> None:
    """Wait until the relay has handled everything this socket sent: it answers pings in order."""
    ping_id = await send_json(ws, "system", "ping", {"ts": 1})
    while True:
        reply = await receive_json(ws)
        if reply["type"] == "pong" and reply["id"] == ping_id:
            return


async def advertise(ws: trio_websocket.WebSocketConnection, device_id: str, name: str,
                    tools: tuple[str, ...] | None = TOOLS, prefixed: bool = True, **status: Any) -> None:
    """Send ``desktop.status`` (or only a workspace snapshot when ``tools`` is None) and wait for it."""
    if tools is None:
        await send_json(ws, "desktop", "desktop.workspace" if prefixed else "workspace",
                        {"version": 1, "cwd": "/home/ana", "hostname": name})
    else:
        payload = {"advertised_tools": list(tools), "device_id": device_id, "device_name": name, "host": name,
                   "platform": "linux", "arch": "x64", "version": "test", "pid": 4242, "uptime_ms": 12,
                   "interactive": False, **status}
        await send_json(ws, "desktop", "desktop.status" if prefixed else "status", payload)
    await sync(ws)


async def desktop_client(relay: Any, name: str = "WORKPC", device_id: str | None = None,
                         tools: tuple[str, ...] | None = TOOLS, token: str | None = None,
                         prefixed: bool = True, **status: Any) -> tuple[trio_websocket.WebSocketConnection, str, str]:
    """A paired socket that has advertised ``tools``: (ws, session token, device id).

    With ``token`` it authenticates as another socket of that pairing instead of pairing anew.
    """
    device_id = device_id or str(uuid.uuid4())
    device = {"device_id": device_id, "device_name": name, "client_surface": "desktop"}
    if token is None:
        ws, ok = await pair(relay.url, relay.http, **device)
        token = ok["session_token"]
    else:
        ws, reply = await ws_auth(relay.url, {"session_token": token, **device})
        assert reply["type"] == "auth.ok", reply
    # Commands carry up to 2 MiB of arguments; trio-websocket's client default is 1 MiB and has no setter.
    ws._max_message_size = MAX_WS_MESSAGE
    await advertise(ws, device_id, name, tools, prefixed, **status)
    return ws, token, device_id


async def next_command(ws: trio_websocket.WebSocketConnection) -> dict[str, Any]:
    """The next ``desktop.command`` envelope on ``ws`` (other traffic is skipped)."""
    while True:
        env = await receive_json(ws)
        if env["channel"] == "desktop" and env["type"] == "desktop.command":
            return env


async def answer(ws: trio_websocket.WebSocketConnection, request_id: str, result: Any = None, *,
                 ok: bool = True, error: str | None = None, prefixed: bool = True) -> None:
    payload: dict[str, Any] = {"request_id": request_id, "ok": ok}
    if ok:
        payload["result"] = result
    else:
        payload["error"] = error
    await send_json(ws, "desktop", "desktop.response" if prefixed else "response", payload)


async def post_tool(relay: Any, tool: str, args: Any, query: str = "",
                    headers: list[tuple[str, str]] | None = None) -> tuple[int, Any]:
    """``POST /desktop/<tool>`` as the agent's tool shim does: (status, decoded JSON)."""
    body = args if isinstance(args, bytes) else json.dumps(args).encode()
    hdrs = headers if headers is not None else [("Content-Type", "application/json")]
    status, _, payload = await http_request("POST", f"{relay.http}/desktop/{tool}{query}", body, hdrs)
    return status, json.loads(payload) if payload else None


class Call:
    """A tool call running in the background: start it, script the client, then read ``result``."""

    def __init__(self) -> None:
        self.result: tuple[int, Any] | None = None
        self.done = trio.Event()

    async def run(self, relay: Any, tool: str, args: Any, query: str = "") -> None:
        try:
            self.result = await post_tool(relay, tool, args, query)
        finally:
            self.done.set()

    async def wait(self) -> tuple[int, Any]:
        await self.done.wait()
        assert self.result is not None
        return self.result
