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
from hermes_relay.relay.sessions import REFRESH_TTL, SaveError

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
    ws, ok = await pair(first.url, first.http, device_id="dev-1")
    await ws.aclose()
    await first.stop()

    second = await relay_factory(state_dir=state)
    _, reply = await ws_auth(second.url, {"refresh_token": ok["refresh_token"], "device_id": "dev-1"})
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
    (grant,) = doc["refresh_tokens"]
    assert (grant["refresh_hash"], grant["session_hash"]) == (token_hash(ok["refresh_token"]), entry["token_hash"])
    assert entry["token_prefix"] == ok["session_token"][:8]


@pytest.mark.parametrize("content", ["{not json", '{"version": 1, "sessions": {}}', '{"version": 1, "sessions": [7]}'])
async def test_corrupt_sessions_file_stops_start_up_and_is_left_alone(relay_factory, tmp_path, content):
    state = tmp_path / "state"
    state.mkdir()
    path = state / "sessions.json"
    path.write_text(content)
    with pytest.raises(StateCorruptError) as info:
        await relay_factory(state_dir=state)
    assert path.read_text() == content
    # The hint is about the relay's own file: `hermes-relay doctor --fix` only repairs the client store.
    hint = info.value.hint
    assert hint is not None and "doctor" not in hint
    assert f"move {path} aside" in hint and "--state-dir" in hint


async def test_sessions_file_from_a_newer_relay_is_refused_not_overwritten(relay_factory, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    newer = json.dumps({"version": 99, "sessions": []})
    (state / "sessions.json").write_text(newer)
    with pytest.raises(StateVersionError):
        await relay_factory(state_dir=state)
    assert (state / "sessions.json").read_text() == newer


# -- expiry ----------------------------------------------------------------------------------------

async def test_expired_session_is_rejected_but_its_refresh_token_starts_a_new_one(relay_factory, tmp_path):
    clock = FakeWallClock()
    state = tmp_path / "state"
    relay = await relay_factory(state_dir=state, wall_clock=clock)
    _, keeper = await pair(relay.url, relay.http, ttl_seconds=0)
    ws, short = await pair(relay.url, relay.http, ttl_seconds=60, device_id="short")
    await ws.aclose()

    clock.advance(59)
    _, reply = await ws_auth(relay.url, {"session_token": short["session_token"]})
    assert reply["type"] == "auth.ok"

    clock.advance(1)
    _, reply = await ws_auth(relay.url, {"session_token": short["session_token"]})
    assert reply["type"] == "auth.fail"
    _, listing = await http_json("GET", f"{relay.http}/sessions", token=keeper["session_token"])
    expired = {s["token_prefix"]: s["expires_at"] for s in listing["sessions"]}
    assert expired == {keeper["session_token"][:8]: None, short["session_token"][:8]: clock.now}  # still revocable

    clock.advance(86400)  # a day later the refresh token (180 days) still mints a session of the same lifetime
    _, reply = await ws_auth(relay.url, {"refresh_token": short["refresh_token"], "device_id": "short"})
    assert reply["type"] == "auth.ok"
    renewed = reply["payload"]
    assert renewed["expires_at"] == clock.now + 60
    assert renewed["refresh_token"] != short["refresh_token"]
    _, listing = await http_json("GET", f"{relay.http}/sessions", token=keeper["session_token"])
    assert {s["token_prefix"] for s in listing["sessions"]} == {keeper["session_token"][:8], renewed["session_token"][:8]}
    text = (state / "sessions.json").read_text()
    assert token_hash(short["session_token"]) not in text and token_hash(short["refresh_token"]) not in text
    _, reply = await ws_auth(relay.url, {"refresh_token": short["refresh_token"], "device_id": "short"})
    assert reply["type"] == "auth.fail"  # rotated on use


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


async def test_sweep_purges_expired_sessions_once_their_refresh_tokens_expired(autojump_clock, tmp_path):
    # No sockets here: autojump and real I/O do not mix, so the sweep runs against a bare Relay.
    wall = FakeWallClock()
    relay = Relay(RelayConfig(wall_clock=wall, state_dir=tmp_path))
    for ttl in (30, 0):
        relay.core.book.create(relay.core.codes.register(None, ttl_seconds=ttl), {"device_id": f"dev-{ttl}"})
    wall.advance(REFRESH_TTL + 1)

    def stored() -> tuple[int, int]:
        doc = json.loads((tmp_path / "sessions.json").read_text())
        return len(doc["sessions"]), len(doc["refresh_tokens"])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_sweep, relay)
        await trio.sleep(EXPIRY_SWEEP - 0.001)
        assert stored() == (2, 2)
        await trio.sleep(0.002)
        assert stored() == (1, 0)  # the never-expiring session stays; its refresh token has expired
        assert len(relay.core.book) == 1
        assert trio.current_time() == pytest.approx(EXPIRY_SWEEP + 0.001)
        nursery.cancel_scope.cancel()


# -- last_seen is written in batches ---------------------------------------------------------------

