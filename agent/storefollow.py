"""What another client did to the shared store since the agent last looked, and what to do about it.

The store watcher (agent/storewatch.py) only says "the file changed"; ``AgentBackend.reload`` reads it and
asks ``StoreFollower.follow`` to compare it with the records of the previous look:

- a record that is new gets a link (reload does that for any record without one);
- a record whose token or routes changed, and not by this agent (a rotation it stored itself is
  remembered in ``written_tokens``), gets a fresh link: it reconnects with the new credentials;
- a record that is gone is *paused*, unless this agent's own ``forget`` removed it (``dropping``) or
  a pairing of the same relay under another URL replaced it: the last known record is kept in the
  agent's own file (agent/credentials.Paused), the link stops, and ``status`` and ``watch`` show the
  pairing as "paused" with the two ways out, ``hermes-relay restore URL`` (``restore`` below) and
  ``hermes-relay forget URL``. Only our ``forget`` or the relay's revocation ends a pairing.

A paused URL that comes back into the store (restored by hand, or paired again) is unpaused. The
first look after the agent starts is the baseline: a record removed while no agent ran is not seen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Container
from typing import TYPE_CHECKING, Any, Protocol

import trio

from ..core import api, record
from ..core.errors import NotPairedError, StateError
from ..core.store import resolve_in
from .credentials import Paused

if TYPE_CHECKING:
    from ..core.apitypes import RestoreReply
    from ..core.store import SessionStore

log = logging.getLogger(__name__)
PAUSED_REASON = "removed from the store by another client; paused (the agent keeps its credentials)"


def link_facts(url: str, rec: dict[str, Any]) -> tuple[Any, ...]:
    """What a running link depends on: its token and its routes."""
    view = record.from_dict(url, rec)
    return view.token, tuple(r.url for r in view.routes())


class StoreFollower:
    def __init__(self, paused: Paused, wall_clock: Callable[[], float]):
        self.paused = paused
        self.wall_clock = wall_clock
        self.known: dict[str, dict[str, Any]] | None = None  # the records at the last look (None: none yet)
        self.dropping: set[str] = set()  # pairings our own forget is removing
        self.written_tokens: dict[str, str] = {}  # the token this agent last stored per pairing (a rotation)
        self._paused_now: set[str] = set()  # paused by the look in progress (announced once their link stopped)

    def follow(self, sessions: dict[str, dict[str, Any]], urls: list[str]) -> tuple[set[str], set[str] | None]:
        """Compare the store with the last look; pause what another client removed. Returns the
        pairings another client changed the credentials or routes of, and those whose record changed
        at all (None: no earlier look to compare with)."""
        known, self.known = self.known, {url: sessions[url] for url in urls}
        paused = self.entries()
        for url in urls:
            if url in paused:  # back in the store (restored by hand, re-paired): no longer paused
                self._unpause(url)
        if known is None:
            return set(), None
        restart, changed = set(), set()
        for url, old in known.items():
            if url in sessions:
                new = sessions[url]
                if new != old:
                    changed.add(url)
                if link_facts(url, old) != link_facts(url, new) and new.get("token") != self.written_tokens.get(url):
                    log.info("pairing_changed_on_disk url=%s (reconnecting with the stored credentials)", url)
                    restart.add(url)
            elif url in self.dropping:
                self.dropping.discard(url)
            elif any(resolve_in(sessions, u) is not None for u in record.from_dict(url, old).urls()):
                continue  # re-paired under another URL of the same relay: replaced, not removed
            else:
                self._pause(url, old)
        return restart, changed

    def _pause(self, url: str, rec: dict[str, Any]) -> None:
        try:
            self.paused.pause(url, rec, PAUSED_REASON, self.wall_clock())
        except (StateError, OSError) as exc:
            log.error("pairing_not_paused url=%s error=%s (the record is lost unless restored by hand)", url, exc)
            return
        self._paused_now.add(url)
        log.warning("pairing_paused url=%s reason=removed from the store by another client", url)

    def _unpause(self, url: str) -> None:
        try:
            self.paused.drop(url)
        except (StateError, OSError) as exc:
            log.warning("paused_entry_not_dropped url=%s error=%s", url, exc)

    def entries(self) -> dict[str, dict[str, Any]]:
        try:
            return self.paused.all()
        except OSError:
            return {}

    def just_paused(self, running: Container[str]) -> list[dict[str, Any]]:
        """The states of the pairings the last ``follow`` paused (once each)."""
        now, self._paused_now = self._paused_now, set()
        return [state for state, _ in self.paused_states(running) if state["url"] in now] if now else []

    def paused_states(self, running: Container[str], entries: dict[str, dict[str, Any]] | None = None
                      ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(live state, kept record) of every paused pairing without a running link (``entries``: the paused
        file as read already; else it is read here, blocking)."""
        out: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for url, entry in (self.entries() if entries is None else entries).items():
            if url in running:
                continue
            rec = entry["record"]
            version = rec.get("server_version")
            out.append(({"url": url, "state": api.PAUSED, "route": None, "since": entry.get("at"), "latency_ms": None,
                         "attempts": 0, "next_retry_at": None, "routes": [],
                         "server_version": version if isinstance(version, str) else None,
                         "last_error": {"code": "paused", "message": str(entry.get("reason") or PAUSED_REASON),
                                        "data": {"hint": f"restore it: hermes-relay restore {url}; "
                                                         f"remove it for good: hermes-relay forget {url}"}}}, rec))
        return out


class RestoreHost(Protocol):
    """What ``restore`` needs: the paused copies, the store, and a reload that starts the link."""

    @property
    def paused(self) -> Paused: ...
    @property
    def store(self) -> SessionStore: ...

    async def reload(self, *, wake_all: bool = True) -> int: ...


async def restore(agent: RestoreHost, url: str) -> RestoreReply:
    """Put a paused pairing back into the store and reconnect it (``restore`` IPC)."""
    entry = await trio.to_thread.run_sync(agent.paused.get, url)
    if entry is None:
        raise NotPairedError(f"no paused pairing for {url}",
                             hint="`hermes-relay status` lists paused pairings with the URL to restore")

    def apply(sessions: dict[str, dict[str, Any]]) -> tuple[str, bool]:
        found = resolve_in(sessions, url)
        if found is not None:
            return found[0], False  # the store holds a pairing for it again (re-paired meanwhile)
        sessions[url] = entry["record"]
        return url, True

    owner, restored = await trio.to_thread.run_sync(agent.store.update, apply)
    await trio.to_thread.run_sync(agent.paused.drop, url)
    await agent.reload()
    log.info("pairing_restored url=%s restored=%s", owner, restored)
    return {"url": owner, "restored": restored}
