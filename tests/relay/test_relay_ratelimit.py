"""Per-IP failure limits: 10 bad codes or 5 bad tokens block the address, in separate buckets.

The limiter is sans-IO (tables below, explicit ``now``); the loopback tests check the wire effect:
a blocked address gets HTTP 429 on the WebSocket upgrade. Every client here is 127.0.0.1.
"""

from __future__ import annotations

import json

import pytest
import trio_websocket
from helpers import (
    FakeWallClock,
    auth_frame,
    expect_closed,
    http_json,
    pair,
    receive_json,
    register_code,
    ws_auth,
    ws_connect,
)

from hermes_relay.relay import api, peers
from hermes_relay.relay.core import RelayCore
from hermes_relay.relay.ratelimit import RateLimiter, rate_key
from hermes_relay.relay.server import (
    CLOSE_TRY_AGAIN_LATER,
    CODE_FAILS_PER_MINUTE,
    HTTP_BLOCK,
    HTTP_FAIL_LIMIT,
    PAIRING_BLOCK,
    PAIRING_FAIL_LIMIT,
    RATE_LIMIT_BODY,
    SESSION_BLOCK,
    SESSION_FAIL_LIMIT,
    Relay,
    RelayConfig,
)

IP = "198.51.100.7"


# -- RateLimiter (sans-IO) -------------------------------------------------------------------------

@pytest.mark.parametrize("failure_times,now,blocked_for", [
    ([0, 1, 2], 3, 0.0),                 # under the limit
    ([0, 1, 2, 3], 3, 100.0),            # 4th failure inside the window blocks for `block`
    ([0, 1, 2, 3], 50, 53.0),
    ([0, 1, 2, 3], 103, 0.0),            # the block ends
    ([0, 1, 2, 11], 11, 0.0),            # the first failure left the 10 s window
    ([0, 5, 9.9, 10.5], 10.5, 0.0),      # failure at 0 expired at exactly 10
    ([1, 5, 9.9, 10.5], 10.5, 100.0),
])
def test_limiter_blocks_after_limit_failures_inside_the_window(failure_times, now, blocked_for):
    limiter = RateLimiter(limit=4, window=10, block=100)
    for t in failure_times:
        limiter.record_failure(IP, t)
    assert limiter.blocked_for(IP, now) == blocked_for
    assert limiter.blocked_for("192.0.2.1", now) == 0.0


def test_limiter_reports_the_failure_that_starts_a_block_once():
    limiter = RateLimiter(limit=2, window=10, block=100)
    assert [limiter.record_failure(IP, t) for t in (0, 1, 2, 3)] == [False, True, False, False]


def test_limiter_success_forgets_earlier_failures():
    limiter = RateLimiter(limit=3, window=10, block=100)
    limiter.record_failure(IP, 0)
    limiter.record_failure(IP, 1)
    limiter.record_success(IP)
    limiter.record_failure(IP, 2)
    limiter.record_failure(IP, 3)
    assert limiter.blocked_for(IP, 3) == 0.0
    assert len(limiter) == 1


def test_limiter_prune_drops_idle_addresses_only():
    limiter = RateLimiter(limit=2, window=10, block=100)
    limiter.record_failure("192.0.2.1", 0)       # idle after t=10
    limiter.record_failure(IP, 0)
    limiter.record_failure(IP, 1)                # blocked until 101
    limiter.prune(50)
    assert len(limiter) == 1
    assert limiter.blocked_for(IP, 50) == 51.0


@pytest.mark.parametrize("ip,key", [
    ("198.51.100.7", "198.51.100.7"),
    ("::ffff:198.51.100.7", "198.51.100.7"),                     # IPv4-mapped counts as the IPv4 address
    ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
    ("2001:DB8:1:2:0:0:0:7", "2001:db8:1:2::/64"),
    ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
    ("fe80::1%eth0", "fe80::/64"),
    ("::1", "::/64"),
    ("unknown", "unknown"),
])
def test_rate_key_buckets_ipv6_by_its_slash_64(ip, key):
    assert rate_key(ip) == key


