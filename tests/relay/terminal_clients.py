"""A test client of the relay's terminal channel: pairs with a terminal grant, attaches, types, reads output.

It speaks the wire as the agent would (docs/shell-protocol.md), over a real WebSocket, and keeps what an
agent keeps: the output bytes with their offsets, the input offset acknowledged, the messages seen.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from helpers import receive_json, register_code, send_json, ws_auth

from hermes_relay.relay.term_config import MAX_FRAME, TerminalSettings

WAIT = 10.0  # seconds any single expectation may take on a loaded 2-core machine


def settings(tmp_path: Path, **kw: Any) -> TerminalSettings:
    """Bare shells (/bin/sh, a quiet environment) unless ``tmux=`` says otherwise; tmux isolated under tmp_path."""
    env = (("PATH", "/usr/bin:/bin"), ("HOME", str(tmp_path)), ("PS1", "$ "), ("LANG", "C.UTF-8"))
    base: dict[str, Any] = {"tmux": False, "shell": "/bin/sh", "env": env, "tmux_socket": "hermes-test",
                            "tmux_tmpdir": tmp_path / "tmux", "tmux_conf": tmp_path / "tmux.conf"}
    (tmp_path / "tmux").mkdir(exist_ok=True)
    base.update(kw)
    return TerminalSettings(**base)


async def exited(pid: int) -> None:
    """Wait (no polling) until process ``pid`` has exited."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        with trio.fail_after(WAIT):
            await trio.lowlevel.wait_readable(fd)
    finally:
        os.close(fd)


async def pair_device(relay: Any, grant: int | str | None = 3600, device_id: str | None = None) -> tuple[Any, dict]:
    grants = {"terminal": grant} if grant is not None else None
    extra = {"grants": grants} if grants is not None else {}
    code = await register_code(relay.http, 3600, **extra)
    payload = {"pairing_code": code, "device_name": "shell test", "device_id": device_id or uuid.uuid4().hex,
               "client_surface": "desktop"}
    ws, reply = await ws_auth(relay.url, payload)
    assert reply["type"] == "auth.ok", reply
    return ws, reply["payload"]


async def connect(relay: Any, token: str) -> Any:
    ws, reply = await ws_auth(relay.url, {"session_token": token, "device_name": "shell test"})
    assert reply["type"] == "auth.ok", reply
    return ws


@dataclass
class Term:
    """One shell stream as the agent keeps it, over whichever socket is current."""

    ws: Any
    name: str = "main"
    stream: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    out: bytearray = field(default_factory=bytearray)
    typed: bytearray = field(default_factory=bytearray)
    acked: int = 0
    seen: list[dict[str, Any]] = field(default_factory=list)
    resume: bool = True
    b64_frames: int = 0

    base: int = 0  # the output offset of out[0] (past a gap)

    @property
    def out_seq(self) -> int:
        return self.base + len(self.out)

    async def attach(self, cols: int = 80, rows: int = 24, **extra: Any) -> dict[str, Any]:
        payload: dict[str, Any] = {"session_name": self.name, "cols": cols, "rows": rows, **extra}
        if self.resume:
            payload["resume"] = {"v": 1, "stream": self.stream, "out_seq": self.out_seq}
        msg_id = await send_json(self.ws, "terminal", "terminal.attach", payload)
        reply = await self.expect("terminal.attached", "terminal.error")
        assert reply["id"] == msg_id
        resume = reply["payload"].get("resume")
        if resume and resume["gap"]:  # output continues past what was lost
            self.base, self.out = resume["out_seq"], bytearray()
        return reply

    async def type(self, data: bytes, seq: int | None = None) -> None:
        """Send ``data`` at ``seq`` (default: after everything typed so far)."""
        if seq is None:
            seq = len(self.typed)
            self.typed += data
        body: dict[str, Any] = {"session_name": self.name}
        try:
            body["data"] = data.decode("utf-8")
        except UnicodeDecodeError:
            body["data_b64"] = base64.b64encode(data).decode()
        if self.resume:
            body["seq"] = seq
        await send_json(self.ws, "terminal", "terminal.input", body)

    async def recv(self) -> dict[str, Any]:
        """The next terminal (or system) message; output is added to ``out`` with its offsets checked."""
        while True:
            msg = await receive_json(self.ws)
            if msg["channel"] not in ("terminal", "system"):
                continue
            self.seen.append(msg)
            p = msg["payload"]
            if msg["type"] == "terminal.output" and p.get("session_name") == self.name:
                data = base64.b64decode(p["data_b64"]) if "data_b64" in p else p["data"].encode()
                assert len(data) <= MAX_FRAME
                if "data_b64" in p:
                    self.b64_frames += 1
                if self.resume:
                    assert p["seq_end"] == self.out_seq + len(data), (p["seq_end"], self.out_seq, len(data))
                    self.acked = max(self.acked, p["in_seq"])
                self.out += data
            elif msg["type"] == "terminal.ack" and p.get("session_name") == self.name:
                assert p["in_seq"] >= self.acked
                self.acked = p["in_seq"]
            return msg

    async def expect(self, *types: str) -> dict[str, Any]:
        with trio.fail_after(WAIT):
            while True:
                msg = await self.recv()
                if msg["type"] in types:
                    return msg

    async def until_output(self, needle: bytes, start: int = 0) -> None:
        with trio.fail_after(WAIT):
            while needle not in self.out[start:]:
                await self.recv()

    async def until_acked(self, n: int) -> None:
        with trio.fail_after(WAIT):
            while self.acked < n:
                await self.recv()

    async def send(self, typ: str, payload: dict[str, Any]) -> str:
        return await send_json(self.ws, "terminal", typ, {"session_name": self.name, **payload})


def dump(msgs: list[dict[str, Any]]) -> str:
    return json.dumps([(m["type"], m["payload"]) for m in msgs[-8:]])[:2000]
