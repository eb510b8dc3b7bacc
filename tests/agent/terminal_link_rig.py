"""The rig of tests/agent/test_terminal_link.py (and test_terminal_ipc.py): a relay written here (trio-websocket
on loopback) that speaks our terminal resume extension or the reference's semantics and can drop its socket
mid-typing, a CLI's side of ``shell.open`` over a real IPC connection, a TCP forwarder that can black-hole a
route, and the agent's setup (environment, pairing, the shell.open handshake, the detach)."""

from __future__ import annotations

import json
import tempfile
import uuid
from pathlib import Path
from typing import Any

import trio
import trio_websocket
from helpers import ScriptedServer

from hermes_relay.agent.backend import AgentBackend as Agent
from hermes_relay.agent.config import AgentConfig
from hermes_relay.core import api, apitypes, framing, rpc

DEADLINE = 20.0
STREAM = "A" * 22
KEYS = 400  # numbered keys "00001\r" ...
DROP_AFTER = 900  # bytes of input the relay takes on its first socket before it drops it


def keys() -> list[bytes]:
    return [f"{i:05d}\r".encode() for i in range(1, KEYS + 1)]


class TerminalRelay(ScriptedServer):
    """Auth accepts any token; the terminal channel as ``ours`` (resume extension) or the reference."""

    def __init__(self, ours: bool, *, refuse: str | None = None):
        self.ours = ours
        self.refuse = refuse  # "grant": system/error to every terminal message; "silent": no answer to attach;
        # "list-broken": terminal.error to terminal.list (the reference raises there while a session is detached)
        self.tmux = True  # tmux_available in terminal.attached
        self.killed: list[str] = []
        self.detaches: list[int] = []  # the socket each terminal.detach came on (-1: not the first)
        self.hold_acks_after: int | None = None  # ours: written, but not acknowledged above this offset
        self.shutdown = False  # ours: the drop is a clean relay restart (final ack, detached, a new attachment)
        self.echo = False  # ours: what reaches the "PTY" comes back as output
        self.out = 0  # ours: the attachment's output offset
        self.pty = bytearray()  # what reached the shell, in order
        self.in_seq = 0  # ours: the attachment's input offset (by stream)
        self.streams: set[str] = set()
        self.sockets = 0
        self.taken = 0  # input bytes taken on the current socket
        self.attaches: list[dict[str, Any]] = []
        self.pings = 0
        self.port = 0
        self.duplicates = 0  # ours: input bytes received again below the attachment's offset
        self.first_seqs: list[tuple[int, int]] = []  # ours: (in_seq at the attach, seq of the first input after it)

    async def _handler(self, request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            frame = json.loads(await ws.get_message())
        except trio_websocket.ConnectionClosed:  # a route probe: connected, never authenticated
            return
        assert (frame["channel"], frame["type"]) == ("system", "auth")
        await send(ws, "system", "auth.ok", {"server_version": "scripted", "expires_at": None, "grants": {}})
        self.sockets += 1
        first_socket = self.sockets == 1
        attached: set[str] = set()  # the reference: sessions of this socket
        self.taken = 0
        try:
            while True:
                msg = json.loads(await ws.get_message())
                channel, typ, payload = msg["channel"], msg["type"], msg["payload"]
                if channel == "system" and typ == "ping":
                    self.pings += 1
                    await send(ws, "system", "pong", {}, msg["id"])
                elif channel == "terminal" and self.refuse == "grant":
                    await send(ws, "system", "error", {"message": "Terminal grant expired for this device"})
                elif channel == "terminal" and self.refuse == "silent":
                    pass
                elif typ == "terminal.list" and self.refuse == "list-broken":  # the reference's own exception
                    await send(ws, "terminal", "terminal.error", {"message": "name '_default_shell' is not defined"},
                               msg["id"])
                elif typ == "terminal.list":
                    await send(ws, "terminal", "terminal.sessions", {"sessions": [
                        {"name": n, "tmux_name": f"hermes-{n}", "attached": int(n in attached), "windows": 1,
                         "created_at": 1.0, "shell": "/bin/sh", "live": True, "owned_by_client": n in attached}
                        for n in sorted(attached | {"old"})], "tmux_available": True}, msg["id"])
                elif typ == "terminal.kill":
                    name = payload["session_name"]
                    if name in attached or name == "old":
                        self.killed.append(name)
                        attached.discard(name)
                        await send(ws, "terminal", "terminal.detached", {"session_name": name, "reason": "pty closed"})
                    else:
                        await send(ws, "terminal", "terminal.error", {"message": f"no session {name}",
                                                                      "session_name": name, "reason": "not found"})
                elif typ == "terminal.attach":
                    self.attaches.append({**payload, "in_seq_then": self.in_seq})
                    attached.add(payload["session_name"])
                    await send(ws, "terminal", "terminal.attached", self._attached(payload), msg["id"])
                elif typ == "terminal.input":
                    if payload["session_name"] not in attached:
                        continue  # the reference drops input sent before terminal.attached
                    if first_socket and self.taken >= DROP_AFTER and self.shutdown:
                        # a clean restart: everything written acknowledged, then goodbye; this frame and
                        # the ones behind it are never written, and the attachment is gone with the relay
                        name = payload["session_name"]
                        await send(ws, "terminal", "terminal.ack", {"session_name": name, "in_seq": self.in_seq})
                        await send(ws, "terminal", "terminal.detached", {"session_name": name,
                                                                         "reason": "server shutdown"})
                        self.streams.clear()
                        self.in_seq = self.out = 0
                        await ws.aclose(1001, "relay shutting down")
                        return
                    if first_socket and self.taken >= DROP_AFTER:
                        await ws.aclose()  # mid-typing: this frame and what follows never arrive
                        return
                    data = payload["data"].encode()
                    self.taken += len(data)
                    if self.ours:
                        seq = payload["seq"]
                        assert seq <= self.in_seq, f"input gap: {seq} > {self.in_seq}"
                        if len(self.first_seqs) < len(self.attaches):
                            self.first_seqs.append((self.attaches[-1]["in_seq_then"], seq))
                        fresh = data[self.in_seq - seq:]
                        self.duplicates += len(data) - len(fresh)
                        self.pty += fresh
                        self.in_seq += len(fresh)
                        if self.echo and fresh:
                            self.out += len(fresh)
                            await send(ws, "terminal", "terminal.output", {
                                "session_name": payload["session_name"], "data": fresh.decode(),
                                "seq_end": self.out, "in_seq": self.in_seq})
                        if first_socket and self.taken >= DROP_AFTER and not self.shutdown:
                            await ws.aclose()  # written, but the ack never leaves: in flight at the drop
                            return
                        if self.hold_acks_after is None or self.in_seq <= self.hold_acks_after:
                            await send(ws, "terminal", "terminal.ack", {"session_name": payload["session_name"],
                                                                        "in_seq": self.in_seq})
                    else:
                        self.pty += data
                elif typ == "terminal.detach":
                    self.detaches.append(self.sockets if first_socket else -1)
                    attached.discard(payload["session_name"])
                    await send(ws, "terminal", "terminal.detached", {"session_name": payload["session_name"],
                                                                     "reason": "client detach"})
        except trio_websocket.ConnectionClosed:
            pass

    def _attached(self, payload: dict[str, Any]) -> dict[str, Any]:
        reply = {"session_name": payload["session_name"], "pid": 42, "shell": "/bin/sh", "cols": payload["cols"],
                 "rows": payload["rows"], "tmux_available": self.tmux, "reattach": self.sockets > 1 and self.shutdown}
        if self.ours:
            stream = payload["resume"]["stream"]
            resumed = stream in self.streams
            self.streams.add(stream)
            reply["resume"] = {"v": 1, "stream": stream, "in_seq": self.in_seq, "out_seq": 0, "resumed": resumed,
                               "gap": False}
        return reply


async def send(ws: trio_websocket.WebSocketConnection, channel: str, typ: str, payload: dict[str, Any],
               msg_id: str | None = None) -> None:
    await ws.send_message(json.dumps({"channel": channel, "type": typ, "id": msg_id or str(uuid.uuid4()),
                                      "payload": payload}))


class IpcShell:
    """A CLI's side of shell.open, over a real connection to the agent's socket."""

    def __init__(self, stream: trio.SocketStream):
        self.stream = stream
        self.decoder = framing.FrameDecoder()
        self._send, self.notifies = trio.open_memory_channel[rpc.Notify](10_000)
        self.seen: list[rpc.Notify] = []
        self.response: rpc.Response | None = None
        self.done = trio.Event()
        self.method = ""
        self.acked = self.sent = 0
        self.problems: list[str] = []  # departures from core/apitypes.py's shapes

    async def send(self, obj: Any) -> None:
        if obj[0] == 0 and obj[1] == 1:
            self.method = obj[2]
        await self.stream.send_all(framing.encode_frame(obj))

    async def read(self) -> None:
        while True:
            for obj in self.decoder:
                msg = rpc.parse_message(obj)
                if isinstance(msg, rpc.Notify):
                    self.problems += apitypes.check(msg.params, apitypes.NOTIFIES[msg.method], where=msg.method)
                    self.seen.append(msg)
                    if msg.method == api.SHELL_ACK:
                        self.acked, self.sent = msg.params["in_seq"], msg.params["sent"]
                    self._send.send_nowait(msg)
                elif isinstance(msg, rpc.Response) and msg.msgid == 1:
                    if msg.error is None and self.method in apitypes.METHODS:
                        self.problems += apitypes.check(msg.result, apitypes.METHODS[self.method][1], where=self.method)
                    self.response = msg
                    self.done.set()
                    return
            data = await self.stream.receive_some(65536)
            if not data:
                self.done.set()
                return
            self.decoder.feed(data)

    async def until(self, method: str) -> rpc.Notify:
        async for msg in self.notifies:
            if msg.method == method:
                return msg
        raise AssertionError("the agent closed the call")

    def notices(self) -> list[str]:
        return [m.params["text"] for m in self.seen if m.method == api.SHELL_NOTICE]


def agent_env(tmp_path: Path) -> dict[str, str]:
    """An agent's environment under ``tmp_path`` (its socket in a short runtime directory)."""
    run_dir = Path(tempfile.mkdtemp(prefix="hr-"))
    return {"HERMES_HOME": str(tmp_path / "home"), "HERMES_RELAY_RUNTIME_DIR": str(run_dir), "HOME": str(tmp_path),
            "HERMES_RELAY_NOTIFY": "0"}


def make_agent(env: dict[str, str], **config: Any) -> Agent:
    return Agent(AgentConfig.from_env(env, netwatch=False, **config))


def pair(agent: Agent, url: str, **record: Any) -> None:
    """The agent holds a pairing with ``url`` (any token: the scripted relay accepts it)."""
    agent.store.update(lambda s: s.__setitem__(url, {"paired_at": 1_700_000_000, "token": "T1", **record}))


async def open_shell(agent: Agent, nursery: trio.Nursery, **params: Any) -> IpcShell:
    """A CLI's connection to ``agent``: hello, then ``shell.open`` of a raw shell ``main`` (``params`` added)."""
    shell = IpcShell(await trio.open_unix_socket(agent.config.socket_path))
    nursery.start_soon(shell.read)
    await shell.send([0, 0, api.HELLO, {"client_version": "test", "api_version": api.API_VERSION}])
    await shell.send([0, 1, api.SHELL_OPEN, {"session": "main", "cols": 80, "rows": 24, "stream": STREAM, "raw": True,
                                             **params}])
    return shell


async def detach(shell: IpcShell) -> None:
    """The CLI detaches and waits for the call's response, then closes its connection."""
    await shell.send([2, api.SHELL_DETACH, {}])
    await shell.done.wait()
    await shell.stream.aclose()


class Forwarder:
    """A TCP forwarder on loopback that can stop moving bytes while keeping connections open (a black hole)."""

    def __init__(self, target: int):
        self.target = target
        self.blackholed = False
        self.refuse = False  # close every new connection at once (the route is down)
        self.refused = 0
        self.live: set[trio.CancelScope] = set()
        self.port = 0

    def cut(self) -> None:
        """End every forwarded connection (the relay went away)."""
        for scope in self.live:
            scope.cancel()

    async def serve(self, nursery: trio.Nursery) -> None:
        listeners = await nursery.start(trio.serve_tcp, self._handle, 0)
        self.port = listeners[0].socket.getsockname()[1]

    async def _pipe(self, src: trio.SocketStream, dst: trio.SocketStream) -> None:
        while data := await src.receive_some(65536):
            if self.blackholed:
                await trio.sleep_forever()
            await dst.send_all(data)

    async def _handle(self, client: trio.SocketStream) -> None:
        if self.refuse:
            self.refused += 1
            await client.aclose()
            return
        async with client, await trio.open_tcp_stream("127.0.0.1", self.target) as upstream:
            try:
                with trio.CancelScope() as scope:
                    self.live.add(scope)
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._pipe, client, upstream)
                        nursery.start_soon(self._pipe, upstream, client)
            except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