def test_limiter_blocks_a_whole_ipv6_slash_64_but_not_its_neighbours():
    limiter = RateLimiter(limit=4, window=10, block=100)
    for i in range(4):  # a new address from the same /64 for every try
        limiter.record_failure(f"2001:db8:1:2::{i + 1:x}", i)
    assert limiter.blocked_for("2001:db8:1:2:abcd::99", 4) == 99.0  # blocked at t=3 for 100 s
    assert limiter.blocked_for("2001:db8:1:3::1", 4) == 0.0
    for i in range(4):  # IPv4 addresses still count one by one
        limiter.record_failure(f"198.51.100.{i + 1}", i)
    assert limiter.blocked_for("198.51.100.1", 4) == 0.0


def test_limiter_clear_forgets_every_address():
    limiter = RateLimiter(limit=2, window=10, block=100)
    for ip in (IP, "2001:db8::1", "192.0.2.1"):
        limiter.record_failure(ip, 0)
        limiter.record_failure(ip, 1)
        assert limiter.blocked_for(ip, 1) > 0
    limiter.clear()
    assert len(limiter) == 0
    assert all(limiter.blocked_for(ip, 1) == 0.0 for ip in (IP, "2001:db8::1", "192.0.2.1"))


def test_registering_a_code_lifts_the_blocks_of_every_address():
    relay = RelayCore(RelayConfig(wall_clock=FakeWallClock()))
    now = relay.now()
    for _ in range(PAIRING_FAIL_LIMIT):
        relay.pair_limiter.record_failure("203.0.113.9", now)
    for _ in range(SESSION_FAIL_LIMIT):
        relay.token_limiter.record_failure("2001:db8::5", now)
    assert relay.blocked_for("203.0.113.9") > 0 and relay.blocked_for("2001:db8::5") > 0
    status, _ = api.pairing_mint(relay, {}, peers.resolve("127.0.0.1", {}))
    assert status == 200
    assert relay.blocked_for("203.0.113.9") == 0.0 and relay.blocked_for("2001:db8::5") == 0.0


# -- over the wire ---------------------------------------------------------------------------------

async def fail_with_codes(relay, n: int) -> None:
    for i in range(n):
        _, reply = await ws_auth(relay.url, {"pairing_code": f"BAD{i:03d}"})
        assert reply["type"] == "auth.fail"


async def fail_with_tokens(relay, n: int) -> None:
    for i in range(n):
        _, reply = await ws_auth(relay.url, {"session_token": f"bogus-token-{i}"})
        assert reply["type"] == "auth.fail"


async def assert_upgrade_refused(relay) -> None:
    with pytest.raises(trio_websocket.ConnectionRejected) as info:
        await ws_connect(relay.url)
    assert info.value.status_code == 429
    assert info.value.body == RATE_LIMIT_BODY.encode()
    retry_after = dict(info.value.headers)[b"retry-after"]
    assert 0 < int(retry_after) <= max(PAIRING_BLOCK, SESSION_BLOCK)  # whole seconds left in the block


async def test_ten_bad_codes_get_the_next_upgrade_refused_with_429(relay_factory):
    clock = FakeWallClock()
    relay = await relay_factory(wall_clock=clock)
    assert PAIRING_FAIL_LIMIT == 10
    code = await register_code(relay.http)
    await fail_with_codes(relay, PAIRING_FAIL_LIMIT)

    await assert_upgrade_refused(relay)  # even a valid code cannot get in now
    status, _ = await http_json("GET", f"{relay.http}/health")
    assert status == 200  # plain HTTP is not part of the block

    clock.advance(PAIRING_BLOCK - 1)
    await assert_upgrade_refused(relay)
    clock.advance(1)
    _, reply = await ws_auth(relay.url, {"pairing_code": code})
    assert reply["type"] == "auth.ok"


async def test_nine_bad_codes_do_not_block(relay):
    code = await register_code(relay.http)  # first: registering a code lifts every block
    await fail_with_codes(relay, PAIRING_FAIL_LIMIT - 1)
    _, reply = await ws_auth(relay.url, {"pairing_code": code})
    assert reply["type"] == "auth.ok"


async def test_bad_tokens_and_bad_codes_count_in_separate_buckets(relay):
    assert SESSION_FAIL_LIMIT == 5
    code = await register_code(relay.http)  # before the failures: registering a code clears every block
    await fail_with_tokens(relay, SESSION_FAIL_LIMIT - 1)
    await fail_with_codes(relay, PAIRING_FAIL_LIMIT - 1)
    _, reply = await ws_auth(relay.url, {"pairing_code": code})  # 4 + 9 failures, yet neither bucket is full
    assert reply["type"] == "auth.ok"

    await fail_with_tokens(relay, 1)  # the token bucket's own 5th failure
    await assert_upgrade_refused(relay)


