"""A shell through a real agent: a real IPC connection sends ``shell.open`` and numbered keys as
``shell.input`` notifies; the agent's real link carries them to a relay written here (trio-websocket on
loopback) that speaks (a) our resume extension or (b) the reference's semantics (per-socket sessions,
input before ``terminal.attached`` dropped, ``system/ping`` answered inline, no acks). The relay drops
the socket mid-typing; afterwards (a) every byte reached its "PTY" exactly once, and (b) nothing was
duplicated or reordered and every byte lost was reported in doubt. Real sockets, real clock."""

from __future__ import annotations

import json
import re
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_websocket

from hermes_relay.agent import link, runner
from hermes_relay.agent.backend import AgentBackend as Agent
from hermes_relay.agent.config import AgentConfig
from hermes_relay.core import api, apitypes, framing, rpc

DEADLINE = 20.0
STREAM = "A" * 22
KEYS = 400  # numbered keys "00001\r" ...
DROP_AFTER = 900  # bytes of input the relay takes on its first socket before it drops it


@pytest.fixture
def relay_test_guard() -> float:
    return 30.0


def keys() -> list[bytes]:
    return [f"{i:05d}\r".encode() for i in range(1, KEYS + 1)]


class TerminalRelay:
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

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def serve(self, nursery: trio.Nursery) -> None:
        server = await nursery.start(trio_websocket.serve_websocket, self._handler, "127.0.0.1", 0, None)
        self.port = server.port

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


async def run_shell(tmp_path: Path, relay: TerminalRelay) -> tuple[IpcShell, bytes]:
    agent = make_agent(agent_env(tmp_path), backoff_base=0.05, backoff_cap=0.1)
    typed = b"".join(keys())
    async with trio.open_nursery() as nursery:
        with trio.fail_after(DEADLINE):
            await relay.serve(nursery)
            pair(agent, relay.url)
            await nursery.start(runner.run, agent)
            shell = await open_shell(agent, nursery, term="xterm", out_seq=0, in_base=0, in_sent=0, unacked=b"",
                                     reopen=False)
            attached = await shell.until(api.SHELL_ATTACHED)
            assert attached.params["relay"] == ("ours" if relay.ours else "reference")
            offset = 0
            for key in keys():  # typed while the relay drops the socket and the agent reconnects
                await shell.send([2, api.SHELL_INPUT, {"seq": offset, "d": key}])
                offset += len(key)
                await trio.sleep(0)
            while shell.acked < len(typed):  # every byte acknowledged, or counted done (in doubt)
                await shell.until(api.SHELL_ACK)
            await detach(shell)
        nursery.cancel_scope.cancel()
    assert shell.response is not None and shell.response.error is None
    assert shell.response.result == {"reason": "detached", "code": None}
    assert relay.sockets >= 2  # it did drop the first one
    assert shell.problems == []
    return shell, typed


async def test_our_relay_gets_every_key_exactly_once_across_a_drop(tmp_path: Path) -> None:
    relay = TerminalRelay(ours=True)
    shell, typed = await run_shell(tmp_path, relay)
    assert bytes(relay.pty) == typed
    assert [a["resume"]["stream"] for a in relay.attaches] == [STREAM] * len(relay.attaches)
    assert not any("in doubt" in n for n in shell.notices())
    assert relay.duplicates == 0  # the resend started exactly at resume.in_seq...
    assert len(relay.first_seqs) == 2 and relay.first_seqs[1][0] == relay.first_seqs[1][1] > 0  # ...mid-typing
    links = [m.params["state"] for m in shell.seen if m.method == api.SHELL_LINK]
    assert "reconnecting" in links and links[-1] == "live"


async def test_our_relay_restarting_cleanly_mid_typing_loses_no_key_and_puts_none_in_doubt(tmp_path: Path) -> None:
    """The relay acknowledges what it wrote, says ``detached {server shutdown}`` and closes: input sent
    after that final ack never reached the PTY, so it goes to the new attachment (the tmux session lives
    on) instead of being reported in doubt and lost."""
    relay = TerminalRelay(ours=True)
    relay.shutdown = True
    shell, typed = await run_shell(tmp_path, relay)
    assert not any("in doubt" in n for n in shell.notices()), shell.notices()
    assert bytes(relay.pty) == typed
    assert [a["resume"]["stream"] for a in relay.attaches] == [STREAM] * len(relay.attaches)


async def test_after_our_relay_restarted_the_new_attachments_output_continues_the_clis_offsets(
        tmp_path: Path) -> None:
    """The scripted relay counts the new attachment's output from 0 (as ours did before a new attachment
    continued the attach's offsets); the CLI's offsets go on from where they were (else the CLI takes it
    for output it has written already, and the screen stays still)."""
    relay = TerminalRelay(ours=True)
    relay.shutdown = relay.echo = True
    shell, typed = await run_shell(tmp_path, relay)
    out = [m.params for m in shell.seen if m.method == api.SHELL_OUTPUT]
    ends = [len(b"".join(o["d"] for o in out[:i + 1])) for i in range(len(out))]
    assert [o["seq_end"] for o in out] == ends
    assert len(relay.attaches) == 2 and ends[-1] == len(relay.pty)  # every byte echoed reached the CLI
    assert [a["resume"]["stream"] for a in relay.attaches] == [STREAM] * len(relay.attaches)


