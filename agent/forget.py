"""``forget``: remove one pairing and everything this computer keeps about it.

The steps, in order: stop the relay's link (so it cannot write a verdict behind our back), revoke
the session on the relay while the token still exists (skipped when the relay already ended it,
reported when the relay cannot be reached), then delete the store record (its alternate routes and
certificate pins live inside it) or the agent's paused copy of it, the agent's verdict, the refresh
token kept in the agent's own credentials file, and the host's entry in the desktop access policy. Local removal happens even
when the relay is unreachable: the user asked for it, and the result says the session stays valid
on the relay until it expires or is revoked there.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableSet
from typing import TYPE_CHECKING, Any, Final, Protocol

import trio

from ..core import offline, policy, policy_log, record, roots
from ..core.errors import HermesError, NotPairedError
from ..core.linkstate import token_refused
from ..core.store import resolve_in
from ..core.wire import TOKEN_PREFIX_LEN

if TYPE_CHECKING:
    from pathlib import Path

    from ..core.apitypes import ForgetRelay, ForgetReply
    from ..core.store import SessionStore
    from .credentials import Credentials, Paused
    from .marks import Marks

log = logging.getLogger(__name__)

# What the relay answered: the session is gone there, it had already ended, it could not be reached,
# or the caller asked not to contact it.
REVOKED: Final = "revoked"
ALREADY_ENDED: Final = "already_ended"
UNREACHABLE: Final = "unreachable"
SKIPPED: Final = "skipped"

class _Desktop(Protocol):
    @property
    def policy_path(self) -> Path: ...
    @property
    def roots_path(self) -> Path: ...

    def announce(self, url: str, by: str) -> str: ...


class _Follower(Protocol):
    @property
    def dropping(self) -> MutableSet[str]: ...


class ForgetHost(Protocol):
    """What forget changes in the agent: its files, the link it stops, and the desktop service's files."""

    @property
    def store(self) -> SessionStore: ...
    @property
    def paused(self) -> Paused: ...
    @property
    def down_file(self) -> Path: ...
    @property
    def marks(self) -> Marks: ...
    @property
    def credentials(self) -> Credentials: ...
    @property
    def follower(self) -> _Follower: ...
    @property
    def desktop(self) -> _Desktop: ...

    def stop_link(self, url: str) -> None: ...
    async def reload(self, *, wake_all: bool = True) -> int: ...
    async def verdict(self, url: str, token: str | None) -> dict[str, Any] | None: ...


Revoke = Callable[[str, dict[str, Any], str], Awaitable[Any]]  # (owner, record, prefix) -> relay answer


async def forget(agent: ForgetHost, url: str, revoke: Revoke, *, contact_relay: bool = True) -> ForgetReply:
    """Remove the pairing owning ``url``; return ``{url, prefix, relay: {status, message?}, removed}``."""
    found = resolve_in(await trio.to_thread.run_sync(agent.store.sessions), url)
    if found is None:  # a pairing another client removed from the store: the agent keeps it paused
        entry = await trio.to_thread.run_sync(agent.paused.get, url)
        if entry is None:
            raise NotPairedError(f"no pairing stored for {url}", hint="`hermes-relay status` lists the paired relays")
        found = url, entry["record"]
    owner, rec = found
    token = record.from_dict(owner, rec).token or ""
    prefix = token[:TOKEN_PREFIX_LEN] if token else None

    agent.stop_link(owner)
    try:  # whatever fails, reload() restarts the link of a pairing that is still stored
        relay = await _revoke_on_relay(agent, owner, rec, token, revoke, contact_relay)
        # Every step below takes a file lock: in a worker thread, so a lock held elsewhere never stalls the agent.
        removed = await trio.to_thread.run_sync(_remove_locally, agent, owner, rec)
    finally:
        with trio.CancelScope(shield=True):  # bounded by the store lock's timeout
            await agent.reload()
    return {"url": owner, "prefix": prefix, "relay": relay, "removed": removed}


def _remove_locally(agent: ForgetHost, owner: str, rec: dict[str, Any]) -> list[str]:
    """Drop the record, then its verdict, refresh token and policy entry; what went, in words."""
    removed = [_describe_record(rec)]

    def drop(sessions: dict[str, dict[str, Any]]) -> None:
        if owner in sessions:
            agent.follower.dropping.add(owner)  # the store watcher must not take this removal for another client's
            del sessions[owner]

    agent.store.update(drop)
    if _step("paused copy", lambda: agent.paused.drop(owner)):
        removed[0] = removed[0] + " (it was paused)"
    _step("down switch", lambda: offline.drop(agent.down_file, owner))  # a pairing made again later starts up
    if _step("verdict", lambda: agent.marks.clear(owner)):
        removed.append("verdict")
    if _step("refresh token", lambda: agent.credentials.forget(owner)):
        removed.append("refresh token")
    urls = record.from_dict(owner, rec).urls()
    for url in urls:
        if policy.canonical_url(url):
            agent.desktop.announce(url, policy_log.BY_FORGET)
    if _step("desktop access policy", lambda: policy.forget(agent.desktop.policy_path, urls)):
        removed.append("desktop access policy")
    if _step("desktop roots", lambda: roots.forget(agent.desktop.roots_path, urls)):
        removed.append("desktop roots")
    return removed


async def _revoke_on_relay(agent: ForgetHost, owner: str, rec: dict[str, Any], token: str, revoke: Revoke,
                           contact_relay: bool) -> ForgetRelay:
    if not contact_relay:
        return {"status": SKIPPED}
    if not token:
        return {"status": ALREADY_ENDED, "message": "no session token was stored"}
    mark = await agent.verdict(owner, token)
    if mark is not None and token_refused(mark.get("state")):
        return {"status": ALREADY_ENDED, "message": f"the relay had already {mark['state']} it"}
    try:
        await revoke(owner, rec, token[:TOKEN_PREFIX_LEN])
    except HermesError as exc:
        if exc.code in ("auth_rejected", "session_revoked", "not_found"):
            return {"status": ALREADY_ENDED, "message": exc.message}
        return {"status": UNREACHABLE, "message": exc.message}
    return {"status": REVOKED}


def _describe_record(rec: dict[str, Any]) -> str:
    extras = []
    view = record.from_dict("", rec)
    routes = len(view.candidates)
    if routes:
        extras.append(f"{routes} alternate route{'s' if routes != 1 else ''}")
    npins = len(view.route_pins) + (1 if view.cert_pin else 0)
    if npins:
        extras.append(f"{npins} certificate pin{'s' if npins != 1 else ''}")
    return "pairing" + (f" ({', '.join(extras)})" if extras else "")


def _step(what: str, fn: Callable[[], bool]) -> bool:
    """Run one clean-up step; a failure is logged and reported as not removed, never raised."""
    try:
        return bool(fn())
    except (HermesError, OSError) as exc:
        log.warning("forget_step_failed step=%s error=%s", what, getattr(exc, "message", exc))
        return False
