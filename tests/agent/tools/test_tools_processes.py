"""desktop_list_processes, desktop_kill_process, desktop_find_pid_by_port against real processes and sockets."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid

import psutil
import pytest
import trio
from toolctx import make_ctx
from toolwait import gone, line_of, until

from hermes_relay.agent.desktop.tools import jobs
from hermes_relay.agent.desktop.tools.processes import (
    TOOLS,
    desktop_find_pid_by_port,
    desktop_kill_process,
    desktop_list_processes,
)
from hermes_relay.core.confine import Confinement
from hermes_relay.core.desktop import ToolError


@pytest.fixture
def sleepers():
    """Start sleeping python processes tagged with a unique marker; kill them at teardown."""
    started: list[subprocess.Popen] = []
    marker = f"hermes-test-{uuid.uuid4().hex}"

    def start(count: int = 1) -> list[subprocess.Popen]:
        for _ in range(count):
            started.append(
                subprocess.Popen([sys.executable, "-c", "import time, sys; time.sleep(60)", marker],
                                 stdin=subprocess.DEVNULL, start_new_session=True)
            )
        return started[-count:]

    start.marker = marker  # type: ignore[attr-defined]
    yield start
    for proc in started:
        proc.kill()
        proc.wait()


async def test_list_filters_by_command_substring(ctx, sleepers):
    procs = sleepers(2)
    result = await desktop_list_processes({"filter": sleepers.marker.upper()}, ctx)
    assert sorted(p["pid"] for p in result["processes"]) == sorted(p.pid for p in procs)
    assert result["count"] == 2 and result["total"] == 2 and result["truncated"] is False
    entry = result["processes"][0]
    assert sleepers.marker in entry["command"]
    assert entry["ppid"] == os.getpid()
    assert isinstance(entry["mem_mb"], float) and entry["cpu_pct"] >= 0


async def test_list_limit_truncates(ctx, sleepers):
    sleepers(3)
    result = await desktop_list_processes({"filter": sleepers.marker, "limit": 2}, ctx)
    assert result["count"] == 2 and result["total"] == 3 and result["truncated"] is True
    everything = await desktop_list_processes({}, ctx)
    assert everything["total"] >= 3 and len(everything["processes"]) <= 200


async def test_kill_by_pid(ctx, sleepers):
    (proc,) = sleepers()
    result = await desktop_kill_process({"pid": proc.pid}, ctx)
    assert result == {"killed": [proc.pid], "failed": [], "requested": 1, "signal": "SIGTERM"}
    assert await trio.to_thread.run_sync(proc.wait) == -15


async def test_kill_by_name_kills_every_match_with_force(ctx, sleepers):
    procs = sleepers(2)
    result = await desktop_kill_process({"name": sleepers.marker, "force": True}, ctx)
    assert sorted(result["killed"]) == sorted(p.pid for p in procs)
    assert result["signal"] == "SIGKILL" and result["requested"] == 2
    for proc in procs:
        assert await trio.to_thread.run_sync(proc.wait) == -9


async def test_kill_refuses_init_the_agent_and_group_pids(ctx):
    for pid, reason in [(1, "pid 1"), (os.getpid(), "agent itself"), (0, "below 1"), (-5, "below 1")]:
        with pytest.raises(ToolError, match=reason):
            await desktop_kill_process({"pid": pid}, ctx)


async def test_kill_reports_a_missing_pid_as_failed(ctx):
    proc = subprocess.Popen(["true"])
    proc.wait()
    result = await desktop_kill_process({"pid": proc.pid}, ctx)
    assert result["killed"] == [] and result["failed"] == [{"pid": proc.pid, "error": "no such process"}]


@pytest.mark.parametrize(
    "args, message",
    [
        ({}, 'needs "pid"'),
        ({"pid": "12"}, '"pid" must be an integer'),
        ({"pid": 123456789, "signal": "HUP"}, "must be one of term, kill"),
    ],
)
async def test_kill_bad_arguments_are_named(ctx, args, message):
    with pytest.raises(ToolError, match=message):
        await desktop_kill_process(args, ctx)


async def test_find_pid_by_port_sees_a_real_tcp_listener(ctx):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = await desktop_find_pid_by_port({"port": port}, ctx)
    assert result == {"port": port, "protocol": "tcp", "listeners": [{"pid": os.getpid(), "address": f"127.0.0.1:{port}"}]}


async def test_find_pid_by_port_udp_and_ipv6(ctx):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        result = await desktop_find_pid_by_port({"port": port, "protocol": "UDP"}, ctx)
    assert result["listeners"] == [{"pid": os.getpid(), "address": f"127.0.0.1:{port}"}]
    if socket.has_ipv6:
        try:
            six = socket.socket(socket.AF_INET6)
            six.bind(("::1", 0))
        except OSError:
            return
        with six:
            six.listen()
            port = six.getsockname()[1]
            result = await desktop_find_pid_by_port({"port": port}, ctx)
        assert result["listeners"] == [{"pid": os.getpid(), "address": f"[::1]:{port}"}]


async def test_find_pid_by_port_with_nothing_listening(ctx):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = await desktop_find_pid_by_port({"port": port}, ctx)
    assert result["listeners"] == []


@pytest.mark.parametrize(
    "args, message",
    [
        ({}, 'missing required argument "port"'),
        ({"port": 0}, "at least 1"),
        ({"port": 70000}, "at most 65535"),
        ({"port": 80, "protocol": "sctp"}, "must be one of tcp, udp"),
    ],
)
async def test_find_pid_bad_arguments_are_named(ctx, args, message):
    with pytest.raises(ToolError, match=message):
        await desktop_find_pid_by_port(args, ctx)


@pytest.mark.parametrize(
    "args, message",
    [
        ({"limit": 0}, '"limit" must be at least 1'),
        ({"filter": 5}, '"filter" must be a string'),
    ],
)
async def test_list_bad_arguments_are_named(ctx, args, message):
    with pytest.raises(ToolError, match=message):
        await desktop_list_processes(args, ctx)


async def test_long_command_lines_are_cut_in_listings(ctx):
    marker = "y" * 5000
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker], stdin=subprocess.DEVNULL)
    try:
        result = await desktop_list_processes({"filter": marker[:3000]}, ctx)
    finally:
        proc.kill()
        proc.wait()
    (entry,) = [p for p in result["processes"] if p["pid"] == proc.pid]
    assert len(entry["command"]) == 2000 and entry["command_truncated"] is True


async def test_kill_refuses_the_agent_group_its_members_and_its_ancestors(ctx):
    member = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], stdin=subprocess.DEVNULL)
    try:
        ancestors = [p.pid for p in psutil.Process().parents() if p.pid != 1 and os.getpgid(p.pid) != os.getpgrp()]
        cases = [(os.getpgrp(), "Hermes agent"), (os.getppid(), "Hermes agent"),
                 (member.pid, "agent's own process group")]
        for pid, reason in cases + [(pid, "parent of the Hermes agent") for pid in ancestors[:1]]:
            with pytest.raises(ToolError, match=reason):
                await desktop_kill_process({"pid": pid, "force": True}, ctx)
        assert member.poll() is None
    finally:
        member.kill()
        member.wait()


@pytest.fixture
def stranger():
    """A process of another user (started as nobody when the tests run as root)."""
    if os.getuid() != 0:
        others = [p for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real != os.getuid()]
        if not others:
            pytest.skip("no process of another user to aim at, and not root to start one")
        yield others[0].pid
        return
    proc = subprocess.Popen(["sleep", "60"], user=65534, group=65534, stdin=subprocess.DEVNULL, start_new_session=True)
    yield proc.pid
    proc.kill()
    proc.wait()


async def test_kill_refuses_another_users_process(ctx, stranger):
    with pytest.raises(ToolError, match="another user"):
        await desktop_kill_process({"pid": stranger, "force": True}, ctx)
    assert psutil.Process(stranger).status() != psutil.STATUS_ZOMBIE


async def test_under_workspace_process_tools_see_and_signal_only_the_hosts_own(tmp_path, sleepers):
    (other,) = sleepers()
    roots = (tmp_path / "work",)
    trusted = make_ctx(tmp_path, confinement=Confinement(owner="wss://a", roots=roots))
    workspace = make_ctx(tmp_path, confinement=Confinement(owner="wss://a", roots=roots, kernel_commands=True))
    stranger = make_ctx(tmp_path, confinement=Confinement(owner="wss://b", roots=roots, kernel_commands=True))
    child_pid = tmp_path / "work" / "child"
    job = await jobs.desktop_job_start(
        {"command": f"{sys.executable} -c 'import time; time.sleep(60)' {sleepers.marker} & echo $! > {child_pid}; wait",
         "job_id": "mine"}, trusted)
    child = int(await line_of(child_pid))
    listed = await desktop_list_processes({}, workspace)
    assert {p["pid"] for p in listed["processes"]} == {job["pid"], child} and listed["total"] == 2
    assert (await desktop_list_processes({}, stranger))["processes"] == []
    everyone = await desktop_list_processes({"filter": sleepers.marker}, trusted)
    assert {other.pid, child} <= {p["pid"] for p in everyone["processes"]}
    with pytest.raises(ToolError, match="did not start"):
        await desktop_kill_process({"pid": other.pid}, workspace)
    by_name = await desktop_kill_process({"name": sleepers.marker, "force": True}, workspace)
    assert sorted(by_name["killed"]) == sorted([job["pid"], child]) and other.poll() is None  # both name it
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert (await desktop_find_pid_by_port({"port": port}, workspace))["listeners"] == []
        assert (await desktop_find_pid_by_port({"port": port}, trusted))["listeners"] != []
    await until(lambda: gone(job["pid"]) and gone(child))


async def test_process_tools_need_the_commands_capability():
    assert {spec.name: spec.capability for spec in TOOLS} == {
        "desktop_list_processes": "commands", "desktop_kill_process": "commands", "desktop_find_pid_by_port": "commands"}
