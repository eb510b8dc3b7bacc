"""Pairing: trade a one-time code for a session token and store it (the agent's side of ``pair``).

With an invite the routes are probed by strict priority (prober.race); each outcome is streamed to
the CLI as a progress line. The code is spent on the winning route only. The new record keeps any
fields another client stored for the same relay (consents, for example) and lists every route of
the invite, so the link can fail over and move back up later.

Spending the code makes the relay replace this device's previous session, so nothing may drop the
new credentials: everything a store write needs is checked before the code is sent (the store
parses, its lock can be taken, its directory accepts a file), and the very first thing after
``auth.ok`` (before the connection is closed, shielded from cancellation) is to keep the credentials
(``marks.Pending``: memory and a fsynced 0600 file) until the store write succeeds. The later steps
(store, desktop policy, dropping the pending copy) can each be repeated: ``flush_pending`` redoes them
at start-up, before any link starts, and ``keep_pending`` retries in the background. A token
rotation by a refresh goes through the same file (``rotation_entry``; agent/backend.py ``save_auth_sync``).
Each write point is a named crash point for tests (agent/checkpoints.py). A kill before the first of
them (``pair.sent``) loses the answer: our relay keeps the old refresh token on standby for the new
session, so the restarted agent's link refreshes into it; while a pairing is under way, the links of
the relay it replaces must not spend that token themselves (``Agent.repairing``). Every store
write runs in a worker thread: a lock held by another process never stops the agent answering.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping, MutableSet
from typing import TYPE_CHECKING, Any, Protocol

import trio

from ..core import codes, payload, record, wire
from ..core.errors import (
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
from ..core.routes import Route, make_routes, normalize_relay_url, route_info
from ..core.store import SessionStore, resolve_in
from . import carryover, checkpoints, prober, transport

if TYPE_CHECKING:
    from pathlib import Path

    from ..core.apitypes import PairCheckReply, PairReplaced, PairReply
    from .config import AgentConfig
    from .link import Signal
    from .marks import Marks, Pending

log = logging.getLogger(__name__)


class _Desktop(Protocol):
    @property
    def policy_path(self) -> Path: ...
    @property
    def roots_path(self) -> Path: ...
    @property
    def home(self) -> Path: ...

    def paired(self, url: str) -> None: ...


class _Follower(Protocol):
    @property
    def dropping(self) -> MutableSet[str]: ...


class PairingHost(Protocol):
    """What pairing and the kept-credentials retry use of the agent."""

    @property
    def config(self) -> AgentConfig: ...
    @property
    def store(self) -> SessionStore: ...
    @property
    def marks(self) -> Marks: ...
    @property
    def pending(self) -> Pending: ...
    @property
    def pending_signal(self) -> Signal: ...
    @property
    def pairing_urls(self) -> MutableMapping[str, int]: ...
    @property
    def follower(self) -> _Follower: ...
    @property
    def desktop(self) -> _Desktop: ...

    async def reload(self, *, wake_all: bool = True) -> int: ...
    def auth_payload(self, record: record.Record | None = None, **credentials: Any) -> dict[str, Any]: ...
    def save_auth_sync(self, owner: str, route_url: str, ok: dict[str, Any], pin: str | None, *,
                       used_token: str | None, store: SessionStore | None = None, keep: bool = True) -> None: ...


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


def _verify(agent: PairingHost, invite: payload.Invite | None) -> tuple[bool | None, str]:
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


def _store_for(agent: PairingHost) -> SessionStore:
    timeout = agent.config.pair_lock_timeout
    return SessionStore(agent.store.path, lock_timeout=timeout) if timeout else agent.store


async def pair(agent: PairingHost, params: dict[str, Any], progress: Progress) -> PairReply:
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

    replacing = {r.url for r in routes} | ({previous.owner} if previous is not None else set())
    for url in replacing:  # their links keep off the old refresh token until this pairing is stored
        agent.pairing_urls[url] = agent.pairing_urls.get(url, 0) + 1

    def sent() -> None:
        agent.config.checkpoint(checkpoints.PAIR_SENT)

    try:
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
                rid = await _relay_id(won.route, conn.dialed.pin, agent.config.probe_timeout)
                same = await trio.to_thread.run_sync(_same_relay, agent, store, previous, conn.dialed.pin, rid)
                if same is not None:
                    await progress({"kind": "info", "line": _replacing_line(same[0])})
                    device_name = _device_name(params, same[0])  # the name chosen under the other spelling
                try:
                    auth_msg = agent.auth_payload(pairing_code=code, **device_name)
                    ok = await transport.authenticate(conn, auth_msg, url=won.route.url, arrived=sent)
                    # The relay has replaced this device's previous session: the credentials in ``ok`` are
                    # the only ones that work. Keeping them durably is the very next thing, before the
                    # connection is closed, and nothing (not even the caller leaving) may interrupt it.
                    with trio.CancelScope(shield=True):
                        outcome.append(await _keep(agent, ok, won.route, routes, conn.dialed.pin, invite, device_name,
                                                   rid, same, bool(params.get("carry_over"))))
                finally:
                    await transport.discard(conn)
            except AuthRejectedError as exc:
                outcome.append(PairingRejectedError(f"pairing failed: {exc.data.get('reason') or exc.message}"))
            except HermesError as exc:
                outcome.append(await _explain(exc, routes, agent.config.probe_timeout))
            nursery.cancel_scope.cancel()
        if isinstance(outcome[0], HermesError):
            raise outcome[0]
        ok, entry, kept_error = outcome[0]
        route = won.route
        with trio.CancelScope(shield=True):  # bounded by the store lock's timeout
            owner = await _store(agent, store, entry, kept_error)
            await agent.reload()  # starts the link for the new record and stops one whose record this replaced
    finally:
        for url in replacing:
            agent.pairing_urls[url] -= 1
            if not agent.pairing_urls[url]:
                del agent.pairing_urls[url]
    log.info("paired url=%s route=%s", owner, route.url)
    shown: Any = route_info(route)  # a RouteInfo
    return {
        "replaced": _replaced_info(entry),
        "url": owner, "server_version": ok.get("server_version"), "route": shown,
        "expires_at": ok.get("expires_at"), "grants": ok.get("grants") or {}, "port_added": port_added,
        "verified": verified, "verify_note": note, "attempts": [a.to_dict() for a in won.attempts],
        "store": str(agent.config.sessions_file), "device_name": device_name.get("device_name"),
        "cert_pin_sha256": conn.dialed.pin,  # the certificate this pairing trusts from now on (wss:// only)
    }


async def _keep(agent: PairingHost, ok: dict[str, Any], route: Route, routes: list[Route], pin: str | None,
                invite: payload.Invite | None, device_name: dict[str, Any], rid: str | None = None,
                same: tuple[record.Record, bool, str] | None = None,
                confirmed: bool = False) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """Keep the credentials of ``auth.ok`` in the agent's pending file (fsynced) before anything else.

    Returns (auth.ok, the pending entry, the error text when only memory could keep them)."""
    token = ok.get("session_token")
    if not isinstance(token, str) or not token:
        raise PairingRejectedError("the relay accepted the code but sent no session token", hint="is it a Hermes relay?")
    fields = _fields(agent, route, routes, ok, pin, invite, device_name)
    if rid is not None:
        fields["relay_id"] = rid
    entry: dict[str, Any] = {"owner": route.url, "urls": [r.url for r in routes], "fields": fields,
                             "at": fields["paired_at"]}
    if same is not None:
        # The same relay, perhaps under another spelling: replaced in place; what lived beside it under
        # another URL is carried over only when its identity is authenticated (a matching pin) or the
        # user said so.
        moved = same[0].owner not in entry["urls"]
        if moved:
            entry["urls"].append(same[0].owner)
        entry["replaces"] = {"url": same[0].owner, "device_name": same[0].device_name,
                             "paired_at": same[0].paired_at, "carry": not moved or same[1] or confirmed,
                             "authenticated": same[1], "access": same[2]}
    kept_error = await trio.to_thread.run_sync(agent.pending.save, route.url, entry)
    if kept_error is not None:
        log.error("pending_credentials_memory_only url=%s error=%s", route.url, kept_error)
    agent.config.checkpoint(checkpoints.PAIR_KEPT)
    return ok, entry, kept_error


async def _store(agent: PairingHost, store: SessionStore, entry: dict[str, Any], kept_error: str | None) -> str:
    """Write a kept pairing into the store, then its fresh policy, then drop the pending copy.

    Each step is safe to repeat: after a crash, ``keep_pending`` runs them again from the pending file."""
    url = entry["owner"]
    _replacing(agent, entry)
    try:
        owner = await trio.to_thread.run_sync(_write, store, entry, agent.config.store_write_faults.fire())
    except StateError as exc:
        log.error("pairing_not_saved url=%s error=%s", url, exc.message)
        agent.pending.note(url, exc.message)
        agent.pending_signal.fire()  # keep_pending retries it from now on
        raise _unsaved(agent, url, exc, kept_error) from None
    agent.config.checkpoint(checkpoints.PAIR_STORED)
    await _settle(agent, owner, entry)
    agent.config.checkpoint(checkpoints.PAIR_POLICY)
    await trio.to_thread.run_sync(agent.pending.done, url, entry["fields"]["token"])
    agent.config.checkpoint(checkpoints.PAIR_DONE)
    return owner


def _replacing(agent: PairingHost, entry: dict[str, Any]) -> None:
    """The record a pairing replaces under another URL is removed by us: not paused as another client's doing."""
    replaces = entry.get("replaces")
    if isinstance(replaces, dict) and isinstance(replaces.get("url"), str):
        agent.follower.dropping.add(replaces["url"])


