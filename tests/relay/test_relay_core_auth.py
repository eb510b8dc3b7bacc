"""The relay core's WebSocket decisions without sockets: the first frame (auth ok, fail, rate-limited,
refresh, a failed save) and each later message, under a fake clock.

The socket tests (test_relay_pairing.py, test_relay_ratelimit.py, test_relay_state_safety.py) prove the
same over the wire."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import FakeWallClock, auth_frame

from hermes_relay.relay.config import (
    AUTH_FAIL_REASON,
    AUTH_TIMEOUT_REASON,
    CLOSE_AUTH_FAILED,
    CLOSE_INTERNAL_ERROR,
    CLOSE_POLICY,
    CLOSE_TRY_AGAIN_LATER,
    CODE_FAILS_PER_MINUTE,
    PAIRING_BLOCK,
    PAIRING_FAIL_LIMIT,
    RATE_LIMIT_BODY,
    SESSION_BLOCK,
    SESSION_FAIL_LIMIT,
    RelayConfig,
)
from hermes_relay.relay.core import AuthAbort, AuthFail, AuthOk, CloseSession, RelayCore, Send, ToDesktop
from hermes_relay.relay.pairing import token_hash

IP = "198.51.100.7"


def make(**config: Any) -> tuple[RelayCore, FakeWallClock]:
    wall = FakeWallClock()
    return RelayCore(RelayConfig(wall_clock=wall, **config)), wall


def first(core: RelayCore, payload: dict[str, Any], ip: str = IP, msg_id: str = "m1") -> AuthOk | AuthFail | AuthAbort:
    return core.first_message(auth_frame(payload, msg_id), ip)


def pair(core: RelayCore, device: str = "dev", **extra: Any) -> AuthOk:
    code = core.codes.register(None, **extra).code
    ok = first(core, {"pairing_code": code, "device_id": device, "device_name": device})
    assert isinstance(ok, AuthOk)
    return ok


# -- the first frame -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("message", "reason"), [
    (None, AUTH_TIMEOUT_REASON),
    ("not json", "Malformed auth frame"),
    (json.dumps({"channel": "system", "type": "ping", "id": "x", "payload": {}}), "First message must be system/auth"),
    (json.dumps({"channel": "desktop", "type": "auth", "id": "x", "payload": {}}), "First message must be system/auth"),
    ("x" * 70_000, "Malformed auth frame"),
])
def test_a_first_message_that_is_no_auth_frame_is_a_policy_close(message: str | None, reason: str) -> None:
    core, _ = make()
    decision = core.first_message(message, IP)
    assert isinstance(decision, AuthFail) and decision.code == CLOSE_POLICY and decision.reason.startswith(reason)


def test_a_pairing_code_pays_once_and_the_reply_answers_the_frames_id() -> None:
    core, wall = make()
    code = core.codes.register(None, ttl_seconds=600).code
    ok = first(core, {"pairing_code": code, "device_id": "d1", "device_name": "laptop"}, msg_id="abc")
    assert isinstance(ok, AuthOk) and ok.msg_id == "abc" and ok.effects == ()
    assert ok.reply["expires_at"] == wall.now + 600 and ok.reply["refresh_token"]
    assert ok.session.token_hash == token_hash(ok.reply["session_token"]) and ok.session.device_name == "laptop"
    assert len(core.codes) == 0
    again = first(core, {"pairing_code": code})
    assert again == AuthFail(AUTH_FAIL_REASON, CLOSE_AUTH_FAILED)


def test_a_session_token_works_until_its_session_expires() -> None:
    core, wall = make()
    token = pair(core, ttl_seconds=60).reply["session_token"]
    ok = first(core, {"session_token": token})
    assert isinstance(ok, AuthOk) and "refresh_token" not in ok.reply and ok.reply["session_token"] == token
    assert core.expires_in(ok.session) == 60
    wall.advance(61)
    assert first(core, {"session_token": token}) == AuthFail(AUTH_FAIL_REASON, CLOSE_AUTH_FAILED)


def test_a_refresh_rotates_the_tokens_and_closes_the_old_tokens_sockets() -> None:
    core, _ = make()
    paired = pair(core)
    old = paired.reply["session_token"]
    ok = first(core, {"refresh_token": paired.reply["refresh_token"], "device_id": "dev"})
    assert isinstance(ok, AuthOk)
    assert ok.reply["session_token"] != old and ok.reply["refresh_token"] != paired.reply["refresh_token"]
    assert ok.effects == (CloseSession(token_hash(old), "session token rotated"),)
    assert first(core, {"session_token": ok.reply["session_token"]}).__class__ is AuthOk


def test_pairing_the_same_device_again_closes_the_replaced_sessions_sockets() -> None:
    core, _ = make()
    before = pair(core, device="same")
    after = pair(core, device="same")
    assert after.effects == (CloseSession(before.session.token_hash, "replaced by a new pairing of this device"),)


def test_bad_tokens_block_the_address_then_it_is_told_to_wait() -> None:
    core, wall = make()
    token = pair(core).reply["session_token"]
    for _ in range(SESSION_FAIL_LIMIT):
        assert first(core, {"session_token": "wrong"}) == AuthFail(AUTH_FAIL_REASON, CLOSE_AUTH_FAILED)
    # Blocked: even the right token is not tried, and the close says "wait", not "rejected".
    assert first(core, {"session_token": token}) == AuthFail(RATE_LIMIT_BODY, CLOSE_TRY_AGAIN_LATER)
    assert isinstance(first(core, {"session_token": token}, ip="198.51.100.8"), AuthOk)
    wall.advance(SESSION_BLOCK)
    assert isinstance(first(core, {"session_token": token}), AuthOk)


def test_bad_codes_block_on_their_own_bucket_without_spending_a_good_code() -> None:
    core, wall = make()
    code = core.codes.register(None).code
    wrong = "ZZZZZ9" if code != "ZZZZZ9" else "ZZZZZ8"
    for _ in range(PAIRING_FAIL_LIMIT):
        first(core, {"pairing_code": wrong})
    assert first(core, {"pairing_code": code}) == AuthFail(RATE_LIMIT_BODY, CLOSE_TRY_AGAIN_LATER)
    assert len(core.codes) == 1
    wall.advance(PAIRING_BLOCK)
    assert isinstance(first(core, {"pairing_code": code}), AuthOk)


def test_over_the_global_code_cap_a_code_is_told_to_wait_and_stays_valid() -> None:
    core, wall = make()
    code = core.codes.register(None).code
    for _ in range(CODE_FAILS_PER_MINUTE):
        core.code_cap.record_failure(wall.now)
    assert first(core, {"pairing_code": code}) == AuthFail(RATE_LIMIT_BODY, CLOSE_TRY_AGAIN_LATER)
    assert len(core.codes) == 1
    wall.advance(60)
    assert isinstance(first(core, {"pairing_code": code}), AuthOk)


def test_an_empty_auth_frame_counts_as_a_token_failure() -> None:
    core, _ = make()
    for _ in range(SESSION_FAIL_LIMIT):
        assert first(core, {}) == AuthFail(AUTH_FAIL_REASON, CLOSE_AUTH_FAILED)
    assert first(core, {}) == AuthFail(RATE_LIMIT_BODY, CLOSE_TRY_AGAIN_LATER)


def test_a_session_that_cannot_be_saved_is_a_1011_close_and_the_code_is_not_spent(tmp_path: Path) -> None:
    full = [True]
    core = RelayCore(RelayConfig(wall_clock=FakeWallClock(), state_dir=tmp_path, save_fault=lambda: full[0]))
    code = core.codes.register(None).code
    decision = first(core, {"pairing_code": code, "device_id": "d"})
    assert decision == AuthAbort(CLOSE_INTERNAL_ERROR, "relay could not save the session; try again later")
    assert len(core.codes) == 1 and len(core.book) == 0
    full[0] = False
    assert isinstance(first(core, {"pairing_code": code, "device_id": "d"}), AuthOk)


# -- live sockets ---------------------------------------------------------------------------------------

def test_live_sockets_are_counted_per_session_and_taken_for_closing() -> None:
    core, _ = make()
    a, b = object(), object()
    core.attach("k", a)
    core.attach("k", b)
    assert core.connections() == 2 and core.connected("k")
    core.detach("k", a)
    assert core.take_live("k") == {b} and core.live == {} and core.take_live("k") == set()


# -- after authentication ----------------------------------------------------------------------------------

def frame(channel: str, typ: str, payload: dict[str, Any], msg_id: str = "q1") -> str:
    return json.dumps({"channel": channel, "type": typ, "id": msg_id, "payload": payload})


def test_a_ping_is_answered_with_its_ts_or_the_relays_clock_and_touches_the_session() -> None:
    core, wall = make()
    sess = pair(core).session
    wall.advance(5)
    [pong] = core.message(sess, frame("system", "ping", {"ts": 7}))
    assert isinstance(pong, Send) and (pong.env.type, pong.env.payload, pong.env.id) == ("pong", {"ts": 7}, "q1")
    assert sess.last_seen == wall.now
    [pong] = core.message(sess, frame("system", "ping", {}))
    assert isinstance(pong, Send) and pong.env.payload == {"ts": wall.now}


def test_desktop_messages_go_to_the_router_and_others_get_an_answer() -> None:
    core, _ = make()
    sess = pair(core).session
    [routed] = core.message(sess, frame("desktop", "desktop.result", {"ok": True}))
    assert isinstance(routed, ToDesktop) and routed.env.payload == {"ok": True}
    [again] = core.message(sess, frame("system", "auth", {}))
    assert isinstance(again, Send) and again.env.payload == {"reason": "already authenticated"}
    [unknown] = core.message(sess, frame("nope", "x", {}))
    assert isinstance(unknown, Send) and unknown.env.payload["message"] == "Unknown channel: nope"
    [bad] = core.message(sess, "{")
    assert isinstance(bad, Send) and bad.env.payload["reason"].startswith("malformed message")
    answers = core.message(sess, frame("terminal", "terminal.attach", {}))
    assert answers and all(isinstance(a, Send) and a.env.channel == "terminal" for a in answers)