async def test_the_reference_relay_never_gets_a_key_twice_and_every_loss_was_reported(tmp_path: Path) -> None:
    relay = TerminalRelay(ours=False)
    shell, typed = await run_shell(tmp_path, relay)
    got = re.findall(rb"\d{5}\r", bytes(relay.pty))
    assert b"".join(got) == bytes(relay.pty)  # whole keys only
    numbers = [int(k[:5]) for k in got]
    assert numbers == sorted(set(numbers))  # nothing duplicated, nothing reordered
    lost = len(typed) - len(relay.pty)
    reported = sum(int(m.group(1)) for n in shell.notices() if (m := re.match(r"(\d+) bytes .* in doubt", n)))
    assert 0 < lost <= reported
    assert relay.pings > 0


async def test_a_bare_shell_on_our_relay_is_not_said_to_die_on_a_reconnect(tmp_path: Path) -> None:
    relay = TerminalRelay(ours=True)
    relay.tmux = False  # our relay keeps a bare shell across a socket drop (its grace period)
    shell, typed = await run_shell(tmp_path, relay)
    assert bytes(relay.pty) == typed
    assert [n for n in shell.notices() if "tmux" in n] == ["the relay host has no tmux: this shell ends if the relay "
                                                           "restarts"]  # once, not again on the reattach


async def test_a_bare_shell_on_the_reference_is_said_to_die_on_a_reconnect(tmp_path: Path) -> None:
    relay = TerminalRelay(ours=False)
    relay.tmux = False
    shell, _ = await run_shell(tmp_path, relay)
    assert "the relay host has no tmux: this shell will not survive a reconnect" in shell.notices()


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


@pytest.mark.parametrize("typing", [False, True])
async def test_an_attached_shell_notices_a_black_hole_soon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           typing: bool) -> None:
    """Idle: within two shell pings (5 s each in production: 10 s; 0.5 s here). Typing: the input goes
    unacknowledged for 1 s, then a ping with a 1 s deadline. Every other way to notice is set far beyond
    the test's hang guard (the keepalive interval, the probe timeout, and the shell ping while typing), so
    the test hangs, and fails, unless the mechanism under test notices."""
    monkeypatch.setattr(link, "SHELL_PING", 3600.0 if typing else 0.5)
    relay = TerminalRelay(ours=False)
    agent = make_agent(agent_env(tmp_path), ping_interval=3600.0, probe_timeout=3600.0)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(DEADLINE):
            await relay.serve(nursery)
            proxy = Forwarder(relay.port)
            await proxy.serve(nursery)
            url = f"ws://127.0.0.1:{proxy.port}"
            pair(agent, url)
            await nursery.start(runner.run, agent)
            shell = await open_shell(agent, nursery)
            await shell.until(api.SHELL_ATTACHED)
            proxy.blackholed = True
            if typing:
                await shell.send([2, api.SHELL_INPUT, {"seq": 0, "d": b"x"}])
            while (await shell.until(api.SHELL_LINK)).params["state"] != "reconnecting":
                pass
            await detach(shell)
        nursery.cancel_scope.cancel()
    assert shell.response is not None and shell.response.result == {"reason": "detached", "code": None}


async def test_a_cli_reopening_after_the_agent_stopped_resumes_exactly_on_our_relay(tmp_path: Path) -> None:
    relay = TerminalRelay(ours=True)
    env = agent_env(tmp_path)
    typed = b"".join(keys())
    half = len(typed) // 2
    async with trio.open_nursery() as nursery:
        with trio.fail_after(DEADLINE):
            await relay.serve(nursery)
            relay.hold_acks_after = half - 100
            shells: list[IpcShell] = []
            for reopen in (False, True):
                agent = make_agent(env, backoff_base=0.05, backoff_cap=0.1)
                if not reopen:
                    pair(agent, relay.url)
                async with trio.open_nursery() as agent_nursery:
                    await agent_nursery.start(runner.run, agent)
                    acked, sent = (0, 0) if not reopen else (shells[0].acked, shells[0].sent)
                    shell = await open_shell(agent, agent_nursery, reopen=reopen, out_seq=0, in_base=acked, in_sent=sent,
                                             unacked=typed[acked:half] if reopen else b"")
                    shells.append(shell)
                    await shell.until(api.SHELL_ATTACHED)
                    start, end = (0, half) if not reopen else (half, len(typed))
                    for offset in range(start, end, 6):
                        await shell.send([2, api.SHELL_INPUT, {"seq": offset, "d": typed[offset:offset + 6]}])
                    if not reopen:
                        while shell.sent < half:  # all of it on the socket, part of it acknowledged
                            await shell.until(api.SHELL_ACK)
                        agent_nursery.cancel_scope.cancel()  # the agent stops: the call ends without a response
                        relay.hold_acks_after = None
                        continue
                    while shell.acked < len(typed):
                        await shell.until(api.SHELL_ACK)
                    await shell.send([2, api.SHELL_DETACH, {}])
                    await shell.done.wait()
                    agent_nursery.cancel_scope.cancel()
            for shell in shells:
                await shell.stream.aclose()
        nursery.cancel_scope.cancel()
    assert shells[0].response is None
    assert shells[1].response is not None and shells[1].response.result == {"reason": "detached", "code": None}
    assert bytes(relay.pty) == typed and relay.duplicates == 0
    assert {a["resume"]["stream"] for a in relay.attaches} == {STREAM} and len(relay.attaches) >= 2
    assert shells[0].acked < shells[0].sent  # the dead agent left input in flight: resent from resume.in_seq only