async def _settle(agent: PairingHost, owner: str, entry: dict[str, Any]) -> None:
    """What a stored pairing needs besides its record: no verdict of an older token, what it replaced
    under another URL carried over or dropped (agent/carryover.py), a desktop policy."""
    await trio.to_thread.run_sync(agent.marks.clear, owner)
    replaces = entry.get("replaces")
    if isinstance(replaces, dict) and replaces.get("url") and replaces["url"] != owner:
        desk = agent.desktop
        try:
            if replaces.get("carry"):
                await trio.to_thread.run_sync(carryover.carry, desk.policy_path, desk.roots_path, desk.home,
                                              replaces["url"], owner)
            else:
                await trio.to_thread.run_sync(carryover.drop, desk.policy_path, desk.roots_path, replaces["url"])
        except (OSError, HermesError) as exc:  # never fails a pairing; the new one starts restricted
            log.error("pairing_carry_over_failed old=%s new=%s error=%s", replaces["url"], owner, exc)
    await trio.to_thread.run_sync(agent.desktop.paired, owner)


async def _relay_id(route: Route, pin: str | None, timeout: float) -> str | None:
    """The ``relay_id`` the relay's ``/health`` shows (our relay; None for one that has none)."""
    try:
        with trio.move_on_after(min(timeout, 3.0)):
            dialed = await transport.dial(route, expected_pin=pin, timeout=min(timeout, 3.0))
            status, body = await transport.http_request(dialed, "GET", "/health", timeout=min(timeout, 3.0))
            rid = body.get("relay_id") if status == 200 and isinstance(body, dict) else None
            return rid if isinstance(rid, str) and 0 < len(rid) <= 64 else None
    except HermesError:
        pass
    return None


