"""The agent's half of ``hermes-relay doctor``: walk every route of every stored relay step by step.

For each route the steps are DNS → TCP → TLS (+ pin) → WebSocket upgrade → auth, each timed and
each failure turned into a specific fix, so that a stopped relay, a wrong port, a wrong scheme, a
black hole, a changed certificate and a revoked session read differently (user-needs §8). Steps run
on their own short-lived connections, separate from the relay links, and nothing here writes the
store or the agent's verdicts: doctor only looks.

Every route of every relay runs concurrently under one overall deadline, so a black-holed route
costs one step timeout, not one per route. Auth is the exception to "concurrently": credentials are
per session, not per route, so the first route that reaches the relay asks first (in priority order)
and the others ask only after it was accepted. A rejected token is therefore sent once per run, which
keeps repeated runs clear of the relay's failed-auth block (5 failures in 60 s block the address).
No token is ever sent over a TLS connection whose certificate is not the pinned one.

Every step is transport's own (``resolve``, ``connect_tcp``, ``start_tls``, ``open_websocket``,
``authenticate``: the pieces ``transport.dial`` and ``transport.connect`` are made of), so doctor sees
what the links see; this module only times each step and turns its OSError/ssl errors into step results.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast

import trio

from ..core import api
from ..core.errors import (
    AuthRejectedError,
    ConnectTimeoutError,
    HandshakeRejectedError,
    HermesError,
    NotPairedError,
    RateLimitedError,
    StateError,
    TlsError,
    members,
)
from ..core.record import Record, from_dict
from ..core.routes import Route, host_port, route_info
from ..core.store import resolve_in
from . import transport
from .desktop import notify

if TYPE_CHECKING:
    from ..core.apitypes import DoctorRelay, DoctorReply
    from ..core.store import SessionStore
    from .config import AgentConfig

log = logging.getLogger(__name__)


class _Link(Protocol):
    def snapshot(self) -> dict[str, Any]: ...


class _Desktop(Protocol):
    @property
    def env(self) -> Mapping[str, str]: ...


class DoctorHost(Protocol):
    """What doctor reads from the agent: the store, the links' states and how to authenticate."""

    @property
    def config(self) -> AgentConfig: ...
    @property
    def store(self) -> SessionStore: ...
    @property
    def links(self) -> Mapping[str, _Link]: ...
    @property
    def down(self) -> Mapping[str, dict[str, Any]]: ...
    @property
    def watcher(self) -> Any: ...
    @property
    def desktop(self) -> _Desktop: ...

    def auth_payload(self, record: Record | None = None, **credentials: Any) -> dict[str, Any]: ...

DEFAULT_DEADLINE = 10.0  # seconds for the whole run; a black-holed route costs one step timeout
MAX_DEADLINE = 60.0
DNS_TIMEOUT = 3.0  # a resolver that has not answered in 3 s is broken for our purposes
AUTH_TIMEOUT = 5.0
MAX_ADDRESSES = 4
WS_TIMEOUT_MARGIN = 1.0  # transport's own upgrade timeout is set this much later than doctor's

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
STEPS = ("dns", "tcp", "tls", "ws", "auth")
_RANK = {SKIP: 0, OK: 1, WARN: 2, FAIL: 3}

FIX_REFUSED = "the relay is not running there, or the port is wrong (the relay's default is 8767)"
FIX_TIMEOUT = ("nothing answered: a firewall drops the packets, this is the wrong network (VPN down?), "
               "or the host is off or asleep")
FIX_UNREACHABLE = "this computer has no route to that address: check the network or VPN (e.g. Tailscale) is up"
FIX_TLS = ("the port does not speak TLS: if the relay runs without TLS, pair with its ws:// URL "
           "(wrong scheme), otherwise check the port")
FIX_WS = ("the port answered but is not a Hermes relay: wrong port, or wrong scheme "
          "(a TLS relay needs wss://)")
