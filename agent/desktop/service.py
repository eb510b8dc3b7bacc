"""The agent's desktop endpoint: one service for all links (policy, approvals, audit, tool table).

Seam with the link (``agent/link.py``): after ``auth.ok`` the link starts
``service.serve_link(port, inbound)`` in the connection's nursery and feeds ``inbound`` every
envelope that is not on the ``system`` channel (the link answers ``system/ping`` itself). The link
cancels ``serve_link`` when the connection ends. ``serve_link`` never raises for a bad message or
a failed tool: one broken call must not take the link down (``channel.py`` serves one link). If it
fails anyway, the link reconnects (``LinkPort.reconnect``): a relay must never route calls to a
connection whose desktop service is gone.

The policy file is the source of truth and may be edited by anyone (our CLI, another Hermes
client, a text editor): ``refresh()`` stats it (and the roots file, core/roots.py, and the store's
legacy consent) and re-reads what changed, in ONE worker-thread hop (``run_sync``, the seam: tests
under trio's autojump clock pass an inline runner, since the clock jumps while a thread runs).
Refreshes are serialised and coalesced: a caller waits for a run that began after it asked, so what
it sees is the disk as it was at that moment, and N callers at once cost at most two hops. Every
call refreshes when it arrives and again after an approval, just before its tool starts; under the
agent's file watch (``watch``: agent/desktop/policyfiles.py) a link's heartbeat is woken by a change
(``changes``) and refreshes then, or every ``SAFETY_REFRESH`` seconds, so an idle agent neither wakes
nor makes a thread hop; without the watch it refreshes about once a second. Either way an edit takes
effect within 2 s without a restart. Everything else
(``policy()``, ``decide``, ``advertised``, ``confinement``) reads the last refreshed view and never
touches the disk on the event loop; ``load()`` is the blocking refresh for callers off the loop.
Each change to a host is audited (core/policy_log.py): ``announce()`` names our own writers just
before they write; any other change is "changed outside hermes-relay access".

``confinement(url)`` composes what one call of that host may touch (core/confine.py): unconfined
only under full access; otherwise the host's roots (the agent's own state carved out of them), the
read-only system paths, the protected and write-protected paths, and for a confined (workspace)
host the kernel sandbox for commands without network. An unreadable roots file reaches nothing.
"""

from __future__ import annotations

import datetime
import logging
import os
import platform
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import trio

from ... import __version__
from ...core import confine, desktop, paths, policy, policy_log, roots
from ...core.confine import Confinement
from ...core.desktop import ToolSpec, ToolTable
from ...core.errors import HermesError, UsageError
from ...core.policy import HostPolicy, Policies
from ..memtrim import Trim
from . import policyfiles
from .approvals import Approvals
from .audit import AuditLog
from .ports import LinkPort
from .tools import _mounts

log = logging.getLogger(__name__)
RunSync = Callable[..., Awaitable[Any]]  # trio.to_thread.run_sync's shape: (fn, *args) -> fn's result
HERE_TTL = 5.0  # seconds a confinement checked local in a worker thread may serve reads on the event loop
_DECIDED_MAX = 4096  # (host, tool) decisions remembered for the current policy view


def _arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine or "unknown")


