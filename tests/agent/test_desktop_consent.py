"""The consent model in the desktop service: what a host is offered, the confinement its calls get,
"always" within that confinement, and the audit of every policy change.

The service is the real one over real files under tmp_path (policy, roots, audit) with the real tool
table; a channel test runs one call through the real dispatcher on a memory-channel link.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers import run_inline

from hermes_relay.agent.config import AgentConfig
from hermes_relay.agent.desktop.service import HERE_TTL, DesktopService
from hermes_relay.agent.desktop.tools import all_tools
from hermes_relay.agent.desktop.tools.files import desktop_read_file
from hermes_relay.core import confine, desktop, policy, policy_log, roots
from hermes_relay.core.desktop import ToolContext, ToolError, ToolSpec

URL = "ws://relay.test:8767"
NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    for d in ("src", "docs", ".hermes"):
        (home / d).mkdir(parents=True)
    return {"HOME": str(home), "HERMES_HOME": str(home / ".hermes"), "HERMES_RELAY_NOTIFY": "0",
            "HERMES_RELAY_RUNTIME_DIR": str(tmp_path / "run"), "PATH": "/usr/bin:/bin"}


@pytest.fixture
def service(env: dict[str, str], clock: Clock) -> DesktopService:
    return DesktopService(AgentConfig.from_env(env, wall_clock=clock), tools=all_tools(), run_sync=run_inline)


def _policy_records(service: DesktopService) -> list[dict[str, Any]]:
    return [r for r in service.audit.read() if r.get("kind") == "policy.changed"]


def test_every_tool_has_a_capability_and_restricted_offers_nothing(service: DesktopService) -> None:
    assert all(spec.capability in policy.CAPABILITIES for spec in all_tools())
    assert {spec.capability for spec in all_tools()} == set(policy.SERVED_HERE)  # what `access` marks as served
    assert service.advertised(URL) == []  # no record
    policy.set_mode(service.policy_path, URL, policy.ASK)
    service.load()
    assert service.advertised(URL) == []
    for tool in ("desktop_kill_process", "desktop_list_processes", "desktop_find_pid_by_port", "desktop_job_list"):
        assert service.decide(URL, tool) == policy.DECIDE_DENY
    policy.set_mode(service.policy_path, URL, policy.STRUCTURED)
    service.load()
    standard = service.advertised(URL)
    assert "desktop_job_list" in standard and "desktop_read_file" in standard
    assert not {"desktop_kill_process", "desktop_list_processes", "desktop_job_cancel", "desktop_terminal"} & set(standard)


def test_confinement_per_preset(service: DesktopService, env: dict[str, str]) -> None:
    home = Path(env["HOME"]).resolve()
    policy.set_mode(service.policy_path, URL, policy.FULL_ACCESS)
    service.load()
    assert service.confinement(URL) == confine.Confinement(owner=URL, unconfined=True)
    policy.set_mode(service.policy_path, URL, policy.TRUSTED)
    service.load()
    trusted = service.confinement(URL)
    assert not trusted.unconfined and trusted.owner == URL
    assert trusted.roots == (home,)  # the default, the home directory; ~/.hermes carved out as protected
    assert Path(env["HERMES_HOME"]) in trusted.protected and home / ".bashrc" in trusted.write_protected
    assert Path("/usr") in trusted.read_only
    assert (trusted.kernel_commands, trusted.network) == (False, True)
    policy.set_mode(service.policy_path, URL, policy.WORKSPACE)
    roots.add(service.roots_path, URL, str(home / "src"))
    service.load()
    workspace = service.confinement(URL)
    assert (workspace.roots, workspace.kernel_commands, workspace.network) == ((home / "src",), True, False)
    assert service.confinement("ws://other:1").roots == (home,)  # roots are per host


def test_an_unreadable_roots_file_reaches_nothing(service: DesktopService) -> None:
    policy.set_mode(service.policy_path, URL, policy.TRUSTED)
    service.roots_path.parent.mkdir(parents=True, exist_ok=True)
    service.roots_path.write_text("{ broken")
    service.load()
    assert service.confinement(URL).roots == ()
    assert "cannot be parsed" in (service.last_error or {}).get("message", "")
    assert service.roots_path.read_text() == "{ broken"


def test_legacy_consent_is_trusted_with_files_still_confined(service: DesktopService, env: dict[str, str]) -> None:
    Path(env["HERMES_HOME"], "remote-sessions.json").write_text(
        json.dumps({"version": 1, "sessions": {URL: {"token": "t", "tools_consented": True}}}))
    service.load()
    host = service.host_policy(URL)
    assert (host.access_mode, host.label) == (policy.TRUSTED, "trusted (legacy consent)")
    assert not service.confinement(URL).unconfined
    policy.set_mode(service.policy_path, URL, policy.WORKSPACE)  # an explicit record is never lifted
    service.load()
    assert service.host_policy(URL).confined and service.confinement(URL).kernel_commands


def test_always_keeps_the_host_confined(service: DesktopService) -> None:
    policy.set_mode(service.policy_path, URL, policy.WORKSPACE)
    policy.set_capability(service.policy_path, URL, "commands", "ask")
    service._allow_always(URL, "commands")
    service.load()
    assert service.decide(URL, "desktop_terminal") == policy.DECIDE_ALLOW
    assert service.confinement(URL).kernel_commands and service.host_policy(URL).access_mode == policy.WORKSPACE
    policy.set_mode(service.policy_path, URL, policy.ASK_EVERY_TIME)
    service._allow_always(URL, "commands")  # one approved `ls` never becomes unconfined commands
    service.load()
    assert service.confinement(URL).kernel_commands and not service.confinement(URL).network


def test_policy_changes_are_audited_with_who_changed_them(service: DesktopService, clock: Clock) -> None:
    service.load()  # the baseline: not a change
    policy.set_mode(service.policy_path, URL, policy.STRUCTURED)  # another client, an editor
    service.load()
    service.announce(URL + "/", policy_log.BY_ACCESS)
    policy.set_mode(service.policy_path, URL, policy.WORKSPACE)
    service.load()
    service.announce(URL, policy_log.BY_ACCESS)
    clock.now += policy_log.ANNOUNCE_TTL + 1  # an announcement nobody followed expires
    roots.add(service.roots_path, URL, service.env["HOME"] + "/src")
    service.load()
    service._allow_always(URL, "screen_input")
    service.load()
    records = _policy_records(service)
    assert [(r["host_url"], r["by"]) for r in records] == [
        (URL, "changed outside hermes-relay access"), (URL, "hermes-relay access"),
        (URL, "changed outside hermes-relay access"), (URL, "hermes-relay approvals (always)")]
    assert records[0]["before"] is None and records[0]["after"]["access_mode"] == "structured"
    assert records[1]["before"]["access_mode"] == "structured"
    assert records[1]["after"] == {"access_mode": "workspace", "capabilities": policy.PRESETS[policy.WORKSPACE],
                                   "confined": True}
    assert "roots" not in records[2]["before"] and records[2]["after"]["roots"] == [
        str(Path(service.env["HOME"], "src").resolve())]
    assert records[3]["after"]["capabilities"]["screen_input"] == "allow" and records[3]["after"]["confined"]
    assert all(isinstance(r["ts"], int) for r in records)
    service.load()
    assert len(_policy_records(service)) == 4  # nothing changed: nothing recorded


async def _served_call(service: DesktopService, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    """One ``desktop.command`` through the service's link handler, as a relay sends it: its response payload."""

    class Port:
        url = route_url = URL

        def __init__(self) -> None:
            self.sent, self.receive = trio.open_memory_channel[dict[str, Any]](100)

        async def send(self, envelope: dict[str, Any]) -> None:
            await self.sent.send(envelope)

    port = Port()
    inbound_send, inbound = trio.open_memory_channel[Any](10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(service.serve_link, port, inbound)
        await inbound_send.send({"channel": "desktop", "type": "desktop.command", "id": "1",
                                 "payload": {"request_id": "r-1", "tool": tool, "args": args}})
        with trio.fail_after(60):
            while (response := await port.receive.receive())["type"] != "desktop.response":
                pass
        nursery.cancel_scope.cancel()
    payload: dict[str, Any] = response["payload"]
    return payload


async def test_each_call_gets_its_hosts_confinement(service: DesktopService, env: dict[str, str],
                                                    autojump_clock: trio.abc.Clock) -> None:
    seen: list[ToolContext] = []

    async def probe(args: dict[str, Any], ctx: ToolContext) -> Any:
        seen.append(ctx)
        return {"ok": True}

    service.table = desktop.ToolTable([ToolSpec("desktop_probe", desktop.COMMANDS, probe)])
    policy.set_mode(service.policy_path, URL, policy.WORKSPACE)

    await _served_call(service, "desktop_probe", {})
    assert seen[0].confined() == service.confinement(URL)
    assert seen[0].confinement == confine.PENDING  # the field itself reaches nothing: a tool asks confined()
    assert seen[0].confined().kernel_commands and seen[0].confined().owner == URL


@pytest.mark.parametrize(("tool", "args", "result"), [
    ("desktop_read_file", {"path": "src/a.txt"}, "hello"),
    ("desktop_terminal", {"command": "cat a.txt", "cwd": "src"}, {"stdout": "hello"}),
    ("desktop_search_files", {"pattern": "a.txt", "cwd": "src"}, {"matches": ["src/a.txt"]}),
    ("desktop_search_files", {"pattern": "hel+o", "cwd": "src", "content": True}, {"matches": ["src/a.txt"]}),
    ("desktop_job_start", {"command": "cat a.txt", "cwd": "src"}, {"job_id": True}),
    ("desktop_spawn_detached", {"command": "cat a.txt", "cwd": "src", "log_dir": "logs"}, {"job_id": True}),
])
async def test_a_call_touches_user_paths_in_its_tool_thread_never_on_the_loop(
        service: DesktopService, env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        tool: str, args: dict[str, Any], result: Any) -> None:
    # Roots and a command's cwd are user paths (a hung network mount must not freeze the agent): each root's
    # realpath and the cwd's check are done in the tool's worker thread, not on the event loop.
    import threading

    from hermes_relay.agent.desktop.tools import _args

    home = Path(env["HOME"])
    (home / "src" / "a.txt").write_text("hello")
    policy.set_mode(service.policy_path, URL, policy.TRUSTED)
    where: list[str] = []

    def spy(fn: Any) -> Any:
        def spied(*a: Any, **k: Any) -> Any:
            where.append(threading.current_thread().name)
            return fn(*a, **k)
        return spied

    monkeypatch.setattr(roots, "reachable", spy(roots.reachable))
    monkeypatch.setattr(_args, "directory", spy(_args.directory))
    args = {k: str(home / v) if k in ("path", "cwd", "log_dir") else v for k, v in args.items()}

    answer = await _served_call(service, tool, args)
    assert answer["ok"] is True, answer
    if isinstance(result, str):
        assert answer["result"] == result
    elif "matches" in result:
        assert answer["result"]["matches"] == [str(home / m) for m in result["matches"]]
    elif "job_id" in result:
        assert answer["result"]["job_id"] and answer["result"]["cwd"] == str(home / "src")
    else:
        assert answer["result"]["stdout"] == result["stdout"]
    assert where and threading.main_thread().name not in where, where


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads on the loop: Linux only")
async def test_once_a_thread_found_the_roots_local_a_small_read_is_answered_on_the_loop(
        service: DesktopService, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from hermes_relay.agent.desktop.tools import _fs, _thread

    if not _fs.openat2_available():
        pytest.skip("this kernel has no openat2")
    home = Path(env["HOME"])
    (home / "src" / "a.txt").write_text("hello")
    policy.set_mode(service.policy_path, URL, policy.TRUSTED)
    hops: list[str] = []
    real = _thread.run

    async def counted(fn: Any, *args: Any) -> Any:
        hops.append(fn.__name__)
        return await real(fn, *args)

    monkeypatch.setattr(_thread, "run", counted)
    for _ in range(2):
        answer = await _served_call(service, "desktop_read_file", {"path": str(home / "src" / "a.txt")})
        assert (answer["ok"], answer["result"]) == (True, "hello")
    assert hops == ["read"]  # the first call's thread resolved the roots and found them local
    answer = await _served_call(service, "desktop_read_file", {"path": str(home / ".hermes" / "x")})
    assert answer["ok"] is False and "own state" in answer["error"]  # refused, by the thread, as before
    assert hops == ["read", "read"]
    started = [r for r in service.audit.read() if r.get("kind") == "tool.started"]
    assert len(started) == 3  # the call answered on the loop was audited before it ran, as the others


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads on the loop: Linux only")
async def test_a_relay_never_reads_on_the_loop_under_another_relay_s_confinement(
        service: DesktopService, env: dict[str, str]) -> None:
    """Relay A (trusted: the whole home) and relay B (workspace: home/src only) both read on the loop; a file
    A may read and B may not stays refused to B, whatever A's calls left behind."""
    from hermes_relay.agent.desktop.tools import _fs

    if not _fs.openat2_available():
        pytest.skip("this kernel has no openat2")
    home = Path(env["HOME"])
    (home / "src" / "a.txt").write_text("hello")
    (home / "docs" / "secret.txt").write_text("A's only")
    other = "ws://other.test:8767"
    policy.set_mode(service.policy_path, URL, policy.TRUSTED)
    policy.set_mode(service.policy_path, other, policy.WORKSPACE)
    roots.add(service.roots_path, other, str(home / "src"))
    service.load()
    service.confinement_plan(URL)()
    service.confinement_plan(other)()  # (both resolved in their worker threads: both may read on the loop)
    mine, theirs = service.confinement_here(URL), service.confinement_here(other)
    assert mine is not None and theirs is not None and theirs.roots == (home.resolve() / "src",)
    ctx = ToolContext(home=service.home, cwd=home, deadline=float("inf"), resolve=service.confinement_plan(other),
                      here=theirs)
    assert await desktop_read_file({"path": str(home / "src" / "a.txt")}, ctx) == "hello"
    with pytest.raises(ToolError, match="outside the folders"):
        await desktop_read_file({"path": str(home / "docs" / "secret.txt")}, ctx)


def test_an_announcement_names_a_relay_url_or_is_refused(service: DesktopService) -> None:
    from hermes_relay.core.errors import UsageError

    assert service.announce("WS://Relay.Test:8767/", policy_log.BY_ACCESS) == URL
    with pytest.raises(UsageError):
        service.announce("http://relay.test", policy_log.BY_ACCESS)


async def test_files_directly_in_the_home_directory_are_reachable_and_its_state_is_not(
        service: DesktopService, env: dict[str, str]) -> None:
    # The default root (the home directory) holds ~/.hermes: splitting it into its entries made each file
    # in it a "root" the file tools could not open ("Not a directory") and left nothing creatable there.
    home = Path(env["HOME"])
    (home / "notes.txt").write_text("at home\n")
    policy.set_mode(service.policy_path, URL, policy.STRUCTURED)
    service.load()
    spec = {s.name: s for s in all_tools()}
    ctx = ToolContext(home=Path(env["HERMES_HOME"]), cwd=home, deadline=float("inf"), env=dict(env),
                      confinement=service.confinement(URL))
    assert await spec["desktop_read_file"].run({"path": str(home / "notes.txt")}, ctx) == "at home\n"
    await spec["desktop_write_file"].run({"path": str(home / "new.txt"), "content": "created"}, ctx)
    assert (home / "new.txt").read_text() == "created"
    from hermes_relay.core.desktop import ToolError

    with pytest.raises(ToolError, match="own state"):
        await spec["desktop_read_file"].run({"path": str(home / ".hermes" / "x")}, ctx)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the mount table is read on Linux only")
def test_a_confinement_on_local_file_systems_may_serve_reads_on_the_loop_for_a_while(
        service: DesktopService, env: dict[str, str]) -> None:
    """A worker thread's resolution is kept for HERE_TTL under the same policy view when every path it names
    is local (ToolContext.here); a root on another kind of file system, a new view or the time ends it."""
    now = [100.0]
    service.monotonic = lambda: now[0]
    policy.set_mode(service.policy_path, URL, policy.TRUSTED)
    service.load()
    assert service.confinement_here(URL) is None  # nothing resolved yet
    resolved = service.confinement_plan(URL)()  # (a worker thread's job in a call)
    assert service.confinement_here(URL) == resolved and not resolved.unconfined
    now[0] += HERE_TTL
    assert service.confinement_here(URL) is None
    service.confinement_plan(URL)()
    assert service.confinement_here(URL) == resolved
    roots.add(service.roots_path, URL, "/proc/self")  # not a local file system (proc): never on the loop
    service.load()
    assert service.confinement_here(URL) is None  # another view
    assert Path("/proc/self").resolve() in service.confinement_plan(URL)().roots
    assert service.confinement_here(URL) is None
    roots.reset(service.roots_path, URL)
    policy.set_mode(service.policy_path, URL, policy.FULL_ACCESS)  # unconfined: paths anywhere, never here
    service.load()
    assert service.confinement_plan(URL)().unconfined and service.confinement_here(URL) is None
