"""The `hermes-relay` command as a user runs it: a subprocess per command, a real agent and relay."""

from __future__ import annotations

import json
import os

import pytest
from procs import wait_state

from hermes_relay.core import api, paths

pytestmark = pytest.mark.integration


def test_pair_status_devices_route_and_revoke_through_the_cli(relay_proc, agent_env) -> None:
    code = relay_proc.mint_code()
    paired = agent_env.cli("pair", code, "--remote", relay_proc.url)
    assert paired.returncode == 0, paired.stderr
    assert "✓ Paired. Token stored in" in paired.stdout
    assert f"Route: LAN ({relay_proc.url})" in paired.stdout
    assert "✓ LAN" in paired.stderr  # the probe outcome, streamed while pairing
    wait_state(agent_env, lambda s: s["state"] == api.CONNECTED)

    status = agent_env.cli("status")
    token = agent_env.store()["sessions"][relay_proc.url]["token"]
    assert status.returncode == 0 and "connected via LAN" in status.stdout
    assert token not in status.stdout and f"{token[:8]}… (redacted)" in status.stdout
    revealed = agent_env.cli("status", "--reveal-tokens")
    assert token in revealed.stdout

    status_json = json.loads(agent_env.cli("status", "--json").stdout)
    assert token not in json.dumps(status_json)

    devices = json.loads(agent_env.cli("devices", "--json").stdout)
    (me,) = [s for s in devices["sessions"] if s["is_current"]]
    assert me["token_prefix"] == token[:8]

    route = agent_env.cli("route")
    assert route.returncode == 0 and route.stdout.startswith("LAN")

    revoke = agent_env.cli("devices", "revoke", token[:8], "--yes")
    assert revoke.returncode == 0, revoke.stderr
    wait_state(agent_env, lambda s: s["state"] == api.REVOKED)
    after = agent_env.cli("status")
    assert after.returncode == 1  # a revoked pairing needs the user
    assert "revoked" in after.stdout and relay_proc.url in after.stdout
    assert (f"    fix:      run hermes-pair on the relay host, then hermes-relay pair --remote {relay_proc.url} (it asks for the code)"
            in after.stdout.splitlines())
    assert "expires:" not in after.stdout  # the stale expiry is hidden
    assert relay_proc.url in agent_env.store()["sessions"]  # kept until the user removes it


def test_bad_input_fails_fast_without_starting_the_agent(agent_env) -> None:
    bad_code = agent_env.cli("pair", "AB-12", "--remote", "ws://127.0.0.1:9")
    assert bad_code.returncode == 2 and "invalid code format" in bad_code.stderr
    bad_scheme = agent_env.cli("pair", "ABC123", "--remote", "ftp://relay")
    assert bad_scheme.returncode == 2 and "ws:// or wss://" in bad_scheme.stderr
    bad_invite = agent_env.cli("pair", "--pair-qr", "{not json")
    assert bad_invite.returncode == 2 and "neither valid JSON nor base64" in bad_invite.stderr
    status = agent_env.cli("status", "--no-autostart")
    assert "not running" in status.stdout + status.stderr
    assert not os.path.exists(paths.socket_path(agent_env.env))


def test_relay_down_is_named_with_its_fix(agent_env) -> None:
    from procs import free_port

    result = agent_env.cli("pair", "ABC123", "--remote", f"ws://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "connection refused" in result.stderr and "hint:" in result.stderr


def test_an_expired_session_is_renewed_with_its_refresh_token(relay_proc, make_agent_env) -> None:
    # The relay's refresh tokens outlive sessions (180 days, as the reference relay's): after the 2 s
    # session expires, the agent's stored token is refused and its refresh token starts a new session.
    env = make_agent_env(HERMES_RELAY_BACKOFF_CAP="0.5")
    with env.client() as c:
        c.call(api.PAIR_START, {"url": relay_proc.url, "code": relay_proc.mint_code(ttl="2")}, timeout=30)
    wait_state(env, lambda s: s["state"] == api.CONNECTED)
    first = env.store()["sessions"][relay_proc.url]["token"]
    renewed = wait_state(env, lambda s: s["state"] == api.CONNECTED
                         and env.store()["sessions"][relay_proc.url]["token"] != first, timeout=20)
    assert renewed["state"] == api.CONNECTED


def test_wrong_scheme_is_named(relay_proc, agent_env) -> None:
    wss = relay_proc.url.replace("ws://", "wss://")
    result = agent_env.cli("pair", "ABC123", "--remote", wss)
    assert result.returncode == 1
    assert "does not speak TLS" in result.stderr and f"use {relay_proc.url}" in result.stderr


def test_a_web_server_on_the_port_is_named_and_its_text_cannot_drive_the_terminal(agent_env, tmp_path) -> None:
    import http.server
    import threading

    class Hostile(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            body = b"\x1b]0;PWNED\x07\x1b[2J<html>" + b"x" * 5000 + b"</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Hostile)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        result = agent_env.cli("pair", "ABC123", "--remote", f"ws://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 1
    assert "not as a Hermes relay" in result.stderr
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr
    assert len(result.stderr) < 1500
