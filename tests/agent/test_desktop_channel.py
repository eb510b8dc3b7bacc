"""The desktop dispatcher on one link, with a memory-channel LinkPort under the autojump clock.

The service is the real one (real policy file, real audit log under tmp_path); only the link is a
fake, and the tools are small ToolSpecs defined here so the dispatcher's own rules are what is tested.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers import run_inline

from hermes_relay.agent.config import AgentConfig
from hermes_relay.agent.desktop import audit, policyfiles
from hermes_relay.agent.desktop.service import DesktopService
from hermes_relay.agent.desktop.tools import _thread
from hermes_relay.agent.memtrim import QUIET, Trim
from hermes_relay.core import desktop, fileio, policy, wire
from hermes_relay.core.desktop import ToolContext, ToolError, ToolSpec, ToolTable
from hermes_relay.core.errors import ConnectionLostError, NotFoundError

URL = "ws://relay.test:8767"
GUARD = 600.0  # virtual seconds; autojump makes this instant, it only stops a hung test


class Probe:
    """What the test tools did: started/cancelled events and a marker file."""

    def __init__(self, tmp: Path):
        self.started = trio.Event()
        self.cancelled = trio.Event()
        self.marker = tmp / "marker"
        self.contexts: list[ToolContext] = []
        self.hosts: list[str] = []  # the host each call's tool threads count against (tools/_thread.HOST)


def tools(probe: Probe) -> list[ToolSpec]:
    async def echo(args: dict[str, Any], ctx: ToolContext) -> Any:
        probe.contexts.append(ctx)
        probe.hosts.append(_thread.HOST.get())
        if "text" not in args:
            raise ToolError("echo needs 'text'")
        return {"stdout": args["text"], "stderr": "", "exit_code": 0}

    async def sleeper(args: dict[str, Any], ctx: ToolContext) -> Any:
        probe.started.set()
        try:
            await trio.sleep_forever()
        finally:
            probe.cancelled.set()

    async def touch(args: dict[str, Any], ctx: ToolContext) -> Any:
        probe.marker.write_text("ran")
        return {"ok": True, "bytes_written": 3, "path": str(probe.marker)}

    async def big(args: dict[str, Any], ctx: ToolContext) -> Any:
        return {"stdout": "x" * (9 << 20), "stderr": "", "exit_code": 0}

    async def patch(args: dict[str, Any], ctx: ToolContext) -> Any:
        return {"ok": True, "hunks_applied": 1, "path": "f"}

    async def crash(args: dict[str, Any], ctx: ToolContext) -> Any:
        raise RuntimeError("boom")
    return [
        ToolSpec("desktop_terminal", desktop.COMMANDS, echo, preview=lambda a: str(a.get("text", ""))),
        ToolSpec("desktop_sleep", desktop.COMMANDS, sleeper),
        ToolSpec("desktop_write_file", desktop.FILES, touch),
        ToolSpec("desktop_patch", desktop.FILES, patch),
        ToolSpec("desktop_big", desktop.FILES, big),
        ToolSpec("desktop_crash", desktop.FILES, crash),
    ]


class FakePort:
    def __init__(self, url: str = URL):
        self.url = url
        self.route_url = url
        self.sent: list[dict[str, Any]] = []
        self._out, self.out = trio.open_memory_channel[dict[str, Any]](10_000)
        self.closed = False

    async def send(self, envelope: dict[str, Any]) -> None:
        if self.closed:
            raise ConnectionLostError("link closed")
        assert desktop.encoded_size(envelope) < wire.MAX_WS_MESSAGE
        self.sent.append(envelope)
        self._out.send_nowait(envelope)

    async def next(self, type_: str, timeout: float = 120.0) -> dict[str, Any]:
        with trio.fail_after(timeout):
            while True:
                envelope = await self.out.receive()
                if envelope["type"] == type_:
                    return envelope

    def responses(self) -> list[dict[str, Any]]:
        return [e["payload"] for e in self.sent if e["type"] == "desktop.response"]


class Harness:
    def __init__(self, tmp_path: Path, mode: str | None):
        self.tmp = tmp_path
        self.env = {"HOME": str(tmp_path), "HERMES_HOME": str(tmp_path / ".hermes"), "HERMES_RELAY_NOTIFY": "0",
                    "HERMES_RELAY_RUNTIME_DIR": str(tmp_path / "run")}
        self.config = AgentConfig.from_env(self.env)
        self.probe = Probe(tmp_path)
        self.service = DesktopService(self.config, tools=tools(self.probe),
                                      device=lambda: {"device_id": "dev-1", "device_name": "laptop"},
                                      run_sync=run_inline)  # autojump: no worker threads (tests/helpers.py)
        if mode is not None:
            policy.set_mode(self.service.policy_path, URL, mode)
        self.port = FakePort()
        self.inbound_send, self.inbound = trio.open_memory_channel[Any](100)

    async def command(self, request_id: Any, tool: str, args: Any = None, *, type_: str = "desktop.command") -> None:
        payload: dict[str, Any] = {"request_id": request_id, "tool": tool, "args": {} if args is None else args,
                                   "target_device_id": "dev-1"}
        await self.inbound_send.send({"channel": "desktop", "type": type_, "id": str(request_id), "payload": payload})

    async def response(self) -> dict[str, Any]:
        return (await self.port.next("desktop.response"))["payload"]

    def audit(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.service.audit.path.read_text().splitlines()]


@pytest.fixture
async def served(tmp_path: Path, autojump_clock: trio.abc.Clock, request: pytest.FixtureRequest):
    mode = getattr(request, "param", policy.TRUSTED)
    h = Harness(tmp_path, mode)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(h.service.serve_link, h.port, h.inbound)
        with trio.fail_after(GUARD):
            yield h
        nursery.cancel_scope.cancel()


# -- heartbeat -------------------------------------------------------------------------------------
async def test_status_at_once_then_every_30_s(served: Harness, autojump_clock: trio.abc.Clock) -> None:
    t0 = trio.current_time()
    first = await served.port.next("desktop.status")
    assert trio.current_time() == t0
    p = first["payload"]
    assert first["channel"] == "desktop"
    assert p["advertised_tools"] == ["desktop_big", "desktop_crash", "desktop_patch", "desktop_sleep",
                                     "desktop_terminal", "desktop_write_file"]
    assert (p["device_id"], p["device_name"], p["interactive"], p["pid"]) == ("dev-1", "laptop", False, os.getpid())
    assert p["platform"] in ("linux", "darwin", "win32") and p["arch"] and p["host"] and p["version"]
    assert {"started_at_ms", "uptime_ms", "last_error"} <= set(p)
    await served.port.next("desktop.status")
    assert trio.current_time() - t0 == pytest.approx(desktop.HEARTBEAT_INTERVAL)
    await served.port.next("desktop.status")
    assert trio.current_time() - t0 == pytest.approx(2 * desktop.HEARTBEAT_INTERVAL)


async def test_the_status_beat_falls_on_the_agent_s_shared_30_s_tick(tmp_path: Path,
                                                                      autojump_clock: trio.abc.Clock) -> None:
    """After the first status (at once) the beats fall on multiples of 30 s in trio's clock, with the agent's
    other periodic looks (agent/clockwatch.py): one wake-up for all of them. Never less than 15 s apart."""
    h = Harness(tmp_path, policy.TRUSTED)
    await trio.sleep(17)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(h.service.serve_link, h.port, h.inbound)
        beats = []
        for _ in range(3):
            await h.port.next("desktop.status")
            beats.append(trio.current_time())
        nursery.cancel_scope.cancel()
    assert beats == [17, 60, 90]  # 30 came too soon after 17


async def _structured_is_advertised_within_2_s(served: Harness) -> None:
    """A restricted host (nothing sent yet) made ``structured`` by another client: its status within 2 s."""
    assert served.port.sent == []  # restricted: nothing, not even an empty desktop.status
    edited = trio.current_time()
    policy.set_mode(served.service.policy_path, URL, policy.STRUCTURED)  # as another client would
    status = await served.port.next("desktop.status")
    assert trio.current_time() - edited <= 2.0
    assert status["payload"]["advertised_tools"] == ["desktop_big", "desktop_crash", "desktop_patch",
                                                     "desktop_write_file"]


@pytest.mark.parametrize("served", [policy.ASK], indirect=True)
async def test_policy_edit_changes_the_advertised_set_within_2_s(served: Harness, autojump_clock: trio.abc.Clock) -> None:
    await trio.sleep(5)
    await _structured_is_advertised_within_2_s(served)
    # a hand edit to a file nobody can parse: restricted, reported, and the file left as it was
    served.service.policy_path.write_text("{ not json")
    await trio.sleep(2)
    assert served.service.advertised(URL) == []  # the link reconnects; no empty status goes out
    assert [e["type"] for e in served.port.sent] == ["desktop.status"]
    assert served.service.last_error is not None and "cannot be parsed" in served.service.last_error["message"]
    assert served.service.policy_path.read_text() == "{ not json"


class _Steps(trio.abc.Instrument):
    """How many steps the tasks whose name ends with ``suffix`` took."""

    def __init__(self, suffix: str):
        self.suffix, self.count = suffix, 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith(self.suffix):
            self.count += 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify")
@pytest.mark.parametrize("served", [policy.ASK], indirect=True)
async def test_under_the_file_watch_an_idle_link_wakes_for_its_beats_and_an_edit_still_applies_at_once(
        served: Harness, autojump_clock: trio.abc.Clock) -> None:
    """The heartbeat looked at the policy every second even while inotify watched every file: an idle agent
    woke 60 times a minute for nothing. Now it sleeps until a beat, the watch's safety refresh or a change."""
    steps = _Steps("._heartbeat")
    trio.lowlevel.add_instrument(steps)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(served.service.watch)
            await trio.sleep(5)  # the watches are armed, and the heartbeat has looked once more
            steps.count = 0
            await trio.sleep(300)  # (the fixture's guard is 600 virtual seconds)
            looks = 300 / policyfiles.SAFETY_REFRESH + 300 / desktop.HEARTBEAT_INTERVAL
            assert steps.count <= 4 * looks < 300, steps.count  # a step or few a look; it was one a second
            await _structured_is_advertised_within_2_s(served)
            nursery.cancel_scope.cancel()
    finally:
        trio.lowlevel.remove_instrument(steps)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify")
