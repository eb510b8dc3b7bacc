"""The ``hermes-relay-server`` console script as a subprocess: start-up line, clean stop, exit codes."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from helpers import http_json

import hermes_relay
from hermes_relay.core.pin import is_valid_pin
from hermes_relay.relay.main import build_parser

SCRIPT = Path(sys.executable).with_name("hermes-relay-server")
SUBPROCESS_GUARD = 20.0  # seconds; interpreter start-up plus imports dominate

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not SCRIPT.exists(), reason="console script not installed in this environment"),
    pytest.mark.skipif(os.name != "posix", reason="stops the server with SIGTERM"),
]


def server_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "HERMES_"))}
    env.update(HOME=str(tmp_path / "home"), HERMES_RELAY_SERVER_DIR=str(tmp_path / "relay-state"))
    return env


async def read_lines(stream: trio.abc.ReceiveStream, count: int) -> list[str]:
    buf = b""
    while buf.count(b"\n") < count:
        chunk = await stream.receive_some(4096)
        if not chunk:
            break
        buf += chunk
    return buf.decode().splitlines()


async def test_server_prints_its_bound_url_and_pin_serves_and_stops_cleanly_on_sigterm(tmp_path):
    state = tmp_path / "state"
    with trio.fail_after(SUBPROCESS_GUARD), open(tmp_path / "stderr.log", "wb") as errlog:
        proc = await trio.lowlevel.open_process(
            [str(SCRIPT), "--port", "0", "--tls", "--state-dir", str(state)],
            stdout=subprocess.PIPE, stderr=errlog, env=server_env(tmp_path),
        )
        try:
            assert proc.stdout is not None
            lines = await read_lines(proc.stdout, 2)
            match = re.fullmatch(rf"hermes-relay-server {re.escape(hermes_relay.__version__)} listening on "
                                 r"wss://127\.0\.0\.1:(\d+)", lines[0])
            assert match, lines
            pin = lines[1].removeprefix("certificate pin: ")
            assert is_valid_pin(pin)

            status, health = await http_json("GET", f"https://127.0.0.1:{match[1]}/health")
            assert (status, health["tls"]) == (200, True)

            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
        finally:
            if proc.returncode is None:
                proc.kill()
            with trio.CancelScope(shield=True):
                await proc.wait()
                if proc.stdout is not None:
                    await proc.stdout.aclose()
    assert (state / "relay-cert.pem").exists()


@pytest.mark.parametrize("args,code,message", [
    (["--cert", "cert.pem"], 2, "--cert and --key go together"),
    (["--cert", "missing.pem", "--key", "missing-key.pem"], 2, "cannot read TLS certificate"),
    (["--port", "nope"], 2, "'nope' is not a port number"),
    (["--port", "70000"], 2, "'70000' is not a port number"),  # used to bind 70000 % 65536 = 4464
])
async def test_bad_arguments_exit_with_usage_code(tmp_path, args, code, message):
    with trio.fail_after(SUBPROCESS_GUARD):
        result = await trio.run_process([str(SCRIPT), *args], capture_stdout=True, capture_stderr=True,
                                        check=False, env=server_env(tmp_path), cwd=tmp_path)
    assert result.returncode == code
    assert message in result.stderr.decode()


@pytest.mark.parametrize("value", ["70000", "65536", "-1", "abc", "80.5", ""])
@pytest.mark.parametrize("source", ["flag", "env"])
def test_port_outside_0_to_65535_is_a_usage_error(monkeypatch, capsys, source, value):
    monkeypatch.delenv("RELAY_PORT", raising=False)
    if source == "env":
        monkeypatch.setenv("RELAY_PORT", value)
        argv = []
    else:
        argv = [f"--port={value}"]
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)  # what main() runs first; never main() itself, which would serve
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --port: {value!r} is not a port number: use 0-65535 (0 = any free port)" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("argv,env,port", [
    ([], None, 8767), ([], "0", 0), (["--port", "0"], "abc", 0), (["--port", "65535"], None, 65535), ([], "9000", 9000),
])
def test_valid_ports_and_relay_port_default(monkeypatch, argv, env, port):
    monkeypatch.delenv("RELAY_PORT", raising=False)
    if env is not None:
        monkeypatch.setenv("RELAY_PORT", env)
    assert build_parser().parse_args(argv).port == port


async def test_corrupt_sessions_file_exits_1_naming_the_file(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "sessions.json").write_text("{oops")
    with trio.fail_after(SUBPROCESS_GUARD):
        result = await trio.run_process([str(SCRIPT), "--port", "0", "--state-dir", str(state)], capture_stdout=True,
                                        capture_stderr=True, check=False, env=server_env(tmp_path))
    assert result.returncode == 1
    err = result.stderr.decode()
    assert err.startswith(f"hermes-relay-server: {state / 'sessions.json'} cannot be parsed")
    assert f"move {state / 'sessions.json'} aside" in err and "--state-dir" in err
    assert "doctor" not in err  # `hermes-relay doctor --fix` repairs the client's store, not this file
    assert "Traceback" not in err
    assert result.stdout == b""


async def test_busy_port_exits_1_with_a_hint(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with trio.fail_after(SUBPROCESS_GUARD):
            result = await trio.run_process([str(SCRIPT), "--port", str(port), "--memory"], capture_stdout=True,
                                            capture_stderr=True, check=False, env=server_env(tmp_path))
    assert result.returncode == 1
    err = result.stderr.decode()
    assert f"cannot listen on 127.0.0.1:{port}" in err
    assert "pick another --port" in err
    assert "Traceback" not in err


async def test_the_relay_host_commands_find_a_relay_started_on_another_port(tmp_path):
    # `hermes-relay-server --port P` then plain `hermes-pair` / `sessions`: they used to try 8767.
    env = server_env(tmp_path)
    state = Path(env["HERMES_RELAY_SERVER_DIR"])
    pair_script = SCRIPT.with_name("hermes-pair")
    with trio.fail_after(SUBPROCESS_GUARD), open(tmp_path / "stderr.log", "wb") as errlog:
        proc = await trio.lowlevel.open_process([str(SCRIPT), "--port", "0"], stdout=subprocess.PIPE, stderr=errlog, env=env)
        try:
            assert proc.stdout is not None
            lines = await read_lines(proc.stdout, 2)
            url = lines[0].rsplit(" ", 1)[-1]
            assert lines[1].startswith("next: run `hermes-pair` on this host"), lines  # found without --relay
            assert json.loads((state / "listening.json").read_text())["url"] == url

            minted = await trio.run_process([str(pair_script), "--json"], capture_stdout=True, capture_stderr=True,
                                            check=False, env=env)
            assert minted.returncode == 0, minted.stderr.decode()
            assert json.loads(minted.stdout)["relay_url"].rsplit(":", 1)[-1] == url.rsplit(":", 1)[-1]
            listed = await trio.run_process([str(SCRIPT), "sessions", "list", "--json"], capture_stdout=True,
                                            capture_stderr=True, check=False, env=env)
            assert (listed.returncode, json.loads(listed.stdout)) == (0, {"sessions": []}), listed.stderr.decode()

            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
            assert not (state / "listening.json").exists()  # a stopped relay is not found any more
        finally:
            if proc.returncode is None:
                proc.kill()
            with trio.CancelScope(shield=True):
                await proc.wait()
                if proc.stdout is not None:
                    await proc.stdout.aclose()


def test_the_local_relay_is_the_listening_file_then_relay_port_then_8767(tmp_path, monkeypatch):
    from hermes_relay.relay import listening

    env = {"HERMES_RELAY_SERVER_DIR": str(tmp_path)}
    assert listening.local_relay(env) == "ws://127.0.0.1:8767"
    assert listening.local_relay({**env, "RELAY_PORT": "50881"}) == "ws://127.0.0.1:50881"
    assert listening.local_relay({**env, "RELAY_PORT": "nonsense"}) == "ws://127.0.0.1:8767"
    listening.record(tmp_path, "wss://127.0.0.1:50999", os.getpid())
    assert listening.local_relay({**env, "RELAY_PORT": "50881"}) == "wss://127.0.0.1:50999"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    listening.record(tmp_path, "ws://127.0.0.1:50998", int(dead.stdout))  # a relay killed with -9 left it behind
    assert listening.local_relay(env) == "ws://127.0.0.1:8767"
    (tmp_path / "listening.json").write_text("{not json")
    assert listening.local_relay(env) == "ws://127.0.0.1:8767"
    assert listening.local_url("ws", "0.0.0.0", 1) == "ws://127.0.0.1:1"
    assert listening.local_url("ws", "::1", 1) == "ws://[::1]:1"