def _same_relay(agent: PairingHost, store: SessionStore, previous: record.Record | None, pin: str | None,
                rid: str | None) -> tuple[record.Record, bool, str] | None:
    """The stored pairing of this relay (same URL, or another URL with the same identity), whether that
    identity is authenticated (a certificate pin both share), and its desktop access; else None.
    (Worker thread: reads the store and the policy.)"""
    found: tuple[record.Record, bool] | None = None
    if previous is not None:
        found = previous, bool(pin) and previous.pin_for(previous.owner) == pin
    else:
        sessions = store.sessions()
        for rec in store.records().records.values():
            pins = {rec.pin_for(r.url) for r in rec.routes()} - {None}
            if pin and pin in pins:
                found = rec, True
                break
            if rid and (sessions.get(rec.owner) or {}).get("relay_id") == rid:
                found = rec, False
                break
    if found is None:
        return None
    try:
        access = carryover.describe(agent.desktop.policy_path, agent.desktop.roots_path, found[0].owner)
    except HermesError as exc:
        access = f"unreadable: {exc.message}"
    return found[0], found[1], access


def _replacing_line(rec: record.Record) -> str:
    since = time.strftime("%Y-%m-%d %H:%M", time.localtime(rec.paired_at)) if rec.paired_at else "an earlier pairing"
    name = rec.device_name or "this computer"
    where = f" at {rec.owner}" if rec.owner else ""
    return f"already paired as {name}{where} since {since}; replacing it"


