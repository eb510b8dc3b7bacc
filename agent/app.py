"""The agent's state: one per user. The store, marks, kept and paused credentials, the down switch, the
links and their watchers, the route indicator, the desktop service and the device id.

Every stored pairing gets a link. Links publish their state here; this fans it out to ``watch``
clients and the route indicator. agent/runner.py runs it (locks, listener, nursery, watchers);
agent/backend.py is what the local API (agent/handlers.py) calls.
"""

from __future__ import annotations

import logging
import platform
import socket
import sys
import uuid
from typing import TYPE_CHECKING, Any

import trio

from hermes_relay.agent import checkpoints, ipc_endpoint, pairing, prober, storefollow
from hermes_relay.agent.config import AgentConfig
from hermes_relay.agent.credentials import Credentials, Paused
from hermes_relay.agent.desktop.service import DesktopService
from hermes_relay.agent.indicator import Indicator, summarize
from hermes_relay.agent.link import RelayLink, Signal
from hermes_relay.agent.marks import Marks, Pending
from hermes_relay.agent.storewatch import StoreWatcher
from hermes_relay.agent.terminal.service import TerminalService, store_resolver
from hermes_relay.core import fileio, offline, paths, record, wire
from hermes_relay.core.errors import NotPairedError, StateError
from hermes_relay.core.record import Record, owner_urls
from hermes_relay.core.store import SessionStore, resolve_in

if TYPE_CHECKING:
    from hermes_relay.core.apitypes import DownReply, RestoreReply

log = logging.getLogger(__name__)


