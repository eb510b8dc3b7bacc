"""One paired relay kept connected: the trio driver over the state machine in core/linkstate.py.

``core/linkstate.py`` decides (states, transitions, backoff, verdicts, hysteresis; its header has the
table of what happens on a network change). This module does the I/O and reports each outcome to it
as an event: store reads and writes (in worker threads, so a held store lock never freezes the
agent), route races and auth (agent/transport.py), and, while connected, these tasks:

- keepalive: a WebSocket ping every ``ping_interval`` (at once, with the probe timeout, on a network
  change); a link that does not answer is dead;
- reader: decodes each envelope; answers ``system/ping``; hands ``terminal`` envelopes and
  ``system/pong``/``system/error`` to the terminal service and every other non-system envelope to the
  desktop service (each ``serve_link``, beside it; neither can take the link down);
- upgrade watch (on a lower-priority route): probes of the higher tiers, with hysteresis;
- expiry watch: when the stored expiry passes, authenticate again (the relay decides: a refresh, or
  the verdict "expired"), so ``connected`` is never shown beside an expired session;
- revocation check: every ``revocation_check_interval`` a bearer ``GET /sessions``; 401/403 means the
  relay no longer accepts the token although it kept the socket open: authenticate again.

A refused token is retried once with the refresh token (the agent's own copy in agent/credentials.py,
else the store's); only when both are refused is a verdict recorded. The pairing is never deleted here.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import trio

from ..core import envelope, linkstate, wire
from ..core.errors import (
    AuthRejectedError,
    ConnectionLostError,
    HermesError,
    PinMismatchError,
    ProtocolError,
    RateLimitedError,
    StateError,
    TransportError,
)
from ..core.linkstate import Do, LinkError, LinkMachine, LinkState, Next, Verdict, verdict
from ..core.record import Record, expiry, from_dict
from ..core.routes import Route, host_port
from ..core.store import resolve_in
from . import prober, transport

if TYPE_CHECKING:
    from .terminal.ports import TerminalSeam

log = logging.getLogger(__name__)
INBOUND_BUFFER = 64  # envelopes waiting for the desktop service before the reader waits too
SHELL_PING = 5.0  # while a shell is attached: a ping every 5 s, 5 s deadline (an idle black hole in ≤ 10 s)
SHELL_RETRY = 0.5  # while a shell waits to reattach: dial again within this, not after the backoff
SUSPECT_DEADLINE = 1.0  # a shell's input goes unacknowledged: ping now, dead after max(this, 4 × the round trip)
_Refusal = TypeVar("_Refusal", linkstate.Rejected, linkstate.VerdictStored)


class Signal:
    """A re-armable broadcast: ``fire`` wakes every current waiter.

    ``generation`` counts the fires, so a task that must not miss one between deciding to wait and
    waiting (the link records its verdict in a worker thread first) waits with ``wait(since=...)``.
    """

    def __init__(self) -> None:
        self._event = trio.Event()
        self.generation = 0

    def fire(self) -> None:
        self.generation += 1
        self._event.set()
        self._event = trio.Event()

    async def wait(self, since: int | None = None) -> None:
        if since is not None and self.generation != since:
            await trio.lowlevel.checkpoint()
            return
        await self._event.wait()


class LinkHost(Protocol):
    """What a link needs from the agent (agent/backend.py's AgentBackend provides it). File access is async:
    the agent runs it in worker threads, so a held lock or a slow disk never blocks the event loop."""

    config: Any  # AgentConfig: timings, wall_clock, rng
    cache: prober.ReachabilityCache
    desktop: Any  # agent/desktop/service.py DesktopService: serve_link(port, inbound)

    async def read_sessions(self) -> dict[str, dict[str, Any]]: ...

    async def save_auth(self, owner: str, route_url: str, ok: dict[str, Any], pin: str | None, *,
                        used_token: str | None) -> None: ...

    async def verdict(self, url: str, token: str | None) -> dict[str, Any] | None: ...

    async def set_verdict(self, url: str, token: str | None, state: str, error: dict[str, Any], at: float) -> None: ...

    async def refresh_token(self, url: str, token: str | None) -> str | None: ...

    async def keep_refresh_token(self, url: str, token: str, refresh: str, at: float) -> None: ...

    def repairing(self, url: str) -> bool: ...

    def publish(self, link: RelayLink) -> None: ...

    def auth_payload(self, record: Record | None = None, **credentials: Any) -> dict[str, Any]: ...


class Net(Protocol):
    """The network calls a link makes (agent/transport.py; scripted in tests)."""

    async def connect(self, nursery: trio.Nursery, route: Route, *, expected_pin: str | None,
                      timeout: float = ...) -> Any: ...

    async def authenticate(self, conn: Any, payload: dict[str, Any], *, timeout: float = ...,
                           url: str = "") -> dict[str, Any]: ...

    async def discard(self, conn: Any) -> None: ...

    async def dial(self, route: Route, *, expected_pin: str | None, timeout: float = ...) -> Any: ...

    async def resolve(self, host: str, port: int) -> list[Any]: ...

    async def http_request(self, dialed: Any, method: str, path: str, *, token: str | None = None,
                           body: dict[str, Any] | None = None, timeout: float = ...) -> tuple[int, Any]: ...


class _Again(Exception):
    """Leave the connection on purpose and authenticate again: at once (a better route, expiry, a failed
    bearer check) or after the usual delay (the relay closed us with CLOSE_AUTH_FAILED, so a relay that
    keeps doing it cannot cause a hot loop)."""

    def __init__(self, reason: str, *, immediate: bool):
        super().__init__(reason)
        self.immediate = immediate


def _item(env: envelope.Envelope) -> dict[str, Any]:
    return {"channel": env.channel, "type": env.type, "id": env.id, "payload": env.payload}


def _service_channel(env: envelope.Envelope, inbound: trio.MemorySendChannel[dict[str, Any]],
                     terminal: trio.MemorySendChannel[dict[str, Any]]) -> trio.MemorySendChannel[dict[str, Any]]:
    """Where ``env`` goes: the terminal service's channel (it also takes the relay's pongs and errors), else
    the desktop service's."""
    return terminal if env.channel in (envelope.SYSTEM, "terminal") else inbound