def _replaced_info(entry: dict[str, Any]) -> PairReplaced | None:
    """core/apitypes.PairReplaced for the pairing an entry replaced (None: it replaced none)."""
    replaces = entry.get("replaces")
    if not isinstance(replaces, dict):
        return None
    moved = replaces.get("url") != entry["owner"]
    info: PairReplaced = {
        "url": str(replaces.get("url")), "device_name": replaces.get("device_name"), "paired_at": replaces.get("paired_at"),
        "carried_over": moved and bool(replaces.get("carry")), "authenticated": bool(replaces.get("authenticated")),
        "access": str(replaces.get("access") or "")}
    return info


def _replaces_view(rec: record.Record, authenticated: bool, access: str) -> PairReplaced:
    return {"url": rec.owner, "device_name": rec.device_name, "paired_at": rec.paired_at,
            "authenticated": authenticated, "carried_over": False, "access": access}


async def check(agent: PairingHost, params: dict[str, Any]) -> PairCheckReply:
    """``pair.check``: the stored pairing a ``pair.start`` with these params would replace, found as
    ``pair`` finds it (routes raced, the relay's identity asked); no code is sent."""
    routes, _, invite, _ = _plan(params)
    store = _store_for(agent)
    previous = await trio.to_thread.run_sync(_previous, store, routes)
    if not (await trio.to_thread.run_sync(store.sessions)):
        return {"replaces": None}
    found: list[Any] = []
    async with trio.open_nursery() as nursery:
        async def connect(route: Route) -> transport.Connection:
            pin = invite.pin_for(route.url) if invite is not None else None
            return await transport.connect(nursery, route, expected_pin=pin, timeout=agent.config.probe_timeout)

        try:
            won = await prober.race(routes, connect, transport.discard, stagger=agent.config.probe_stagger,
                                    timeout=agent.config.probe_timeout, cache=None)
        except HermesError as exc:
            raise await _explain(exc, routes, agent.config.probe_timeout) from None
        try:
            pin = won.value.dialed.pin
            rid = await _relay_id(won.route, pin, agent.config.probe_timeout)
            found.append(await trio.to_thread.run_sync(_same_relay, agent, store, previous, pin, rid))
        finally:
            await transport.discard(won.value)
        nursery.cancel_scope.cancel()
    same = found[0]
    return {"replaces": None if same is None else _replaces_view(*same)}


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


