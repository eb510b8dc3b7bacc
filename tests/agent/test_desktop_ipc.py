"""The desktop service inside a real agent: approvals over real IPC and the watch stream, and a fresh
pairing with a real relay writing ``ask_every_time``. Real sockets, real clock (no autojump)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import helpers
import pytest
import trio
from test_desktop_channel import FakePort

from hermes_relay.agent import pairing, runner
from hermes_relay.agent.backend import AgentBackend
from hermes_relay.agent.config import AgentConfig
from hermes_relay.cli.client import AgentClient
from hermes_relay.core import api, desktop, policy
from hermes_relay.core.desktop import ToolContext, ToolSpec, ToolTable
from hermes_relay.core.errors import NotFoundError

URL = "ws://relay.test:8767"


@pytest.fixture
def relay_test_guard() -> float:
    return 15.0


async def _agent(tmp_path: Path, nursery: trio.Nursery) -> AgentBackend:
    run_dir = Path(tempfile.mkdtemp(prefix="hr-"))
    env = {"HERMES_HOME": str(tmp_path / "home"), "HERMES_RELAY_RUNTIME_DIR": str(run_dir),
           "HERMES_RELAY_NOTIFY": "0", "HOME": str(tmp_path)}
    agent = AgentBackend(AgentConfig.from_env(env, netwatch=False))
    await nursery.start(runner.run, agent)
    return agent


class Seen(Exception):
    pass


async def test_an_ask_call_is_listed_streamed_and_approved_over_ipc(tmp_path: Path) -> None:
    ran = trio.Event()

    async def touch(args: dict[str, Any], ctx: ToolContext) -> Any:
        ran.set()
        return {"ok": True}

    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            agent = await _agent(tmp_path, nursery)
            agent.desktop.table = ToolTable([ToolSpec("desktop_write_file", desktop.FILES, touch, deadline=10.0)])
            policy.set_mode(agent.desktop.policy_path, URL, policy.ASK_EVERY_TIME)
            port = FakePort(URL)
            inbound_send, inbound = trio.open_memory_channel[Any](10)
            nursery.start_soon(agent.desktop.serve_link, port, inbound)
            sock = agent.config.socket_path
            events: list[dict[str, Any]] = []

            def watch_until_requested() -> None:
                def on_notify(method: str, params: dict[str, Any]) -> None:
                    if method == api.APPROVAL:
                        events.append(params)
                        raise Seen

                with AgentClient.connect(sock, timeout=5) as client:
                    try:
                        client.call(api.WATCH, {}, timeout=10, on_notify=on_notify)
                    except Seen:
                        pass

            async with trio.open_nursery() as watchers:
                watchers.start_soon(trio.to_thread.run_sync, watch_until_requested)
                await inbound_send.send({"channel": "desktop", "type": "desktop.command", "id": "x",
                                         "payload": {"request_id": "r-1", "tool": "desktop_write_file",
                                                     "args": {"path": "/tmp/a"}}})
            requested = events[0]
            assert requested["event"] == "approval.requested" and requested["tool"] == "desktop_write_file"

            def ipc(method: str, params: dict[str, Any]) -> Any:
                with AgentClient.connect(sock, timeout=5) as client:
                    return client.call(method, params)

            listed = await trio.to_thread.run_sync(ipc, api.APPROVALS_LIST, {})
            assert [a["id"] for a in listed["approvals"]] == [requested["id"]]
            assert not ran.is_set()
            decided = await trio.to_thread.run_sync(ipc, api.APPROVALS_DECIDE,
                                                    {"id": requested["id"], "approve": True, "always": True})
            assert decided["approved"] is True and decided["always"] is True
            response = (await port.next("desktop.response", timeout=5))["payload"]
            assert response == {"request_id": "r-1", "ok": True, "result": {"ok": True}}
            assert ran.is_set()
            doc = json.loads(agent.desktop.policy_path.read_text())
            assert doc["hosts"][URL]["capabilities"]["files"] == "allow"
            with pytest.raises(NotFoundError):
                await trio.to_thread.run_sync(ipc, api.APPROVALS_DECIDE, {"id": requested["id"], "approve": True})
            agent.stop()
            nursery.cancel_scope.cancel()


async def test_a_fresh_pairing_writes_ask_every_time(relay_factory, tmp_path: Path) -> None:
    relay = await relay_factory()
    async with trio.open_nursery() as nursery:
        agent = await _agent(tmp_path, nursery)

        async def progress(event: dict[str, Any]) -> None:
            pass

        result = await pairing.pair(agent, {"url": relay.url, "code": await helpers.register_code(relay.http)}, progress)
        host = policy.load(agent.desktop.policy_path).for_url(result["url"])
        assert host.access_mode == policy.ASK_EVERY_TIME
        policy.set_mode(agent.desktop.policy_path, relay.url, policy.TRUSTED)
        await pairing.pair(agent, {"url": relay.url, "code": await helpers.register_code(relay.http)}, progress)
        assert policy.load(agent.desktop.policy_path).for_url(relay.url).access_mode == policy.TRUSTED  # kept
        status = await agent.status(False)  # status reads the policy as it is on disk (in a worker thread)
        summary = next(r["desktop"] for r in status["relays"] if r["url"] == relay.url)
        assert summary is not None and summary["policy"] == policy.TRUSTED and summary["calls_today"] == 0
        agent.stop()


async def test_approvals_watch_cli_answers_a_real_agent(tmp_path: Path) -> None:
    import io

    from hermes_relay.cli.main import invoke

    ran: list[str] = []

    async def touch(args: dict[str, Any], ctx: ToolContext) -> Any:
        ran.append(args["path"])
        return {"ok": True}

    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            agent = await _agent(tmp_path, nursery)
            agent.desktop.table = ToolTable([ToolSpec("desktop_write_file", desktop.FILES, touch, deadline=10.0,
                                                      preview=lambda a: a["path"])])
            policy.set_mode(agent.desktop.policy_path, URL, policy.ASK_EVERY_TIME)
            port = FakePort(URL)
            inbound_send, inbound = trio.open_memory_channel[Any](10)
            nursery.start_soon(agent.desktop.serve_link, port, inbound)
            out, err = io.StringIO(), io.StringIO()
            env = {**agent.config.env, "NO_COLOR": "1"}

            def cli() -> int:
                return invoke(["--no-autostart", "approvals", "--watch"], stdout=out, stderr=err, env=env,
                              stdin=io.StringIO("y\n"))

            async def command(rid: str, path: str) -> None:
                await inbound_send.send({"channel": "desktop", "type": "desktop.command", "id": rid,
                                         "payload": {"request_id": rid, "tool": "desktop_write_file",
                                                     "args": {"path": path}}})

            codes: list[int] = []

            async def run_cli() -> None:
                codes.append(await trio.to_thread.run_sync(cli))

            async with trio.open_nursery() as inner:
                inner.start_soon(run_cli)
                await command("r-1", "/tmp/first")
                first = (await port.next("desktop.response", timeout=10))["payload"]
                assert first == {"request_id": "r-1", "ok": True, "result": {"ok": True}}
                await command("r-2", "/tmp/second")  # the CLI prompts again, reads EOF and exits
            assert codes == [0], err.getvalue()
            assert ran == ["/tmp/first"]
            text = out.getvalue()
            assert f"{URL} wants to run desktop_write_file (files)" in text and "/tmp/second" in text
            assert "✓ approved" in text
            (pending,) = agent.desktop.approvals.list()  # the CLI left it unanswered
            await agent.desktop.approvals.decide(pending["id"], False, reason="left unanswered")
            second = (await port.next("desktop.response", timeout=10))["payload"]
            assert second == {"request_id": "r-2", "ok": False, "error": "left unanswered"}
            assert ran == ["/tmp/first"]
            agent.stop()
            nursery.cancel_scope.cancel()


async def test_status_over_ipc_carries_the_desktop_summary(relay_factory, tmp_path: Path) -> None:
    relay = await relay_factory()
    async with trio.open_nursery() as nursery:
        agent = await _agent(tmp_path, nursery)

        async def progress(event: dict[str, Any]) -> None:
            pass

        await pairing.pair(agent, {"url": relay.url, "code": await helpers.register_code(relay.http)}, progress)

        def status() -> Any:
            with AgentClient.connect(agent.config.socket_path, timeout=5) as client:
                return client.call(api.STATUS, {})

        relays = (await trio.to_thread.run_sync(status))["relays"]
        assert relays[0]["desktop"]["policy"] == policy.ASK_EVERY_TIME
        assert relays[0]["desktop"]["calls_today"] == 0 and relays[0]["desktop"]["last_call"] is None
        agent.stop()