@pytest.mark.parametrize("served", [policy.ASK], indirect=True)
async def test_under_the_file_watch_an_idle_link_refreshes_every_few_minutes(
        served: Harness, autojump_clock: trio.abc.Clock) -> None:
    """The safety refresh ran every 10 s, a worker-thread hop each (and, trio's idle threads exiting after
    10 s, a new thread each). The watches' own safety polls already catch a change no event told."""
    hops: list[float] = []
    inline = served.service.run_sync

    async def counting(fn: Any, *args: Any) -> Any:
        hops.append(trio.current_time())
        return await inline(fn, *args)

    served.service.run_sync = counting
    async with trio.open_nursery() as nursery:
        nursery.start_soon(served.service.watch)
        await trio.sleep(5)  # the watches are armed, and the heartbeat has looked once more
        hops.clear()
        await trio.sleep(590)  # (the fixture's guard is 600 virtual seconds from the start)
        assert len(hops) <= 2, hops  # it was 60
        nursery.cancel_scope.cancel()


# -- commands --------------------------------------------------------------------------------------
async def test_one_response_per_command_and_the_audit_record(served: Harness, autojump_clock: trio.abc.Clock) -> None:
    await served.command("r-1", "desktop_terminal", {"text": "hello"})
    response = await served.response()
    assert response == {"request_id": "r-1", "ok": True, "result": {"stdout": "hello", "stderr": "", "exit_code": 0}}
    await served.command("r-2", "command_bare", type_="command")
    assert await served.response() == {"request_id": "r-2", "ok": False, "error": "unknown tool: command_bare"}
    await served.command("r-3", "desktop_terminal", {})
    assert await served.response() == {"request_id": "r-3", "ok": False, "error": "echo needs 'text'"}
    await served.command("r-4", "desktop_crash")
    assert (await served.response())["error"] == "desktop_crash failed: RuntimeError: boom"
    await trio.sleep(60)
    assert [r["request_id"] for r in served.port.responses()] == ["r-1", "r-2", "r-3", "r-4"]
    records = served.audit()
    calls = [r for r in records if r["kind"] == "tool.completed"]
    assert [(c["request_id"], c["ok"]) for c in calls] == [("r-1", True), ("r-2", False), ("r-3", False), ("r-4", False)]
    first = calls[0]
    assert first["tool"] == "desktop_terminal" and first["category"] == "command" and first["host_url"] == URL
    assert first["args_preview"] == "hello" and first["exit_code"] == 0 and first["stdout"] == "hello"
    assert isinstance(first["ts"], int) and first["duration_ms"] >= 0
    assert records[0]["kind"] == "connection.state"
    assert os.stat(served.service.audit.path).st_mode & 0o777 == 0o600
    status = served.service.status_for(URL)
    assert status is not None
    assert (status["calls_today"], status["policy"], status["tools_advertised"]) == (4, "trusted", 6)
    assert status["last_call"]["tool"] == "desktop_crash" and status["last_call"]["ok"] is False