def _fields(agent: PairingHost, route: Route, routes: list[Route], ok: dict[str, Any], pin: str | None,
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


def _write(store: SessionStore, entry: dict[str, Any], fault: bool = False) -> str:
    """Write a pending entry into the store (worker thread). Returns the owner URL it landed under."""
    if fault:  # the store-write fault seam (config.store_write_faults): fail as on a full disk
        import errno

        from ..core.store import _write_error

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
        replaces = entry.get("replaces")
        keep_consent = not isinstance(replaces, dict) or bool(replaces.get("carry"))
        rec["tools_consented"] = keep_consent and bool(previous.get("tools_consented", False))
        rec["computer_use_consented"] = keep_consent and bool(previous.get("computer_use_consented", False))
        rec.pop("route_cert_pins", None)  # a new pairing starts trust on first use afresh
        for key in ("refresh_token", "route_candidates"):
            if fields.get(key) is not None:
                rec[key] = fields[key]
            else:
                rec.pop(key, None)
        sessions[owner] = rec
        return str(owner)

    return store.update(apply)


def _unsaved(agent: PairingHost, owner: str, exc: StateError, kept_error: str | None) -> StateError:
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


async def keep_pending(agent: PairingHost, *, interval: float | None = None) -> None:
    """Write pending credentials into the store until it takes them (runs for the agent's lifetime)."""
    if interval is None:
        interval = agent.config.pending_retry
    logged: dict[str, str] = {}
    while True:
        seen = agent.pending_signal.generation
        entries, wrote = await flush_pending(agent, logged)
        if entries and not wrote:
            await trio.sleep(interval)
        elif not entries:  # nothing waits to be stored: sleep until a pairing leaves something behind
            await agent.pending_signal.wait(since=seen)


async def flush_pending(agent: PairingHost, logged: dict[str, str] | None = None, *,
                        store: SessionStore | None = None) -> tuple[int, bool]:
    """One pass over the kept credentials: write each into the store (a pairing: with its policy; a
    rotation: only if the store still holds the token it replaced), then drop the pending copy.
    Returns (entries seen, whether any was written); reloads the links when one was."""
    logged = {} if logged is None else logged
    store = agent.store if store is None else store
    entries = await trio.to_thread.run_sync(agent.pending.all)
    wrote = False
    for key, entry in entries.items():
        agent.pending.memory.setdefault(key, entry)  # shown by status, also after a restart
        try:
            if entry.get("kind") == ROTATION:
                await trio.to_thread.run_sync(_write_rotation, agent, store, entry)
            else:
                _replacing(agent, entry)
                owner = await trio.to_thread.run_sync(_write, store, entry, agent.config.store_write_faults.fire())
                await _settle(agent, owner, entry)
        except StateError as exc:
            agent.pending.note(key, exc.message)
            if logged.get(key) != exc.message:  # once per distinct reason, not every retry
                log.warning("pending_credentials_not_saved url=%s error=%s", entry.get("owner", key), exc.message)
                logged[key] = exc.message
            continue
        logged.pop(key, None)
        await trio.to_thread.run_sync(agent.pending.done, key, entry["fields"]["token"])
        log.info("pending_credentials_saved url=%s kind=%s", entry.get("owner", key), entry.get("kind", "pairing"))
        wrote = True
    if wrote:
        await agent.reload()
    return len(entries), wrote


ROTATION = "rotation"


def rotation_key(owner: str) -> str:
    """Where a rotation waits in the pending file (beside a pairing of the same relay, never over it)."""
    return f"{owner}#rotation"


def rotation_entry(owner: str, used_token: str | None, ok: dict[str, Any], route_url: str, pin: str | None,
                   at: float) -> dict[str, Any]:
    """A pending entry for tokens a relay rotated (a refresh): what ``save_auth`` would write."""
    return {"kind": ROTATION, "owner": owner, "urls": [owner], "at": at, "used": used_token, "ok": ok,
            "route_url": route_url, "pin": pin, "fields": {"token": ok["session_token"]}}


def _write_rotation(agent: PairingHost, store: SessionStore, entry: dict[str, Any]) -> None:
    agent.save_auth_sync(entry["owner"], str(entry.get("route_url") or entry["owner"]), entry["ok"],
                         entry.get("pin"), used_token=entry.get("used"), store=store, keep=False)


def pending_status(agent: PairingHost) -> list[dict[str, Any]]:
    """Pairings not yet in the store (for ``status``): URL, since when, and why (never the token)."""
    return [{"url": e.get("owner", key), "since": e.get("at"), "error": e.get("last_error")}
            for key, e in agent.pending.memory.items()]


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