async def test_successful_pairing_resets_the_code_bucket(relay):
    codes = [await register_code(relay.http) for _ in range(2)]
    for code in codes:
        await fail_with_codes(relay, PAIRING_FAIL_LIMIT - 1)
        _, reply = await ws_auth(relay.url, {"pairing_code": code})
        assert reply["type"] == "auth.ok"


async def test_bad_bearer_tokens_block_only_the_http_api_in_a_gentler_bucket(relay_factory):
    clock = FakeWallClock()
    relay = await relay_factory(wall_clock=clock)
    ws_ok, ok = await pair(relay.url, relay.http)
    for _ in range(HTTP_FAIL_LIMIT):
        status, _ = await http_json("GET", f"{relay.http}/sessions", token="wrong")
        assert status == 401

    status, obj = await http_json("GET", f"{relay.http}/sessions", token=ok["session_token"])
    assert (status, obj) == (429, {"ok": False, "error": RATE_LIMIT_BODY})
    # The WebSocket side is untouched: the valid token still connects, no 429 on the upgrade.
    _, reply = await ws_auth(relay.url, {"session_token": ok["session_token"]})
    assert reply["type"] == "auth.ok"

    clock.advance(HTTP_BLOCK)
    status, _ = await http_json("GET", f"{relay.http}/sessions", token=ok["session_token"])
    assert status == 200


async def test_five_failed_bearer_checks_do_not_lock_the_address_out_of_websockets(relay):
    _, ok = await pair(relay.url, relay.http)
    for _ in range(SESSION_FAIL_LIMIT):
        status, _ = await http_json("GET", f"{relay.http}/sessions", token="wrong")
        assert status == 401
    _, reply = await ws_auth(relay.url, {"session_token": ok["session_token"]})
    assert reply["type"] == "auth.ok"
    status, _ = await http_json("GET", f"{relay.http}/sessions", token=ok["session_token"])
    assert status == 200


async def test_registering_a_code_lifts_a_block_over_the_wire(relay):
    await fail_with_tokens(relay, SESSION_FAIL_LIMIT - 1)
    await fail_with_codes(relay, PAIRING_FAIL_LIMIT)
    await assert_upgrade_refused(relay)

    code = await register_code(relay.http)  # the operator, at the relay host, mints a fresh code
    _, reply = await ws_auth(relay.url, {"pairing_code": code})
    assert reply["type"] == "auth.ok"
    # Both buckets were emptied: four more bad tokens would have made nine (blocked) otherwise.
    await fail_with_tokens(relay, SESSION_FAIL_LIMIT - 1)
    await ws_connect(relay.url)


async def test_connections_opened_before_a_code_block_get_no_more_tries(relay_factory):
    clock = FakeWallClock()
    relay = await relay_factory(wall_clock=clock)
    code = await register_code(relay.http)
    sockets = [await ws_connect(relay.url) for _ in range(PAIRING_FAIL_LIMIT + 3)]  # all upgraded before the block
    for i, ws in enumerate(sockets[:-1]):  # 12 bad codes: the 10th starts the block
        await ws.send_message(auth_frame({"pairing_code": f"BAD{i:03d}"}))
        assert (await receive_json(ws))["type"] == "auth.fail"

    await sockets[-1].send_message(auth_frame({"pairing_code": code}))
    reply = await receive_json(sockets[-1])
    # Told to wait, with "Try Again Later", not that the code is wrong.
    assert (reply["type"], reply["payload"]) == ("auth.fail", {"reason": RATE_LIMIT_BODY})
    assert (await expect_closed(sockets[-1])).code == 1013
    _, health = await http_json("GET", f"{relay.http}/health")
    assert health["pending_codes"] == 1  # refused without being tried: the code was not spent

    clock.advance(PAIRING_BLOCK)
    _, reply = await ws_auth(relay.url, {"pairing_code": code})
    assert reply["type"] == "auth.ok"


async def test_connections_opened_before_a_token_block_get_no_more_tries(relay):
    _, ok = await pair(relay.url, relay.http)
    sockets = [await ws_connect(relay.url) for _ in range(SESSION_FAIL_LIMIT + 2)]
    for i, ws in enumerate(sockets[:-1]):
        await ws.send_message(auth_frame({"session_token": f"bogus-{i}"}))
        assert (await receive_json(ws))["type"] == "auth.fail"

    await sockets[-1].send_message(auth_frame({"session_token": ok["session_token"]}))
    assert (await receive_json(sockets[-1]))["type"] == "auth.fail"


