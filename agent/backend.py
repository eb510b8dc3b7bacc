"""The agent's backend, one per user (tailscale's LocalBackend is the model): it owns the store, marks,
kept and paused credentials, the down switch, the links, the watch bus, the route indicator, the device
facts and the desktop service, and it is what the local API (agent/handlers.py) calls.

Every stored pairing gets a link. Links publish their state here; the watch bus fans it out to
``watch`` clients and the route indicator. The runner (agent/runner.py) owns the instance locks, the
IPC listener, the nursery the links run in and the OS watchers, and wires them to this object
(``attach``). Blocking file I/O (store, policy, locks) runs in worker threads, never on the event loop.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import trio

from .. import __version__
from ..core import api, offline, paths, policy_log, record, wire
from ..core.errors import NotPairedError, StateError
from ..core.record import Record, owner_urls
from ..core.store import SessionStore, resolve_in
from . import checkpoints, device, devices, doctor, forget, pairing, prober, statusview, storefollow, watchbus
from .config import AgentConfig
from .credentials import Credentials, Paused
from .desktop.service import DesktopService
from .indicator import Indicator, summarize
from .ipc_server import CallContext
from .link import RelayLink, Signal
from .marks import Marks, Pending
from .storewatch import StoreWatcher
from .terminal.service import TerminalService, store_resolver

if TYPE_CHECKING:
    from ..core.apitypes import (
        AccessChangingReply,
        ApprovalsDecideReply,
        ApprovalsListReply,
        DevicesExtendReply,
        DevicesListReply,
        DevicesRevokeReply,
        DoctorReply,
        DownReply,
        ForgetReply,
        HelloReply,
        PairCheckReply,
        PairReply,
        PinAcceptReply,
        ReloadReply,
        RestoreReply,
        RouteIndicator,
        ShellOpenReply,
        StatusReply,
        TerminalKillReply,
        TerminalListReply,
    )

log = logging.getLogger(__name__)
Sessions = dict[str, dict[str, Any]]


@dataclass
class _Look:
    """What one reload read from disk (in a worker thread): the links to run, and what changed."""

    urls: list[str]
    restart: set[str]
    changed: set[str] | None
    down: dict[str, dict[str, Any]]
    just_paused: list[dict[str, Any]]


class AgentBackend:
    def __init__(self, config: AgentConfig, *, watcher: Any = None):
        self.config = config
        self.watcher = watcher  # the runner's network watcher (agent/netwatch.py), reported by status and doctor
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
        self.watchers = watchbus.WatchBus()
        self.started_at = config.wall_clock()
        self.stop_event = trio.Event()
        self.nursery: trio.Nursery | None = None  # the runner's: links run in it (attach)
        self.ipc: Any = None  # the runner's IPC listener, observed by status (attach)
        self._device: dict[str, Any] | None = None
        self._reload_lock = trio.Lock()
        self._reload_asked = self._reload_done = 0  # reload requests counted / covered by a finished run
        self._reload_wake_all = False
        self.desktop = DesktopService(config, device=self.device)  # the approvals and the desktop calls
        self.approvals = self.desktop.approvals  # counted in the route indicator ([LAN !1])
        self.terminal = TerminalService(store_resolver(self.read_sessions, paths.desktop_control_file(config.env)))

    # -- lifecycle (the runner drives it) ------------------------------------------------------
    async def attach(self, nursery: trio.Nursery, ipc: Any = None) -> None:
        """The runner's nursery (links run in it) and listener; loads the device facts in a thread."""
        self.nursery, self.ipc = nursery, ipc
        if self._device is None:
            self._device = await trio.to_thread.run_sync(device.facts, self.config.device_id_file)

    def stop(self) -> None:
        self.stop_event.set()

    async def reload(self, *, wake_all: bool = True) -> int:
        """Start a link for every stored pairing, stop links whose pairing is gone, wake the rest (or,
        without ``wake_all``, only those whose record changed: a link in backoff keeps its delay).

        Follows what other clients did to the store since the last look (storefollow.StoreFollower).
        Runs are serialised: a reload asked for while one runs waits for one more run after it, which
        covers every request made meanwhile (never two at once, never one lost). Returns the link count.
        """
        self._reload_asked += 1
        ticket = self._reload_asked
        self._reload_wake_all |= wake_all
        async with self._reload_lock:
            if self._reload_done >= ticket:
                return len(self.links)  # a run that started after this request covered it
            covers, wake_all, self._reload_wake_all = self._reload_asked, self._reload_wake_all, False
            look = await trio.to_thread.run_sync(self._look, list(self.links), dict(self.down))
            self._apply(look, wake_all)
            self._reload_done = covers
        return len(self.links)

    def _look(self, running: list[str], down_before: dict[str, dict[str, Any]]) -> _Look:
        """Read the store, the down switch and the paused file (blocking: in a worker thread)."""
        try:
            sessions: Sessions | None = self.store.sessions()
        except StateError as exc:
            log.error("store_unreadable error=%s", exc.message)
            sessions = None
        if sessions is None:
            return _Look(running, set(), None, down_before, [])
        urls = owner_urls(sessions)
        restart, changed = self.follower.follow(sessions, urls)
        down = self.down_states(sessions, urls, down_before)
        urls = [url for url in urls if url not in down]
        return _Look(urls, restart, changed, down, self.follower.just_paused(set(urls)))

    def down_states(self, sessions: Sessions, urls: list[str], before: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """The pairings ``hermes-relay down`` took off: url -> their state (blocking: reads the switch)."""
        try:
            switch = offline.read(self.down_file)
        except StateError as exc:  # an unreadable switch keeps what was down before (never connects by accident)
            log.error("down_file_unreadable error=%s", exc.message)
            switch = offline.Switch(relays={url: state.get("since") or 0.0 for url, state in before.items()})
        return {url: offline.state(url, switch.since(url), sessions.get(url)) for url in urls if switch.is_down(url)}

    def _apply(self, look: _Look, wake_all: bool) -> None:
        self.down = look.down
        for url in list(self.links):
            if url not in look.urls or url in look.restart:
                self.links.pop(url).cancel_scope.cancel()
        for url in look.urls:
            if url in self.links:
                if wake_all or look.changed is None or url in look.changed:
                    self.links[url].wake()
            else:
                self._start_link(url)
        for state in look.just_paused:
            self._fan_out(state)  # watchers see the link stop as "paused"
        self.refresh_indicator()

    async def set_down(self, url: str | None, down: bool) -> DownReply:
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
        await self.reload()
        for state in self.down.values():
            self._fan_out(state)  # watchers see the stopped links as "down"
        return {"url": url, "down": sorted(self.down), "all": switch.all_at is not None, "changed": changed}

    async def store_changed(self) -> None:
        """The store file changed (agent/storewatch.py): whoever wrote it, follow it now."""
        log.info("store_changed_on_disk relays=%d", await self.reload(wake_all=False))

    async def paused_states(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(live state, record) of every paused pairing, for ``status`` and ``watch``."""
        return await trio.to_thread.run_sync(self.follower.paused_states, set(self.links))

    def _start_link(self, url: str) -> RelayLink:
        assert self.nursery is not None, "the runner attaches its nursery before the first reload"
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
        self.watchers.publish(state)
        self.refresh_indicator()

    def states(self) -> list[dict[str, Any]]:
        """Every stored pairing's state: the links', then those ``down`` took off."""
        return [link.snapshot() for link in self.links.values()] + [dict(s) for s in self.down.values()]

    def refresh_indicator(self) -> dict[str, Any]:
        summary = summarize(self.states(), waiting=len(self.approvals.pending), names=self.indicator.names())
        return self.indicator.publish(summary, self.config.wall_clock())  # written by the runner's writer task

    def network_changed(self, reason: str) -> None:
        log.info("network_changed reason=%s", reason)
        self.cache.clear()
        for link in self.links.values():
            link.network_changed()

    def clock_changed(self) -> None:
        """The wall clock stepped (agent/runner.py's clock watch): each link's expiry watch looks again."""
        for link in self.links.values():
            link.clock_changed()

    # -- relay facts ---------------------------------------------------------------------------
    def device(self) -> dict[str, Any]:
        if self._device is None:  # attach loads it in a thread; only an unattached backend gets here
            self._device = device.facts(self.config.device_id_file)
        return self._device

    def auth_payload(self, record: Record | None = None, **credentials: Any) -> dict[str, Any]:
        """The ``system/auth`` payload: this device, the name chosen for the pairing (``pair --name``,
        stored as the record's ``device_name``) on every login, and the credentials."""
        payload = dict(self.device())
        name = record.device_name if record is not None else None
        if name and name.strip():
            payload["device_name"] = name.strip()[:wire.MAX_DEVICE_NAME]
        return {**payload, **credentials}

    # -- the links' file access (agent/link.py LinkHost), in worker threads -------------------
    async def read_sessions(self) -> Sessions:
        """The store as the links see it: with pairings the relay already made but the store does not
        hold yet (agent/marks.Pending), so a link whose session such a pairing replaced says so."""
        return self._with_pending(await trio.to_thread.run_sync(self.store.sessions))

    def _with_pending(self, sessions: Sessions) -> Sessions:
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

        def apply(sessions: Sessions) -> None:
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

    # -- the local API's operations (agent/handlers.py Backend) ---------------------------------
    def hello(self) -> HelloReply:
        return {"api_version": api.API_VERSION, "agent_version": __version__, "pid": os.getpid(),
                "started_at": self.started_at}

    async def status(self, reveal: bool) -> StatusReply:
        return await statusview.status(self, reveal)

    async def pair(self, params: dict[str, Any], ctx: CallContext) -> PairReply:
        async def progress(event: dict[str, Any]) -> None:
            await ctx.notify(api.PAIR_PROGRESS, event)

        return await pairing.pair(self, params, progress)

    async def pair_check(self, params: dict[str, Any]) -> PairCheckReply:
        return await pairing.check(self, params)

    async def devices_list(self, url: Any) -> DevicesListReply:
        return await devices.list_sessions(self, url)

    async def devices_revoke(self, url: Any, prefix: Any) -> DevicesRevokeReply:
        return await devices.revoke(self, url, prefix)

    async def devices_extend(self, url: Any, prefix: Any, ttl: Any) -> DevicesExtendReply:
        return await devices.extend(self, url, prefix, ttl)

    async def route(self) -> RouteIndicator:
        await self.indicator.flushed()  # never ahead of the route file the prompt reads
        return cast("RouteIndicator", dict(self.indicator.current))

    async def pin_accept(self, url: Any, shown: Any, apply: bool) -> PinAcceptReply:
        return await devices.accept_pin(self, url, shown, apply)

    async def forget(self, url: str, contact_relay: bool) -> ForgetReply:
        async def revoke(owner: str, rec: dict[str, Any], prefix: str) -> Any:
            return await devices.session_call(self, owner, rec, "DELETE", f"/sessions/{prefix}")

        return await forget.forget(self, url, revoke, contact_relay=contact_relay)

    async def reload_all(self) -> ReloadReply:
        return {"relays": await self.reload()}

    async def restore(self, url: str) -> RestoreReply:
        return await storefollow.restore(self, url)

    def approvals_list(self) -> ApprovalsListReply:
        approvals: Any = self.desktop.approvals.list()
        return {"approvals": approvals}

    async def approvals_decide(self, pid: Any, approve: Any, always: bool, reason: str | None) -> ApprovalsDecideReply:
        return await self.desktop.approvals.decide(pid, approve, always=always, reason=reason)

    def access_changing(self, url: str, by_forget: bool) -> AccessChangingReply:
        return {"url": self.desktop.announce(url, policy_log.BY_FORGET if by_forget else policy_log.BY_ACCESS)}

    async def doctor(self, params: dict[str, Any]) -> DoctorReply:
        return await doctor.run_doctor(self, params)

    async def shell_open(self, params: dict[str, Any], ctx: CallContext) -> ShellOpenReply:
        return cast("ShellOpenReply", await self.terminal.open(params, ctx.notify, ctx.inbox))

    async def terminal_list(self, remote: Any) -> TerminalListReply:
        return cast("TerminalListReply", await self.terminal.list(remote))

    async def terminal_kill(self, remote: Any, session: Any) -> TerminalKillReply:
        return cast("TerminalKillReply", await self.terminal.kill(remote, session))

    async def watch(self, ctx: CallContext) -> None:
        """Every relay's state (paused pairings too), then each change, and the approval events, until
        the client leaves; a slow client misses intermediate states (agent/watchbus.py)."""
        async def initial() -> list[dict[str, Any]]:
            entries = await trio.to_thread.run_sync(self.follower.entries)
            # The links as they are once the read is done: one stopped meanwhile is among the paused.
            running = set(self.links)
            return self.states() + [paused for paused, _ in self.follower.paused_states(running, entries)]

        await watchbus.stream(self.watchers, ctx, initial, self.desktop.approvals)