async def test_a_calls_tool_threads_count_against_its_own_hosts_share(served: Harness,
                                                                       autojump_clock: trio.abc.Clock) -> None:
    await served.command("r-1", "desktop_terminal", {"text": "hello"})
    assert (await served.response())["ok"] is True
    assert served.probe.hosts == [URL]
    assert _thread.HOST.get() == ""  # set in the call's own task only


async def test_duplicate_and_invalid_request_ids_never_run_twice(served: Harness, autojump_clock: trio.abc.Clock) -> None:
    await served.command("same", "desktop_write_file")
    assert (await served.response())["ok"] is True
    served.probe.marker.unlink()
    await served.command("same", "desktop_write_file")
    assert await served.response() == {"request_id": "same", "ok": False, "error": desktop.INVALID_ID}
    assert not served.probe.marker.exists()
    long_id = "x" * (desktop.MAX_REQUEST_ID + 1)
    await served.command(long_id, "desktop_terminal", {"text": "a"})
    assert await served.response() == {"request_id": long_id, "ok": False, "error": desktop.INVALID_ID}


async def test_malformed_commands_are_answered_when_they_can_be_and_never_end_the_link(served: Harness, autojump_clock: trio.abc.Clock) -> None:
    send = served.inbound_send.send
    await send({"channel": "desktop", "type": "desktop.command", "id": "a", "payload": {"tool": "desktop_terminal"}})
    await send({"channel": "desktop", "type": "desktop.command", "id": "b", "payload": []})
    await send({"channel": "desktop", "type": "desktop.command", "id": "c",
                "payload": {"request_id": "", "tool": "desktop_terminal", "args": {}}})
    await send({"channel": "desktop", "type": "desktop.command", "id": "d", "payload": {"request_id": 7, "tool": "x"}})
    await send({"channel": "desktop", "type": "desktop.command", "id": "e",
                "payload": {"request_id": "m-1", "tool": "desktop_terminal", "args": "ls"}})
    await send({"channel": "desktop", "type": "desktop.command", "id": "f", "payload": {"request_id": "m-2", "tool": 5}})
    await send({"channel": "tui", "type": "tui.event", "id": "g", "payload": {}})
    await send({"channel": "desktop", "type": "desktop.control_session_end", "payload": {"version": 1, "id": "c-1"}})
    await send({"channel": "desktop", "type": "workspace", "id": "h", "payload": {}})
    await served.command("ok-1", "desktop_terminal", {"text": "still here"})
    answers = sorted([await served.response() for _ in range(3)], key=lambda a: a["request_id"])  # m-1, m-2, ok-1
    assert answers[0] == {"request_id": "m-1", "ok": False,
                          "error": "malformed desktop.command: 'args' of desktop_terminal must be an object"}
    assert answers[1]["request_id"] == "m-2" and answers[1]["ok"] is False and "'tool'" in answers[1]["error"]
    assert answers[2]["request_id"] == "ok-1" and answers[2]["ok"] is True
    await trio.sleep(60)
    assert len(served.port.responses()) == 3


