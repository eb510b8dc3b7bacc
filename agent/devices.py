"""The relay's session API as the agent calls it for the CLI: ``devices`` list/revoke/extend and ``pin accept``.

Each call goes over a fresh HTTP connection on the best reachable route (not through the live link),
with the pairing's token; a token the relay is known to have refused is not sent again (that only
counts toward the relay's per-IP block). The operations take the narrow ``SessionHost`` they need, not
the agent; store reads and writes run in worker threads, the record edits are core/record.py's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast

import trio

from ..core import api, codes, record
from ..core.errors import (
    AmbiguousError,
    ForbiddenError,
    HttpStatusError,
    NotPairedError,
    PinMismatchError,
    SessionRevokedError,
    UsageError,
)
from ..core.linkstate import token_refused
from ..core.routes import Route
from ..core.store import resolve_in
from . import prober, transport

if TYPE_CHECKING:
    from ..core.apitypes import DevicesExtendReply, DevicesListReply, DevicesRevokeReply, PinAcceptReply
    from ..core.store import SessionStore
    from .config import AgentConfig
    from .marks import Marks


class Wakeable(Protocol):
    def wake(self) -> None: ...


class SessionHost(Protocol):
    """What the session API calls need from the agent."""

    @property
    def config(self) -> AgentConfig: ...
    @property
    def store(self) -> SessionStore: ...
    @property
    def marks(self) -> Marks: ...
    @property
    def cache(self) -> prober.ReachabilityCache: ...
    @property
    def down(self) -> Mapping[str, Any]: ...

    def link_for(self, url: str) -> Wakeable: ...


async def list_sessions(host: SessionHost, url: str | None) -> DevicesListReply:
    owner, _, obj = await _http(host, url, "GET", "/sessions")
    return {"url": owner, "sessions": obj.get("sessions", []) if isinstance(obj, dict) else []}


async def revoke(host: SessionHost, url: str | None, prefix: Any) -> DevicesRevokeReply:
    prefix = _prefix(prefix)
    owner, _, obj = await _http(host, url, "DELETE", f"/sessions/{prefix}")
    obj = obj if isinstance(obj, dict) else {}
    mine = bool(obj.get("is_current") or obj.get("revoked_self"))  # ours: is_current; the reference: revoked_self
    return {"url": owner, "revoked": obj.get("revoked", prefix), "is_current": mine, "revoked_self": mine}


async def extend(host: SessionHost, url: str | None, prefix: Any, ttl: Any) -> DevicesExtendReply:
    prefix = _prefix(prefix)
    if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 0:
        raise UsageError(f"ttl_seconds must be a non-negative integer (got {ttl!r})")
    try:
        owner, _, obj = await _http(host, url, "PATCH", f"/sessions/{prefix}", body={"ttl_seconds": ttl})
    except HttpStatusError as exc:
        if exc.status != 403:
            raise
        raise ForbiddenError(
            f"the relay refused to change {prefix}: {exc.message.split(': ', 1)[-1]}",
            hint="the relay only lets a device shorten its own session; extend from the relay host: "
                 f"hermes-relay-server sessions extend {prefix} --ttl …",
        ) from None
    session = patched_session(obj)

    def apply(sessions: dict[str, dict[str, Any]]) -> bool:
        return record.apply_expiry(sessions.get(owner), session)

    stored = False
    if isinstance(session.get("token_prefix"), str) and "expires_at" in session:  # else nothing to copy
        stored = await trio.to_thread.run_sync(host.store.update, apply)  # under the store lock
    return {"url": owner, "session": session, "store_updated": bool(stored)}


async def accept_pin(host: SessionHost, url: Any, shown: Any, apply: bool) -> PinAcceptReply:
    """Dial the route, read its certificate, and (``apply``) trust it: ``shown`` must still be the one presented."""
    if not isinstance(url, str) or not url:
        raise UsageError("pin.accept needs the relay URL whose new certificate you trust")
    owner, raw = await _resolve(host, url)
    route, old = _pin_route(owner, raw, url)
    dialed = await transport.dial(route, expected_pin=None, timeout=host.config.probe_timeout)
    await dialed.aclose()
    new = dialed.pin
    if shown is not None and shown != new:
        raise PinMismatchError(route.url, str(shown), str(new))  # it changed again while the user decided
    if not apply or new == old:
        return {"url": route.url, "old_pin": old, "new_pin": new, "changed": new != old, "applied": False}

    def edit(sessions: dict[str, dict[str, Any]]) -> None:
        found = resolve_in(sessions, owner)
        if found is None:
            raise NotPairedError(f"no stored session for {url}")
        record.set_pin(found[1], owner, route.url, new)

    await trio.to_thread.run_sync(host.store.update, edit)
    await trio.to_thread.run_sync(lambda: host.marks.clear(owner, only=api.PIN_MISMATCH))  # a revoked pairing stays revoked
    if owner not in host.down:  # a relay taken off with `down` stays off
        host.link_for(owner).wake()
    return {"url": route.url, "old_pin": old, "new_pin": new, "changed": True, "applied": True}


def _pin_route(owner: str, raw: dict[str, Any], url: str) -> tuple[Route, str | None]:
    """The secure route ``url`` names (else the pairing's first) and the pin recorded for it."""
    rec = record.from_dict(owner, raw)
    routes = rec.routes()
    if not routes:
        raise UsageError(f"the pairing for {owner} has no usable ws:// or wss:// URL",
                         hint="pair again: hermes-relay pair --remote URL CODE")
    route = next((r for r in routes if r.url.rstrip("/") == url.rstrip("/")), routes[0])
    if not route.secure:
        raise UsageError(f"{route.url} is plain ws://: there is no certificate to pin")
    return route, rec.pin_for(route.url)


def patched_session(obj: Any) -> dict[str, Any]:
    """The session from a PATCH answer: ours nests it under ``session``, the reference relay's is flat."""
    if not isinstance(obj, dict):
        return {}
    if isinstance(obj.get("session"), dict):
        return cast("dict[str, Any]", obj["session"])
    return {k: obj[k] for k in ("token_prefix", "expires_at", "grants") if k in obj}


def _prefix(prefix: Any) -> str:
    if not isinstance(prefix, str):
        raise UsageError("a token prefix is required (as `hermes-relay devices` shows it)")
    return codes.validate_token_prefix(prefix)


async def _resolve(host: SessionHost, url: str | None) -> tuple[str, dict[str, Any]]:
    sessions = await trio.to_thread.run_sync(host.store.sessions)
    if url:
        found = resolve_in(sessions, url)
        if found is None:
            raise NotPairedError(f"no pairing stored for {url}")
        return found
    paired = [(k, sessions[k]) for k in record.owner_urls(sessions)]
    if not paired:
        raise NotPairedError("this computer is not paired with any relay")
    if len(paired) > 1:
        raise AmbiguousError(f"{len(paired)} relays are paired; choose one with --remote URL|NAME",
                             hint="or set a default: hermes-relay use URL|NAME; paired: " + ", ".join(k for k, _ in paired))
    return paired[0]


async def _http(host: SessionHost, url: str | None, method: str, path: str,
                body: dict[str, Any] | None = None) -> tuple[str, int, Any]:
    """The session API call for the pairing ``url`` names (or the only one); refused up front when its
    token is known to be dead."""
    owner, rec = await _resolve(host, url)
    token = record.from_dict(owner, rec).token
    mark = await trio.to_thread.run_sync(host.marks.get, owner, token)
    if mark is not None and token_refused(mark.get("state")):
        raise SessionRevokedError(f"the session for {owner} was {mark['state']}; the relay no longer accepts it",
                                  hint=f"pair again: hermes-relay pair --remote {owner} (it asks for the code)")
    return await session_call(host, owner, rec, method, path, body)


async def session_call(host: SessionHost, owner: str, rec: dict[str, Any], method: str, path: str,
                       body: dict[str, Any] | None = None) -> tuple[str, int, Any]:
    """One session API request with ``rec``'s token over the route that answers first."""
    view = record.from_dict(owner, rec)
    routes = view.routes()
    if not routes:
        raise UsageError(f"the pairing for {owner} has no usable ws:// or wss:// URL",
                         hint="pair again: hermes-relay pair --remote URL CODE")

    async def connect(route: Route) -> transport.Dialed:
        return await transport.dial(route, expected_pin=view.pin_for(route.url), timeout=host.config.probe_timeout)

    async def discard(d: transport.Dialed) -> None:
        await d.aclose()

    config = host.config
    won = await prober.race(routes, connect, discard, stagger=config.probe_stagger, timeout=config.probe_timeout,
                            cache=host.cache)
    status, obj = await transport.http_request(won.value, method, path, token=view.token, body=body)
    if not 200 <= status < 300:
        raise transport.http_error(won.route.url, method, path, status, obj)
    return owner, status, obj