async def test_moving_up_to_a_better_route_detaches_the_reference_shell_first(tmp_path: Path) -> None:
    relay = TerminalRelay(ours=False)
    agent = make_agent(agent_env(tmp_path), upgrade_interval=0.2, upgrade_hysteresis=0.1)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(DEADLINE):
            await relay.serve(nursery)
            lan, public = Forwarder(relay.port), Forwarder(relay.port)
            await lan.serve(nursery)
            await public.serve(nursery)
            lan.refuse = True
            lan_url, public_url = f"ws://127.0.0.1:{lan.port}", f"ws://127.0.0.1:{public.port}"
            pair(agent, lan_url, route_candidates=[{"url": lan_url, "role": "lan", "priority": 0},
                                                   {"url": public_url, "role": "public", "priority": 2}])
            await nursery.start(runner.run, agent)
            shell = await open_shell(agent, nursery)
            first = await shell.until(api.SHELL_ATTACHED)
            lan.refuse = False  # the better route returns: the upgrade watch moves up
            second = await shell.until(api.SHELL_ATTACHED)
            await detach(shell)
        nursery.cancel_scope.cancel()
    assert first.params["route"] != second.params["route"]  # public, then LAN
    assert relay.detaches[0] == 1  # detached on the old socket before it closed: no stale tmux client
    assert len(relay.attaches) == 2


async def test_after_a_black_hole_the_shell_moves_to_the_next_route_without_waiting_out_the_silent_one(
        tmp_path: Path) -> None:
    """LAN (priority 0) goes silent while typing; Public answers. The silent LAN would hold the reconnect
    race for a whole probe timeout (set far beyond the hang guard here) before Public may win: the shell must
    reattach on Public after the suspicion and its ping alone."""
    relay = TerminalRelay(ours=True)
    agent = make_agent(agent_env(tmp_path), ping_interval=3600.0, probe_timeout=3600.0,
                       backoff_base=0.05, backoff_cap=0.1)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(DEADLINE):
            await relay.serve(nursery)
            lan = Forwarder(relay.port)
            await lan.serve(nursery)
            lan_url = f"ws://127.0.0.1:{lan.port}"
            pair(agent, lan_url, route_candidates=[{"url": lan_url, "role": "lan", "priority": 0},
                                                   {"url": relay.url, "role": "public", "priority": 2}])
            await nursery.start(runner.run, agent)
            shell = await open_shell(agent, nursery)
            first = await shell.until(api.SHELL_ATTACHED)
            assert first.params["route"] == "LAN", first.params
            lan.blackholed = True
            await shell.send([2, api.SHELL_INPUT, {"seq": 0, "d": b"x"}])
            again = await shell.until(api.SHELL_ATTACHED)
            assert again.params["route"] == "Public", again.params
            while shell.acked < 1:
                await shell.until(api.SHELL_ACK)
            await detach(shell)
        nursery.cancel_scope.cancel()
    assert bytes(relay.pty) == b"x"


async def test_a_shell_waiting_to_reattach_redials_soon_whatever_the_backoff(tmp_path: Path) -> None:
    """The relay goes away and refuses dials for a while (a restart): the backoff (base set far beyond the
    hang guard here) would keep the user waiting long after it is back; with a shell waiting, the link dials
    again within SHELL_RETRY, and the shell reattaches once the relay answers."""
    relay = TerminalRelay(ours=True)
    agent = make_agent(agent_env(tmp_path), backoff_base=3600.0, backoff_cap=3600.0)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(DEADLINE):
            await relay.serve(nursery)
            front = Forwarder(relay.port)
            await front.serve(nursery)
            url = f"ws://127.0.0.1:{front.port}"
            pair(agent, url)
            await nursery.start(runner.run, agent)
            shell = await open_shell(agent, nursery)
            await shell.until(api.SHELL_ATTACHED)
            front.refuse = True
            front.cut()
            await shell.send([2, api.SHELL_INPUT, {"seq": 0, "d": b"x"}])
            while front.refused < 2:  # the relay is away: dials fail, and the backoff grows
                await trio.sleep(0.05)
            front.refuse = False
            await shell.until(api.SHELL_ATTACHED)
            while shell.acked < 1:
                await shell.until(api.SHELL_ACK)
            await detach(shell)
        nursery.cancel_scope.cancel()
    assert bytes(relay.pty) == b"x"
