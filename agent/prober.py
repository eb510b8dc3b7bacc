"""Pick a route by strict priority, racing reachability inside a tier (staggered, happy-eyeballs style).

Every tier starts at once, so a dead top tier costs one timeout in total, not one per tier. Inside a
tier attempts are staggered: the next starts when the current one fails or after ``stagger`` seconds,
and the first success cancels the rest. A lower tier's success is only *held* until every higher tier
has failed; a higher tier's success always wins, and held losers are closed. When every route fails,
NoRouteError carries each attempt's outcome (never a bare exception group).

Failed routes are remembered for ``cache_ttl`` seconds and skipped while some other route is still
untried; a network change clears the memory (``ReachabilityCache.clear``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import trio

from ..core.errors import HermesError, NoRouteError, PinMismatchError, RateLimitedError, error_from_wire
from ..core.routes import Route, route_info, tiers

log = logging.getLogger(__name__)
T = TypeVar("T")
STAGGER = 0.25
ATTEMPT_TIMEOUT = 4.0
CACHE_TTL = 60.0


@dataclass
class Attempt:
    route: Route
    ok: bool
    ms: float
    error: str = ""
    code: str = ""
    skipped: bool = False
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**route_info(self.route), "ok": self.ok, "ms": round(self.ms, 1),
                "error": self.error, "code": self.code, "skipped": self.skipped, "data": self.data}


@dataclass
class ReachabilityCache:
    ttl: float = CACHE_TTL
    _failed: dict[str, float] = field(default_factory=dict)

    def failed_recently(self, url: str) -> bool:
        at = self._failed.get(url)
        return at is not None and trio.current_time() - at < self.ttl

    def record(self, url: str, ok: bool) -> None:
        if ok:
            self._failed.pop(url, None)
        else:
            self._failed[url] = trio.current_time()

    def clear(self) -> None:
        self._failed.clear()


@dataclass
class Won(Generic[T]):
    route: Route
    value: T
    attempts: list[Attempt]


Connect = Callable[[Route], Awaitable[T]]
Discard = Callable[[T], Awaitable[None]]
OnAttempt = Callable[[Attempt], Awaitable[None]]


async def race(
    routes: list[Route],
    connect: Connect[T],
    discard: Discard[T],
    *,
    stagger: float = STAGGER,
    timeout: float = ATTEMPT_TIMEOUT,
    cache: ReachabilityCache | None = None,
    on_attempt: OnAttempt | None = None,
) -> Won[T]:
    """Connect to the best reachable route.

    When every route fails it raises ``decisive(...)`` of the NoRouteError listing every attempt.
    """
    if not routes:
        raise NoRouteError("no usable route to try (the stored URLs are invalid)", attempts=[],
                           hint="pair again with `hermes-relay pair`")
    attempts: list[Attempt] = []
    live = list(routes)
    if cache is not None:
        fresh = [r for r in routes if not cache.failed_recently(r.url)]
        if fresh:
            for r in routes:
                if r not in fresh:
                    skipped = Attempt(r, False, 0.0, "skipped: failed less than a minute ago", "cached", skipped=True)
                    attempts.append(skipped)
                    if on_attempt is not None:
                        await on_attempt(skipped)
            live = fresh
    groups = tiers(live)
    done = [trio.Event() for _ in groups]
    held: list[tuple[Route, T] | None] = [None] * len(groups)

    async def record(attempt: Attempt) -> None:
        attempts.append(attempt)
        if cache is not None:
            cache.record(attempt.route.url, attempt.ok)
        if on_attempt is not None:
            await on_attempt(attempt)

    async def one(route: Route, tier_scope: trio.CancelScope, failed: trio.Event, slot: int) -> None:
        started = trio.current_time()
        try:
            with trio.fail_after(timeout):
                value = await connect(route)
        except trio.TooSlowError:
            await record(Attempt(route, False, (trio.current_time() - started) * 1000,
                                 f"timed out after {timeout:g}s", "connect_timeout"))
            failed.set()
            return
        except HermesError as exc:
            await record(Attempt(route, False, (trio.current_time() - started) * 1000, exc.message, exc.code,
                                 data=exc.to_wire()["data"]))
            failed.set()
            return
        except Exception as exc:  # a bug or an odd route (bad URL from another client): this route only
            log.exception("probe_crashed url=%s", route.url)
            await record(Attempt(route, False, (trio.current_time() - started) * 1000, f"internal error: {exc!r}",
                                 "internal_error"))
            failed.set()
            return
        if held[slot] is not None or tier_scope.cancel_called:
            await discard(value)  # a sibling won the same instant
            return
        held[slot] = (route, value)
        await record(Attempt(route, True, (trio.current_time() - started) * 1000))
        tier_scope.cancel()

    async def run_tier(slot: int, tier: list[Route]) -> None:
        try:
            async with trio.open_nursery() as nursery:
                for route in tier:
                    failed = trio.Event()
                    nursery.start_soon(one, route, nursery.cancel_scope, failed, slot)
                    with trio.move_on_after(stagger):
                        await failed.wait()
        finally:
            done[slot].set()

    winner: tuple[Route, T] | None = None
    try:
        async with trio.open_nursery() as nursery:
            for slot, tier in enumerate(groups):
                nursery.start_soon(run_tier, slot, tier)
            for slot in range(len(groups)):
                await done[slot].wait()
                if held[slot] is not None:
                    winner = held[slot]
                    break
            nursery.cancel_scope.cancel()
    finally:  # also when the caller is cancelled: nothing we connected is left open
        with trio.CancelScope(shield=True):
            for entry in held:
                if entry is not None and entry is not winner:
                    await discard(entry[1])
        if winner is not None and trio.current_effective_deadline() == -float("inf"):
            with trio.CancelScope(shield=True):
                await discard(winner[1])
    if winner is None:
        tried = [a for a in attempts if not a.skipped]
        summary = "; ".join(f"{a.route.label} {a.route.url}: {a.error}" for a in tried)
        raise decisive(NoRouteError(f"no route to the relay answered ({summary})",
                                    attempts=[a.to_dict() for a in attempts],
                                    hint="check that the relay is running and reachable from this network"))
    return Won(winner[0], winner[1], attempts)


def decisive(exc: NoRouteError) -> HermesError:
    """The error that should drive the caller when every route failed.

    A pin mismatch on every route tried is a PinMismatchError (stop, ask the user); a rate limit on
    any route is a RateLimitedError (wait it out: never hammer a relay that asked us to back off);
    anything else stays the NoRouteError with every attempt's outcome.
    """
    tried = [a for a in exc.attempts if not a.get("skipped")]
    pins = [a for a in tried if a.get("code") == "pin_mismatch"]
    if pins and len(pins) == len(tried):
        data = pins[0]["data"]
        return PinMismatchError(data["url"], data["expected"], data["got"])
    limited = [a for a in tried if a.get("code") == "rate_limited"]
    if limited:
        waits = [a["data"].get("retry_after") for a in limited if a["data"].get("retry_after")]
        return RateLimitedError(retry_after=max(waits) if waits else None)
    if len(tried) == 1:  # one route: its own error says more (refused vs TLS vs not a relay) than "no route"
        (only,) = tried
        message = only["error"] if only["url"] in only["error"] else f"{only['url']}: {only['error']}"
        return error_from_wire({"code": only["code"], "message": message, "data": dict(only["data"])})
    return exc