FIX_AUTH = "the relay no longer accepts this computer's session (revoked or expired): pair again with `hermes-relay pair`"
FIX_NO_TOKEN = "no session token is stored for this relay: pair with `hermes-relay pair`"
FIX_DNS_SLOW = "the resolver is not answering: check the network connection and DNS settings"
FIX_SLOW_RELAY = "the relay accepted the connection but answers too slowly: it may be overloaded or stuck"
_SLOW_FIX = {"dns": FIX_DNS_SLOW, "tls": FIX_SLOW_RELAY, "ws": FIX_WS, "auth": FIX_SLOW_RELAY}


def worst(statuses: Any) -> str:
    """The most serious of ``statuses`` (fail > warn > ok > skip); ``skip`` for none."""
    return max(statuses, key=_RANK.__getitem__, default=SKIP)


class RouteCheck:
    """The steps of one route, recorded as they finish (so a deadline can cut in at any point)."""

    def __init__(self, route: Route):
        self.route = route
        self.steps: list[dict[str, Any]] = []
        self.address: str | None = None
        self._current: tuple[str, float] | None = None

    def begin(self, name: str) -> None:
        self._current = (name, trio.current_time())

    def end(self, status: str, summary: str, *, detail: str | None = None, fix: str | None = None,
            **extra: Any) -> None:
        name, started = self._current or ("?", trio.current_time())
        self._current = None
        ms = round((trio.current_time() - started) * 1000, 1) if status != SKIP else None
        self.steps.append({"step": name, "status": status, "summary": summary, "ms": ms,
                           "detail": detail, "fix": fix, **extra})

    def skip(self, name: str, summary: str) -> None:
        self._current = (name, trio.current_time())
        self.end(SKIP, summary)

    def skip_rest(self, summary: str) -> None:
        done = {s["step"] for s in self.steps}
        for name in STEPS:
            if name not in done:
                self.skip(name, summary)

    @property
    def running(self) -> str | None:
        return self._current[0] if self._current is not None else None

    def cut(self, deadline: float) -> None:
        """The overall deadline fired: the running step failed, the rest were never tried."""
        if self.running is not None:
            self.end(FAIL, f"no result within doctor's {deadline:g}s deadline", fix=_SLOW_FIX.get(self.running, FIX_TIMEOUT))
        self.skip_rest("not tried: doctor's deadline passed")

    @property
    def failed(self) -> bool:
        return any(s["status"] == FAIL for s in self.steps)

    def report(self) -> dict[str, Any]:
        return {**route_info(self.route), "address": self.address,
                "status": worst(s["status"] for s in self.steps), "steps": list(self.steps)}


async def run_doctor(agent: DoctorHost, params: dict[str, Any]) -> DoctorReply:
    """Check every route of every stored relay; core/apitypes.DoctorReply is the result."""
    deadline = params.get("deadline", DEFAULT_DEADLINE)
    if not isinstance(deadline, (int, float)) or isinstance(deadline, bool) or not 0 < deadline <= MAX_DEADLINE:
        deadline = DEFAULT_DEADLINE
    store_error: Any = None  # an ErrorObj
    try:
        sessions = await trio.to_thread.run_sync(agent.store.sessions)
    except StateError as exc:
        sessions, store_error = {}, exc.to_wire()
    only = params.get("url")
    if isinstance(only, str) and only:  # `hosts test URL`: the routes of one pairing
        found = resolve_in(sessions, only)
        if found is None:
            raise NotPairedError(f"no pairing stored for {only}")
        sessions = {found[0]: found[1]}
    views = [from_dict(owner, raw) for owner, raw in sessions.items()]
    plans = [(rec.owner, rec, [RouteCheck(r) for r in rec.routes()]) for rec in views]
    started = trio.current_time()
    with trio.move_on_after(deadline) as scope:
        async with trio.open_nursery() as nursery:
            for owner, rec, checks in plans:
                nursery.start_soon(_check_relay, agent, owner, rec, checks)
    relays: list[DoctorRelay] = []
    for owner, _, checks in plans:
        for check in checks:
            if scope.cancelled_caught:
                check.cut(deadline)
            check.skip_rest("not tried")
        relays.append(_relay_report(agent, owner, checks, unmanaged=params.get("standalone") is True))
    watcher = agent.watcher
    return {
        "netwatch": {"backend": getattr(watcher, "backend", None) or "off", "enabled": bool(agent.config.netwatch)},
        "relays": relays,
        "desktop": {"notify": notify.notifier(agent.desktop.env)},
        "knobs": agent.config.knobs.shown(),
        "store_error": store_error,
        "deadline": deadline,
        "elapsed_ms": round((trio.current_time() - started) * 1000, 1),
    }