# -- eviction keeps attackers' counts; the global cap on code guesses ----------------------------------------

def test_a_full_table_drops_only_idle_entries_and_keeps_attackers_counts():
    limiter = RateLimiter(limit=3, window=10, block=100, max_tracked=4)
    limiter.record_failure("192.0.2.1", 0)                      # idle once t > 10
    for ip in ("192.0.2.2", "192.0.2.3", "192.0.2.4"):         # attackers: 2 of 3 failures, still counting
        limiter.record_failure(ip, 15)
        limiter.record_failure(ip, 16)
    assert limiter.record_failure("192.0.2.5", 17) is False     # room made by dropping the idle entry only
    assert len(limiter) == 4
    for ip in ("192.0.2.2", "192.0.2.3", "192.0.2.4"):
        assert limiter.record_failure(ip, 18) is True           # their third failure still blocks them


def test_a_table_full_of_live_entries_fails_closed_for_unknown_addresses():
    limiter = RateLimiter(limit=3, window=10, block=100, max_tracked=3)
    for ip in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        limiter.record_failure(ip, 0)
    assert limiter.blocked_for("198.51.100.9", 1) == 0.0        # not full of failures yet: may try
    assert limiter.record_failure("198.51.100.9", 1) is True    # no room to count it: refused, not let in
    assert limiter.blocked_for("198.51.100.9", 1) == 10.0
    assert limiter.blocked_for("198.51.100.10", 1) > 0          # nor any other newcomer while full
    assert len(limiter) == 3                                    # nobody was evicted to make room
    assert limiter.blocked_for("198.51.100.9", 11) == 0.0       # the old entries went idle: room again


def test_thousands_of_addresses_cannot_reset_a_blocked_attacker():
    limiter = RateLimiter(limit=2, window=60, block=300, max_tracked=100)
    limiter.record_failure(IP, 0)
    limiter.record_failure(IP, 0)
    for i in range(1000):
        limiter.record_failure(f"10.{i // 250}.{i % 250}.1", 1)
    assert limiter.blocked_for(IP, 2) == 298.0


def test_failed_codes_over_all_addresses_are_capped_per_minute():
    relay = RelayCore(RelayConfig(wall_clock=FakeWallClock()))
    code = relay.codes.register(None).code
    for i in range(CODE_FAILS_PER_MINUTE):
        assert relay.authenticate({"pairing_code": "ZZZZZ9" if code != "ZZZZZ9" else "ZZZZZ8"}, f"10.0.{i}.1") is None
    # A new address with the right code is not even tried while the cap is reached, and the code stays valid.
    assert relay.authenticate({"pairing_code": code}, "10.9.9.9") is None
    assert len(relay.codes) == 1
    relay.config.wall_clock.advance(60)  # type: ignore[attr-defined]
    assert relay.authenticate({"pairing_code": code}, "10.9.9.9") is not None


class _OneFrameWs:
    """Just enough of a WebSocket for ws_session: one auth frame in, what the relay sends and how it closed."""

    def __init__(self, frame: str):
        self.frame, self.sent, self.closed = frame, [], None
        self.wait = self.beat = None

    def authenticated(self, max_message: int, receive_size: int) -> None:
        pass

    async def get_message(self) -> str:
        return self.frame

    async def send_message(self, message: str) -> None:
        self.sent.append(json.loads(message))

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed = (code, reason)


async def test_over_the_cap_a_code_auth_is_told_to_wait_not_that_the_code_is_wrong():
    relay = Relay(RelayConfig(wall_clock=FakeWallClock()))
    code = relay.core.codes.register(None).code
    for _ in range(CODE_FAILS_PER_MINUTE):
        relay.core.code_cap.record_failure(relay.core.now())
    ws = _OneFrameWs(auth_frame({"pairing_code": code}))
    await relay.ws_session(ws, "10.1.2.3")  # type: ignore[arg-type]
    assert ws.sent[0]["type"] == "auth.fail" and ws.sent[0]["payload"]["reason"] == RATE_LIMIT_BODY
    assert ws.closed[0] == CLOSE_TRY_AGAIN_LATER
    assert len(relay.core.codes) == 1
