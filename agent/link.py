"""One paired relay kept connected: probe → connect → auth → keepalive → (drop) → backoff → repeat.

Failure classes and what each does (the pairing in the store is never deleted here):
- network errors and timeouts: back off with full jitter (1 s doubling to 30 s), retry; a network
  change, a wall-clock jump or ``reload`` skips the wait;
- ``auth.fail`` on the stored token: try the refresh token once, then record a verdict (revoked, or
  expired when the session's TTL has passed) and stop, so we never trip the relay's per-IP block;
- HTTP 429: wait out the block (Retry-After, else the relay's longest block);
- certificate pin mismatch: record a verdict and stop until ``pin accept`` or a new pairing.

While connected: a WebSocket ping every ``ping_interval`` (a link that does not answer within one
interval is dead, so silence is detected within two), an immediate ping on a network change, and
while on a lower-priority route, probes of the higher tiers (periodically and on every change); the
link moves up only after the higher tier answers twice ``upgrade_hysteresis`` apart.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio
import trio_websocket

from hermes_relay.agent import prober, transport
from hermes_relay.core import api, backoff
from hermes_relay.core.errors import (
    AuthRejectedError,
    ConnectionLostError,
    HermesError,
    PinMismatchError,
    ProtocolError,
    RateLimitedError,
    StateError,
    TransportError,
    UsageError,
)
from hermes_relay.core.routes import Route, host_port, make_routes, normalize_relay_url
from hermes_relay.core.store import resolve_in

if TYPE_CHECKING:
    from hermes_relay.agent.app import Agent

log = logging.getLogger(__name__)


class Signal:
    """A re-armable broadcast: ``fire`` wakes every current waiter."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait(self) -> None:
        await self._event.wait()


class _Reconnect(Exception):
    """Leave the current connection on purpose: a better route (at once), or the relay closed us with
    4001 (after the usual backoff delay, so a relay that keeps doing it cannot cause a hot loop)."""

    def __init__(self, reason: str, *, immediate: bool):
        super().__init__(reason)
        self.immediate = immediate


def routes_for(url: str, record: dict[str, Any]) -> list[Route]:
    """The owner URL plus every alternate route of the pairing, in strict priority order."""
    candidates: list[tuple[str, str | None, int | None]] = []
    for cand in record.get("route_candidates") or []:
        if isinstance(cand, dict):
            relay = cand.get("relay") if isinstance(cand.get("relay"), dict) else {}
            c_url = relay.get("url") or cand.get("url")
            prio = cand.get("priority")
            if isinstance(c_url, str):
                candidates.append((c_url, cand.get("role") if isinstance(cand.get("role"), str) else None,
                                   prio if isinstance(prio, int) and not isinstance(prio, bool) else None))
        elif isinstance(cand, str):
            candidates.append((cand, None, None))
    if url not in [c[0] for c in candidates]:
        role = record.get("endpoint_role") if isinstance(record.get("endpoint_role"), str) else None
        candidates.insert(0, (url, role, 0 if not candidates else None))
    # Other clients write this file too: a URL we cannot use is skipped, never fatal.
    return make_routes([c for c in candidates if _usable(c[0])])


def _usable(url: str) -> bool:
    try:
        normalize_relay_url(url)
        host_port(url)
    except (UsageError, ValueError):
        log.warning("route_unusable url=%r", url)
        return False
    return True


def pin_for(owner: str, record: dict[str, Any], url: str) -> str | None:
    if url == owner:
        pin = record.get("cert_pin_sha256")
    else:
        pins = record.get("route_cert_pins") if isinstance(record.get("route_cert_pins"), dict) else {}
        pin = pins.get(url)
    return pin if isinstance(pin, str) and pin else None


def route_info(route: Route | None) -> dict[str, Any] | None:
    if route is None:
        return None
    return {"url": route.url, "role": route.role, "label": route.label, "priority": route.priority}


