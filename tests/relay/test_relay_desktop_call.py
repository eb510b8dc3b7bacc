"""``hermes-relay-server call`` as a process against a real relay and a scripted desktop client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from relay_desktop_clients import READ_FILE, TERMINAL, answer, desktop_client, next_command

SCRIPT = Path(sys.executable).with_name("hermes-relay-server")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not SCRIPT.exists(), reason="console script not installed in this environment"),
]


@pytest.fixture
def relay_test_guard() -> float:
    return 30.0  # interpreter start-up of each `call` process dominates


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "HERMES_"))}


async def run_call(*argv: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process([str(SCRIPT), "call", *argv], stdin=stdin, capture_stdout=True,
                                  capture_stderr=True, check=False, env=env())


async def call_answered(relay, ws, argv, result=None, *, ok=True, error=None):
    """Run ``call`` while ``ws`` answers its command: (completed process, the command envelope)."""
    done: list[subprocess.CompletedProcess[bytes]] = []

    async def run() -> None:
        done.append(await run_call(*argv, "--relay", relay.url))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        command = await next_command(ws)
        await answer(ws, command["payload"]["request_id"], result, ok=ok, error=error)
    return done[0], command


async def test_a_command_runs_and_its_output_is_ours(relay):
    ws, _, _ = await desktop_client(relay, "WORKPC")
    await desktop_client(relay, "LAPTOP")
    result = {"stdout": "Linux WORKPC 6.8.0\n", "stderr": "warning: x\n", "exit_code": 0, "duration_ms": 4}
    proc, command = await call_answered(relay, ws, [TERMINAL, '{"command": "uname -a"}', "--device", "workpc"], result)
    assert command["payload"]["tool"] == TERMINAL
    assert command["payload"]["args"] == {"command": "uname -a"}
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"Linux WORKPC 6.8.0\n", b"warning: x\n")


async def test_text_results_print_as_is_and_json_prints_the_whole_answer(relay):
    ws, _, device_id = await desktop_client(relay, "WORKPC")
    proc, _ = await call_answered(relay, ws, [READ_FILE, '{"path": "notes.txt"}'], "hello\nworld")
    assert (proc.returncode, proc.stdout) == (0, b"hello\nworld\n")

    proc, _ = await call_answered(relay, ws, [READ_FILE, '{"path": "notes.txt"}', "--json"], "hi")
    body = json.loads(proc.stdout)
    assert proc.returncode == 0
    assert (body["ok"], body["result"], body["target"]) == (True, "hi", {"device_id": device_id, "device_name": "WORKPC"})


async def test_a_tool_error_exits_1_and_names_the_computer(relay):
    ws, _, _ = await desktop_client(relay, "WORKPC")
    proc, _ = await call_answered(relay, ws, [READ_FILE, '{"path": "/nope"}'], ok=False, error="ENOENT: /nope")
    assert proc.returncode == 1 and proc.stdout == b""
    assert proc.stderr.decode() == "hermes-relay-server call: desktop_read_file failed on WORKPC: ENOENT: /nope\n"


async def test_no_desktop_client_exits_3_with_a_hint(relay):
    proc = await run_call(TERMINAL, '{"command": "id"}', "--relay", relay.url)
    assert proc.returncode == 3
    err = proc.stderr.decode()
    assert "No desktop client connected" in err and "`hermes-relay agent start`" in err
    assert "hermes-relay-agent" not in err


async def test_bad_arguments_exit_2_before_anything_is_sent(relay):
    proc = await run_call(TERMINAL, "{not json", "--relay", relay.url)
    assert proc.returncode == 2 and b"not valid JSON" in proc.stderr
    proc = await run_call(TERMINAL, "[1]", "--relay", relay.url)
    assert proc.returncode == 2 and b"must be a JSON object" in proc.stderr
    proc = await run_call(TERMINAL, "--relay", relay.url, stdin=b'{"command": 1')
    assert proc.returncode == 3  # no stdin read without "-": {} was sent, and nobody is connected
    proc = await run_call(TERMINAL, "-", "--relay", relay.url, stdin=b'{"command": 1')
    assert proc.returncode == 2


async def test_desktop_health_is_answered_by_the_relay(relay):
    _, _, device_id = await desktop_client(relay, "WORKPC")
    proc = await run_call("desktop_health", "--relay", relay.url)
    health = json.loads(proc.stdout)
    assert proc.returncode == 0
    assert [c["device_id"] for c in health["clients"]] == [device_id]


def test_flags_may_follow_the_tool_and_come_before_its_arguments():
    # `call TOOL --json ARGS` used to leave ARGS unrecognised (exit 2).
    from hermes_relay.relay.call_cmd import build_parser

    args = build_parser().parse_intermixed_args(["desktop_terminal", "--json", '{"command": "uname"}', "--timeout", "5"])
    assert (args.tool, args.args, args.json, args.timeout) == ("desktop_terminal", '{"command": "uname"}', True, 5.0)


async def test_a_call_not_answered_at_once_says_what_it_waits_for(relay):
    ws, _, _ = await desktop_client(relay, "WORKPC")
    await desktop_client(relay, "LAPTOP")
    argv = [str(SCRIPT), "call", TERMINAL, '{"command": "id"}', "--device", "workpc", "--timeout", "25",
            "--relay", relay.url]
    proc = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
    try:
        command = await next_command(ws)
        assert 20_000 < command["payload"]["budget_ms"] <= 25_000
        said = b""
        while b"\n" not in said:  # the computer is "asking its user": answer only once the wait is announced
            said += await proc.stderr.receive_some()
        await answer(ws, command["payload"]["request_id"], "uid=0(root)")
        out = b""
        while chunk := await proc.stdout.receive_some():
            out += chunk
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0 and out == b"uid=0(root)\n"
    assert said.decode() == "waiting for WORKPC to answer (it may be asking its user for approval); gives up in 24s\n"


async def test_a_disabled_tool_and_an_unknown_tool_are_told_apart(relay):
    await desktop_client(relay, "WORKPC", tools=(READ_FILE,))  # its user has not allowed commands
    proc = await run_call(TERMINAL, '{"command": "id"}', "--relay", relay.url)
    err = proc.stderr.decode()
    assert proc.returncode == 1
    assert "desktop_terminal is disabled on that computer (capability commands)" in err and "--list" in err
    assert "waiting" not in err

    proc = await run_call("desktop_read_fiel", '{"path": "a"}', "--relay", relay.url)
    err = proc.stderr.decode()
    assert proc.returncode == 1
    assert "unknown tool 'desktop_read_fiel'; did you mean desktop_read_file" in err
    proc = await run_call("read_file", '{"path": "a"}', "--relay", relay.url)
    assert "did you mean desktop_read_file" in proc.stderr.decode()


async def test_list_shows_each_computer_and_its_tools(relay):
    proc = await run_call("--list", "--relay", relay.url)
    assert proc.returncode == 3 and b"no computer is connected" in proc.stdout
    assert b"`hermes-relay agent start`" in proc.stdout
    _, _, work_id = await desktop_client(relay, "WORKPC", tools=(READ_FILE, TERMINAL))
    _, _, laptop_id = await desktop_client(relay, "LAPTOP", tools=(READ_FILE,))
    proc = await run_call("--list", "--relay", relay.url)
    out = proc.stdout.decode()
    assert proc.returncode == 0
    assert f"WORKPC ({work_id}): 2 tools" in out and f"LAPTOP ({laptop_id}): 1 tool" in out
    assert "commands:     desktop_terminal" in out and "files:        desktop_read_file" in out
