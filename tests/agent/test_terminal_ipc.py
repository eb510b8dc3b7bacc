"""The IPC side of the shell: client notifies during a call (agent/ipc_server.py's per-call inbox, over a
real socket pair), and ``shell.open`` / ``terminal.list`` / ``terminal.kill`` over a real connection to a
real agent whose link talks to the scripted relay of test_terminal_link (the reference's semantics):
takeover, and the clear errors. Real sockets, real clock."""

from __future__ import annotations

import socket
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from terminal_link_rig import STREAM, IpcShell, TerminalRelay

from hermes_relay.agent import ipc_server, runner
from hermes_relay.agent.backend import AgentBackend as Agent
from hermes_relay.agent.config import AgentConfig
from hermes_relay.agent.ipc_server import CallContext
from hermes_relay.agent.terminal import service as service_mod
from hermes_relay.agent.terminal import session as session_mod
from hermes_relay.core import api, framing, hosts, paths, rpc

DEADLINE = 15.0
HELLO = [0, 0, api.HELLO, {"client_version": "test", "api_version": api.API_VERSION}]


@pytest.fixture
def relay_test_guard() -> float:
    return 30.0


def open_params(**extra: Any) -> dict[str, Any]:
    return {"session": "main", "cols": 80, "rows": 24, "term": "xterm", "stream": STREAM, "out_seq": 0, "in_base": 0,
            "in_sent": 0, "unacked": b"", "raw": True, "reopen": False, **extra}


# -- the inbox ----------------------------------------------------------------------------------------
@asynccontextmanager
async def served(handlers: dict[str, Any]) -> AsyncIterator[IpcShell]:
    a, b = socket.socketpair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ipc_server.handle_connection, trio.SocketStream(trio.socket.from_stdlib_socket(a)), handlers)
        client = IpcShell(trio.SocketStream(trio.socket.from_stdlib_socket(b)))
        nursery.start_soon(client.read)
        yield client
        await client.stream.aclose()
        nursery.cancel_scope.cancel()