def _stored_verdict(mark: dict[str, Any] | None) -> linkstate.VerdictStored | None:
    """The verdict event for a mark from agent/marks.py (None: no mark, or one this version does not know)."""
    if mark is None:
        return None
    try:
        verdict = LinkState(mark.get("state"))
    except ValueError:
        log.warning("verdict_unknown state=%r (ignored)", mark.get("state"))
        return None
    error = mark.get("error")
    return linkstate.VerdictStored(verdict, LinkError.from_wire(error) if isinstance(error, dict) else None)


# -- the desktop seam ---------------------------------------------------------------------------------
class _Port:
    """agent/desktop/service.py's LinkPort over one authenticated connection."""

    def __init__(self, url: str, conn: transport.Connection, reconnect: Callable[..., None],
                 check: Callable[[], None] = lambda: None):
        self.url = url
        self.route_url = conn.route.url
        self.route_label = conn.route.label
        self._conn = conn
        self.reconnect = reconnect  # end this connection and dial again at once (the relay forgets it)
        self.check = check  # ping this connection now, with the probe timeout (agent/terminal/ports.py)
        # Set by the desktop channel while it keeps up: the reader hands it desktop envelopes at once,
        # with no memory channel and scheduler pass between (agent/desktop/channel.py).
        self.direct: Callable[[dict[str, Any]], None] | None = None

    async def send(self, message: dict[str, Any]) -> None:
        if isinstance(message, envelope.Encoded):  # measured, and so encoded, already (core/desktop.py)
            await self._conn.send_utf8(message.data)
            return
        env = envelope.Envelope(str(message.get("channel") or ""), str(message.get("type") or ""),
                                message.get("payload") or {}, str(message.get("id") or uuid.uuid4()))
        await self._conn.send_text(env.encode())


