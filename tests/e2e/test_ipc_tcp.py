"""The loopback + nonce IPC transport (Windows' transport, selectable anywhere with HERMES_RELAY_IPC=tcp)."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

import pytest
from procs import wait_state

from hermes_relay.core import api, endpoint, framing, paths, rpc

pytestmark = pytest.mark.integration


def test_tcp_ipc_pairs_and_reports_status(relay_proc, make_agent_env) -> None:
    env = make_agent_env(HERMES_RELAY_IPC="tcp")
    env.pair(relay_proc)
    wait_state(env, lambda s: s["state"] == api.CONNECTED)
    endpoint = paths.socket_path(env.env)
    assert endpoint.endswith("agent.endpoint")
    assert stat.S_IMODE(os.stat(endpoint).st_mode) == 0o600
    status = env.cli("status")
    assert status.returncode == 0 and "connected via LAN" in status.stdout


def test_tcp_ipc_refuses_a_client_without_the_nonce(make_agent_env) -> None:
    env = make_agent_env(HERMES_RELAY_IPC="tcp")
    with env.client() as c:
        pid = c.hello["pid"]
    port = json.loads(Path(paths.socket_path(env.env)).read_text())["port"]
    status = framing.encode_frame(rpc.Request(2, "status", {}).to_wire())
    speaks_the_protocol = framing.encode_frame(rpc.Request(1, "hello", {}).to_wire()) + status + status
    # Each opening is at least a nonce long, so the agent decides on what it read, at once; a client
    # that sends less is refused when the nonce timeout passes (test_ipc_nonce.py, on the fake clock).
    for opening in (b"\x00" * endpoint.NONCE_BYTES + status, speaks_the_protocol):
        assert len(opening) >= endpoint.NONCE_BYTES
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(opening)
            try:
                reply = s.recv(65536)
            except ConnectionResetError:  # closed with our bytes unread
                reply = b""
            assert reply == b""  # closed without a word: no status for strangers
    with env.client() as c:
        assert c.hello["pid"] == pid


def test_stopped_agent_removes_its_endpoint_file(make_agent_env) -> None:
    env = make_agent_env(HERMES_RELAY_IPC="tcp")
    with env.client():
        pass
    env.stop()
    assert not os.path.exists(paths.socket_path(env.env))
    down = env.cli("status", "--no-autostart")
    assert "not running" in down.stdout + down.stderr