class DesktopService:
    def __init__(self, config: Any, *, tools: list[ToolSpec] | None = None,
                 device: Callable[[], dict[str, Any]] | None = None, run_sync: RunSync | None = None):
        self.config = config
        # Blocking reads (policy, roots, store, audit) go through this; abandoned on cancel: a view read
        # by a run nobody waits for any more is dropped, never applied.
        self.run_sync: RunSync = run_sync or partial(trio.to_thread.run_sync, abandon_on_cancel=True)
        self._refresh_lock = trio.Lock()
        self._refresh_asked = self._refresh_done = 0
        env = getattr(config, "env", os.environ)
        self.env = env
        if tools is None:
            from .tools import all_tools

            tools = all_tools()
        self.table = ToolTable(tools)
        knobs = getattr(config, "knobs", None)
        self.deadline_cap = knobs.desktop_deadline if knobs is not None else None  # the knob (core/knobs.py)
        self.home = paths.hermes_home(env)
        self.cwd = paths.home_dir(env)
        self.policy_path = policy.policy_file(env)
        self.roots_path = roots.roots_file(env)
        sessions_file = getattr(config, "sessions_file", None)
        self.files = policyfiles.Files(self.policy_path, self.roots_path, Path(sessions_file) if sessions_file else None)
        self._changed = trio.Event()  # set (and replaced) when the files or the view changed: heartbeats wake
        self._watch = policyfiles.FileWatch(self.files, on_change=self._poke)
        self.wall_clock: Callable[[], float] = getattr(config, "wall_clock", None) or __import__("time").time
        self.audit = AuditLog(desktop.audit_file(env), wall_clock=self.wall_clock)
        self.started_at = self.wall_clock()
        self.approvals = Approvals(wall_clock=self.wall_clock, env=env, on_always=self._allow_always)
        self.memory = Trim()  # big answers' memory given back once quiet (agent/memtrim.py)
        # A trim armed may be due before the heartbeats' next wake-up (an audit summary is not: a window is
        # longer than a beat, so a beat within it sees when it ends).
        self.memory.on_armed = self._poke
        self._device = device
        self._policies = policy.Policies()
        self._policy_key: Any = object()
        self._policy_error: str | None = None
        self._consented: dict[str, bool] = {}
        self._roots: dict[str, tuple[Path, ...]] = {}
        self._fixed: tuple[tuple[Path, ...], tuple[Path, ...], tuple[Path, ...]] | None = None
        self._guarded: tuple[Path, ...] = ()
        self._roots_error: str | None = None
        self._seen: tuple[policy.Policies, dict[str, tuple[Path, ...]]] | None = None  # last view, for the audit
        self._announced: dict[str, tuple[float, str]] = {}  # host -> (wall-clock expiry, who)
        self.last_error: dict[str, Any] | None = None
        self._calls: dict[str, dict[str, Any]] = {}  # url -> {day, count, last}
        self._calls_seeded = False
        self._advertised: dict[str, tuple[Any, list[str]]] = {}  # url -> (policy key, names)
        self._decided: dict[tuple[str, str], tuple[Any, ToolTable, str]] = {}  # (url, tool) -> (policy key, table, decision)
        self._here: dict[str, tuple[Any, float, Confinement]] = {}  # url -> (policy key, until, confinement_here)
        self._plans: dict[str, tuple[Any, Callable[[], Confinement]]] = {}  # url -> (policy key, confinement_plan)
        self.monotonic: Callable[[], float] = time.monotonic  # HERE_TTL's clock (read in worker threads too)

    # -- policy ----------------------------------------------------------------------------------
    def policy(self) -> policy.Policies:
        """The policies as the last refresh read them (no I/O)."""
        return self._policies

    async def refresh(self) -> None:
        """Bring the view up to the disk as it is now: stat (and re-read what changed) in one hop of
        ``run_sync``. Serialised; a caller is covered by a run that began after it asked."""
        if self.current():
            return  # the view is the disk's (policyfiles.FileWatch.unchanged): no thread hop
        self._refresh_asked += 1
        ticket = self._refresh_asked
        async with self._refresh_lock:
            if self._refresh_done >= ticket:
                return
            covers = self._refresh_asked
            self._watch.refreshing()
            view = await self.run_sync(self._read, self._policy_key, not self._calls_seeded)
            if view is not None:
                self._apply(view)
            self._refresh_done = covers

    def current(self) -> bool:
        """Whether the view is the disk's now, known without touching it (no refresh runs and the file
        watch saw no change since the last one began: policyfiles.FileWatch.unchanged); ``refresh`` then
        returns at once."""
        return self._calls_seeded and not self._refresh_lock.locked() and self._watch.unchanged()

    def changes(self) -> trio.Event:
        """Set at the next change a heartbeat must see at once: of the policy files (seen by the watch), of
        the view (a refresh applied one), or a memory trim armed (due before the wake-up it sleeps until).
        Take it before looking, then wait on it until ``look_again_at``."""
        return self._changed

    def _poke(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def look_again_at(self, now: float) -> float:
        """When a heartbeat must look at the files though nothing changed (trio time): the file watch's
        safety refresh, or ``POLICY_POLL_INTERVAL`` from ``now`` while it does not cover every file."""
        at = self._watch.look_again_at()
        return now + desktop.POLICY_POLL_INTERVAL if at is None else at

    def stale(self) -> bool:
        """Whether a heartbeat should refresh (policyfiles.FileWatch: under the file watch, only after a change)."""
        return self._watch.stale()

    async def watch(self) -> None:
        """Watch the policy, roots and store files until cancelled (the runner starts it); calls refresh
        whatever the watch says."""
        await self._watch.run()

    def load(self) -> Policies:
        """The blocking refresh, for callers off the event loop (and tests of the decision logic)."""
        view = self._read(self._policy_key, not self._calls_seeded)
        if view is not None:
            self._apply(view)
        return self._policies

    def _read(self, known: Any, seed: bool) -> policyfiles.View | None:
        """Blocking (a worker thread): a fresh view when the files changed since ``known`` (policyfiles.read),
        with today's audit records when ``seed``. Reads only; the state is changed on the loop (``_apply``)."""
        return policyfiles.read(self.files, known, self._today() if seed else None)

    def _apply(self, view: policyfiles.View) -> None:
        if view.records is not None and not self._calls_seeded:
            self._seed(view.records)
        if view.key == self._policy_key:
            return
        self._policy_key = view.key
        self._poke()
        self._roots = view.roots
        self._file_error(view.roots_error, self._roots_error, "desktop_roots_unreadable",
                         "file tools reach nothing until fixed")
        self._roots_error = view.roots_error
        self._policies = view.policies
        self._file_error(view.policy_error, self._policy_error, "desktop_policy_unreadable",
                         "every host restricted until fixed")
        self._policy_error = view.policy_error
        self._consented = view.consented
        self._audit_changes()

    def _file_error(self, error: str | None, known: str | None, event: str, effect: str) -> None:
        """A policy file that cannot be read: logged once per new error, and the last error ``status`` shows."""
        if error is None:
            return
        if error != known:
            log.error("%s error=%s (%s)", event, error, effect)
        self.last_error = {"message": error, "tool": None, "ts": int(self.wall_clock() * 1000)}

    def announce(self, url: str, by: str) -> str:
        """Our own writer ``by`` is about to change ``url``'s policy or roots: the audit names it."""
        key = policy.canonical_url(url)
        if key is None:
            raise UsageError(f"{url!r} is not a relay URL a policy can name")
        self._announced[key] = (self.wall_clock() + policy_log.ANNOUNCE_TTL, by)
        return key

    def _audit_changes(self) -> None:
        now = self.wall_clock()
        current = (self._policies, dict(self._roots))
        before, self._seen = self._seen, current
        if before is None:  # the first read is the baseline, not a change
            return
        for host, old, new in policy_log.changes(before, current):
            expiry, by = self._announced.pop(host, (0.0, policy_log.BY_OUTSIDE))
            by = by if expiry >= now else policy_log.BY_OUTSIDE
            log.info("desktop_policy_changed url=%s by=%s", host, by)
            try:
                self.audit.write(policy_log.record(now, host, old, new, by))
            except (OSError, HermesError) as exc:  # the change applies all the same; the log says it went unrecorded
                log.error("desktop_policy_change_unrecorded url=%s error=%s", host, exc)

    def roots_for(self, url: str) -> roots.HostRoots:
        """The host's roots as configured (an unreadable roots file: none)."""
        if self._roots_error:
            return roots.HostRoots((), False)
        return roots.for_url(self._roots, url, self.env)

    def confinement(self, url: str) -> Confinement:
        """What a call of ``url``'s host may touch now (composed per call, so new entries of a root count)."""
        return self.confinement_plan(url)()

    def confinement_plan(self, url: str) -> Callable[[], Confinement]:
        """``confinement(url)`` in two halves: the host's policy and roots as they are now (no I/O), and a
        function that resolves the roots (user paths: a call runs it in its tool's thread, off the loop).
        The first half depends on the policy view only: it is worked out once per view and host."""
        hit = self._plans.get(url)
        if hit is not None and hit[0] is self._policy_key:
            return hit[1]
        if len(self._plans) >= _DECIDED_MAX:
            self._plans.clear()
        plan = self._plan(url)
        self._plans[url] = (self._policy_key, plan)
        return plan

    def _plan(self, url: str) -> Callable[[], Confinement]:
        host = self.host_policy(url)
        if host.access_mode == policy.FULL_ACCESS and not host.confined:
            free = Confinement(owner=url, unconfined=True)
            return lambda: free
        protected, read_only, write_protected = self._fixed_paths()
        guarded, configured = self._guarded, self.roots_for(url).roots
        key = self._policy_key

        def resolve() -> Confinement:
            try:
                reach = roots.reachable(configured, protected, guarded)
            except (OSError, ValueError) as exc:  # fail closed: a root that cannot be resolved reaches nothing
                log.warning("desktop_roots_unresolvable url=%s error=%s", url, exc)
                reach = ()
            found = Confinement(
                owner=url, roots=reach, read_only=read_only, protected=protected, write_protected=write_protected,
                kernel_commands=host.confined, network=not host.confined)
            if self.confinement_here(url, key) is None and _mounts.all_local((*reach, *read_only, *protected)):
                self._here[url] = (key, self.monotonic() + HERE_TTL, found)  # (a worker thread: one store)
            return found

        return resolve

    def confinement_here(self, url: str, key: Any = None) -> Confinement | None:
        """``url``'s confinement as a worker thread resolved it less than ``HERE_TTL`` ago under the policy view
        in force (or ``key``), when every path it names is on a local file system: a small read may then be
        answered on the event loop (ToolContext.here). None: the file tools use their threads."""
        hit = self._here.get(url)
        if hit is None or hit[0] is not (self._policy_key if key is None else key) or self.monotonic() >= hit[1]:
            return None
        return hit[2]

    def _fixed_paths(self) -> tuple[tuple[Path, ...], tuple[Path, ...], tuple[Path, ...]]:
        """(protected, read-only, write-protected): they follow the agent's environment and install, which
        do not change while it runs, so they are worked out once (0.3 ms a call before: realpaths)."""
        if self._fixed is None:
            self._fixed = (confine.protected_paths(self.env), tuple(Path(p) for p in confine.SYSTEM_READ_ONLY),
                           confine.persistence_paths(self.env))
            self._guarded = roots.guard_forms(self._fixed[0])
        return self._fixed

    def consented(self, url: str) -> bool:
        """The legacy per-URL consent other clients stored (``tools_consented``): restricted => trusted."""
        return self._consented.get(policy.canonical_url(url) or url, False)

    def host_policy(self, url: str) -> HostPolicy:
        return self.policy().for_url(url, legacy_consented=self.consented(url))

    def decide(self, url: str, tool: str) -> str:
        """allow / ask / deny for ``tool`` from ``url``'s host, worked out once per policy view and tool table
        (a call asks two to three times)."""
        hit = self._decided.get((url, tool))
        if hit is not None and hit[0] is self._policy_key and hit[1] is self.table:
            return hit[2]
        decision = policy.decide(self.policy(), url, self.table.capability(tool), legacy_consented=self.consented(url))
        if len(self._decided) >= _DECIDED_MAX:
            self._decided.clear()
        self._decided[(url, tool)] = (self._policy_key, self.table, decision)
        return decision

    def advertised(self, url: str) -> list[str]:
        """The tools this relay may call: recomputed only when the policy or the store changed (the
        heartbeat asks at each change and each beat, so an edit is seen at once without re-deciding every tool)."""
        key = (self._policy_key, id(self.table))
        cached = self._advertised.get(url)
        if cached is not None and cached[0] == key:
            return cached[1]
        names = [n for n in self.table.names() if self.decide(url, n) != policy.DECIDE_DENY]
        self._advertised[url] = (key, names)
        return names

    def paired(self, url: str) -> None:
        """A fresh pairing starts at ``ask_every_time`` (an existing record is kept). Never fails pairing."""
        try:
            self.announce(url, policy_log.BY_PAIR)
            policy.init_paired(self.policy_path, url, now=self.wall_clock())
        except HermesError as exc:
            log.error("desktop_policy_not_initialised url=%s error=%s", url, exc.message)

    def _allow_always(self, url: str, capability: str) -> None:
        """"Always": allowed from now on, within the host's confinement (core/policy.allow_always)."""
        self.announce(url, policy_log.BY_ALWAYS)
        policy.allow_always(self.policy_path, url, capability, now=self.wall_clock())

    # -- heartbeat facts -------------------------------------------------------------------------
    def device(self) -> dict[str, Any]:
        if self._device is not None:
            return self._device()
        return {"device_id": None, "device_name": socket.gethostname() or "computer"}

    def status_payload(self, url: str, advertised: list[str]) -> dict[str, Any]:
        device = self.device()
        now = self.wall_clock()
        return {
            "advertised_tools": advertised,
            "device_id": device.get("device_id"),
            "device_name": device.get("device_name"),
            "host": socket.gethostname(),
            "platform": sys.platform,  # win32 / darwin / linux, the names the reference sends
            "arch": _arch(),
            "version": __version__,
            "pid": os.getpid(),
            "started_at_ms": int(self.started_at * 1000),
            "uptime_ms": max(0, int((now - self.started_at) * 1000)),
            "interactive": False,
            "last_error": self.last_error,
        }

    # -- calls -----------------------------------------------------------------------------------
    def record_call(self, url: str, record: dict[str, Any], *, outcome: str = "") -> None:
        """Audit one finished call (coalesced per host, tool and ``outcome``) and keep the per-relay
        summary ``status`` shows."""
        entry = self._summary(url)  # seeded before this record is in the log
        self.audit.write_outcome(record, outcome or ("ok" if record.get("ok") else "error"))
        day = datetime.date.fromtimestamp(record["ts"] / 1000).isoformat()
        if entry["day"] != day:
            entry.update(day=day, count=0)
        entry["count"] += 1
        entry["last"] = {"tool": record["tool"], "ok": record["ok"], "ts": record["ts"] / 1000}
        if not record["ok"]:
            self.last_error = {"message": record.get("error"), "tool": record["tool"], "ts": record["ts"]}

    def _summary(self, url: str) -> dict[str, Any]:
        """Today's call count and the last call for ``url`` (seeded by the first refresh, which reads the
        audit log once for every relay, so a restarted agent still knows them)."""
        if not self._calls_seeded:  # only a caller that never refreshed (the channel always has): read it here
            self._seed(self._today())
        today = datetime.date.fromtimestamp(self.wall_clock()).isoformat()
        return self._calls.setdefault(url, {"day": today, "count": 0, "last": None})

    def _today(self) -> list[dict[str, Any]]:
        """Blocking: today's audit records (the live file and segments written since yesterday)."""
        try:
            return self.audit.read(since=self.wall_clock() - 86_400)
        except HermesError as exc:
            log.error("desktop_audit_unreadable error=%s", exc.message)
            return []

    def _seed(self, records: list[dict[str, Any]]) -> None:
        self._calls_seeded = True
        today = datetime.date.fromtimestamp(self.wall_clock()).isoformat()
        for record in records:
            ts, host = record.get("ts"), record.get("host_url")
            if record.get("kind") != "tool.completed" or not isinstance(host, str) or not isinstance(ts, (int, float)):
                continue
            entry = self._calls.setdefault(host, {"day": today, "count": 0, "last": None})
            entry["last"] = {"tool": record.get("tool"), "ok": record.get("ok") is True, "ts": ts / 1000}
            if datetime.date.fromtimestamp(ts / 1000).isoformat() == today:
                entry["count"] += 1

    def record_link(self, url: str, state: str, **fields: Any) -> None:
        self.audit.write_outcome({"ts": int(self.wall_clock() * 1000), "kind": "connection.state", "tool": state,
                                  "host_url": url, **fields}, "link")

    def status_for(self, url: str) -> dict[str, Any] | None:
        """The per-relay summary ``status`` shows (tools advertised, policy, calls today, last call)."""
        host = self.host_policy(url)
        entry = self._summary(url)
        today = datetime.date.fromtimestamp(self.wall_clock()).isoformat()
        return {
            "tools_advertised": len(self.advertised(url)),
            "policy": host.access_mode,
            "policy_label": host.label,
            "policy_error": self._policy_error,
            "calls_today": entry.get("count", 0) if entry.get("day") == today else 0,
            "last_call": entry.get("last"),
            "pending_approvals": sum(1 for p in self.approvals.pending.values() if p.url == url),
        }

    async def serve_link(self, port: LinkPort, inbound: trio.MemoryReceiveChannel[Any]) -> None:
        from .channel import DesktopChannel

        await DesktopChannel(self, port).run(inbound)
