"""Pairing never loses credentials, and a hostile or broken store never stops the agent answering.

Real relay and agent processes. The faults: an unparseable store, a store lock held by another
process, a full disk after auth.ok (fault-injection switch), a kill -9 right after auth.ok
(test-only switch), a FIFO or directory as the store, a malformed record from another client.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from procs import PY, read_line, wait_state

from hermes_relay.core import api, paths, payload
from hermes_relay.core.errors import HermesError, StateCorruptError, StateError, StateLockError, UsageError

pytestmark = pytest.mark.integration

_HOLD_LOCK = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from hermes_relay.core.fileio import FileLock

    with FileLock(Path(sys.argv[1])):
        print("held", flush=True)
        sys.stdin.readline()
    """
)


def _pending_file(env: Any) -> Path:
    return env.store_path.with_name("hermes-relay-pending.json")


def test_unparseable_store_fails_before_the_code_is_spent(relay_proc, agent_env) -> None:
    agent_env.store_path.parent.mkdir(parents=True, exist_ok=True)
    agent_env.store_path.write_text('{"version": 1, "sessions": {"ws://x:1": ')
    code = relay_proc.mint_code()
    with agent_env.client() as c:
        with pytest.raises(StateCorruptError) as info:
            c.call(api.PAIR_START, {"url": relay_proc.url, "code": code}, timeout=30)
    assert "cannot be parsed" in info.value.message
    agent_env.store_path.unlink()
    with agent_env.client() as c:  # the same code still works: it was never sent
        result = c.call(api.PAIR_START, {"url": relay_proc.url, "code": code}, timeout=30)
    assert result["url"] == relay_proc.url