def stored_last_seen(state) -> float:
    (entry,) = json.loads((state / "sessions.json").read_text())["sessions"]
    return entry["last_seen"]


async def test_authentication_does_not_write_the_file_and_shutdown_does(relay_factory, tmp_path):
    clock = FakeWallClock()
    state = tmp_path / "state"
    relay = await relay_factory(state_dir=state, wall_clock=clock)
    ws, ok = await pair(relay.url, relay.http, device_name="old name")
    await ws.aclose()
    paired_at = clock.now
    before = (state / "sessions.json").read_bytes()

    clock.advance(50)
    _, reply = await ws_auth(relay.url, {"session_token": ok["session_token"], "device_model": "new model"})
    assert reply["type"] == "auth.ok"
    assert (state / "sessions.json").read_bytes() == before  # no fsync on the event loop per authentication
    _, listing = await http_json("GET", f"{relay.http}/sessions", token=ok["session_token"])
    assert (listing["sessions"][0]["last_seen"], listing["sessions"][0]["device_model"]) == (paired_at + 50, "new model")

    await relay.stop()
    assert stored_last_seen(state) == paired_at + 50
    assert "new model" in (state / "sessions.json").read_text()


def _touched_relay(state) -> tuple[Relay, float]:  # type: ignore[no-untyped-def]
    """A relay with one session that authenticated 10 s after it was created; returns (relay, created)."""
    wall = FakeWallClock()
    relay = Relay(RelayConfig(state_dir=state, wall_clock=wall))
    token, _, _, _ = relay.core.book.create(relay.core.codes.register(None, ttl_seconds=0), {"device_id": "dev"})
    created = wall.now
    wall.advance(10)
    assert relay.core.authenticate({"session_token": token}, "127.0.0.1") is not None
    return relay, created


async def test_sweep_writes_touched_sessions(autojump_clock, tmp_path):
    state = tmp_path / "state"
    relay, created = _touched_relay(state)
    assert stored_last_seen(state) == created
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_sweep, relay)
        await trio.sleep(EXPIRY_SWEEP - 0.001)
        assert stored_last_seen(state) == created
        await trio.sleep(0.002)
        assert stored_last_seen(state) == created + 10
        assert relay.core.book.dirty is False
        nursery.cancel_scope.cancel()


def test_token_creation_refresh_revoke_and_extend_still_write_at_once(tmp_path):
    wall = FakeWallClock()
    state = tmp_path / "state"
    relay = Relay(RelayConfig(state_dir=state, wall_clock=wall))
    path = state / "sessions.json"
    token, refresh, sess, _ = relay.core.book.create(relay.core.codes.register(None), {"device_id": "dev"})
    assert token_hash(token) in path.read_text()
    new_token, _, sess = relay.core.book.refresh(refresh, "dev")
    assert token_hash(new_token) in path.read_text() and token_hash(token) not in path.read_text()
    relay.core.book.extend(sess, 0, None)
    assert json.loads(path.read_text())["sessions"][0]["expires_at"] is None
    relay.core.book.revoke(sess)
    assert json.loads(path.read_text())["sessions"] == []


def test_a_failed_flush_is_retried_by_the_next(tmp_path):
    state = tmp_path / "state"
    relay, created = _touched_relay(state)
    state.rename(tmp_path / "elsewhere")
    state.write_text("not a directory")  # the disk refuses the write
    with pytest.raises(SaveError):
        relay.core.book.flush()
    assert relay.core.book.dirty  # the change is still pending
    state.unlink()
    (tmp_path / "elsewhere").rename(state)
    assert relay.core.book.flush() is True
    assert stored_last_seen(state) == created + 10


async def test_the_relay_id_is_stable_across_restarts_and_shown_by_health_and_info(relay_factory, tmp_path):
    state = tmp_path / "state"
    first = await relay_factory(state_dir=state)
    _, health = await http_json("GET", f"{first.http}/health")
    _, info = await http_json("GET", f"{first.http}/relay/info")
    await first.stop()
    second = await relay_factory(state_dir=state)
    _, again = await http_json("GET", f"{second.http}/health")
    other = await relay_factory(state_dir=tmp_path / "other")
    _, elsewhere = await http_json("GET", f"{other.http}/health")
    assert health["relay_id"] == info["relay_id"] == again["relay_id"] != elsewhere["relay_id"]
    assert len(health["relay_id"]) >= 16


async def test_a_re_paired_devices_standby_refresh_token_survives_a_restart(relay_factory, tmp_path):
    state = tmp_path / "state"
    first = await relay_factory(state_dir=state)
    _, old = await pair(first.url, first.http, device_id="dev-1")
    _, lost = await pair(first.url, first.http, device_id="dev-1")
    await first.stop()
    second = await relay_factory(state_dir=state)
    _, reply = await ws_auth(second.url, {"refresh_token": old["refresh_token"], "device_id": "dev-1"})
    assert reply["type"] == "auth.ok"
    assert reply["payload"]["expires_at"] == lost["expires_at"]
