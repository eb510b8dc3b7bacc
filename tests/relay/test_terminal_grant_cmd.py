"""`hermes-pair --grant` and `hermes-relay-server --terminal` as the operator uses them: real processes."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import trio
from helpers import ws_auth
from terminal_clients import settings

from hermes_relay.relay import main as relay_main


async def hermes_pair(home: Path, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "HERMES_HOME": str(home)}
    result = await trio.run_process([sys.executable, "-m", "hermes_relay.relay.pair_cmd", *args], env=env,
                                    capture_stdout=True, capture_stderr=True, check=False)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


@pytest.fixture
def relay_test_guard() -> float:
    return 20.0


async def test_grant_terminal_for_a_duration_or_off(relay_factory, tmp_path: Path) -> None:
    relay = await relay_factory(terminal=settings(tmp_path))
    code, out, err = await hermes_pair(tmp_path, "--relay", relay.url, "--grant", "terminal=12h", "--no-qr")
    assert code == 0, err
    assert "Grant terminal : 12 hours" in out
    minted = out.splitlines()[0].removeprefix("Code : ")
    _, reply = await ws_auth(relay.url, {"pairing_code": minted})
    grants = reply["payload"]["grants"]
    assert grants["terminal"] is not None and "chat" in grants

    plain = await relay_factory()  # without --terminal the reference's default grants stand, unless turned off
    code, out, err = await hermes_pair(tmp_path, "--relay", plain.url, "--grant", "terminal=off", "--json")
    assert code == 0, err
    _, reply = await ws_auth(plain.url, {"pairing_code": json.loads(out)["code"]})
    assert "terminal" not in reply["payload"]["grants"]


async def test_a_bad_grant_is_a_usage_error(relay, tmp_path: Path) -> None:
    code, _, err = await hermes_pair(tmp_path, "--relay", relay.url, "--grant", "terminal")
    assert code == 2 and "--grant" in err
    code, _, err = await hermes_pair(tmp_path, "--relay", relay.url, "--grant", "terminal=soon")
    assert code == 2 and "--grant terminal" in err


def test_the_terminal_flag_builds_the_settings_and_the_banner_says_how_to_grant(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TMUX_TMPDIR", str(tmp_path))
    args = relay_main.build_parser().parse_args(["--terminal", "--memory", "--tmux-socket", "mine", "--no-tmux"])
    config = relay_main.config_from_args(args)
    assert config.terminal is not None and config.terminal.tmux is False
    assert (config.terminal.tmux_socket, config.terminal.tmux_tmpdir) == ("mine", tmp_path)
    assert relay_main.config_from_args(relay_main.build_parser().parse_args(["--memory"])).terminal is None
    banner = relay_main.terminal_banner(euid=1000)
    assert "OFF for new pairings" in banner and "hermes-pair --grant terminal=30d" in banner and "root" not in banner
    assert "runs as root" in relay_main.terminal_banner(euid=0)


async def test_the_server_started_with_terminal_says_the_grant_is_off_and_health_says_terminal(tmp_path: Path) -> None:
    import re
    import signal
    import subprocess

    from helpers import http_json
    from test_relay_server_cli import SCRIPT, SUBPROCESS_GUARD, read_lines, server_env

    with trio.fail_after(SUBPROCESS_GUARD):
        proc = await trio.lowlevel.open_process([str(SCRIPT), "--port", "0", "--memory", "--terminal", "--no-tmux"],
                                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                                env=server_env(tmp_path))
        try:
            assert proc.stdout is not None
            lines = await read_lines(proc.stdout, 3)
            port = re.search(r":(\d+)$", lines[0])
            assert port, lines
            assert "terminal grant is OFF for new pairings" in lines[2] and "hermes-pair --grant terminal=30d" in lines[2]
            status, health = await http_json("GET", f"http://127.0.0.1:{port[1]}/health")
            assert (status, health["terminal"]) == (200, True)
            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
        finally:
            if proc.returncode is None:
                proc.kill()
            with trio.CancelScope(shield=True):
                await proc.wait()
                if proc.stdout is not None:
                    await proc.stdout.aclose()