def test_held_store_lock_fails_before_the_code_is_spent_and_status_keeps_answering(relay_proc, make_agent_env) -> None:
    lock_timeout = 3.0
    env = make_agent_env(HERMES_RELAY_STORE_LOCK_TIMEOUT=str(lock_timeout))
    env.store_path.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([PY, "-c", _HOLD_LOCK, str(env.store_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, env=env.env)
    code = relay_proc.mint_code()
    outcome: list[BaseException | dict[str, Any]] = []
    try:
        assert read_line(holder, 10) == "held"
        with env.client() as c:
            c.call(api.STATUS, {})  # the agent is up before the pairing starts

        def run_pair() -> None:
            try:
                with env.client() as c:
                    outcome.append(c.call(api.PAIR_START, {"url": relay_proc.url, "code": code}, timeout=30))
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                outcome.append(exc)

        t = threading.Thread(target=run_pair)
        t.start()
        latencies = []
        with env.client() as c:
            while t.is_alive() and len(latencies) < 20:
                started = time.monotonic()
                c.call(api.STATUS, {}, timeout=5)
                latencies.append(time.monotonic() - started)
        t.join(30)
    finally:
        holder.kill()
        holder.communicate()
    # A loop frozen by the pairing's lock wait would hold every answer for up to the lock timeout; half of
    # it tells the two apart however busy this machine is (the answers take milliseconds).
    assert len(latencies) >= 5 and max(latencies) < lock_timeout / 2, latencies
    (err,) = outcome
    assert isinstance(err, StateLockError) and "waiting for the lock" in err.message
    with env.client() as c:  # the code was never sent: it still pairs
        assert c.call(api.PAIR_START, {"url": relay_proc.url, "code": code}, timeout=30)["url"] == relay_proc.url


def test_full_disk_after_auth_ok_keeps_the_new_credentials_and_stores_them_later(relay_proc, make_agent_env) -> None:
    env = make_agent_env(HERMES_RELAY_TEST_STORE_WRITE_FAULTS="2", HERMES_RELAY_PENDING_RETRY="0.5")
    with env.client() as c:
        with pytest.raises(StateError) as info:
            c.call(api.PAIR_START, {"url": relay_proc.url, "code": relay_proc.mint_code()}, timeout=30)
    err = info.value
    assert err.message.startswith(f"paired with {relay_proc.url}, but the new credentials could not be saved to "
                                  f"{env.store_path}: cannot write {env.store_path}: No space left on device.")
    assert f"They are kept in {_pending_file(env)}" in err.message
    assert "free some disk space" in (err.hint or "") and "Do not pair again" in (err.hint or "")
    assert err.data["paired"] is True and err.data["saved"] is False
    pending = json.loads(_pending_file(env).read_text())["pending"][relay_proc.url]
    assert stat.S_IMODE(_pending_file(env).stat().st_mode) == 0o600
    token = pending["fields"]["token"]
    state = wait_state(env, lambda s: s["state"] == api.CONNECTED)  # the retry stored it and the link uses it
    assert state["url"] == relay_proc.url
    assert env.store()["sessions"][relay_proc.url]["token"] == token
    assert json.loads(_pending_file(env).read_text())["pending"] == {}
    with env.client() as c:  # the test switches in force are shown (core/knobs.py)
        assert c.call(api.STATUS, {})["agent"]["knobs"] == {"HERMES_RELAY_TEST_STORE_WRITE_FAULTS": "2"}
    started = [line for line in paths.agent_log_file(env.env).read_text().splitlines() if "knob_set" in line]
    assert len(started) == 1 and "knob_set knob=TEST_STORE_WRITE_FAULTS value='2' test_only=yes (" in started[0]


def test_kill_9_right_after_auth_ok_loses_nothing(relay_proc, make_agent_env) -> None:
    doomed = make_agent_env("user", HERMES_RELAY_TEST_KILL_AT="pair.kept")
    with doomed.client() as c:
        pid = c.hello["pid"]
        with pytest.raises(HermesError):
            c.call(api.PAIR_START, {"url": relay_proc.url, "code": relay_proc.mint_code()}, timeout=30)
    from procs import wait_gone
    assert wait_gone(pid, 10)
    assert not doomed.store_path.exists()
    token = json.loads(_pending_file(doomed).read_text())["pending"][relay_proc.url]["fields"]["token"]
    # the same user's next agent (no crash switch) finds the credentials and connects with them
    doomed.env.pop("HERMES_RELAY_TEST_KILL_AT")
    state = wait_state(doomed, lambda s: s["state"] == api.CONNECTED)
    assert state["url"] == relay_proc.url
    assert doomed.store()["sessions"][relay_proc.url]["token"] == token


def test_tampered_invite_is_refused_unless_explicitly_ignored(relay_proc, agent_env) -> None:
    payload.load_or_create_secret(agent_env.home / "hermes-relay-qr-secret")  # this host can check signatures
    invite = payload.build(code=relay_proc.mint_code(), ttl_seconds=3600, transport_hint="ws",
                           endpoints=[("lan", relay_proc.url)], secret=b"another relay's key, 32 bytes!!")
    with agent_env.client() as c:
        with pytest.raises(UsageError) as info:
            c.call(api.PAIR_START, {"invite": json.dumps(invite)}, timeout=30)
        assert info.value.exit_code == 2
        assert "refusing this invite: the signature does not match this host's relay key" in info.value.message
        assert "--ignore-signature" in (info.value.hint or "")
        assert not agent_env.store_path.exists()
        lines: list[str] = []
        result = c.call(api.PAIR_START, {"invite": json.dumps(invite), "ignore_signature": True}, timeout=30,
                        on_notify=lambda m, p: lines.append(p["line"]))
    assert result["verified"] is False and any("used anyway" in line for line in lines)


def test_pair_name_is_stored_and_kept_on_a_re_pair(relay_proc, agent_env) -> None:
    with agent_env.client() as c:
        first = c.call(api.PAIR_START, {"url": relay_proc.url, "code": relay_proc.mint_code(),
                                        "device_name": "office-desktop"}, timeout=30)
        assert first["device_name"] == "office-desktop"
        assert agent_env.store()["sessions"][relay_proc.url]["device_name"] == "office-desktop"
        again = c.call(api.PAIR_START, {"url": relay_proc.url, "code": relay_proc.mint_code()}, timeout=30)
    assert again["device_name"] == "office-desktop"
    assert agent_env.store()["sessions"][relay_proc.url]["device_name"] == "office-desktop"


def test_invite_routes_are_stored_in_the_reference_shape(relay_proc, agent_env) -> None:
    invite = payload.build(code=relay_proc.mint_code(), ttl_seconds=3600, transport_hint="ws",
                           endpoints=[("lan", relay_proc.url), ("public", "wss://relay.example.com")])
    with agent_env.client() as c:
        c.call(api.PAIR_START, {"invite": json.dumps(invite)}, timeout=30)
    port = int(relay_proc.url.rsplit(":", 1)[1])
    assert agent_env.store()["sessions"][relay_proc.url]["route_candidates"] == [
        {"role": "lan", "priority": 0, "api": {"host": "127.0.0.1", "port": port, "tls": False},
         "relay": {"url": relay_proc.url, "transport_hint": "ws"}},
        {"role": "public", "priority": 2, "api": {"host": "relay.example.com", "port": 443, "tls": True},
         "relay": {"url": "wss://relay.example.com", "transport_hint": "wss"}},
    ]


@pytest.mark.skipif(os.name != "posix", reason="FIFOs")
@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_store_that_is_not_a_file_is_reported_and_never_hangs_the_agent(relay_proc, agent_env, kind: str) -> None:
    agent_env.store_path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(agent_env.store_path) if kind == "fifo" else agent_env.store_path.mkdir()
    with agent_env.client() as c:
        status = c.call(api.STATUS, {}, timeout=5)
        assert status["agent"]["store_error"]["code"] == "state_error"
        assert "not a regular file" in status["agent"]["store_error"]["message"]
        with pytest.raises(StateError) as info:
            c.call(api.PAIR_START, {"url": relay_proc.url, "code": relay_proc.mint_code()}, timeout=30)
        assert "not a regular file" in info.value.message
        assert c.call(api.DOCTOR, {"deadline": 5}, timeout=15)["store_error"]["code"] == "state_error"
    for command in ("status", "doctor"):
        cli = agent_env.cli(command, timeout=30)
        assert "Traceback" not in cli.stderr and "not a regular file" in cli.stdout + cli.stderr, (command, cli)


def test_a_malformed_record_from_another_client_is_reported_not_fatal(relay_proc, agent_env) -> None:
    agent_env.store_path.parent.mkdir(parents=True, exist_ok=True)
    agent_env.store_path.write_text(json.dumps({"version": 1, "sessions": {
        "ws://other.example:8767": {"token": "t", "route_candidates": 5}, "ws://junk:1": 7}}))
    agent_env.pair(relay_proc)
    with agent_env.client() as c:
        status = c.call(api.STATUS, {})
    assert status["agent"]["store_problems"] == [
        {"url": "ws://junk:1", "problem": "the record is int, expected an object: skipped"},
        {"url": "ws://other.example:8767", "problem": "route_candidates is int, expected a list: ignored"},
    ]
    stored = agent_env.store()["sessions"]
    assert stored["ws://junk:1"] == 7 and stored["ws://other.example:8767"]["route_candidates"] == 5
    cli = agent_env.cli("status")
    assert "Traceback" not in cli.stderr


def test_a_fresh_home_gets_a_private_hermes_dir(relay_proc, make_agent_env, tmp_path: Path) -> None:
    env = make_agent_env("fresh")
    home = tmp_path / "fresh-user"
    home.mkdir()
    env.env.pop("HERMES_HOME")
    env.env["HOME"] = str(home)
    hermes = home / ".hermes"
    assert env.store_path == hermes / "remote-sessions.json"
    old = os.umask(0o022)  # the usual umask: directories would be 0755 unless created private
    try:
        with env.client() as c:  # starting the agent creates ~/.hermes/logs before any store exists
            c.call(api.STATUS, {})
        created = [hermes, *(p for p in hermes.rglob("*") if p.is_dir())]
        assert len(created) >= 2
        assert {str(p): stat.S_IMODE(p.stat().st_mode) for p in created} == {str(p): 0o700 for p in created}
        env.pair(relay_proc)
    finally:
        os.umask(old)
    created = [hermes, *(p for p in hermes.rglob("*") if p.is_dir())]
    assert {str(p): stat.S_IMODE(p.stat().st_mode) for p in created} == {str(p): 0o700 for p in created}


def test_a_tls_relay_behind_a_ws_url_says_use_wss(make_relay, agent_env) -> None:
    relay = make_relay("tls", tls=True)
    plain = "ws://" + relay.url.split("://", 1)[1]
    code = relay.mint_code()
    with agent_env.client() as c:
        with pytest.raises(HermesError) as info:
            c.call(api.PAIR_START, {"url": plain, "code": code}, timeout=30)
    assert info.value.message == f"{plain}: this port speaks TLS: use {relay.url}"
    assert info.value.hint == f"pair again with --remote {relay.url} (the code was not used)"


def test_a_wrong_path_says_where_the_websocket_endpoint_is(relay_proc, agent_env) -> None:
    with agent_env.client() as c:
        with pytest.raises(HermesError) as info:
            c.call(api.PAIR_START, {"url": relay_proc.url + "/ws/xxx", "code": relay_proc.mint_code()}, timeout=30)
    assert (info.value.hint or "").startswith(f"no WebSocket endpoint at /ws/xxx: use {relay_proc.url}")


def test_a_silent_host_says_what_silence_means_and_points_to_doctor(agent_env) -> None:
    from procs import BlackHole

    hole = BlackHole()
    try:
        with agent_env.client() as c:
            with pytest.raises(HermesError) as info:
                c.call(api.PAIR_START, {"url": f"ws://127.0.0.1:{hole.port}", "code": "F3W7EY"}, timeout=30)
    finally:
        hole.close()
    assert info.value.message == f"ws://127.0.0.1:{hole.port}: timed out after 1.5s"
    assert (info.value.hint or "").startswith("nothing answered in time: the host may be off or asleep")
    assert "hermes-relay doctor" in (info.value.hint or "")


def test_unsaved_credentials_show_in_status_and_survive_an_agent_restart(relay_proc, make_agent_env) -> None:
    env = make_agent_env(HERMES_RELAY_TEST_STORE_WRITE_FAULTS="1000000")
    with env.client() as c:
        with pytest.raises(StateError):
            c.call(api.PAIR_START, {"url": relay_proc.url, "code": relay_proc.mint_code()}, timeout=30)
        (unsaved,) = c.call(api.STATUS, {})["agent"]["unsaved_pairings"]
    assert unsaved["url"] == relay_proc.url and "No space left on device" in unsaved["error"]
    assert "token" not in json.dumps(unsaved)
    env.stop()
    env.env.pop("HERMES_RELAY_TEST_STORE_WRITE_FAULTS")  # the disk has room again
    state = wait_state(env, lambda s: s["state"] == api.CONNECTED)
    assert state["url"] == relay_proc.url
    with env.client() as c:
        assert c.call(api.STATUS, {})["agent"]["unsaved_pairings"] == []
