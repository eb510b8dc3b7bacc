"""The agent process itself: single instance under an autostart race, IPC robustness, the route file."""

from __future__ import annotations

import os
import random
import socket
import struct
import subprocess
import sys

import msgpack
import pytest
from procs import wait_gone, wait_state

from hermes_relay.core import api, framing, paths

pytestmark = pytest.mark.integration

RACE = """
import sys
from hermes_relay.cli.client import ensure_agent
with ensure_agent(dict(__import__("os").environ), stderr=sys.stderr) as c:
    print(c.hello["pid"])
"""


def test_many_clients_at_once_start_exactly_one_agent(agent_env) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", RACE], env=agent_env.env, stdout=subprocess.PIPE, text=True)
             for _ in range(8)]
    pids = set()
    for p in procs:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        pids.add(int(out.strip()))
    assert len(pids) == 1
    agent_env.pids.extend(pids)
    (pid,) = pids
    os.kill(pid, 0)  # alive


def test_second_agent_refuses_to_start(agent_env) -> None:
    with agent_env.client():
        pass
    second = subprocess.run([sys.executable, "-m", "hermes_relay.agent", "run"], env=agent_env.env,
                            capture_output=True, text=True, timeout=30)
    assert second.returncode != 0
    assert second.stderr.count("already running") == 1, second.stderr  # said once, not log line + report
    assert second.stderr.startswith("hermes-relay agent: another hermes-relay agent is already running")


def _raw(env) -> socket.socket:  # type: ignore[no-untyped-def]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(paths.socket_path(env))
    return s


def _drain(s: socket.socket) -> bytes:
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return out


def test_garbage_frames_close_only_that_client(agent_env) -> None:
    with agent_env.client() as c:
        pid = c.hello["pid"]
    rng = random.Random(1234)
    cases = [
        struct.pack(">I", framing.MAX_FRAME + 1) + b"x" * 100,  # oversize: refused at the length prefix
        struct.pack(">I", 50) + b"\x01\x02",  # truncated: the client goes away mid-frame
        framing.encode_frame({"not": "an rpc array"}),
        framing.encode_frame([0, 1, "status", {}]),  # a request before hello
        struct.pack(">I", 4) + b"\xc1\xc1\xc1\xc1",  # not msgpack
    ] + [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))) for _ in range(40)]
    for data in cases:
        s = _raw(agent_env.env)
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            reply = _drain(s)
        finally:
            s.close()
        if data == cases[3]:
            (msg,) = list(_frames(reply))
            assert msg[2]["code"] == "usage_error" and "hello" in msg[2]["message"]
    with agent_env.client() as c:  # still serving, same process
        assert c.hello["pid"] == pid
        assert c.call(api.STATUS, {})["agent"]["pid"] == pid


def _frames(data: bytes):  # type: ignore[no-untyped-def]
    dec = framing.FrameDecoder()
    dec.feed(data)
    yield from dec


def test_unknown_method_is_an_error_not_a_crash(agent_env) -> None:
    with agent_env.client() as c:
        with pytest.raises(Exception) as info:
            c.call("no.such.method", {})
        assert "unknown method" in str(info.value)
        assert c.call(api.RELOAD, {}) == {"relays": 0}


def test_route_file_follows_the_link(relay_proc, agent_env) -> None:
    agent_env.pair(relay_proc)
    wait_state(agent_env, lambda s: s["state"] == api.CONNECTED)
    with agent_env.client() as c:
        indicator = c.call(api.ROUTE, {})
    assert indicator["label"] == "LAN" and indicator["state"] == api.CONNECTED
    first, second = paths.route_file(agent_env.env).read_text().splitlines()
    assert first == f"{indicator['valid_until']} LAN"
    assert second == f"{indicator['pid']} connected {float(indicator['since'])!r} {relay_proc.url}"
    agent_env.stop()
    first, second = paths.route_file(agent_env.env).read_text().splitlines()
    assert first.split(maxsplit=1)[1] == "offline" and second.split()[1:] == ["stopped", "-", "-"]
    assert not os.path.exists(paths.socket_path(agent_env.env))


def test_status_never_shows_tokens_unless_asked(relay_proc, agent_env) -> None:
    agent_env.pair(relay_proc)
    token = agent_env.store()["sessions"][relay_proc.url]["token"]
    with agent_env.client() as c:
        plain = msgpack.packb(c.call(api.STATUS, {}))
        revealed = c.call(api.STATUS, {"reveal_tokens": True})
    assert token.encode() not in plain
    assert revealed["relays"][0]["token"] == token
    log = paths.agent_log_file(agent_env.env).read_text()
    assert token not in log and token[:12] not in log


def test_agent_exits_when_its_socket_is_removed(make_agent_env) -> None:
    env = make_agent_env(HERMES_RELAY_FENCE_INTERVAL="0.2")
    with env.client() as c:
        pid = c.hello["pid"]
    os.unlink(paths.socket_path(env.env))
    assert wait_gone(pid, 10), "the agent kept running after its socket was removed"
    log = paths.agent_log_file(env.env).read_text()
    assert "agent_fenced" in log and "removed" in log