# -- one relay ---------------------------------------------------------------------------------------
async def _check_relay(agent: DoctorHost, owner: str, rec: Record, checks: list[RouteCheck]) -> None:
    token = rec.token
    conns: list[transport.Connection | None] = [None] * len(checks)
    async with trio.open_nursery() as ws_nursery:  # the WebSocket reader tasks live here
        try:
            async with trio.open_nursery() as nursery:
                for i, check in enumerate(checks):
                    nursery.start_soon(_reach_guarded, agent, owner, rec, check, ws_nursery, conns, i)
            reached = sorted((i for i, c in enumerate(conns) if c is not None), key=lambda i: checks[i].route)
            await _authenticate_all(agent, rec, token, checks, conns, reached)
        finally:
            for conn in conns:
                if conn is not None:
                    await transport.discard(conn)
            ws_nursery.cancel_scope.cancel()


async def _authenticate_all(agent: DoctorHost, rec: Record, token: str | None, checks: list[RouteCheck],
                            conns: list[transport.Connection | None], reached: list[int]) -> None:
    if token is None:
        for i in reached:
            checks[i].begin("auth")
            checks[i].end(FAIL, "no session token stored", fix=FIX_NO_TOKEN)
        return
    pending = list(reached)
    while pending:  # until one route gets a verdict on the credentials
        i = pending.pop(0)
        verdict = await _auth(agent, rec, token, checks[i], conns[i])
        if verdict == "rejected":
            for j in pending:
                checks[j].skip("auth", f"not tried: the relay already rejected the token on {checks[i].route.url} "
                                       "(asking again only counts toward its failed-auth block)")
            return
        if verdict == "ok":
            async with trio.open_nursery() as nursery:
                for j in pending:
                    nursery.start_soon(_auth, agent, rec, token, checks[j], conns[j])
            return


async def _auth(agent: DoctorHost, rec: Record, token: str, check: RouteCheck, conn: transport.Connection | None) -> str:
    """Run the auth step on ``conn``: ``"ok"``, ``"rejected"`` or ``"error"`` (no verdict)."""
    assert conn is not None
    check.begin("auth")
    try:
        ok = await transport.authenticate(conn, agent.auth_payload(rec, session_token=token), timeout=AUTH_TIMEOUT,
                                          url=check.route.url)
    except AuthRejectedError as exc:
        reason = str(exc.data.get("reason") or exc.message)
        check.end(FAIL, f"the relay rejected the stored session token: {reason}", fix=FIX_AUTH, reason=reason)
        return "rejected"
    except HermesError as exc:
        check.end(FAIL, exc.message, fix=exc.hint or "the relay did not finish the auth exchange; try again")
        return "error"
    expires = ok.get("expires_at")
    check.end(OK, "session token accepted", expires_at=expires if isinstance(expires, (int, float)) else None,
              server_version=ok.get("server_version"))
    return "ok"


async def _reach_guarded(agent: DoctorHost, owner: str, rec: Record, check: RouteCheck,
                         ws_nursery: trio.Nursery, conns: list[transport.Connection | None], i: int) -> None:
    # A bug in one route's check must not hide every other result: report it as that route's failure.
    try:
        conns[i] = await _reach(agent, owner, rec, check, ws_nursery)
    except Exception as exc:
        log.exception("doctor_check_crashed route=%s", check.route.url)
        first = members(exc)[0]
        if check.running is not None:
            check.end(FAIL, f"internal error: {type(first).__name__}: {first}", fix="see `hermes-relay agent logs`")
        check.skip_rest("not tried")


