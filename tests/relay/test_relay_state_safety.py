"""Nothing changes unless it was saved: a failed sessions.json write (full disk) is a clear 5xx or auth failure,
logged, and leaves the session, the refresh token and the pairing code as they were. A sessions.json with wrong
types stops start-up with a message naming the file and the field."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from helpers import FakeWallClock, auth_frame, expect_closed, http_json, pair, register_code, ws_auth, ws_connect

from hermes_relay.core.errors import StateCorruptError
from hermes_relay.relay.server import CLOSE_INTERNAL_ERROR


class Disk:
    """The fault switch handed to RelayConfig.save_fault: ``full = True`` makes every write fail."""

    def __init__(self) -> None:
        self.full = False

    def __call__(self) -> bool:
        return self.full


@pytest.fixture
async def faulty(relay_factory, tmp_path):
    disk = Disk()
    relay = await relay_factory(state_dir=tmp_path / "state", save_fault=disk, wall_clock=FakeWallClock())
    return relay, disk, tmp_path / "state" / "sessions.json"


async def test_failed_save_on_revoke_is_a_500_and_revokes_nothing(faulty, caplog):
    relay, disk, path = faulty
    ws, ok = await pair(relay.url, relay.http)
    prefix = ok["session_token"][:8]
    before = path.read_bytes()
    disk.full = True
    with caplog.at_level(logging.ERROR):
        status, obj = await http_json("DELETE", f"{relay.http}/sessions/{prefix}", token=ok["session_token"])
    assert status == 500
    assert obj["ok"] is False and "cannot save" in obj["error"] and "nothing was changed" in obj["error"]
    assert "disk space" in obj["hint"]
    assert any("sessions_save_failed" in r.getMessage() for r in caplog.records)
    assert path.read_bytes() == before
    _, reply = await ws_auth(relay.url, {"session_token": ok["session_token"]})
    assert reply["type"] == "auth.ok"  # still paired, and its socket was left open
    await ws.send_message(json.dumps({"channel": "system", "type": "ping", "id": "p", "payload": {}}))
    assert json.loads(await ws.get_message())["type"] == "pong"

    disk.full = False
    status, obj = await http_json("DELETE", f"{relay.http}/sessions/{prefix}", token=ok["session_token"])
    assert status == 200 and obj["revoked_self"] is True


async def test_failed_save_on_extend_is_a_500_and_keeps_the_old_expiry(faulty):
    relay, disk, path = faulty
    _, ok = await pair(relay.url, relay.http, ttl_seconds=600)
    disk.full = True
    status, obj = await http_json("PATCH", f"{relay.http}/sessions/{ok['session_token'][:8]}", {"ttl_seconds": 0})
    assert status == 500 and obj["ok"] is False
    _, listing = await http_json("GET", f"{relay.http}/sessions", token=ok["session_token"])
    assert listing["sessions"][0]["expires_at"] == ok["expires_at"]
    assert json.loads(path.read_text())["sessions"][0]["expires_at"] == ok["expires_at"]


async def test_failed_save_while_pairing_fails_the_auth_and_does_not_spend_the_code(faulty):
    relay, disk, path = faulty
    code = await register_code(relay.http)
    disk.full = True
    ws = await ws_connect(relay.url)
    await ws.send_message(auth_frame({"pairing_code": code, "device_id": "d1"}))
    closed = await expect_closed(ws)  # no auth.fail: clients would take it for rejected credentials
    assert (closed.code, closed.reason) == (CLOSE_INTERNAL_ERROR, "relay could not save the session; try again later")
    assert not path.exists()

    disk.full = False
    _, reply = await ws_auth(relay.url, {"pairing_code": code, "device_id": "d1"})
    assert reply["type"] == "auth.ok"


async def test_failed_save_while_refreshing_keeps_the_old_tokens(faulty):
    relay, disk, _ = faulty
    _, ok = await pair(relay.url, relay.http, device_id="d1")
    disk.full = True
    ws = await ws_connect(relay.url)
    await ws.send_message(auth_frame({"refresh_token": ok["refresh_token"], "device_id": "d1"}))
    assert (await expect_closed(ws)).code == CLOSE_INTERNAL_ERROR
    disk.full = False
    _, reply = await ws_auth(relay.url, {"session_token": ok["session_token"]})
    assert reply["type"] == "auth.ok"
    _, reply = await ws_auth(relay.url, {"refresh_token": ok["refresh_token"], "device_id": "d1"})
    assert reply["type"] == "auth.ok"


def _entry(**over) -> dict:
    base = {"token_hash": "a" * 64, "token_prefix": "abcd1234", "device_name": "vm", "device_id": "d",
            "created_at": 1.0, "first_seen": 1.0, "last_seen": 1.0, "expires_at": None,
            "grants": {"chat": None}, "transport_hint": "ws"}
    return {**base, **over}


@pytest.mark.parametrize("doc,detail", [
    ({"version": 1, "sessions": [_entry(expires_at="soon")]}, "sessions[0] field 'expires_at' must be"),
    ({"version": 1, "sessions": [_entry(), _entry(device_name=7)]}, "sessions[1] field 'device_name' must be string"),
    ({"version": 1, "sessions": [_entry(grants=[])]}, "field 'grants' must be object"),
    ({"version": 1, "sessions": [_entry(grants={"chat": "x"})]}, "grant 'chat' must be a number or null"),
    ({"version": 1, "sessions": [_entry(created_at=True)]}, "field 'created_at'"),
    ({"version": 1, "sessions": [_entry(requested_grants={"chat": "1d"})]}, "requested grant 'chat' must be whole"),
    ({"version": 1, "sessions": [_entry(session_ttl=1.5)]}, "field 'session_ttl' must be int"),
    ({"version": 1, "sessions": [{"token_hash": "x"}]}, "sessions[0] has no 'token_prefix'"),
    ({"version": 1, "sessions": [], "refresh_tokens": [{"refresh_hash": 5}]}, "refresh_tokens[0]"),
    ({"version": 1, "sessions": [], "refresh_tokens": {}}, "'refresh_tokens' must be a list"),
])
async def test_wrong_types_in_sessions_json_refuse_start_up_naming_file_and_field(relay_factory, tmp_path, doc, detail):
    state = tmp_path / "state"
    state.mkdir()
    path = state / "sessions.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(StateCorruptError) as info:
        await relay_factory(state_dir=state)
    assert str(path) in info.value.message and detail in info.value.message
    assert path.read_text() == json.dumps(doc)


def test_relay_server_refuses_a_mistyped_sessions_file_without_a_traceback(tmp_path: Path, capsys):
    from hermes_relay.relay.main import main

    state = tmp_path / "state"
    state.mkdir()
    (state / "sessions.json").write_text(json.dumps({"version": 1, "sessions": [_entry(last_seen="x")]}))
    assert main(["--port", "0", "--state-dir", str(state)]) == 1
    err = capsys.readouterr().err
    assert "sessions.json" in err and "'last_seen'" in err and "Traceback" not in err
    assert "move" in err  # what to do


def test_save_fault_knob_is_read_once_into_the_config_as_a_checkpoint(tmp_path, monkeypatch):
    from hermes_relay.relay.main import build_parser, config_from_args

    flag = tmp_path / "disk-full"
    monkeypatch.setenv("HERMES_RELAY_FAULT_SAVE", str(flag))
    config = config_from_args(build_parser().parse_args(["--memory", "--port", "0"]))
    monkeypatch.delenv("HERMES_RELAY_FAULT_SAVE")  # read once: the config holds the seam, not the environment
    fault = config.save_fault
    assert fault is not None and fault() is False
    flag.touch()
    assert fault() is True
    assert [k.name for k in config.knobs.set()] == ["HERMES_RELAY_FAULT_SAVE"]
    unset = config_from_args(build_parser().parse_args(["--memory", "--port", "0"]))
    assert unset.save_fault is None and unset.knobs.set() == []


async def test_a_relay_process_on_a_full_disk_answers_500_logs_it_and_keeps_the_session(relay_factory, tmp_path):
    # relay_factory only provides the client nursery here; the relay under test is its own process.
    flag = tmp_path / "disk-full"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "HERMES_"))}
    env.update(HOME=str(tmp_path / "home"), HERMES_RELAY_FAULT_SAVE=str(flag))
    errlog = tmp_path / "stderr.log"
    with trio.fail_after(30), open(errlog, "wb") as err:
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "hermes_relay.relay", "--port", "0", "--state-dir", str(tmp_path / "state")],
            stdout=subprocess.PIPE, stderr=err, env=env)
        try:
            assert proc.stdout is not None
            line = b""
            while not line.endswith(b"\n"):
                line += await proc.stdout.receive_some(1)
            url = line.decode().split()[-1]
            http = url.replace("ws://", "http://")
            _, minted = await http_json("POST", f"{http}/pairing/mint", {})
            _, reply = await ws_auth(url, {"pairing_code": minted["code"], "device_id": "d"})
            token = reply["payload"]["session_token"]

            flag.touch()
            status, obj = await http_json("DELETE", f"{http}/sessions/{token[:8]}", token=token)
            assert status == 500 and "No space left on device" in obj["error"]
            flag.unlink()
            _, reply = await ws_auth(url, {"session_token": token})
            assert reply["type"] == "auth.ok"
        finally:
            proc.terminate()
            with trio.CancelScope(shield=True):
                await proc.wait()
                if proc.stdout is not None:
                    await proc.stdout.aclose()
    logged = errlog.read_text()
    assert "sessions_save_failed" in logged
    assert "knob_set name=HERMES_RELAY_FAULT_SAVE test_only=true" in logged and str(flag) not in logged


async def test_a_failed_save_at_a_re_pairings_first_use_still_ends_the_old_refresh_token(faulty):
    relay, disk, path = faulty
    _, old = await pair(relay.url, relay.http, device_id="dev-1")
    _, new = await pair(relay.url, relay.http, device_id="dev-1")
    disk.full = True
    _, reply = await ws_auth(relay.url, {"session_token": new["session_token"]})
    assert reply["type"] == "auth.ok"  # the login is not refused for a bookkeeping write
    ws, reply = await ws_auth(relay.url, {"refresh_token": old["refresh_token"], "device_id": "dev-1"})
    assert reply["type"] == "auth.fail"  # ended in memory at once ...
    disk.full = False
    await relay.stop()  # the shutdown flush writes it
    assert all(g.get("standby_of") is None for g in json.loads(path.read_text())["refresh_tokens"])  # ... and on disk