class RelayLink:
    def __init__(self, agent: Agent, url: str):
        self.agent = agent
        self.config = agent.config
        self.url = url
        self.state = api.CONNECTING
        self.route: Route | None = None
        self.routes: list[Route] = []
        self.since: float | None = None
        self.latency_ms: float | None = None
        self.attempts = 0
        self.last_error: dict[str, Any] | None = None
        self.next_retry_at: float | None = None
        self.server_version: str | None = None
        self.wake_signal = Signal()  # skip the backoff wait / leave a stopped state to re-check
        self.net_signal = Signal()  # the network changed: check the link and the higher tiers now
        self.cancel_scope = trio.CancelScope()
        # Credentials the relay issued that could not be written to the store yet (disk full, lock
        # held): (token they replace, auth.ok payload, route URL, pin). Used instead of the stale
        # stored ones, so a failed write cannot turn a refresh into a revoked pairing.
        self._unsaved: tuple[str | None, dict[str, Any], str, str | None] | None = None

    # -- public --------------------------------------------------------------------------------
    def wake(self) -> None:
        self.wake_signal.fire()

    def network_changed(self) -> None:
        self.net_signal.fire()
        self.wake_signal.fire()

    def snapshot(self) -> dict[str, Any]:
        return {
            "url": self.url, "state": self.state, "route": route_info(self.route), "since": self.since,
            "latency_ms": self.latency_ms, "attempts": self.attempts, "last_error": self.last_error,
            "next_retry_at": self.next_retry_at, "routes": [route_info(r) for r in self.routes],
            "server_version": self.server_version,
        }

    async def run(self) -> None:
        with self.cancel_scope:
            while True:
                try:
                    await self._loop()
                except Exception as exc:  # supervision point: one broken pairing never stops the agent
                    log.exception("link_crashed url=%s", self.url)
                    wait = self.config.backoff_cap
                    self._set(api.BACKOFF, route=None, since=None, next_retry_at=self._now() + wait, last_error={
                        "code": "internal_error", "message": f"agent error while keeping {self.url}: {exc!r}",
                        "data": {"hint": "see `hermes-relay agent logs`; the link retries by itself"}})
                    await self._sleep_or_wake(wait)

    # -- the loop ------------------------------------------------------------------------------
    def _set(self, state: str, **fields: Any) -> None:
        self.state = state
        for key, value in fields.items():
            setattr(self, key, value)
        self.agent.publish(self)

    def _now(self) -> float:
        return self.config.wall_clock()

    async def _sleep_or_wake(self, seconds: float) -> None:
        with trio.move_on_after(seconds):
            await self.wake_signal.wait()

    async def _loop(self) -> None:
        delays = self._delays()
        while True:
            try:
                found = resolve_in(self.agent.store.sessions(), self.url)
            except StateError as exc:
                self._set(api.BACKOFF, last_error=exc.to_wire(), route=None, next_retry_at=self._now() + 30)
                await self._sleep_or_wake(30)
                continue
            if found is None:
                self._set(api.NOT_PAIRED, route=None, last_error=None)
                await self.wake_signal.wait()
                continue
            _, record = found
            token = record.get("token") if isinstance(record.get("token"), str) else None
            if self._unsaved is not None and self._unsaved[0] == token:
                self._flush_unsaved()
                if self._unsaved is not None:
                    record = {**record, "token": self._unsaved[1]["session_token"],
                              "refresh_token": self._unsaved[1].get("refresh_token") or record.get("refresh_token")}
                    token = record["token"]
            else:
                self._unsaved = None  # re-paired meanwhile: the store's credentials are newer
            self.routes = routes_for(self.url, record)
            self.server_version = record.get("server_version")
            mark = self.agent.marks.get(self.url, token)
            if mark is not None:
                self._set(mark["state"], route=None, last_error=mark.get("error"), next_retry_at=None, since=None)
                await self.wake_signal.wait()
                continue
            self._set(api.CONNECTING, route=None, next_retry_at=None)
            connected_at: list[float] = []
            try:
                await self._session(record, token, connected_at)
            except _Reconnect as why:
                log.info("link_reconnect url=%s reason=%s", self.url, why)
                if why.immediate:
                    delays = self._delays()
                    continue
                delay = next(delays)
                self._set(api.BACKOFF, last_error=None, route=None, since=None, next_retry_at=self._now() + delay)
                await self._sleep_or_wake(delay)
                continue
            except PinMismatchError as exc:
                log.warning("link_pin_mismatch url=%s expected=%s got=%s", self.url, exc.expected, exc.got)
                self.agent.marks.set(self.url, token, api.PIN_MISMATCH, exc.to_wire(), self._now())
                continue
            except AuthRejectedError as exc:
                verdict = api.EXPIRED if _expired(record, self._now()) else api.REVOKED
                log.warning("link_credentials_rejected url=%s verdict=%s", self.url, verdict)
                self.agent.marks.set(self.url, token, verdict, exc.to_wire(), self._now())
                continue
            except RateLimitedError as exc:
                wait = exc.retry_after or transport.RATE_LIMIT_DEFAULT_WAIT
                self.attempts += 1
                self._set(api.RATE_LIMITED, last_error=exc.to_wire(), route=None, next_retry_at=self._now() + wait)
                with trio.move_on_after(wait):
                    await trio.sleep_forever()  # the block does not end sooner because the network changed
                continue
            except (TransportError, ProtocolError) as exc:
                if connected_at and trio.current_time() - connected_at[0] >= self.config.stable_after:
                    delays = self._delays()
                delay = next(delays)
                self.attempts += 1
                log.info("link_down url=%s error=%s retry_in=%.1fs", self.url, exc.message, delay)
                self._set(api.BACKOFF, last_error=exc.to_wire(), route=None, since=None,
                          next_retry_at=self._now() + delay)
                await self._sleep_or_wake(delay)

    def _flush_unsaved(self) -> None:
        """Write what the last auth.ok said to the store; on failure keep it for the next try."""
        if self._unsaved is None:
            return
        used, ok, route_url, pin = self._unsaved
        try:
            self.agent.save_auth(self.url, route_url, ok, pin, used_token=used)
        except (StateError, OSError) as exc:
            log.error("store_write_failed url=%s error=%s (kept in memory, retried)", self.url, exc)
            return
        self._unsaved = None

    def _delays(self):
        return backoff.full_jitter(base=self.config.backoff_base, cap=self.config.backoff_cap, rng=self.config.rng)

    async def _session(self, record: dict[str, Any], token: str | None, connected_at: list[float]) -> None:
        if not token:
            raise AuthRejectedError(f"no token stored for {self.url}", hint="pair again with `hermes-relay pair`")
        failure: list[BaseException] = []
        conns: list[transport.Connected] = []
        try:
            async with trio.open_nursery() as nursery:
                try:
                    won = await self._race(nursery, self.routes, record)
                    dialed, ws = won.value
                    conns.append(won.value)
                    try:
                        ok = await transport.authenticate(ws, self.agent.auth_payload(session_token=token), url=dialed.route.url)
                    except AuthRejectedError:
                        await transport.discard(won.value)
                        refreshed, ok = await self._refresh(nursery, record, dialed.route)
                        conns.append(refreshed)
                        ws = refreshed[1]
                    self._unsaved = (token, ok, dialed.route.url, dialed.pin)
                    self._flush_unsaved()
                    connected_at.append(trio.current_time())
                    self.attempts = 0
                    log.info("link_up url=%s route=%s latency_ms=%.0f", self.url, dialed.route.url, dialed.elapsed * 1000)
                    self._set(api.CONNECTED, route=dialed.route, since=self._now(), latency_ms=round(dialed.elapsed * 1000, 1),
                              last_error=None, server_version=ok.get("server_version") or self.server_version)

                    def guard(fn: Callable[..., Awaitable[None]], *args: Any) -> Callable[[], Awaitable[None]]:
                        async def task() -> None:
                            try:
                                await fn(*args)
                            except (HermesError, _Reconnect) as exc:
                                failure.append(exc)
                                nursery.cancel_scope.cancel()
                        return task

                    nursery.start_soon(guard(self._keepalive, ws))
                    nursery.start_soon(guard(self._reader, ws))
                    higher = [r for r in self.routes if r.priority < dialed.route.priority]
                    if higher:
                        nursery.start_soon(guard(self._upgrade_watch, higher, record))
                except (HermesError, _Reconnect) as exc:
                    failure.append(exc)
                    nursery.cancel_scope.cancel()
        finally:
            for conn in conns:
                await transport.discard(conn)
        if failure:
            raise failure[0]
        raise ConnectionLostError(f"{self.url}: connection ended")

    async def _race(self, nursery: trio.Nursery, routes: list[Route], record: dict[str, Any], *,
                    use_cache: bool = True) -> prober.Won[transport.Connected]:
        async def connect(route: Route) -> transport.Connected:
            return await transport.connect(nursery, route, expected_pin=pin_for(self.url, record, route.url),
                                           timeout=self.config.probe_timeout)

        return await prober.race(routes, connect, transport.discard, stagger=self.config.probe_stagger,
                                 timeout=self.config.probe_timeout, cache=self.agent.cache if use_cache else None)

    async def _refresh(self, nursery: trio.Nursery, record: dict[str, Any],
                       route: Route) -> tuple[transport.Connected, dict[str, Any]]:
        """The stored token was refused: try the refresh token once on the same route."""
        refresh = record.get("refresh_token")
        if not isinstance(refresh, str) or not refresh:
            raise AuthRejectedError(f"{self.url} rejected the stored session token",
                                    hint="the session was revoked or expired: pair again with `hermes-relay pair`")
        conn = await transport.connect(nursery, route, expected_pin=pin_for(self.url, record, route.url),
                                       timeout=self.config.probe_timeout)
        try:
            ok = await transport.authenticate(conn[1], self.agent.auth_payload(refresh_token=refresh), url=route.url)
        except AuthRejectedError:
            await transport.discard(conn)
            raise
        log.info("link_token_refreshed url=%s", self.url)
        return conn, ok

    async def _keepalive(self, ws: trio_websocket.WebSocketConnection) -> None:
        interval = self.config.ping_interval
        while True:
            limit = interval
            with trio.move_on_after(interval):
                await self.net_signal.wait()
                limit = min(interval, self.config.probe_timeout)  # the network changed: is this path alive?
            self._flush_unsaved()
            started = trio.current_time()
            try:
                with trio.fail_after(limit):
                    await ws.ping()
            except trio.TooSlowError:
                raise ConnectionLostError(f"{self.url}: no keepalive answer within {limit:g}s (link is silent)") from None
            except trio_websocket.ConnectionClosed as exc:
                raise self._closed(exc) from None
            self.latency_ms = round((trio.current_time() - started) * 1000, 1)

    async def _reader(self, ws: trio_websocket.WebSocketConnection) -> None:
        while True:
            try:
                message = await ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                raise self._closed(exc) from None
            log.debug("link_message url=%s bytes=%d", self.url, len(message))

    def _closed(self, exc: trio_websocket.ConnectionClosed) -> Exception:
        if exc.reason is not None and exc.reason.code == 4001:
            # The relay ended this session (revoked, rotated or replaced): ask it again at once;
            # only its auth.fail, not this close, decides that the pairing is gone.
            return _Reconnect(f"relay closed the session ({transport.close_text(exc)})", immediate=False)
        return ConnectionLostError(f"{self.url}: the relay closed the connection ({transport.close_text(exc)})")

    async def _probe(self, routes: list[Route], record: dict[str, Any]) -> prober.Won[transport.Connected] | None:
        """Is one of ``routes`` answering right now? (uncached; the connection is closed again)"""
        result: list[prober.Won[transport.Connected]] = []
        async with trio.open_nursery() as nursery:
            try:
                won = await self._race(nursery, routes, record, use_cache=False)
            except HermesError as exc:  # the higher tier is not usable now (down, pin, rate limited)
                log.debug("upgrade_probe_failed url=%s error=%s", self.url, exc.message)
            else:
                result.append(won)
                await transport.discard(won.value)
            nursery.cancel_scope.cancel()
        return result[0] if result else None

    async def _upgrade_watch(self, higher: list[Route], record: dict[str, Any]) -> None:
        confirmations = 0
        while True:
            if confirmations:
                # Hysteresis: a second answer a full interval later, whatever the network does
                # meanwhile, so a route that flaps during a Wi-Fi join is not chosen.
                await trio.sleep(self.config.upgrade_hysteresis)
            else:
                with trio.move_on_after(self.config.upgrade_interval):
                    await self.net_signal.wait()
            won = await self._probe(higher, record)
            if won is None:
                confirmations = 0
                continue
            self.agent.cache.record(won.route.url, True)
            confirmations += 1
            if confirmations >= 2:
                raise _Reconnect(f"moving up to {won.route.label} {won.route.url}", immediate=True)


def _expired(record: dict[str, Any], now: float) -> bool:
    exp = record.get("ttl_expires_at")
    return isinstance(exp, (int, float)) and not isinstance(exp, bool) and exp <= now


def owner_urls(sessions: dict[str, dict[str, Any]]) -> list[str]:
    """Every record that has a token (one link each); alternate routes are not separate links."""
    return [url for url, rec in sessions.items() if isinstance(rec.get("token"), str) and rec.get("token")]