# -- one route: DNS → TCP → TLS → WebSocket ---------------------------------------------------------
async def _reach(agent: DoctorHost, owner: str, rec: Record, check: RouteCheck,
                 ws_nursery: trio.Nursery) -> transport.Connection | None:
    route = check.route
    host, port = host_port(route.url)
    timeout = agent.config.probe_timeout
    addrs = await _dns(check, host, port)
    if addrs is None:
        check.skip_rest("not tried: the host was not resolved")
        return None
    stream = await _tcp(check, addrs, timeout)
    if stream is None:
        check.skip_rest("not tried: no TCP connection")
        return None
    dialed_stream, pin = await _tls(check, owner, rec, stream, host, timeout)
    if dialed_stream is None:
        check.skip_rest("not tried: no token is sent to an unverified relay" if check.failed else "not tried")
        return None
    dialed = transport.Dialed(route, dialed_stream, pin, 0.0)
    check.begin("ws")
    try:
        # Our own deadline, a little ahead of transport's: a cancelled upgrade comes back as a clean
        # cancellation here, whatever shape trio-websocket's nursery gives the timeout inside.
        with trio.move_on_after(timeout) as upgrade:
            conn = await transport.open_websocket(ws_nursery, dialed, timeout=timeout + WS_TIMEOUT_MARGIN)
        if upgrade.cancelled_caught:
            raise ConnectTimeoutError("no answer to the upgrade")
    except RateLimitedError as exc:
        wait = f"{exc.retry_after:g} s" if exc.retry_after else "a few minutes"
        check.end(FAIL, "the relay is rate limiting this address (HTTP 429)",
                  fix=f"wait {wait} before trying again; every failed attempt extends the block", http_status=429)
        return None
    except HandshakeRejectedError as exc:
        check.end(FAIL, exc.message, http_status=exc.status,
                  fix="this URL is not the relay's WebSocket endpoint: wrong port or path, or a proxy in front")
        return None
    except ConnectTimeoutError:
        check.end(FAIL, f"the WebSocket upgrade got no answer within {timeout:g}s", fix=FIX_WS)
        return None
    except HermesError as exc:
        check.end(FAIL, exc.message, fix=FIX_WS)
        return None
    check.end(OK, "WebSocket upgrade accepted")
    return conn


async def _dns(check: RouteCheck, host: str, port: int) -> list[transport.Address] | None:
    check.begin("dns")
    if not host:
        check.end(FAIL, f"{check.route.url} has no host", fix="pair again with a valid relay URL")
        return None
    try:
        with trio.fail_after(DNS_TIMEOUT):
            addrs = await transport.resolve(host, port)
    except trio.TooSlowError:
        check.end(FAIL, f"no DNS answer for {host} within {DNS_TIMEOUT:g}s", fix=FIX_DNS_SLOW)
        return None
    except OSError as exc:
        check.end(FAIL, f"cannot resolve {host}: {exc.strerror or exc}",
                  fix=f"check the host name ({host}) is right and resolvable on this network, or pair with its IP address")
        return None
    shown = [str(a[1][0]) for a in addrs]
    if _is_ip(host):
        check.end(OK, f"{host} is an IP address (no lookup)", addresses=shown)
    else:
        check.end(OK, f"{host} → {', '.join(shown[:MAX_ADDRESSES])}", addresses=shown)
    return addrs[:MAX_ADDRESSES]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _tcp(check: RouteCheck, addrs: list[transport.Address], timeout: float) -> trio.SocketStream | None:
    check.begin("tcp")
    port = addrs[0][1][1]
    errors: list[tuple[str, OSError]] = []
    try:
        with trio.fail_after(timeout):
            won = await transport.connect_tcp(addrs, errors)
    except trio.TooSlowError:
        tried = ", ".join(transport.format_address(a[1]) for a in addrs)
        check.end(FAIL, f"no answer from {tried} within {timeout:g}s", fix=FIX_TIMEOUT,
                  detail="; ".join(f"{a}: {_strerror(e)}" for a, e in errors) or None, error="timeout")
        return None
    if won is None:
        detail = "; ".join(f"{a}: {_strerror(e)}" for a, e in errors)
        if any(isinstance(e, ConnectionRefusedError) for _, e in errors):
            check.end(FAIL, f"connection refused on port {port}", detail=detail if len(errors) > 1 else None,
                      fix=FIX_REFUSED, error="refused")
        elif any(e.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH) for _, e in errors):
            check.end(FAIL, "no route to the host", detail=detail if len(errors) > 1 else None,
                      fix=FIX_UNREACHABLE, error="unreachable")
        else:
            check.end(FAIL, f"cannot connect: {detail}", fix=FIX_TIMEOUT, error="os_error")
        return None
    stream, address = won
    check.address = address
    check.end(OK, f"connected to {address}")
    return stream