class Agent:
    def __init__(self, config: AgentConfig, *, watcher: Any = None):
        self.config = config
        self.store = SessionStore(config.sessions_file)
        self.marks = Marks(config.state_file)
        self.pending = Pending(config.state_file.with_name("hermes-relay-pending.json"))
        self.pending_signal = Signal()  # fired when a pairing's credentials could not be stored
        self.pairing_urls: dict[str, int] = {}  # relays a pair.start is replacing (agent/pairing.py)
        self.credentials = Credentials(config.credentials_file)
        self.paused = Paused(config.state_file.with_name(paths.PAUSED_FILE_NAME))
        self.follower = storefollow.StoreFollower(self.paused, config.wall_clock)
        self.down_file = config.state_file.with_name(paths.DOWN_FILE_NAME)  # `hermes-relay down` (core/offline.py)
        self.down: dict[str, dict[str, Any]] = {}  # stored pairings that are down now: url -> their RelayState
        self.store_watcher = StoreWatcher(config.sessions_file)
        self.cache = prober.ReachabilityCache(config.probe_cache_ttl)
        self.indicator = Indicator(config.route_file, config.route_json_file, config.indicator_heartbeat,
                                   paths.desktop_control_file(config.env))
        self.links: dict[str, RelayLink] = {}
        self.watchers: set[trio.MemorySendChannel[dict[str, Any]]] = set()
        self.watcher = watcher
        self.started_at = config.wall_clock()
        self.stop_event = trio.Event()
        self.nursery: trio.Nursery | None = None  # the runner's (agent/runner.py): links run in it
        self._device: dict[str, Any] | None = None
        self.ipc: ipc_endpoint.IpcListener | None = None
        self.desktop = DesktopService(config, device=self.device)  # the approvals and the desktop calls
        self.approvals = self.desktop.approvals  # counted in the route indicator ([LAN !1])
        self.terminal = TerminalService(store_resolver(self.read_sessions, paths.desktop_control_file(config.env)))

    # -- lifecycle (agent/runner.py runs it) -------------------------------------------------------
    def stop(self) -> None:
        self.stop_event.set()

    def reload(self, *, wake_all: bool = True) -> int:
        """Start a link for every stored pairing, stop links whose pairing is gone, wake the rest (or,
        without ``wake_all``, only those whose record changed: a link in backoff keeps its delay).

        Follows what other clients did to the store since the last look: a new record gets a link, a
        record whose token or routes someone else changed gets a fresh link (it reconnects with them),
        and a record another client removed is paused (kept aside with its credentials), not dropped.
        """
        try:
            sessions: dict[str, dict[str, Any]] | None = self.store.sessions()
        except StateError as exc:
            log.error("store_unreadable error=%s", exc.message)
            sessions = None
        restart: set[str] = set()
        changed: set[str] | None = None
        if sessions is None:
            urls = list(self.links)
        else:
            urls = owner_urls(sessions)
            restart, changed = self.follower.follow(sessions, urls)
            urls = self.down_states(sessions, urls)
        for url in list(self.links):
            if url not in urls or url in restart:
                self.links.pop(url).cancel_scope.cancel()
        for url in urls:
            if url in self.links:
                if wake_all or changed is None or url in changed:
                    self.links[url].wake()
            else:
                self._start_link(url)
        for state in self.follower.just_paused(self.links):
            self._fan_out(state)  # watchers see the link stop as "paused"
        self.refresh_indicator()
        return len(self.links)

    def down_states(self, sessions: dict[str, dict[str, Any]], urls: list[str]) -> list[str]:
        """The pairings to run links for: those ``hermes-relay down`` did not take off (kept in ``self.down``)."""
        try:
            switch = offline.read(self.down_file)
        except StateError as exc:  # an unreadable switch keeps what was down before (never connects by accident)
            log.error("down_file_unreadable error=%s", exc.message)
            switch = offline.Switch(relays={url: state.get("since") or 0.0 for url, state in self.down.items()})
        self.down = {url: offline.state(url, switch.since(url), sessions.get(url)) for url in urls if switch.is_down(url)}
        return [url for url in urls if url not in self.down]

    async def set_down(self, url: str | None, *, down: bool) -> DownReply:
        """``down``/``up`` (IPC): change the switch in the agent's own file, then stop or start the links."""
        sessions = await trio.to_thread.run_sync(self.store.sessions)
        paired = owner_urls(sessions)
        if url is not None:
            found = resolve_in(sessions, url)
            if found is None:
                raise NotPairedError(f"no pairing stored for {url}",
                                     hint="`hermes-relay hosts` lists the paired relays")
            url = found[0]
        elif down and not paired:
            raise NotPairedError("this computer is not paired with any relay: there is nothing to take it off",
                                 hint="pair first: hermes-relay pair --remote ws://HOST:8767")
        now = self.config.wall_clock()
        if down:
            switch, changed = await trio.to_thread.run_sync(offline.set_down, self.down_file, url, now)
        else:
            switch, changed = await trio.to_thread.run_sync(offline.set_up, self.down_file, url, paired, now)
        log.info("relay_%s url=%s changed=%s", "down" if down else "up", url or "all", changed)
        self.reload()
        for state in self.down.values():
            self._fan_out(state)  # watchers see the stopped links as "down"
        return {"url": url, "down": sorted(self.down), "all": switch.all_at is not None, "changed": changed}

    def store_changed(self) -> None:
        """The store file changed (agent/storewatch.py): whoever wrote it, follow it now."""
        log.info("store_changed_on_disk relays=%d", self.reload(wake_all=False))

    def paused_states(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(live state, record) of every paused pairing, for ``status`` and ``watch``."""
        return self.follower.paused_states(self.links)

    async def restore(self, url: str) -> RestoreReply:
        return await storefollow.restore(self, url)

    def _start_link(self, url: str) -> RelayLink:
        assert self.nursery is not None
        link = RelayLink(self, url)
        self.links[url] = link
        self.nursery.start_soon(link.run)
        return link

    def stop_link(self, url: str) -> None:
        """Stop the link of ``url`` now (forget: so it cannot write a verdict behind the caller's back)."""
        link = self.links.pop(url, None)
        if link is not None:
            link.cancel_scope.cancel()

    def link_for(self, url: str) -> RelayLink:
        if url not in self.links:
            return self._start_link(url)
        return self.links[url]

    # -- state fan-out -------------------------------------------------------------------------
    def publish(self, link: RelayLink) -> None:
        self._fan_out(link.snapshot())

    def _fan_out(self, state: dict[str, Any]) -> None:
        for chan in list(self.watchers):
            try:
                chan.send_nowait(state)
            except trio.WouldBlock:  # a slow watcher misses intermediate states, never blocks links
                pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.watchers.discard(chan)
        self.refresh_indicator()

    def states(self) -> list[dict[str, Any]]:
        """Every stored pairing's state: the links', then those ``down`` took off."""
        return [link.snapshot() for link in self.links.values()] + [dict(s) for s in self.down.values()]

    def refresh_indicator(self) -> dict[str, Any]:
        summary = summarize(self.states(), waiting=len(self.approvals.pending), names=self.indicator.names())
        return self.indicator.write(summary, self.config.wall_clock())

    # -- network and clock ---------------------------------------------------------------------
    def network_changed(self, reason: str) -> None:
        log.info("network_changed reason=%s", reason)
        self.cache.clear()
        for link in self.links.values():
            link.network_changed()

    # -- relay facts ---------------------------------------------------------------------------
    def device(self) -> dict[str, Any]:
        if self._device is None:
            self._device = {
                "device_name": socket.gethostname() or "computer",
                "device_id": self._device_id(),
                "device_hostname": socket.gethostname(),
                "client_surface": "desktop",
                "device_form_factor": "desktop",
                "device_model": platform.machine() or "unknown",
                "device_platform": sys.platform,
                "supports": {"typed_stream_events": True, "event_schema_version": 1},
            }
        return self._device

    def _device_id(self) -> str:
        path = self.config.device_id_file
        try:
            existing = path.read_text().strip()
            if existing:
                return existing
        except OSError:
            pass
        new = str(uuid.uuid4())
        try:
            fileio.atomic_write(path, (new + "\n").encode())
        except OSError as exc:
            log.warning("device_id_not_saved error=%s", exc)
        return new

    def auth_payload(self, record: Record | None = None, **credentials: Any) -> dict[str, Any]:
        """The ``system/auth`` payload: this device, the name chosen for the pairing (``pair --name``,
        stored as the record's ``device_name``) on every login, and the credentials."""
        payload = dict(self.device())
        name = record.device_name if record is not None else None
        if name and name.strip():
            payload["device_name"] = name.strip()[:wire.MAX_DEVICE_NAME]
        return {**payload, **credentials}

    # -- the links' file access (agent/link.py LinkHost), in worker threads -------------------
    async def read_sessions(self) -> dict[str, dict[str, Any]]:
        """The store as the links see it: with pairings the relay already made but the store does not
        hold yet (agent/marks.Pending), so a link whose session such a pairing replaced says so."""
        return self._with_pending(await trio.to_thread.run_sync(self.store.sessions))

    def _with_pending(self, sessions: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for entry in list(self.pending.memory.values()):
            if entry.get("kind") == pairing.ROTATION:
                continue
            owner, fields = entry["owner"], entry["fields"]
            current = sessions.get(owner)
            if current is not None:
                view = record.from_dict(owner, current)
                if view.token == fields["token"] or (view.paired_at or 0) > entry["at"]:
                    continue  # stored already, or a newer pairing landed
            sessions[owner] = {**(current or {}), **{k: v for k, v in fields.items() if v is not None}}
        return sessions

    async def verdict(self, url: str, token: str | None) -> dict[str, Any] | None:
        return await trio.to_thread.run_sync(self.marks.get, url, token)

    async def set_verdict(self, url: str, token: str | None, state: str, error: dict[str, Any], at: float) -> None:
        await trio.to_thread.run_sync(self.marks.set, url, token, state, error, at)

    async def refresh_token(self, url: str, token: str | None) -> str | None:
        return await trio.to_thread.run_sync(self.credentials.refresh_token, url, token)

    async def keep_refresh_token(self, url: str, token: str, refresh: str, at: float) -> None:
        await trio.to_thread.run_sync(self.credentials.save, url, token, refresh, at)

    def repairing(self, url: str) -> bool:
        """A pairing is under way that may replace ``url``'s pairing (the same relay can hide behind
        another spelling), so its link must not spend the old refresh token: on our relay that token
        is on standby for the new session and would retire the tokens the pairing is about to store."""
        return bool(self.pairing_urls)

    async def save_auth(self, owner: str, route_url: str, ok: dict[str, Any], pin: str | None, *,
                        used_token: str | None) -> None:
        await trio.to_thread.run_sync(lambda: self.save_auth_sync(owner, route_url, ok, pin, used_token=used_token))

    def save_auth_sync(self, owner: str, route_url: str, ok: dict[str, Any], pin: str | None, *,
                       used_token: str | None, store: SessionStore | None = None, keep: bool = True) -> None:
        """Record what auth.ok told us (token rotation, expiry, grants) and the pin on first use.

        Only if the record still holds ``used_token``: a re-pairing that landed meanwhile is newer.
        A rotation (a refresh: the relay retired ``used_token`` when it answered) is first kept in the
        pending file, fsynced, so a crash before the store write loses nothing (``keep=False``: it
        is being written from there).
        """
        new_token = ok.get("session_token")
        key = None
        if keep and isinstance(new_token, str) and new_token and new_token != used_token:
            key = pairing.rotation_key(owner)
            entry = pairing.rotation_entry(owner, used_token, ok, route_url, pin, self.config.wall_clock())
            kept_error = self.pending.save(key, entry)
            if kept_error is not None:
                log.error("rotated_credentials_memory_only url=%s error=%s", owner, kept_error)
            self.config.checkpoint(checkpoints.REFRESH_KEPT)

        def apply(sessions: dict[str, dict[str, Any]]) -> None:
            found = resolve_in(sessions, owner)
            if found is None:
                return  # the user removed the pairing meanwhile; do not resurrect it
            record.apply_auth(found[1], owner, route_url, ok, pin, used_token)

        if isinstance(new_token, str) and new_token:
            self.follower.written_tokens[owner] = new_token  # before the write: the store watcher may see it at once
        (store or self.store).update(apply)
        if key is not None:
            self.config.checkpoint(checkpoints.REFRESH_STORED)
            self.pending.done(key, str(new_token))