async def hello(params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
    return {}


async def test_notifies_reach_the_running_call_in_order_and_a_flood_is_held_not_dropped() -> None:
    release = trio.Event()
    contexts: list[CallContext] = []

    async def collect(params: dict[str, Any], ctx: CallContext) -> list[int]:
        contexts.append(ctx)
        await release.wait()
        assert ctx.inbox is not None
        got = []
        async for msg in ctx.inbox:
            got.append(msg.params["n"])
            if len(got) == params["count"]:
                break
        return got

    with trio.fail_after(DEADLINE):
        async with served({"hello": hello, "collect": collect}) as client:
            await client.send(HELLO)
            await client.send([0, 1, "collect", {"count": 500}])

            async def flood() -> None:
                for n in range(500):  # sent right behind the request, before the handler reads any
                    await client.send([2, "shell.input", {"n": n}])

            async with trio.open_nursery() as senders:
                senders.start_soon(flood)
                while not contexts or contexts[0].inbox is None or \
                        contexts[0].inbox.statistics().current_buffer_used < ipc_server.INBOX_SIZE:
                    await trio.sleep(0.01)
                # held at the bound; the rest waits in the socket: the client is backpressured
                assert contexts[0].inbox.statistics().current_buffer_used == ipc_server.INBOX_SIZE
                release.set()
            await client.done.wait()
    assert client.response is not None and client.response.result == list(range(500))  # none dropped, in order


@pytest.mark.parametrize("before", [True, False])
async def test_a_notify_outside_a_call_drops_the_client(before: bool) -> None:
    async def echo(params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        return params

    with trio.fail_after(DEADLINE):
        async with served({"hello": hello, "echo": echo}) as client:
            if before:
                await client.send([2, "shell.input", {}])  # before any call
                await client.done.wait()  # the agent hung up
                assert client.response is None
            else:
                await client.send(HELLO)
                await client.send([0, 1, "echo", {"x": 1}])
                await client.done.wait()
                assert client.response is not None and client.response.result == {"x": 1}
                await client.send([2, "shell.input", {}])  # after its call answered
                assert await client.stream.receive_some(100) == b""  # the agent hung up


# -- shell.open, terminal.list, terminal.kill through a real agent ----------------------------------
async def start_agent(tmp_path: Path, relay: TerminalRelay, nursery: trio.Nursery) -> Agent:
    run_dir = Path(tempfile.mkdtemp(prefix="hr-"))
    env = {"HERMES_HOME": str(tmp_path / "home"), "HERMES_RELAY_RUNTIME_DIR": str(run_dir), "HOME": str(tmp_path),
           "HERMES_RELAY_NOTIFY": "0"}
    agent = Agent(AgentConfig.from_env(env, netwatch=False, backoff_base=0.05, backoff_cap=0.1))
    await relay.serve(nursery)
    agent.store.update(lambda s: s.__setitem__(relay.url, {"paired_at": 1_700_000_000, "token": "T1"}))
    hosts.rename(paths.desktop_control_file(agent.config.env), relay.url, "box")
    await nursery.start(runner.run, agent)
    return agent


async def call(agent: Agent, nursery: trio.Nursery, method: str, params: dict[str, Any]) -> IpcShell:
    client = IpcShell(await trio.open_unix_socket(agent.config.socket_path))
    nursery.start_soon(client.read)
    await client.send(HELLO)
    await client.send([0, 1, method, params])
    return client


async def answer(client: IpcShell) -> rpc.Response:
    await client.done.wait()
    await client.stream.aclose()
    assert client.response is not None
    assert client.problems == []  # every notify and reply has core/apitypes.py's shape
    return client.response


async def test_sessions_are_listed_and_killed_over_the_link(tmp_path: Path) -> None:
    relay = TerminalRelay(ours=False)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(DEADLINE):
            agent = await start_agent(tmp_path, relay, nursery)
            listed = await answer(await call(agent, nursery, api.TERMINAL_LIST, {}))
            assert listed.error is None
            assert [s["name"] for s in listed.result["sessions"]] == ["old"] and listed.result["tmux_available"] is True
            killed = await answer(await call(agent, nursery, api.TERMINAL_KILL, {"remote": "box", "session": "old"}))
            assert killed.error is None, killed.error
            assert killed.result == {"reason": "pty closed"} and relay.killed == ["old"]
            missing = await answer(await call(agent, nursery, api.TERMINAL_KILL, {"session": "nope"}))
            assert missing.error is not None and missing.error["code"] == "not_found"
            bad = await answer(await call(agent, nursery, api.TERMINAL_KILL, {"session": "a.b"}))
            assert bad.error is not None and bad.error["code"] == "usage_error"
        nursery.cancel_scope.cancel()


async def test_a_second_cli_on_the_same_session_takes_it_over(tmp_path: Path) -> None:
    relay = TerminalRelay(ours=False)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(DEADLINE):
            agent = await start_agent(tmp_path, relay, nursery)
            first = await call(agent, nursery, api.SHELL_OPEN, open_params())
            await first.until(api.SHELL_ATTACHED)
            second = await call(agent, nursery, api.SHELL_OPEN, open_params(stream="B" * 22))
            assert (await answer(first)).result == {"reason": "replaced", "code": None}
            attached = await second.until(api.SHELL_ATTACHED)
            assert attached.params["relay"] == "reference" and attached.params["tmux"] is True
            await second.send([2, api.SHELL_DETACH, {}])
            assert (await answer(second)).result == {"reason": "detached", "code": None}
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("refuse", ["grant", "silent", "unpaired"])
async def test_a_refused_shell_is_a_clear_error(tmp_path: Path, refuse: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session_mod, "ATTACH_TIMEOUT", 0.5)
    monkeypatch.setattr(service_mod, "REQUEST_TIMEOUT", 0.5)
    relay = TerminalRelay(ours=False, refuse=refuse)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(DEADLINE):
            agent = await start_agent(tmp_path, relay, nursery)
            remote = {"remote": "ws://elsewhere.test:1"} if refuse == "unpaired" else {}
            opened = await answer(await call(agent, nursery, api.SHELL_OPEN, open_params(**remote)))
            listed = await answer(await call(agent, nursery, api.TERMINAL_LIST, remote))
        nursery.cancel_scope.cancel()
    for error in (opened.error, listed.error):
        assert error is not None
        if refuse == "grant":
            assert error["code"] == "forbidden" and "grant" in error["message"]
            assert "devices extend" in error["data"]["hint"]
        elif refuse == "silent":
            assert "serve no terminal" in error["data"]["hint"]
        else:
            assert error["code"] == "not_paired" and "ws://elsewhere.test:1" in error["message"]


async def test_a_relay_that_fails_a_list_is_not_said_to_serve_no_terminal(tmp_path: Path) -> None:
    relay = TerminalRelay(ours=False, refuse="list-broken")
    async with trio.open_nursery() as nursery:
        with trio.fail_after(DEADLINE):
            agent = await start_agent(tmp_path, relay, nursery)
            listed = await answer(await call(agent, nursery, api.TERMINAL_LIST, {}))
        nursery.cancel_scope.cancel()
    assert listed.error is not None and listed.error["code"] == "terminal_refused"
    assert "_default_shell" in listed.error["message"]
    assert "serve no terminal" not in listed.error["data"]["hint"] and "log" in listed.error["data"]["hint"]


def test_a_reopen_with_64_kib_unacknowledged_and_a_64_kib_input_fit_the_request_limits() -> None:
    for message in ([0, 1, api.SHELL_OPEN, open_params(unacked=b"x" * 65536, reopen=True)],
                    [2, api.SHELL_INPUT, {"seq": 0, "d": b"x" * 65536}]):
        decoder = framing.FrameDecoder(**framing.REQUEST_LIMITS)
        decoder.feed(framing.encode_frame(message))
        assert list(decoder) == [message]
