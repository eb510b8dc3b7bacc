"""Sessions survive restarts through ``sessions.json`` (hashes only, 0600) and expire on the wall clock."""

from __future__ import annotations

import json
import os
import stat

import pytest
import trio

from helpers import FakeWallClock, http_json, pair, ws_auth
from hermes_relay.core.errors import StateCorruptError, StateVersionError
from hermes_relay.relay.pairing import token_hash
from hermes_relay.relay.server import EXPIRY_SWEEP, Relay, RelayConfig, _sweep

posix_only = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")


async def test_session_token_still_works_after_a_restart(relay_factory, tmp_path):
    clock = FakeWallClock()
    state = tmp_path / "state"
    first = await relay_factory(state_dir=state, wall_clock=clock)
    ws, ok = await pair(first.url, first.http, device_name="keeper")
    await ws.aclose()
    await first.stop()

    second = await relay_factory(state_dir=state, wall_clock=clock)
    assert second.info.port != 0
    _, reply = await ws_auth(second.url, {"session_token": ok["session_token"]})
    assert reply["type"] == "auth.ok"
    assert reply["payload"]["expires_at"] == ok["expires_at"]
    assert reply["payload"]["grants"] == ok["grants"]
    _, listing = await http_json("GET", f"{second.http}/sessions", token=ok["session_token"])
    assert [s["device_name"] for s in listing["sessions"]] == ["keeper"]


async def test_refresh_token_still_works_after_a_restart(relay_factory, tmp_path):
    state = tmp_path / "state"
    first = await relay_factory(state_dir=state)
    ws, ok = await pair(first.url, first.http)
    await ws.aclose()
    await first.stop()

    second = await relay_factory(state_dir=state)
    _, reply = await ws_auth(second.url, {"refresh_token": ok["refresh_token"]})
    assert reply["type"] == "auth.ok"
    assert reply["payload"]["session_token"] != ok["session_token"]


async def test_revocation_survives_a_restart(relay_factory, tmp_path):
    state = tmp_path / "state"
    first = await relay_factory(state_dir=state)
    ws, ok = await pair(first.url, first.http)
    await ws.aclose()
    status, _ = await http_json("DELETE", f"{first.http}/sessions/{ok['session_token'][:8]}", token=ok["session_token"])
    assert status == 200
    await first.stop()

    second = await relay_factory(state_dir=state)
    _, reply = await ws_auth(second.url, {"session_token": ok["session_token"]})
    assert reply["type"] == "auth.fail"


@posix_only
async def test_sessions_file_is_private_and_holds_hashes_not_tokens(relay_factory, tmp_path):
    state = tmp_path / "state"
    relay = await relay_factory(state_dir=state)
    _, ok = await pair(relay.url, relay.http)

    path = state / "sessions.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    text = path.read_text()
    assert ok["session_token"] not in text
    assert ok["refresh_token"] not in text
    doc = json.loads(text)
    assert doc["version"] == 1
    (entry,) = doc["sessions"]
    assert entry["token_hash"] == token_hash(ok["session_token"])
    assert entry["refresh_hash"] == token_hash(ok["refresh_token"])
    assert entry["token_prefix"] == ok["session_token"][:8]


async def test_corrupt_sessions_file_stops_start_up_and_is_left_alone(relay_factory, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "sessions.json").write_text("{not json")
    with pytest.raises(StateCorruptError):
        await relay_factory(state_dir=state)
    assert (state / "sessions.json").read_text() == "{not json"


async def test_sessions_file_from_a_newer_relay_is_refused_not_overwritten(relay_factory, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    newer = json.dumps({"version": 99, "sessions": []})
    (state / "sessions.json").write_text(newer)
    with pytest.raises(StateVersionError):
        await relay_factory(state_dir=state)
    assert (state / "sessions.json").read_text() == newer


# -- expiry ----------------------------------------------------------------------------------------

async def test_expired_session_is_rejected_and_forgotten(relay_factory, tmp_path):
    clock = FakeWallClock()
    state = tmp_path / "state"
    relay = await relay_factory(state_dir=state, wall_clock=clock)
    _, keeper = await pair(relay.url, relay.http, ttl_seconds=0)
    ws, short = await pair(relay.url, relay.http, ttl_seconds=60)
    await ws.aclose()

    clock.advance(59)
    _, reply = await ws_auth(relay.url, {"session_token": short["session_token"]})
    assert reply["type"] == "auth.ok"

    clock.advance(1)
    _, reply = await ws_auth(relay.url, {"session_token": short["session_token"]})
    assert reply["type"] == "auth.fail"
    _, reply = await ws_auth(relay.url, {"refresh_token": short["refresh_token"]})
    assert reply["type"] == "auth.fail"
    _, listing = await http_json("GET", f"{relay.http}/sessions", token=keeper["session_token"])
    assert [s["token_prefix"] for s in listing["sessions"]] == [keeper["session_token"][:8]]
    assert token_hash(short["session_token"]) not in (state / "sessions.json").read_text()


async def test_expired_sessions_are_dropped_when_the_file_is_loaded(relay_factory, tmp_path):
    clock = FakeWallClock()
    state = tmp_path / "state"
    first = await relay_factory(state_dir=state, wall_clock=clock)
    for ttl in (60, 0):
        ws, _ = await pair(first.url, first.http, ttl_seconds=ttl)
        await ws.aclose()
    await first.stop()

    clock.advance(61)
    second = await relay_factory(state_dir=state, wall_clock=clock)
    _, health = await http_json("GET", f"{second.http}/health")
    assert health["sessions"] == 1


async def test_sweep_purges_expired_sessions_once_a_minute(autojump_clock):
    # No sockets here: autojump and real I/O do not mix, so the sweep runs against a bare Relay.
    wall = FakeWallClock()
    relay = Relay(RelayConfig(wall_clock=wall))
    for ttl in (30, 0):
        relay.book.create(relay.codes.register(None, ttl_seconds=ttl), {"device_id": f"dev-{ttl}"})
    wall.advance(31)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_sweep, relay)
        await trio.sleep(EXPIRY_SWEEP - 0.001)
        assert len(relay.book) == 2
        await trio.sleep(0.002)
        assert len(relay.book) == 1
        assert trio.current_time() == pytest.approx(EXPIRY_SWEEP + 0.001)
        nursery.cancel_scope.cancel()