@pytest.mark.parametrize("served", [policy.STRUCTURED], indirect=True)
async def test_a_disabled_capability_is_refused_at_call_time(served: Harness, autojump_clock: trio.abc.Clock) -> None:
    status = await served.port.next("desktop.status")
    assert "desktop_terminal" not in status["payload"]["advertised_tools"]
    await served.command("d-1", "desktop_terminal", {"text": "x"})  # a relay may forward it anyway
    response = await served.response()
    assert response["ok"] is False
    assert "'commands' capability" in response["error"] and "hermes-relay access" in response["error"]
    assert served.probe.contexts == []


async def test_deadline_cancels_the_tool_and_answers_aborted(served: Harness, autojump_clock: trio.abc.Clock) -> None:
    t0 = trio.current_time()
    await served.command("slow", "desktop_sleep")
    await served.command("fast", "desktop_terminal", {"text": "meanwhile"})
    assert (await served.response())["request_id"] == "fast"  # calls run concurrently
    response = await served.response()
    assert response == {"request_id": "slow", "ok": False, "error": "aborted"}
    assert trio.current_time() - t0 == pytest.approx(desktop.DEFAULT_DEADLINE)
    assert served.probe.cancelled.is_set()
    record = [r for r in served.audit() if r.get("request_id") == "slow" and r["kind"] == "tool.completed"][0]
    assert record["aborted"] is True and record["ok"] is False


