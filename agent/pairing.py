"""Pairing: trade a one-time code for a session token and store it (the agent's side of ``pair``).

With an invite the routes are probed by strict priority (prober.race); each outcome is streamed to
the CLI as a progress line. The code is spent on the winning route only. The new record keeps any
fields another client stored for the same relay (consents, for example) and lists every route of
the invite, so the link can fail over and move back up later.

Spending the code makes the relay replace this device's previous session, so nothing may drop the
new credentials: everything a store write needs is checked before the code is sent (the store
parses, its lock can be taken, its directory accepts a file), and from ``auth.ok`` on the
credentials are kept (``marks.Pending``: memory and a 0600 file) until the store write succeeds.
``keep_pending`` retries that write in the background, also after an agent restart. Every store
write runs in a worker thread: a lock held by another process never stops the agent answering.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from hermes_relay.agent import prober, transport
from hermes_relay.core import codes, payload, record, wire
from hermes_relay.core.errors import (
    AuthRejectedError,
    ConnectRefusedError,
    ConnectTimeoutError,
    HandshakeRejectedError,
    HermesError,
    HostNotFoundError,
    PairingRejectedError,
    PinMismatchError,
    StateError,
    TlsError,
    TransportError,
    UsageError,
)
from hermes_relay.core.routes import Route, make_routes, normalize_relay_url, route_info
from hermes_relay.core.store import SessionStore, resolve_in

if TYPE_CHECKING:
    from hermes_relay.agent.app import Agent

log = logging.getLogger(__name__)
Progress = Callable[[dict[str, Any]], Awaitable[None]]
PENDING_RETRY = 5.0  # seconds between attempts to write credentials the store did not take
SILENT_HINT = ("nothing answered in time: the host may be off or asleep, a firewall may drop the packets, the "
               "address may not be reachable from this network, or the port is not a Hermes relay (it does not "
               "speak TLS either); run `hermes-relay doctor` for step-by-step checks")


def _plan(params: dict[str, Any]) -> tuple[list[Route], str, payload.Invite | None, bool]:
    invite_text = params.get("invite")
    if invite_text:
        invite = payload.parse(str(invite_text))
        return invite.routes, invite.code, invite, False
    url, code = params.get("url"), params.get("code")
    if not url:
        raise UsageError("no relay URL: pass --remote ws://HOST:8767 or an invite with --pair-qr")
    if not code:
        raise UsageError("no pairing code: pass it as an argument or with --code")
    normalized, port_added = normalize_relay_url(str(url))
    return make_routes([(normalized, None, 0)]), codes.validate_code(str(code)), None, port_added


def _verify(agent: Agent, invite: payload.Invite | None) -> tuple[bool | None, str]:
    if invite is None:
        return None, "paired by code (no invite to verify)"
    if not invite.signed:
        return None, "the invite carries no signature"
    secret = payload.load_secret(agent.config.qr_secret_file)
    if secret is None:
        return None, "the signing key stays on the relay host, so this computer cannot check it"
    if payload.verify(invite.raw, secret):
        return True, "signature verified with this host's relay key"
    return False, "the signature does not match this host's relay key (minted by another relay, or altered)"


def _store_for(agent: Agent) -> SessionStore:
    timeout = agent.config.env.get("HERMES_RELAY_STORE_LOCK_TIMEOUT")
    try:
        return SessionStore(agent.store.path, lock_timeout=float(timeout)) if timeout else agent.store
    except ValueError:
        return agent.store


async def pair(agent: Agent, params: dict[str, Any], progress: Progress) -> dict[str, Any]:
    routes, code, invite, port_added = _plan(params)
    verified, note = _verify(agent, invite)
    if verified is False:
        if not params.get("ignore_signature"):
            raise UsageError(f"refusing this invite: {note}; it may have been tampered with",
                             hint="ask the relay host for a fresh invite (`hermes-pair`); to use this one anyway, "
                                  "pass --ignore-signature")
        await progress({"kind": "warn", "line": f"! invite signature: {note} (used anyway: --ignore-signature)"})
    store = _store_for(agent)
    # Everything the store write after auth.ok needs, checked before the code is spent.
    await trio.to_thread.run_sync(store.check_writable)
    previous = _previous(store, routes)
    device_name = _device_name(params, previous)
    if len(routes) > 1:
        await progress({"kind": "info", "line": f"Probing {len(routes)} routes (strict priority, racing inside a tier)…"})

    async def on_attempt(a: prober.Attempt) -> None:
        mark = "✓" if a.ok else "✗"
        detail = f"{a.ms:.0f} ms" if a.ok else a.error
        await progress({"kind": "probe", "ok": a.ok, "ms": round(a.ms, 1), "route": route_info(a.route),
                        "line": f"  {mark} {a.route.label:<10} {a.route.url}  {detail}"})

    outcome: list[Any] = []
    async with trio.open_nursery() as nursery:
        try:
            async def connect(route: Route) -> transport.Connection:
                pin = invite.pin_for(route.url) if invite is not None else None
                return await transport.connect(nursery, route, expected_pin=pin, timeout=agent.config.probe_timeout)

            won = await prober.race(routes, connect, transport.discard, stagger=agent.config.probe_stagger,
                                    timeout=agent.config.probe_timeout, cache=None, on_attempt=on_attempt)
            conn = won.value
            if len(routes) > 1:
                await progress({"kind": "pick", "route": route_info(won.route),
                                "line": f"→ using {won.route.label} route {won.route.url}"})
            try:
                auth_msg = agent.auth_payload(pairing_code=code, **device_name)
                outcome.append(await transport.authenticate(conn, auth_msg, url=won.route.url))
            finally:
                await transport.discard(conn)
        except AuthRejectedError as exc:
            outcome.append(PairingRejectedError(f"pairing failed: {exc.data.get('reason') or exc.message}"))
        except HermesError as exc:
            outcome.append(await _explain(exc, routes, agent.config.probe_timeout))
        nursery.cancel_scope.cancel()
    if isinstance(outcome[0], HermesError):
        raise outcome[0]
    ok, route = outcome[0], won.route
    token = ok.get("session_token")
    if not isinstance(token, str) or not token:
        raise PairingRejectedError("the relay accepted the code but sent no session token", hint="is it a Hermes relay?")
    fields = _fields(agent, route, routes, ok, conn.dialed.pin, invite, device_name)
    entry = {"owner": route.url, "urls": [r.url for r in routes], "fields": fields, "at": fields["paired_at"]}
    kept_error = await trio.to_thread.run_sync(agent.pending.save, route.url, entry)
    if kept_error is not None:
        log.error("pending_credentials_memory_only url=%s error=%s", route.url, kept_error)
    _test_crash_point(agent)
    try:
        owner = await trio.to_thread.run_sync(_write, store, entry, _test_faults(agent))
    except StateError as exc:
        log.error("pairing_not_saved url=%s error=%s", route.url, exc.message)
        agent.pending.note(route.url, exc.message)
        agent.pending_signal.fire()  # keep_pending retries it from now on
        raise _unsaved(agent, route.url, exc, kept_error) from None
    await trio.to_thread.run_sync(agent.pending.done, route.url, token)
    await trio.to_thread.run_sync(agent.marks.clear, owner)
    await trio.to_thread.run_sync(agent.desktop.paired, owner)
    agent.reload()  # starts the link for the new record and stops one whose record this replaced
    log.info("paired url=%s route=%s", owner, route.url)
    return {
        "url": owner, "server_version": ok.get("server_version"), "route": route_info(route),
        "expires_at": ok.get("expires_at"), "grants": ok.get("grants") or {}, "port_added": port_added,
        "verified": verified, "verify_note": note, "attempts": [a.to_dict() for a in won.attempts],
        "store": str(agent.config.sessions_file), "device_name": device_name.get("device_name"),
        "cert_pin_sha256": conn.dialed.pin,  # the certificate this pairing trusts from now on (wss:// only)
    }


def _previous(store: SessionStore, routes: list[Route]) -> record.Record | None:
    records = store.records().records
    for r in routes:
        found = record.resolve(records, r.url)
        if found is not None:
            return found
    return None


def _device_name(params: dict[str, Any], previous: record.Record | None) -> dict[str, Any]:
    """The name the user chose now, else the one chosen at an earlier pairing (else the host name)."""
    name = params.get("device_name")
    if name is None:
        kept = previous.device_name if previous is not None else None
        return {"device_name": kept[:wire.MAX_DEVICE_NAME]} if kept and kept.strip() else {}
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > wire.MAX_DEVICE_NAME:
        raise UsageError(f"the device name must be 1 to {wire.MAX_DEVICE_NAME} characters")
    return {"device_name": name.strip()}


def _fields(agent: Agent, route: Route, routes: list[Route], ok: dict[str, Any], pin: str | None,
            invite: payload.Invite | None, device_name: dict[str, Any]) -> dict[str, Any]:
    """The record fields this pairing sets (the rest of an earlier record is kept when written)."""
    fields: dict[str, Any] = {
        "token": ok["session_token"],
        "server_version": ok.get("server_version"),
        "paired_at": int(agent.config.wall_clock()),
        "cert_pin_sha256": pin,
        "grants": ok.get("grants") if isinstance(ok.get("grants"), dict) else {},
        "ttl_expires_at": ok.get("expires_at"),
        "endpoint_role": route.role,
        "refresh_token": ok["refresh_token"] if isinstance(ok.get("refresh_token"), str) else None,
        "route_candidates": (record.stored_candidates(routes, invite.raw.get("endpoints"))
                             if invite is not None and len(routes) > 1 else None),
        **device_name,
    }
    return fields


def _write(store: SessionStore, entry: dict[str, Any], faults: int = 0) -> str:
    """Write a pending entry into the store (worker thread). Returns the owner URL it landed under."""
    if faults > 0:
        import errno

        from hermes_relay.core.store import _write_error

        raise _write_error(store.path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    owner, fields = entry["owner"], entry["fields"]

    def apply(sessions: dict[str, Any]) -> str:
        found = resolve_in(sessions, owner)
        current = record.from_dict(*found) if found is not None else None
        if current is not None and current.paired_at is not None and current.paired_at > entry["at"] \
                and current.token != fields["token"]:
            return current.owner  # a newer pairing landed meanwhile: it wins
        previous: dict[str, Any] = {}
        for url in entry["urls"]:  # one pairing per relay: a re-pair replaces the old record of any of its routes
            found = resolve_in(sessions, url)
            if found is not None:
                previous = {**sessions.pop(found[0]), **previous}
        rec = dict(previous)
        rec.update({k: v for k, v in fields.items() if k not in ("refresh_token", "route_candidates")})
        rec["prefer_secure_routes"] = bool(previous.get("prefer_secure_routes", False))
        rec["tools_consented"] = bool(previous.get("tools_consented", False))
        rec["computer_use_consented"] = bool(previous.get("computer_use_consented", False))
        rec.pop("route_cert_pins", None)  # a new pairing starts trust on first use afresh
        for key in ("refresh_token", "route_candidates"):
            if fields.get(key) is not None:
                rec[key] = fields[key]
            else:
                rec.pop(key, None)
        sessions[owner] = rec
        return owner

    return store.update(apply)


def _unsaved(agent: Agent, owner: str, exc: StateError, kept_error: str | None) -> StateError:
    store = agent.config.sessions_file
    if kept_error is None:
        kept = (f"They are kept in {agent.pending.path}; the agent writes them to the store as soon as it can "
                f"(it retries every {PENDING_RETRY:g}s, and again after a restart).")
    else:
        kept = ("They are kept in the agent's memory only (" + kept_error + "): keep the agent running until "
                "the store is fixed; it retries every " + f"{PENDING_RETRY:g}s.")
    return StateError(
        f"paired with {owner}, but the new credentials could not be saved to {store}: {exc.message}. {kept}",
        hint=f"{exc.hint + '; then ' if exc.hint else ''}check with `hermes-relay status`. Do not pair again: "
             "the code is spent and the relay already replaced this device's previous session",
        data={"url": owner, "paired": True, "saved": False, "pending_file": str(agent.pending.path),
              "store_error": exc.to_wire()},
    )


async def keep_pending(agent: Agent, *, interval: float | None = None) -> None:
    """Write pending credentials into the store until it takes them (runs for the agent's lifetime)."""
    if interval is None:
        try:
            interval = float(agent.config.env.get("HERMES_RELAY_PENDING_RETRY") or PENDING_RETRY)
        except ValueError:
            interval = PENDING_RETRY
    logged: dict[str, str] = {}
    while True:
        seen = agent.pending_signal.generation
        entries = await trio.to_thread.run_sync(agent.pending.all)
        wrote = False
        for owner, entry in entries.items():
            agent.pending.memory.setdefault(owner, entry)  # shown by status, also after a restart
            try:
                await trio.to_thread.run_sync(_write, agent.store, entry, _test_faults(agent))
            except StateError as exc:
                agent.pending.note(owner, exc.message)
                if logged.get(owner) != exc.message:  # once per distinct reason, not every retry
                    log.warning("pending_credentials_not_saved url=%s error=%s", owner, exc.message)
                    logged[owner] = exc.message
                continue
            logged.pop(owner, None)
            await trio.to_thread.run_sync(agent.pending.done, owner, entry["fields"]["token"])
            log.info("pending_credentials_saved url=%s", owner)
            wrote = True
        if wrote:
            agent.reload()
        if entries and not wrote:
            await trio.sleep(interval)
        elif not entries:  # nothing waits to be stored: sleep until a pairing leaves something behind
            await agent.pending_signal.wait(since=seen)


def pending_status(agent: Agent) -> list[dict[str, Any]]:
    """Pairings not yet in the store (for ``status``): URL, since when, and why (never the token)."""
    return [{"url": url, "since": e.get("at"), "error": e.get("last_error")} for url, e in agent.pending.memory.items()]


def _test_faults(agent: Agent) -> int:
    """Test-only fault injection: the first N store writes of pairing credentials fail as on a full disk."""
    counter = agent.config.env.get("HERMES_RELAY_TEST_STORE_WRITE_FAULTS")
    if not counter:
        return 0
    left = int(counter)
    if left > 0:
        agent.config.env["HERMES_RELAY_TEST_STORE_WRITE_FAULTS"] = str(left - 1)  # type: ignore[index]
    return left


def _test_crash_point(agent: Agent) -> None:
    """Test-only: die like ``kill -9`` right after auth.ok (credentials kept, store not written)."""
    if agent.config.env.get("HERMES_RELAY_TEST_KILL_AFTER_AUTH_OK") == "1":
        os.kill(os.getpid(), 9)  # SIGKILL (9 on every POSIX system); Windows: TerminateProcess, exit code 9


async def _explain(exc: HermesError, routes: list[Route], timeout: float) -> HermesError:
    """A failed plain ws:// handshake on a single route: if the port speaks TLS, say to use wss://."""
    if len(routes) != 1 or routes[0].secure or not isinstance(exc, TransportError) \
            or isinstance(exc, (ConnectRefusedError, HostNotFoundError, HandshakeRejectedError, PinMismatchError)):
        return exc
    route = routes[0]
    tls_url = "wss://" + route.url.split("://", 1)[1]
    try:
        dialed = await transport.dial(Route(route.priority, route.index, route.role, tls_url), expected_pin=None,
                                      timeout=min(timeout, 3.0))
    except HermesError:
        if isinstance(exc, ConnectTimeoutError) and not exc.hint:
            return ConnectTimeoutError(exc.message, hint=SILENT_HINT, data=exc.data)
        return exc
    await dialed.aclose()
    return TlsError(f"{route.url}: this port speaks TLS: use {tls_url}",
                    hint=f"pair again with --remote {tls_url} (the code was not used)")