# -- the driver ---------------------------------------------------------------------------------------
class RelayLink:
    def __init__(self, host: LinkHost, url: str, *, net: Net = transport):  # type: ignore[assignment]
        self.host = host
        self.net = net
        self.config = host.config
        self.url = url
        # The terminal service (agent/terminal/ports.py TerminalSeam), when the host has one; shells need none.
        self.shells: TerminalSeam | None = getattr(host, "terminal", None)
        self.machine = LinkMachine(url, backoff_base=self.config.backoff_base, backoff_cap=self.config.backoff_cap,
                                   stable_after=self.config.stable_after,
                                   rate_limit_wait=transport.RATE_LIMIT_DEFAULT_WAIT, rng=self.config.rng)
        self.wake_signal = Signal()  # skip the backoff wait / leave a stopped state to re-check
        self._woken_at = 0  # wake_signal.generation when the last event was handled
        self.net_signal = Signal()  # the network changed: check the link and the higher tiers now
        self.clock_signal = Signal()  # the wall clock stepped (suspend/resume, a clock change): expiry looks again
        self._suspected = False  # a shell's input goes unacknowledged: the next check has a short deadline
        self._keep_wait: trio.CancelScope | None = None  # the keepalive's wait for its next ping
        if self.shells is not None:
            self.shells.on_open(url, self._shell_opened)
        self.cancel_scope = trio.CancelScope()
        # Credentials the relay issued that could not be written to the store yet (disk full, lock
        # held): (token they replace, auth.ok payload, route URL, pin). Used instead of the stale
        # stored ones, so a failed write cannot turn a refresh into a revoked pairing.
        self._unsaved: tuple[str | None, dict[str, Any], str, str | None] | None = None
        self._published: linkstate.LinkSnapshot | None = None

    # -- public --------------------------------------------------------------------------------
    @property
    def state(self) -> LinkState:
        return self.machine.state

    def wake(self) -> None:
        self.wake_signal.fire()

    def network_changed(self) -> None:
        self.net_signal.fire()
        self.wake_signal.fire()

    def clock_changed(self) -> None:
        self.clock_signal.fire()

    def snapshot(self) -> dict[str, Any]:
        return self.machine.snapshot().to_wire()

    async def run(self) -> None:
        with self.cancel_scope:
            while True:
                try:
                    await self._loop()
                except Exception as exc:  # supervision point: one broken pairing never stops the agent
                    log.exception("link_crashed url=%s", self.url)
                    await self._follow(self._event(linkstate.Crashed(LinkError(
                        "internal_error", f"agent error while keeping {self.url}: {exc!r}",
                        "see `hermes-relay agent logs`; the link retries by itself"))))

    # -- state ---------------------------------------------------------------------------------
    def _now(self) -> float:
        return float(self.config.wall_clock())

    def _event(self, event: linkstate.Event, now: float | None = None) -> Next:
        """Hand ``event`` to the machine (at ``now``: the instant its verdict, if any, was decided)."""
        self._woken_at = self.wake_signal.generation  # a wake-up from here on ends the next wait
        nxt = self.machine.handle(event, self._now() if now is None else now)
        shown = self.machine.snapshot()
        if shown != self._published:  # watchers see changes, not every step that changed nothing
            self._published = shown
            self.host.publish(self)
        return nxt

    async def _follow(self, nxt: Next) -> None:
        if nxt.do is Do.WAIT:
            with trio.move_on_after(nxt.delay):
                await self.wake_signal.wait(since=self._woken_at)
        elif nxt.do is Do.WAIT_FULL:
            await trio.sleep(nxt.delay)  # a rate-limit block does not end sooner because the network changed
        elif nxt.do is Do.IDLE:
            await self.wake_signal.wait(since=self._woken_at)

    # -- the loop ------------------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            try:
                sessions = await self.host.read_sessions()
            except StateError as exc:
                await self._follow(self._event(linkstate.StoreUnreadable(LinkError.of(exc))))
                continue
            found = resolve_in(sessions, self.url)
            if found is None:
                await self._follow(self._event(linkstate.Unpaired()))
                continue
            _, raw = found
            record = from_dict(self.url, raw)
            token = record.token
            if self._unsaved is not None and self._unsaved[0] == token:
                await self._flush_unsaved()
                if self._unsaved is not None:
                    ok = self._unsaved[1]
                    record = from_dict(self.url, {**raw, "token": ok.get("session_token") or token,
                                                  "refresh_token": ok.get("refresh_token") or raw.get("refresh_token")})
                    token = record.token
            else:
                self._unsaved = None  # re-paired meanwhile: the store's credentials are newer
            marked = _stored_verdict(await self.host.verdict(self.url, token))
            if marked is not None:
                # Pairing again under another URL makes the relay refuse this token before the new
                # pairing reaches the store; once it has, the refusal reads as what it was.
                now = self._now()
                stored = await self._look_for_newer(marked, record, sessions, now)
                decided = verdict(self.url, stored, now)
                if decided.state is not marked.verdict:
                    await self._mark(token, decided, now)
                await self._follow(self._event(stored, now))
                continue
            routes = record.routes()
            self._event(linkstate.Dial(tuple(routes), record.server_version))
            connected_at: list[float] = []
            try:
                await self._session(record, routes, token, connected_at)
            except _Again as why:
                log.info("link_reconnect url=%s reason=%s", self.url, why)
                if why.immediate:
                    self._event(linkstate.Reauthenticate(str(why)))
                else:
                    await self._follow(self._event(linkstate.SessionEnded(str(why))))
            except PinMismatchError as exc:
                log.warning("link_pin_mismatch url=%s expected=%s got=%s", self.url, exc.expected, exc.got)
                await self._decide(token, linkstate.PinChanged(LinkError.of(exc)), self._now())
            except AuthRejectedError as exc:
                now = self._now()
                rejected = await self._look_for_newer(linkstate.Rejected(LinkError.of(exc), record.expires_at),
                                                      record, sessions, now)
                decided = verdict(self.url, rejected, now)
                log.warning("link_credentials_rejected url=%s verdict=%s", self.url, decided.state.value)
                await self._mark(token, decided, now)  # as _decide, with the shells told in between
                if self.shells is not None:  # they end now, not as a link that never came back
                    self.shells.refused(self.url, decided.state.value)
                await self._follow(self._event(rejected, now))
            except RateLimitedError as exc:
                await self._follow(self._event(linkstate.Limited(LinkError.of(exc), exc.retry_after)))
            except (TransportError, ProtocolError) as exc:
                up_for = trio.current_time() - connected_at[0] if connected_at else None
                nxt = self._event(linkstate.Dropped(LinkError.of(exc), up_for))
                if self._shell_attached():  # a user typing into the gap: no exponential backoff (the dials a
                    # restart's gap failed would have built one up); the first dial after a working link is at once
                    nxt = replace(nxt, delay=0.0 if up_for is not None else min(nxt.delay, SHELL_RETRY))
                log.info("link_down url=%s error=%s retry_in=%.1fs", self.url, exc.message, nxt.delay)
                await self._follow(nxt)

    async def _look_for_newer(self, event: _Refusal, record: Record, sessions: dict[str, dict[str, Any]],
                              now: float) -> _Refusal:
        """``event`` with the newer pairing of this relay stored under another URL, if one exists and the
        refusal would otherwise read as revoked (an expired or pinned one is what it says)."""
        if verdict(self.url, event, now).state is not LinkState.REVOKED:
            return event
        newer = await self._replaced_by(record, sessions)
        return replace(event, replaced_by=newer) if newer else event

    async def _decide(self, token: str | None, event: linkstate.VerdictEvent, now: float) -> None:
        """Record the verdict ``event`` leads to (before anyone is shown it), then show and follow it."""
        await self._mark(token, verdict(self.url, event, now), now)
        await self._follow(self._event(event, now))

    async def _mark(self, token: str | None, decided: Verdict, now: float) -> None:
        """Record a verdict beside the token, so a restarted agent does not ask the relay again."""
        error = decided.error.to_wire() if decided.error else {}
        try:
            await self.host.set_verdict(self.url, token, decided.state.value, error, now)
        except (StateError, OSError) as exc:  # shown now; only a restart asks the relay again
            log.error("verdict_not_saved url=%s error=%s", self.url, exc)

    async def _flush_unsaved(self) -> None:
        """Write what the last auth.ok said to the store; on failure keep it for the next try."""
        if self._unsaved is None:
            return
        used, ok, route_url, pin = self._unsaved
        try:
            await self.host.save_auth(self.url, route_url, ok, pin, used_token=used)
        except (StateError, OSError) as exc:
            log.error("store_write_failed url=%s error=%s (kept in memory, retried)", self.url, exc)
            return
        if self._unsaved is not None and self._unsaved[1] is ok:
            self._unsaved = None

    async def _keep_refresh(self, token: str, refresh: str | None) -> None:
        """Keep the refresh token of session ``token`` in the agent's own file."""
        if not refresh:
            return
        try:
            await self.host.keep_refresh_token(self.url, token, refresh, self._now())
        except (StateError, OSError) as exc:
            log.error("credentials_write_failed url=%s error=%s", self.url, exc)

    # -- one connection ------------------------------------------------------------------------
    async def _session(self, record: Record, routes: list[Route], token: str | None,
                       connected_at: list[float]) -> None:
        if not token:
            raise AuthRejectedError(f"no token stored for {self.url}", hint="pair again with `hermes-relay pair`")
        failure: list[BaseException] = []
        conns: list[transport.Connection] = []
        try:
            async with trio.open_nursery() as nursery:
                try:
                    won = await self._race(nursery, routes, record)
                    conns.append(won.value)
                    conn, ok, used = await self._authenticate(nursery, won.value, record, token, conns)
                    new_token = ok.get("session_token") if isinstance(ok.get("session_token"), str) else None
                    self._unsaved = (token, ok, conn.route.url, conn.dialed.pin)
                    await self._flush_unsaved()
                    session_token = new_token or used
                    refresh = ok.get("refresh_token") if isinstance(ok.get("refresh_token"), str) else None
                    if refresh is None and used == token:
                        refresh = record.refresh_token
                    await self._keep_refresh(session_token, refresh)
                    connected_at.append(trio.current_time())
                    elapsed = conn.dialed.elapsed
                    log.info("link_up url=%s route=%s latency_ms=%.0f", self.url, conn.route.url, elapsed * 1000)
                    server_version = ok.get("server_version")
                    self._event(linkstate.Authenticated(conn.route, round(elapsed * 1000, 1),
                                                        server_version if isinstance(server_version, str) else None))

                    def guard(fn: Callable[..., Awaitable[None]], *args: Any) -> Callable[[], Awaitable[None]]:
                        async def task() -> None:
                            try:
                                await fn(*args)
                            except (HermesError, _Again) as exc:
                                if isinstance(exc, _Again) and exc.immediate:
                                    await self._planned_leave()  # the reader still runs: input can be acked
                                failure.append(exc)
                                nursery.cancel_scope.cancel()
                        return task

                    def reconnect(reason: str, *, immediate: bool = True) -> None:
                        failure.append(_Again(reason, immediate=immediate))
                        nursery.cancel_scope.cancel()

                    inbound_send, inbound_receive = trio.open_memory_channel[dict[str, Any]](INBOUND_BUFFER)
                    port = _Port(self.url, conn, reconnect, self._suspect)
                    nursery.start_soon(self._desktop, port, inbound_receive)
                    terminal_send, terminal_receive = trio.open_memory_channel[dict[str, Any]](INBOUND_BUFFER)
                    nursery.start_soon(self._terminal, port, terminal_receive)
                    nursery.start_soon(guard(self._keepalive, conn))
                    nursery.start_soon(guard(self._reader, conn, inbound_send, terminal_send, port))
                    expires_at = expiry(ok["expires_at"]) if "expires_at" in ok else record.expires_at
                    if expires_at is not None and expires_at > self._now():
                        nursery.start_soon(guard(self._expiry_watch, expires_at))
                    nursery.start_soon(guard(self._revocation_watch, conn.route, record, session_token))
                    higher = [r for r in routes if r.priority < conn.route.priority]
                    if higher:
                        nursery.start_soon(guard(self._upgrade_watch, higher, record))
                except (HermesError, _Again) as exc:
                    failure.append(exc)
                    nursery.cancel_scope.cancel()
        finally:
            for c in conns:
                await self.net.discard(c)
        if failure:
            raise failure[0]
        raise ConnectionLostError(f"{self.url}: connection ended")

    async def _authenticate(self, nursery: trio.Nursery, conn: transport.Connection, record: Record,
                            token: str, conns: list[transport.Connection]) -> tuple[transport.Connection, dict[str, Any], str]:
        """auth.ok on ``conn`` with the token, else on a fresh connection with the refresh token.
        Returns (connection, auth.ok payload, the credential that was accepted)."""
        try:
            ok = await self.net.authenticate(conn, self.host.auth_payload(record, session_token=token), url=conn.route.url)
            return conn, ok, token
        except AuthRejectedError:
            await self.net.discard(conn)
            if self.host.repairing(self.url):
                # This pairing is being replaced: its refresh token is on standby for the new session
                # (our relay), and using it would retire the tokens the pairing is about to store.
                raise _Again("a new pairing of this relay is under way", immediate=False) from None
            if await self._replaced_by(record, await self.host.read_sessions()):
                # ... and once stored (under another URL), the old refresh token is the new pairing's too.
                raise AuthRejectedError(f"{self.url} rejected the stored session token") from None
            refresh = await self.host.refresh_token(self.url, token)
            if refresh is None:
                refresh = record.refresh_token
            if refresh is None:
                raise AuthRejectedError(f"{self.url} rejected the stored session token",
                                        hint="the session was revoked or expired: pair again with `hermes-relay pair`") from None
        fresh = await self.net.connect(nursery, conn.route, expected_pin=record.pin_for(conn.route.url),
                                        timeout=self.config.probe_timeout)
        conns.append(fresh)
        ok = await self.net.authenticate(fresh, self.host.auth_payload(record, refresh_token=refresh), url=conn.route.url)
        log.info("link_token_refreshed url=%s", self.url)
        return fresh, ok, refresh

    async def _race(self, nursery: trio.Nursery, routes: list[Route], record: Record, *,
                    use_cache: bool = True) -> prober.Won[transport.Connection]:
        async def connect(route: Route) -> transport.Connection:
            return await self.net.connect(nursery, route, expected_pin=record.pin_for(route.url),
                                           timeout=self.config.probe_timeout)

        return await prober.race(routes, connect, self.net.discard, stagger=self.config.probe_stagger,
                                 timeout=self.config.probe_timeout, cache=self.host.cache if use_cache else None)

    # -- while connected -----------------------------------------------------------------------
    async def _keepalive(self, conn: transport.Connection) -> None:
        interval = self.config.ping_interval
        last = trio.current_time()
        while True:
            limit = interval
            tight = self._shell_attached()  # a shell opening meanwhile cuts the wait short (_shell_opened)
            due = last + (min(interval, SHELL_PING) if tight else interval)
            changed = False
            with trio.move_on_at(due) as self._keep_wait:
                await self.net_signal.wait()
                limit = min(interval, self.config.probe_timeout)  # the network changed: is this path alive?
                changed = True
            if not changed and trio.current_time() < due:
                continue
            if tight or self._shell_attached():
                limit = min(limit, SHELL_PING)
            if self._suspected:
                self._suspected = False
                limit = min(limit, max(SUSPECT_DEADLINE, 4 * (self.machine.latency_ms or 0.0) / 1000))
            await self._flush_unsaved()
            started = trio.current_time()
            try:
                with trio.fail_after(limit):
                    await conn.ping()
            except trio.TooSlowError:
                # A silent route (a black hole) would hold the next race for a whole probe timeout before a
                # lower tier may win: it counts as failed, so the race tries the others first (the upgrade
                # watch probes it uncached and moves back up once it answers).
                self.host.cache.record(conn.route.url, False)
                raise ConnectionLostError(f"{self.url}: no keepalive answer within {limit:g}s (link is silent)") from None
            except ConnectionLostError as exc:
                raise self._closed(exc) from None
            self.machine.measured(round((trio.current_time() - started) * 1000, 1))
            last = trio.current_time()

    async def _reader(self, conn: transport.Connection, inbound: trio.MemorySendChannel[dict[str, Any]],
                      terminal: trio.MemorySendChannel[dict[str, Any]], port: _Port) -> None:
        def take(message: str) -> bool:  # a message the connection read itself while this loop waits for one
            try:
                env = envelope.decode(message, max_size=wire.MAX_WS_MESSAGE)
            except ProtocolError:
                return False  # said below, as any malformed message
            return env.channel != envelope.SYSTEM and self._route_now(env, inbound, terminal, port)

        async with inbound, terminal:
            conn.deliver_to(take)
            try:
                while True:
                    try:
                        message = await conn.get_message()
                    except ConnectionLostError as exc:
                        raise self._closed(exc) from None
                    await self._route(message, conn, inbound, terminal, port)
            finally:
                conn.deliver_to(None)

    async def _route(self, message: str | bytes, conn: transport.Connection,
                     inbound: trio.MemorySendChannel[dict[str, Any]], terminal: trio.MemorySendChannel[dict[str, Any]],
                     port: _Port) -> None:
        try:
            env = envelope.decode(message, max_size=wire.MAX_WS_MESSAGE)
        except ProtocolError as exc:
            log.debug("link_message_malformed url=%s bytes=%d error=%s", self.url, len(message), exc.message)
            return
        if env.channel == envelope.SYSTEM:
            if env.type == "ping":
                ts = env.payload.get("ts")
                pong = envelope.Envelope(envelope.SYSTEM, "pong",
                                         {"ts": ts if ts is not None else int(self._now() * 1000)}, env.id)
                await conn.send_text(pong.encode())
                return
            if env.type not in ("pong", "error"):
                log.debug("link_system_message url=%s type=%s", self.url, env.type)
                return
        if self._route_now(env, inbound, terminal, port):  # no scheduler pass while the services keep up
            return
        try:
            await _service_channel(env, inbound, terminal).send(_item(env))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            log.debug("link_message_dropped url=%s channel=%s type=%s (service gone)",
                      self.url, env.channel, env.type)

    def _route_now(self, env: envelope.Envelope, inbound: trio.MemorySendChannel[dict[str, Any]],
                   terminal: trio.MemorySendChannel[dict[str, Any]], port: _Port) -> bool:
        """Hand ``env`` to its service without waiting: the desktop channel's dispatch once it has caught up,
        else its channel if that has room. False: the channel is full (or gone) and the caller waits."""
        to = _service_channel(env, inbound, terminal)
        if to is inbound and port.direct is not None:
            port.direct(_item(env))  # the desktop channel has caught up: it dispatches the envelope now
            return True
        try:
            to.send_nowait(_item(env))
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    async def _desktop(self, port: _Port, inbound: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:
        """The desktop service for this connection; if it fails, the connection is re-established (the
        relay must not keep routing calls to a connection nobody serves)."""
        async with inbound:
            try:
                await self.host.desktop.serve_link(port, inbound)
            except Exception:
                log.exception("desktop_service_failed url=%s (reconnecting)", self.url)
                port.reconnect("the desktop service failed", immediate=False)  # after the usual backoff

    async def _terminal(self, port: _Port, inbound: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:
        """The terminal service for this connection (agent/terminal/ports.TerminalSeam; none: dropped)."""
        async with inbound:
            if self.shells is None:
                async for _ in inbound:
                    pass
                return
            try:
                await self.shells.serve_link(port, inbound)
            except Exception:
                log.exception("terminal_service_failed url=%s (reconnecting)", self.url)
                port.reconnect("the terminal service failed", immediate=False)

    def _suspect(self) -> None:
        """A shell's input goes unacknowledged (agent/terminal/ports.TerminalPort.check): ping this connection
        now with a short deadline, and probe the higher tiers; a dead one is replaced at once."""
        self._suspected = True
        self.net_signal.fire()

    def _shell_opened(self) -> None:
        """A shell of this relay opened (agent/terminal/service.py): the keepalive looks again now and
        pings within ``SHELL_PING`` of its last ping, instead of polling for shells while there are none."""
        if self._keep_wait is not None:
            self._keep_wait.cancel()

    def _shell_attached(self) -> bool:
        return self.shells is not None and bool(self.shells.attached(self.url))

    async def _planned_leave(self) -> None:
        """Before leaving a working connection on purpose: the shells on it detach (after their input in
        flight is acknowledged), so the reference relay keeps no stale tmux client."""
        if self.shells is not None:
            await self.shells.leave(self.url, drain=True)

    def _closed(self, exc: ConnectionLostError) -> Exception:
        if transport.close_code(exc) == wire.CLOSE_AUTH_FAILED:
            # The relay ended this session (revoked, rotated or replaced): ask it again after the
            # usual delay; only its auth.fail, not this close, decides that the pairing is gone.
            return _Again(f"relay closed the session ({transport.close_text(exc)})", immediate=False)
        return exc

    async def _expiry_watch(self, expires_at: float) -> None:
        """Authenticate again once the wall clock passes the session's expiry. It sleeps until then, and
        looks again when the wall clock steps: the runner's clock watch (agent/runner.py) notices a
        suspend/resume or a clock change within ``clock_check_interval`` and calls ``clock_changed``."""
        while (left := expires_at - self._now()) > 0:
            with trio.move_on_after(left):
                await self.clock_signal.wait()
        raise _Again("the session's expiry passed: asking the relay again", immediate=True)

    async def _revocation_watch(self, route: Route, record: Record, token: str) -> None:
        """A bearer check every ``revocation_check_interval``: relays that keep a revoked session's
        socket open still refuse its token over HTTP."""
        while True:
            await trio.sleep(self.config.revocation_check_interval)
            status = await self._bearer_status(route, record, token)
            if status in (401, 403):
                raise _Again(f"the relay refused the session token (HTTP {status}): asking it again", immediate=True)

    async def _bearer_status(self, route: Route, record: Record, token: str) -> int | None:
        """The HTTP status of ``GET /sessions`` with ``token`` on ``route`` (None: no answer)."""
        try:
            dialed = await self.net.dial(route, expected_pin=record.pin_for(route.url),
                                          timeout=self.config.probe_timeout)
            try:
                status, _ = await self.net.http_request(dialed, "GET", "/sessions", token=token,
                                                         timeout=self.config.probe_timeout)
            finally:
                await dialed.aclose()
        except HermesError as exc:
            log.debug("bearer_check_failed url=%s error=%s", route.url, exc.message)
            return None
        return status

    async def _replaced_by(self, record: Record, sessions: dict[str, dict[str, Any]]) -> str | None:
        """The newer pairing, stored under another URL, of this same relay: pairing this device again
        made the relay replace this session. "Same relay" is decided without sending anything: a
        shared route URL or certificate pin, or the same port on an address both URLs resolve to
        (a token is never sent to a relay it was not issued by)."""
        mine = record.paired_at or 0.0
        others = [from_dict(u, r) for u, r in sessions.items() if u != self.url]
        newer = sorted((o for o in others if o.token and (o.paired_at or 0.0) >= mine), key=lambda o: -(o.paired_at or 0.0))
        for other in newer:
            if record.same_relay(other):
                return other.owner
            if await self._share_an_address(record.routes(), other.routes()):
                return other.owner
        return None

    async def _share_an_address(self, mine: list[Route], theirs: list[Route]) -> bool:
        async def addresses(route: Route) -> set[tuple[str, int]]:
            host, port = host_port(route.url)
            with trio.move_on_after(self.config.probe_timeout):
                try:
                    return {(str(sockaddr[0]), port) for _, sockaddr in await self.net.resolve(host, port)}
                except OSError:
                    pass
            return set()

        for a in mine:
            for b in theirs:
                if a.secure == b.secure and host_port(a.url)[1] == host_port(b.url)[1]:
                    if await addresses(a) & await addresses(b):
                        return True
        return False

    async def _upgrade_watch(self, higher: list[Route], record: Record) -> None:
        upgrade = linkstate.Upgrade(self.config.upgrade_interval, self.config.upgrade_hysteresis)
        while True:
            wait, network_cuts_short = upgrade.next_wait()
            with trio.move_on_after(wait):
                if network_cuts_short:
                    await self.net_signal.wait()
                else:
                    await trio.sleep_forever()
            won = await self._probe(higher, record)
            if won is not None:
                self.host.cache.record(won.route.url, True)
            if upgrade.observe(won is not None):
                assert won is not None
                raise _Again(f"moving up to {won.route.label} {won.route.url}", immediate=True)

    async def _probe(self, routes: list[Route], record: Record) -> prober.Won[transport.Connection] | None:
        """Is one of ``routes`` answering right now? (uncached; the connection is closed again)"""
        result: list[prober.Won[transport.Connection]] = []
        async with trio.open_nursery() as nursery:
            try:
                won = await self._race(nursery, routes, record, use_cache=False)
            except HermesError as exc:  # the higher tier is not usable now (down, pin, rate limited)
                log.debug("upgrade_probe_failed url=%s error=%s", self.url, exc.message)
            else:
                result.append(won)
                await self.net.discard(won.value)
            nursery.cancel_scope.cancel()
        return result[0] if result else None

