"""prober.race under trio's autojump clock with scripted connects: exact start and finish times for
the stagger, the strict tiers, held losers, timeouts, the reachability cache and cancellation."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import trio

from hermes_relay.agent import prober
from hermes_relay.core.errors import ConnectRefusedError, NoRouteError, PinMismatchError, RateLimitedError
from hermes_relay.core.routes import Route

LAN_A = Route(0, 0, "lan", "ws://10.0.0.2:8767")
LAN_B = Route(0, 1, "lan", "ws://10.0.0.3:8767")
TAIL = Route(1, 2, "tailscale", "ws://100.64.0.2:8767")
PUBLIC = Route(2, 3, "public", "ws://relay.example:8767")


@dataclass
class Script:
    """Each URL answers after ``delay`` seconds with a value, or raises ``error`` then; unscripted
    URLs never answer (a black hole)."""

    plan: dict[str, tuple[float, Exception | None]]
    t0: float = field(default_factory=trio.current_time)
    started: dict[str, float] = field(default_factory=dict)
    discarded: list[str] = field(default_factory=list)

    def now(self) -> float:
        return trio.current_time() - self.t0

    async def connect(self, route: Route) -> str:
        self.started[route.url] = self.now()
        if route.url not in self.plan:
            await trio.sleep_forever()
        delay, error = self.plan[route.url]
        await trio.sleep(delay)
        if error is not None:
            raise error
        return route.url

    async def discard(self, value: str) -> None:
        self.discarded.append(value)


def refused(route: Route) -> ConnectRefusedError:
    return ConnectRefusedError(f"{route.url}: connection refused")


async def test_inside_a_tier_the_next_attempt_starts_after_the_stagger(autojump_clock: trio.abc.Clock) -> None:
    s = Script({LAN_B.url: (0.1, None)})  # LAN_A is black-holed
    won = await prober.race([LAN_A, LAN_B], s.connect, s.discard, stagger=0.25, timeout=4.0)
    assert won.route == LAN_B and won.value == LAN_B.url
    assert s.started == {LAN_A.url: 0.0, LAN_B.url: 0.25}
    assert s.now() == pytest.approx(0.35)  # the black hole is cancelled, not waited out
    assert [(a.route, a.ok) for a in won.attempts] == [(LAN_B, True)]


async def test_a_failure_starts_the_next_attempt_at_once(autojump_clock: trio.abc.Clock) -> None:
    s = Script({LAN_A.url: (0.1, refused(LAN_A)), LAN_B.url: (0.1, None)})
    won = await prober.race([LAN_A, LAN_B], s.connect, s.discard, stagger=0.25, timeout=4.0)
    assert won.route == LAN_B
    assert s.started == {LAN_A.url: 0.0, LAN_B.url: pytest.approx(0.1)}
    assert s.now() == pytest.approx(0.2)
    assert [(a.route, a.ok, a.code) for a in won.attempts] == [(LAN_A, False, "connect_refused"), (LAN_B, True, "")]


async def test_tiers_start_together_and_a_dead_top_tier_costs_one_timeout(autojump_clock: trio.abc.Clock) -> None:
    s = Script({TAIL.url: (0.05, None), PUBLIC.url: (0.01, None)})  # LAN black-holed
    won = await prober.race([LAN_A, TAIL, PUBLIC], s.connect, s.discard, stagger=0.25, timeout=4.0)
    assert s.started == {LAN_A.url: 0.0, TAIL.url: 0.0, PUBLIC.url: 0.0}
    assert won.route == TAIL  # held until LAN timed out, then preferred over the faster public route
    assert s.now() == pytest.approx(4.0)
    assert s.discarded == [PUBLIC.url]
    lan = next(a for a in won.attempts if a.route == LAN_A)
    assert (lan.ok, lan.code, lan.ms) == (False, "connect_timeout", pytest.approx(4000.0))


async def test_a_higher_tier_wins_over_a_faster_lower_one(autojump_clock: trio.abc.Clock) -> None:
    s = Script({LAN_A.url: (1.0, None), TAIL.url: (0.05, None)})
    won = await prober.race([LAN_A, TAIL], s.connect, s.discard, stagger=0.25, timeout=4.0)
    assert won.route == LAN_A and s.now() == pytest.approx(1.0)
    assert s.discarded == [TAIL.url]


async def test_every_route_failing_lists_every_attempt(autojump_clock: trio.abc.Clock) -> None:
    s = Script({LAN_A.url: (0.1, refused(LAN_A)), TAIL.url: (0.2, refused(TAIL))})
    with pytest.raises(NoRouteError) as caught:
        await prober.race([LAN_A, TAIL], s.connect, s.discard, stagger=0.25, timeout=4.0)
    assert [(a["url"], a["code"]) for a in caught.value.attempts] == [(LAN_A.url, "connect_refused"),
                                                                      (TAIL.url, "connect_refused")]
    assert s.now() == pytest.approx(0.2)


async def test_one_route_failing_raises_its_own_error(autojump_clock: trio.abc.Clock) -> None:
    s = Script({LAN_A.url: (0.1, refused(LAN_A))})
    with pytest.raises(ConnectRefusedError):
        await prober.race([LAN_A], s.connect, s.discard)


async def test_a_pin_mismatch_everywhere_and_a_rate_limit_anywhere_are_decisive(autojump_clock: trio.abc.Clock) -> None:
    pin = PinMismatchError(LAN_A.url, "sha256/old", "sha256/new")
    s = Script({LAN_A.url: (0.1, pin), LAN_B.url: (0.1, PinMismatchError(LAN_B.url, "sha256/old", "sha256/new"))})
    with pytest.raises(PinMismatchError):
        await prober.race([LAN_A, LAN_B], s.connect, s.discard)
    s = Script({LAN_A.url: (0.1, RateLimitedError(retry_after=42.0)), TAIL.url: (0.1, refused(TAIL))})
    with pytest.raises(RateLimitedError) as limited:
        await prober.race([LAN_A, TAIL], s.connect, s.discard)
    assert limited.value.retry_after == 42.0


async def test_recent_failures_are_skipped_while_another_route_is_untried(autojump_clock: trio.abc.Clock) -> None:
    cache = prober.ReachabilityCache(ttl=60.0)
    s = Script({LAN_A.url: (0.1, refused(LAN_A)), LAN_B.url: (0.1, refused(LAN_B)), TAIL.url: (0.1, None)})
    await prober.race([LAN_A, LAN_B, TAIL], s.connect, s.discard, cache=cache)
    assert cache.failed_recently(LAN_A.url) and not cache.failed_recently(TAIL.url)
    s = Script({LAN_A.url: (0.1, None), TAIL.url: (0.1, None)})
    won = await prober.race([LAN_A, LAN_B, TAIL], s.connect, s.discard, cache=cache)
    assert won.route == TAIL and set(s.started) == {TAIL.url}
    assert [a.route for a in won.attempts if a.skipped] == [LAN_A, LAN_B]
    await trio.sleep(60.0)  # remembered for the cache's TTL only
    s = Script({LAN_A.url: (0.1, None)})
    won = await prober.race([LAN_A, LAN_B, TAIL], s.connect, s.discard, cache=cache)
    assert won.route == LAN_A


async def test_cancelling_the_race_closes_what_it_holds(autojump_clock: trio.abc.Clock) -> None:
    s = Script({TAIL.url: (0.05, None)})  # held, waiting on the black-holed LAN
    with trio.move_on_after(1.0):
        await prober.race([LAN_A, TAIL], s.connect, s.discard, timeout=4.0)
    assert s.discarded == [TAIL.url]
    assert s.now() == pytest.approx(1.0)


async def test_no_routes_is_a_clear_error(autojump_clock: trio.abc.Clock) -> None:
    with pytest.raises(NoRouteError, match="no usable route"):
        await prober.race([], Script({}).connect, Script({}).discard)