async def test_a_call_whose_deadline_passed_before_its_tool_starts_runs_nothing(served: Harness,
                                                                              autojump_clock: Any) -> None:
    # Without an approval nothing is awaited between the decision and the tool's start (no scheduler pass):
    # the clock alone can pass the deadline there (a slow decision on a busy machine), and it is checked.
    decide = served.service.decide
    jumped = []

    def slow_decide(url: str, tool: str) -> str:
        if tool == "desktop_write_file" and not jumped:
            jumped.append(True)
            autojump_clock.jump(desktop.DEFAULT_DEADLINE + 1)  # synchronous: no task runs meanwhile
        return decide(url, tool)

    served.service.decide = slow_decide  # type: ignore[method-assign]
    await served.command("late", "desktop_write_file")
    assert await served.response() == {"request_id": "late", "ok": False, "error": "aborted"}
    assert jumped and not served.probe.marker.exists()
    records = [r for r in served.audit() if r.get("request_id") == "late"]
    assert [r["kind"] for r in records] == ["tool.completed"]  # never started
    assert records[0]["authorised"] == "expired"
    await served.command("next", "desktop_write_file")
    assert (await served.response())["ok"] is True and served.probe.marker.exists()


async def test_the_deadline_cap_shortens_calls_and_never_lengthens_them(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    h = Harness(tmp_path, policy.TRUSTED)
    h.service.deadline_cap = 4.0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(h.service.serve_link, h.port, h.inbound)
        t0 = trio.current_time()
        await h.command("slow", "desktop_sleep")
        assert await h.response() == {"request_id": "slow", "ok": False, "error": "aborted"}
        assert trio.current_time() - t0 == pytest.approx(4.0)
        h.service.deadline_cap = 100.0
        t0 = trio.current_time()
        await h.command("slow-2", "desktop_sleep")
        assert (await h.response())["error"] == "aborted"
        assert trio.current_time() - t0 == pytest.approx(desktop.DEFAULT_DEADLINE)
        nursery.cancel_scope.cancel()
    def cap(env: dict[str, str]) -> float | None:
        return DesktopService(AgentConfig.from_env({**env, "HOME": str(tmp_path)}), tools=[]).deadline_cap

    assert cap({"HERMES_RELAY_DESKTOP_DEADLINE": "2.5"}) == 2.5
    assert cap({"HERMES_RELAY_DESKTOP_DEADLINE": "soon"}) is None
    assert cap({}) is None


async def test_a_9_mb_result_is_bounded_under_the_frame_limit(served: Harness, autojump_clock: trio.abc.Clock) -> None:
    await served.command("big", "desktop_big")
    envelope = await served.port.next("desktop.response")
    assert desktop.encoded_size(envelope) < wire.MAX_WS_MESSAGE
    result = envelope["payload"]["result"]
    assert envelope["payload"]["ok"] is True
    assert result["truncated"] is True and result["stdout_truncated"] is True
    assert result["stdout_bytes"] == 9 << 20
    assert result["exit_code"] == 0 and len(result["stdout"]) > 1 << 20
    await served.command("after", "desktop_terminal", {"text": "link still up"})
    assert (await served.response())["ok"] is True


async def test_a_big_answer_s_memory_is_given_back_once_the_link_is_quiet(served: Harness,
                                                                           autojump_clock: trio.abc.Clock) -> None:
    trims: list[float] = []
    served.service.memory = Trim(lambda: trims.append(trio.current_time()))
    await served.command("small", "desktop_terminal", {"text": "hi"})
    await served.response()
    await trio.sleep(5)
    assert trims == []  # a small answer leaves the allocator alone
    await served.command("big", "desktop_big")
    await served.response()
    sent = trio.current_time()
    await trio.sleep(0.5)
    assert trims == []  # not while big answers may follow
    await trio.sleep(5)
    assert len(trims) == 1 and QUIET <= trims[0] - sent <= QUIET + desktop.POLICY_POLL_INTERVAL


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify")
async def test_under_the_file_watch_a_big_answer_s_memory_is_still_given_back_once_quiet(
        served: Harness, autojump_clock: trio.abc.Clock) -> None:
    """The heartbeat sleeps until its next beat under the file watch: the first big answer since the last trim
    must wake it (the trim waited for the next beat, up to 30 s, and an e2e test saw the memory kept)."""
    trims: list[float] = []
    memory = Trim(lambda: trims.append(trio.current_time()))
    memory.on_armed = served.service.memory.on_armed  # the service's wiring
    served.service.memory = memory
    async with trio.open_nursery() as nursery:
        nursery.start_soon(served.service.watch)
        await trio.sleep(5)  # the watches are armed: the heartbeat now sleeps until its next beat
        await served.command("big", "desktop_big")
        await served.response()
        sent = trio.current_time()
        await trio.sleep(2 * QUIET)
        assert trims == [sent + QUIET]
        nursery.cancel_scope.cancel()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify")
async def test_under_the_file_watch_a_flood_s_summary_is_written_when_its_window_ends(
        served: Harness, autojump_clock: trio.abc.Clock) -> None:
    """A window's summary of suppressed repeats is owed at its end: the sleeping heartbeat is woken for it."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(served.service.watch)
        await trio.sleep(5)  # the watches are armed: the heartbeat now sleeps until its next beat
        first = trio.current_time()
        for i in range(audit.BURST + 2):  # two repeats past the burst: a summary is owed
            await served.command(f"r-{i}", "desktop_terminal", {"text": "x"})
            await served.response()
        await trio.sleep_until(first + audit.WINDOW + 0.5)
        repeated = [r for r in served.audit() if r.get("kind") == "tool.repeated"]
        assert [(r["tool"], r["count"]) for r in repeated] == [("desktop_terminal", 2)]
        nursery.cancel_scope.cancel()


async def test_a_result_json_cannot_carry_is_answered_as_an_error_and_the_link_serves_on(
        served: Harness, autojump_clock: trio.abc.Clock) -> None:
    async def not_json(args: dict[str, Any], ctx: ToolContext) -> Any:
        return {"when": object()}

    table = served.service.table
    served.service.table = ToolTable([*(table.get(n) for n in table.names()), ToolSpec("desktop_not_json", desktop.FILES, not_json)])
    await served.command("odd", "desktop_not_json")
    odd = await served.response()
    assert odd["request_id"] == "odd" and odd["ok"] is False and "not JSON" in odd["error"]
    await served.command("after", "desktop_terminal", {"text": "still here"})
    assert (await served.response())["ok"] is True


async def test_patch_allowed_by_policy_is_approved_auto(served: Harness, autojump_clock: trio.abc.Clock) -> None:
    await served.command("p-1", "desktop_patch", {"path": "f", "patch": ""})
    assert (await served.response())["result"] == {"ok": True, "hunks_applied": 1, "path": "f", "approved": "auto"}


async def test_a_link_that_goes_away_mid_call_still_audits_the_call(served: Harness, autojump_clock: trio.abc.Clock) -> None:
    await served.command("gone", "desktop_sleep")
    await served.probe.started.wait()
    served.port.closed = True
    await served.inbound_send.aclose()  # the link ends: serve_link's inbound closes
    with trio.fail_after(5):
        await served.probe.cancelled.wait()
    await trio.sleep(1)
    records = served.audit()
    assert [r["request_id"] for r in records if r["kind"] == "tool.completed"] == ["gone"]
    assert records[-1]["kind"] == "connection.state"


# -- approvals -------------------------------------------------------------------------------------
@pytest.fixture
def ask_every_time() -> str:
    return policy.ASK_EVERY_TIME


async def _pending(h: Harness) -> dict[str, Any]:
    with trio.fail_after(10):
        while not h.service.approvals.pending:
            await trio.sleep(0.1)
    return h.service.approvals.list()[0]


@pytest.mark.parametrize("served", [policy.ASK_EVERY_TIME], indirect=True)
async def test_ask_approved_runs_and_denied_does_not(served: Harness, autojump_clock: trio.abc.Clock) -> None:
    with served.service.approvals.subscribe() as events:
        await served.command("a-1", "desktop_write_file", {"path": "m", "content": "x", "reason": "save notes"})
        requested = await events.receive()
        assert requested["event"] == "approval.requested" and requested["tool"] == "desktop_write_file"
        assert requested["capability"] == "files" and requested["reason"] == "save notes"
        assert not served.probe.marker.exists()
        await served.service.approvals.decide(requested["id"], True)
        assert (await served.response())["ok"] is True
        assert served.probe.marker.exists()
        assert (await events.receive())["outcome"] == "approved"
        served.probe.marker.unlink()

        await served.command("a-2", "desktop_write_file", {"path": "m"})
        pending = await _pending(served)
        await served.service.approvals.decide(pending["id"], False, reason="not now")
        assert await served.response() == {"request_id": "a-2", "ok": False, "error": "not now"}
        assert not served.probe.marker.exists()

        await served.command("a-3", "desktop_patch", {"path": "f", "patch": ""})
        await served.service.approvals.decide((await _pending(served))["id"], True)
        assert (await served.response())["result"]["approved"] == "user"


@pytest.mark.parametrize("served", [policy.ASK_EVERY_TIME], indirect=True)
async def test_always_allows_that_capability_for_that_host(served: Harness, autojump_clock: trio.abc.Clock) -> None:
    await served.command("w-1", "desktop_write_file")
    answer = await served.service.approvals.decide((await _pending(served))["id"], True, always=True)
    assert answer["always"] is True
    assert (await served.response())["ok"] is True
    doc = json.loads(served.service.policy_path.read_text())
    key = policy.canonical_url(URL)
    assert doc["hosts"][key]["capabilities"]["files"] == "allow"
    assert doc["hosts"][key]["capabilities"]["commands"] == "ask"
    assert doc["hosts"][key]["access_mode"] == "custom"
    await served.command("w-2", "desktop_write_file")
    assert (await served.response())["ok"] is True  # no approval this time
    assert served.service.approvals.pending == {}


@pytest.mark.parametrize("served", [policy.ASK_EVERY_TIME], indirect=True)
async def test_unanswered_approval_expires_before_the_deadline_and_a_late_yes_runs_nothing(served: Harness, autojump_clock: trio.abc.Clock) -> None:
    t0 = trio.current_time()
    await served.command("late", "desktop_write_file")
    pending = await _pending(served)
    response = await served.response()
    waited = trio.current_time() - t0
    assert response["ok"] is False and "timed out" in response["error"]
    assert waited < desktop.DEFAULT_DEADLINE  # the refusal reaches the relay before it gives up
    assert waited == pytest.approx(desktop.DEFAULT_DEADLINE - 3.0)
    with pytest.raises(NotFoundError):
        await served.service.approvals.decide(pending["id"], True)
    await trio.sleep(120)
    assert not served.probe.marker.exists()
    assert len(served.port.responses()) == 1


@pytest.mark.parametrize("served", [None], indirect=True)
async def test_legacy_tools_consent_without_a_policy_record_is_trusted(served: Harness,
                                                                      autojump_clock: trio.abc.Clock) -> None:
    await trio.sleep(5)
    assert served.port.sent == []
    fileio.atomic_write(served.config.sessions_file, json.dumps(
        {"version": 1, "sessions": {URL + "/": {"token": "t", "tools_consented": True}}}).encode())
    status = await served.port.next("desktop.status")
    assert "desktop_terminal" in status["payload"]["advertised_tools"]
    await served.command("legacy", "desktop_terminal", {"text": "ok"})
    assert (await served.response())["ok"] is True
    assert served.service.status_for(URL)["policy"] == policy.TRUSTED


@pytest.mark.parametrize("served", [policy.ASK_EVERY_TIME], indirect=True)
async def test_an_unreadable_policy_restricts_everyone_even_with_an_old_consent(served: Harness,
                                                                                autojump_clock: trio.abc.Clock) -> None:
    await served.port.next("desktop.status")
    fileio.atomic_write(served.config.sessions_file, json.dumps(
        {"version": 1, "sessions": {URL: {"token": "t", "tools_consented": True}}}).encode())
    served.service.policy_path.write_text("{not json")
    await trio.sleep(2)
    assert served.service.advertised(URL) == []
    await served.command("locked", "desktop_terminal", {"text": "no"})
    assert (await served.response())["ok"] is False
    assert served.service.status_for(URL)["policy"] == policy.ASK  # restricted, as the log says


async def test_audit_keeps_segments_the_reference_rotation_never_overwrites(tmp_path: Path) -> None:
    from hermes_relay.agent.desktop.audit import AuditLog

    clock = [1_800_000_000.0]
    log = AuditLog(tmp_path / "desktop-audit.jsonl", segment_bytes=1000, wall_clock=lambda: clock[0])
    for i in range(30):
        clock[0] += 1
        log.write({"ts": i, "kind": "tool.completed", "tool": "t", "pad": "p" * 50})
    # the reference daemon's own rotation moves the live file to ".1" (and would overwrite an older ".1")
    os.replace(log.path, tmp_path / "desktop-audit.jsonl.1")
    log.write({"ts": 30, "kind": "tool.completed", "tool": "t"})
    names = sorted(p.name for p in tmp_path.iterdir())
    segments = [n for n in names if n.startswith("desktop-audit.2")]
    assert len(segments) >= 2 and all(n.endswith(".jsonl") for n in segments)
    assert "desktop-audit.jsonl" in names and "desktop-audit.jsonl.1" in names
    ts = [r["ts"] for r in log.read()]
    assert ts == list(range(31))  # every record, oldest first, across segments, ".1" and the live file
    assert os.stat(log.path).st_mode & 0o777 == 0o600


async def test_a_restarted_service_still_knows_todays_calls(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    first = Harness(tmp_path, policy.TRUSTED)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(first.service.serve_link, first.port, first.inbound)
        await first.command("c-1", "desktop_terminal", {"text": "a"})
        await first.command("c-2", "desktop_crash")
        await first.response()
        await first.response()
        nursery.cancel_scope.cancel()
    again = Harness(tmp_path, None)
    summary = again.service.status_for(URL)
    assert summary is not None and summary["calls_today"] == 2
    assert summary["last_call"]["tool"] in ("desktop_terminal", "desktop_crash")
    assert again.service.status_for("ws://elsewhere:1")["calls_today"] == 0


async def test_calls_in_flight_are_capped_per_link(served: Harness, autojump_clock: trio.abc.Clock) -> None:
    from hermes_relay.agent.desktop import channel

    for i in range(channel.MAX_IN_FLIGHT + 1):
        await served.command(f"s-{i}", "desktop_sleep")
    busy = await served.response()
    assert busy == {"request_id": f"s-{channel.MAX_IN_FLIGHT}", "ok": False, "error": channel.BUSY}
    answers = [await served.response() for _ in range(channel.MAX_IN_FLIGHT)]
    assert {a["error"] for a in answers} == {"aborted"}
    await served.command("after", "desktop_terminal", {"text": "free again"})
    assert (await served.response())["ok"] is True


async def test_waiting_approvals_are_capped(autojump_clock: trio.abc.Clock) -> None:
    from hermes_relay.agent.desktop import approvals

    book = approvals.Approvals(wall_clock=lambda: 1_800_000_000.0, env={"HERMES_RELAY_NOTIFY": "0"},
                               on_always=lambda url, cap: None)
    answers: list[Any] = []

    async def ask(i: int) -> None:
        answers.append(await book.request(url=f"ws://h{i}:1", tool="t", capability="files", preview="", reason="",
                                          request_id=f"r-{i}", expires_at=trio.current_time() + 20))

    async with trio.open_nursery() as nursery:
        for i in range(approvals.MAX_PENDING + 1):  # one each from many hosts: the per-host rate allows them
            nursery.start_soon(ask, i)
        await trio.sleep(1)
        assert len(book.pending) == approvals.MAX_PENDING
        assert [a.how for a in answers] == ["not_asked"] and "already waiting" in answers[0].reason


# -- the link's direct hand-over -------------------------------------------------------------------
def _envelope(request_id: str, text: str = "x") -> dict[str, Any]:
    return {"channel": "desktop", "type": "desktop.command", "id": request_id,
            "payload": {"request_id": request_id, "tool": "desktop_terminal", "args": {"text": text}}}


async def test_envelopes_waiting_are_served_first_then_the_link_hands_them_over_in_its_own_step(
        tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    from hermes_relay.agent.desktop.channel import DesktopChannel

    h = Harness(tmp_path, policy.TRUSTED)
    for rid in ("r-1", "r-2"):  # sent before the service started: they wait in the inbound channel
        await h.inbound_send.send(_envelope(rid))
    async with trio.open_nursery() as nursery:
        channel = DesktopChannel(h.service, h.port)
        channel._catch_up(nursery, h.inbound)
        assert getattr(h.port, "direct", None) is None  # not while some wait: they go first, in order
        nursery.start_soon(channel.run, h.inbound)
        await trio.testing.wait_all_tasks_blocked()
        direct = h.port.direct  # type: ignore[attr-defined]
        assert direct is not None
        steps = []

        class Spawns(trio.abc.Instrument):
            def task_spawned(self, task: trio.lowlevel.Task) -> None:
                steps.append(task.name)

        trio.lowlevel.add_instrument(Spawns())
        direct(_envelope("r-3"))  # dispatched now: the call's task exists before the caller yields
        assert any(name.endswith("_call") for name in steps), steps
        await trio.testing.wait_all_tasks_blocked()
        assert [r["request_id"] for r in h.port.responses()] == ["r-1", "r-2", "r-3"]
        nursery.cancel_scope.cancel()
    assert h.port.direct is None  # type: ignore[attr-defined]  # the link queues again once the service ended


async def test_a_dispatch_bug_on_the_direct_path_restarts_the_service_not_the_reader(
        tmp_path: Path, autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    from hermes_relay.agent.desktop.channel import DesktopChannel

    h = Harness(tmp_path, policy.TRUSTED)
    reasons: list[str] = []
    h.port.reconnect = reasons.append  # type: ignore[attr-defined]

    def broken(self: DesktopChannel, nursery: trio.Nursery, message: dict[str, Any]) -> None:
        raise KeyError("bug")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(h.service.serve_link, h.port, h.inbound)
        await trio.testing.wait_all_tasks_blocked()
        monkeypatch.setattr(DesktopChannel, "_dispatch", broken)
        h.port.direct(_envelope("r-1"))  # type: ignore[attr-defined]  # raises nothing into the reader
        assert reasons == ["the desktop service failed"] and h.port.direct is None  # type: ignore[attr-defined]
        nursery.cancel_scope.cancel()
