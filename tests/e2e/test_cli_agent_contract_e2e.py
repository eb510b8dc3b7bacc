"""The CLI and a real agent: typed replies, a stale route after kill -9, the agent's uid and its isolation."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from procs import PY, wait_gone, wait_state

from hermes_relay.cli.client import AgentClient, ensure_agent
from hermes_relay.cli.commands.prompt import snippet
from hermes_relay.core import api, apitypes, paths
from hermes_relay.core.errors import UnsafeRuntimeError

pytestmark = pytest.mark.integration
NOBODY = 65534


def _strict(value, tp, where):  # type: ignore[no-untyped-def]
    problems = apitypes.check(value, tp, where=where)
    assert not problems, problems


def test_the_real_agents_replies_fit_the_typed_contract(relay_proc, agent_env) -> None:
    agent_env.pair(relay_proc)
    wait_state(agent_env, lambda s: s["state"] == api.CONNECTED)
    with agent_env.client() as client:
        _strict(client.hello, apitypes.HelloReply, "hello")
        for reveal in (False, True):
            reply = client.status(reveal_tokens=reveal)
            _strict(reply, apitypes.StatusReply, "status")
        _strict(client.route(), apitypes.RouteIndicator, "route")
        listed = client.devices_list()
        _strict(listed, apitypes.DevicesListReply, "devices.list")
        _strict(client.doctor(deadline=10.0), apitypes.DoctorReply, "doctor")
    [entry] = reply["paired"]
    assert entry["url"] == relay_proc.url and entry["live"]["state"] == api.CONNECTED
    assert entry["record"]["token"] == agent_env.store()["sessions"][relay_proc.url]["token"]  # revealed
    with agent_env.client() as watcher:
        first = next(watcher.watch())
    _strict(first, apitypes.RelayState, "state")
    assert first["url"] == relay_proc.url


def test_status_with_the_agent_up_reads_no_store_and_loads_no_store_code(relay_proc, agent_env) -> None:
    agent_env.pair(relay_proc)
    wait_state(agent_env, lambda s: s["state"] == api.CONNECTED)
    done, modules = _imports(["-m", "hermes_relay.cli", "status"], agent_env.env)
    assert done.returncode == 0, done.stderr
    assert "connected via LAN" in done.stdout and "route:    LAN" in done.stdout
    assert "hermes_relay.cli.client" in modules
    # What site already loaded (a dev install's editable finder imports pathlib) is not the CLI's doing.
    modules -= _imports(["-c", "pass"], agent_env.env)[1]
    heavy = {"hermes_relay.core.store", "hermes_relay.core.routes", "pathlib", "json", "argparse", "typing",
             "socket", "enum", "ipaddress", "urllib.parse", "hermes_relay.core.apitypes"}
    assert heavy & modules == set()


def _imports(args: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    done = subprocess.run([PY, "-X", "importtime", *args], capture_output=True, text=True, env=env, timeout=60)
    return done, {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines()
                  if line.startswith("import time:") and "imported package" not in line}


def test_after_kill_9_route_prompt_and_json_say_stale_not_lan(relay_proc, agent_env, tmp_path) -> None:
    agent_env.pair(relay_proc)
    wait_state(agent_env, lambda s: s["state"] == api.CONNECTED)
    assert agent_env.cli("route").stdout.startswith("LAN (")
    with agent_env.client() as c:
        pid = c.hello["pid"]
    os.kill(pid, signal.SIGKILL)
    assert wait_gone(pid, 10)

    route = agent_env.cli("route")
    assert (route.returncode, route.stdout) == (0, "LAN (stale: agent not running)\n")
    doc = json.loads(agent_env.cli("route", "--json").stdout)
    assert doc["running"] is False and doc["stale"] is True and doc["pid"] == pid
    assert agent_env.cli("prompt", "show").stdout == "[LAN?]\n"
    draws = {"bash": ("--norc --noprofile -c", "PS1='$ '; source {init}; __hermes_relay_prompt"),
             "zsh": ("-f -c", "PROMPT=''; source {init}; __hermes_relay_precmd")}
    for shell, (flags, program) in draws.items():
        path = shutil.which(shell)
        if path is None:
            continue
        init = tmp_path / f"init.{shell}"
        init.write_text(snippet(shell, str(paths.route_file(agent_env.env))))
        drawn = subprocess.run([path, *flags.split(), program.format(init=init) + '; printf %s "$HERMES_RELAY_INDICATOR"'],
                               capture_output=True, text=True, timeout=30, env={"PATH": "/nonexistent"})
        assert drawn.stdout == "[LAN?]", (shell, drawn.stderr)
    status = json.loads(agent_env.cli("status", "--json").stdout)
    assert status["agent"] is None  # nothing answers: not "running"


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to run a fake agent as another uid")
def test_the_cli_refuses_an_agent_socket_served_by_another_uid_before_sending_anything(tmp_path) -> None:
    run = Path(tempfile.mkdtemp(prefix="hr-uid-"))
    try:
        os.chown(run, NOBODY, NOBODY)
        sock_path = run / "agent.sock"
        fake = textwrap.dedent(f"""
            import socket, sys
            s = socket.socket(socket.AF_UNIX)
            s.bind({str(sock_path)!r}); s.listen(1)
            print("listening", flush=True)
            conn, _ = s.accept()
            conn.settimeout(5)
            data = b""
            try:
                while chunk := conn.recv(4096):
                    data += chunk
            except OSError:
                pass
            print(len(data), flush=True)
        """)
        proc = subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                                 sys.executable, "-I", "-c", fake], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "listening"
            env = {**os.environ, "HERMES_RELAY_RUNTIME_DIR": str(run), "HERMES_HOME": str(tmp_path / "h")}
            with pytest.raises(UnsafeRuntimeError) as info:
                ensure_agent(env, autostart=False)
            assert info.value.message.startswith(f"the agent socket {sock_path} is served by another user (uid {NOBODY}")
            assert proc.stdout.readline().strip() == "0"  # not even hello was sent
            assert proc.wait(timeout=10) == 0
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()  # type: ignore[union-attr]
    finally:
        shutil.rmtree(run, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the runtime directory to another uid")
def test_the_agent_refuses_a_runtime_directory_owned_by_another_uid(tmp_path) -> None:
    run = Path(tempfile.mkdtemp(prefix="hr-foreign-"))
    try:
        os.chown(run, NOBODY, NOBODY)
        env = {**os.environ, "HERMES_RELAY_RUNTIME_DIR": str(run), "HERMES_HOME": str(tmp_path / "h"),
               "HERMES_RELAY_NETWATCH": "0"}
        done = subprocess.run([PY, "-m", "hermes_relay.agent", "run"], capture_output=True, text=True, env=env,
                              timeout=60)
        assert done.returncode == 1
        assert (f"hermes-relay agent: the runtime directory {run} belongs to uid {NOBODY}, not to you "
                f"(uid 0): refusing to use it") in done.stderr
        assert os.listdir(run) == []  # nothing created in it: no lock, no socket
        cli = subprocess.run([PY, "-m", "hermes_relay.cli", "agent", "start"], capture_output=True, text=True, env=env,
                             timeout=60)  # autostart refuses before taking the spawn lock there
        assert cli.returncode == 1 and f"the runtime directory {run} belongs to uid {NOBODY}" in cli.stderr
        assert os.listdir(run) == []
    finally:
        shutil.rmtree(run, ignore_errors=True)


def test_hello_and_the_first_call_share_one_round_trip(tmp_path) -> None:
    """The fake agent answers nothing until both requests have arrived: a client that waited for
    the hello answer before sending its call would time out here."""
    import socket
    import threading

    from hermes_relay.core import framing, rpc

    path = str(Path(tempfile.mkdtemp(prefix="hr-rt-")) / "agent.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)
    seen: list[str] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            dec = framing.FrameDecoder()
            requests: list[rpc.Request] = []
            while len(requests) < 2:
                dec.feed(conn.recv(65536))
                requests += [rpc.parse_message(obj) for obj in dec]  # type: ignore[misc]
            seen.extend(r.method for r in requests)
            for r in requests:
                result = {"api_version": rpc.API_VERSION, "agent_version": "t", "pid": 1, "started_at": 0.0} \
                    if r.method == api.HELLO else {"label": "LAN"}
                conn.sendall(framing.encode_frame(rpc.Response(r.msgid, None, result).to_wire()))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with AgentClient.connect(path, timeout=5) as client:
            assert client.call(api.ROUTE, {}, timeout=5) == {"label": "LAN"}
            assert client.hello["agent_version"] == "t"
        thread.join(5)
        assert seen == [api.HELLO, api.ROUTE]
    finally:
        server.close()
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)


@pytest.fixture(scope="module")
def wheel_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from procs import wheel_venv

    return wheel_venv(tmp_path_factory.mktemp("wheel"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the agent's cwd from /proc")
def test_agent_start_from_a_checkout_with_a_decoy_package_runs_the_install_in_slash(
        wheel_install: Path, make_agent_env, tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    (checkout / "hermes_relay").mkdir(parents=True)  # what the repository root holds: a near-empty package
    (checkout / "hermes_relay" / "__init__.py").write_text("raise SystemExit('the decoy package was imported')\n")
    user = make_agent_env("decoy")
    env = {**user.env, "HERMES_HOME": os.path.relpath(user.env["HERMES_HOME"], checkout)}  # relative: made absolute
    done = subprocess.run([str(wheel_install / "bin" / "hermes-relay"), "agent", "start", "--json"], cwd=checkout,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    pid = json.loads(done.stdout)["pid"]
    with user.client(autostart=False) as client:
        assert client.hello["pid"] == pid
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert cmdline[:4] == [str(wheel_install / "bin" / "python").encode(), b"-I", b"-m", b"hermes_relay.agent"]
    assert Path(user.env["HERMES_HOME"], "logs").is_dir()  # the relative HERMES_HOME meant the same place