def _strerror(exc: OSError) -> str:
    # trio's connect error reads "Error connecting to ('h', p): <strerror>"; the address is shown already.
    return os.strerror(exc.errno) if exc.errno else str(exc)


async def _tls(check: RouteCheck, owner: str, rec: Record, stream: trio.SocketStream, host: str,
               timeout: float) -> tuple[trio.abc.Stream | None, str | None]:
    route = check.route
    if not route.secure:
        check.skip("tls", "plain ws:// (no TLS)")
        return stream, None
    check.begin("tls")
    try:
        with trio.fail_after(timeout):
            tls, presented = await transport.start_tls(stream, host)  # closes the stream on any failure
    except trio.TooSlowError:
        check.end(FAIL, f"no TLS handshake within {timeout:g}s", fix=FIX_TLS)
        return None, None
    except (ssl.SSLError, trio.BrokenResourceError, OSError, TlsError) as exc:
        check.end(FAIL, f"TLS handshake failed: {transport.describe(exc)}", fix=FIX_TLS)
        return None, None
    recorded = rec.pin_for(route.url)
    if recorded and recorded != presented:
        await trio.aclose_forcefully(tls)
        check.end(FAIL, "the certificate is not the pinned one", recorded_pin=recorded, presented_pin=presented,
                  detail=f"recorded {recorded}, presented {presented}",
                  fix=(f"if the relay's certificate was changed on purpose, run `hermes-relay pin accept {route.url}`; "
                       "otherwise do not: someone may be intercepting the connection"))
        return None, None
    note = ("the certificate matches the recorded pin" if recorded
            else "no pin recorded yet: the agent pins this certificate on its first connection")
    check.end(OK, note, recorded_pin=recorded, presented_pin=presented)
    return tls, presented


# -- reporting ---------------------------------------------------------------------------------------
_LINK_STATUS = {api.CONNECTED: OK, api.CONNECTING: WARN, api.BACKOFF: WARN, api.RATE_LIMITED: WARN,
                api.REVOKED: FAIL, api.EXPIRED: FAIL, api.REPLACED: FAIL, api.PIN_MISMATCH: FAIL,
                api.NOT_PAIRED: WARN, api.DOWN: OK}


def _relay_report(agent: DoctorHost, owner: str, checks: list[RouteCheck], *, unmanaged: bool = False) -> DoctorRelay:
    """One relay's verdict: its routes and its link (``unmanaged``: no agent runs links, the standalone run)."""
    routes = [c.report() for c in checks]
    working = [r for r in routes if r["status"] != FAIL]
    if any(s["step"] in ("auth", "tls") and s["status"] == FAIL and (s.get("reason") or s.get("presented_pin"))
           for r in routes for s in r["steps"]):
        route_status = FAIL  # a credential or certificate verdict is about the relay, not one route
    elif not routes or not working:
        route_status = FAIL
    else:
        route_status = OK if len(working) == len(routes) else WARN
    link = agent.links.get(owner)
    snap = link.snapshot() if link is not None else agent.down.get(owner)  # `hermes-relay down`: no link, on purpose
    link_status = _LINK_STATUS.get(snap["state"], WARN) if snap is not None else SKIP if unmanaged else WARN
    report = {"url": owner, "status": worst([route_status, link_status]), "routes": routes,
                   "working_routes": len(working), "link": snap, "link_status": link_status}
    return cast("DoctorRelay", report)  # its steps are built as dicts by RouteCheck
