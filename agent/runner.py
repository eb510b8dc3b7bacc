"""The runner: what makes the agent's backend (agent/backend.py) a running process part.

    instance locks (per HOME and host, per runtime dir) → IPC listener → kept credentials into the store
    → one RelayLink per stored pairing → store watcher → network watcher → clock watch
    → route indicator heartbeat → serve IPC (agent/handlers.py over agent/backend.py) until ``agent.stop``

It owns the locks, the listener, the nursery (links run in it) and the watchers, and wires them to the
backend (``attach``), which holds the state they act on. Network changes and wall-clock jumps
(sleep/resume) clear the reachability cache and wake every link so nobody waits out a backoff on a
network that just came back.
"""

from __future__ import annotations

import logging
import os
import time
from functools import partial
from typing import Any

import trio

from ..core import api, instance, knobs, paths
from ..core.errors import StateError
from ..core.store import SessionStore
from . import clockwatch, handlers, ipc_endpoint, pairing
from .backend import AgentBackend
from .ipc_server import serve_ipc
from .storewatch import StoreWatcher

log = logging.getLogger(__name__)
RECOVER_LOCK_TIMEOUT = 2.0  # seconds the start-up recovery waits for the store lock before leaving it to keep_pending
CLOCK_STEP = 1.0  # seconds the wall clock moved beyond trio's clock between two looks: a step, not a slew
CLOCK_SAFETY = 12  # clock checks a kernel-told clock watch lets pass between its own looks (a minute)
NAMES_POLL = 1.0  # seconds between looks at the names file where inotify is not available (2 s promise)


async def run(agent: AgentBackend, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Run ``agent`` until it stops (``agent.stop()``: the IPC method, a signal, idling out, or being fenced)."""
    config = agent.config
    owner = instance.owner_record(socket_path=config.socket_path, started_at=agent.started_at,
                                  runtime_dir=paths.runtime_dir_str(config.env))
    with instance.hold(config.home_lock_file, owner), ipc_endpoint.instance_lock(config.lock_file):
        listener = await ipc_endpoint.open_ipc_listener(config.socket_path, config.ipc_mode,
                                                        nonce_timeout=config.ipc_nonce_timeout)
        identity = _identity(config.socket_path)
        try:
            async with trio.open_nursery() as nursery:
                await agent.attach(nursery, listener)
                await _recover_pending(agent)
                await agent.reload()
                _start_watchers(agent, nursery, identity)
                await nursery.start(serve_ipc, listener, handlers.table(agent))
                log.info("agent_started pid=%d socket=%s relays=%d", os.getpid(), config.socket_path, len(agent.links))
                for line in knobs.describe(config.knobs.knobs):
                    log.warning("knob_set %s", line)
                task_status.started()
                await agent.stop_event.wait()
                nursery.cancel_scope.cancel()
        finally:
            if _identity(config.socket_path) == identity:
                ipc_endpoint.remove_socket(config.socket_path)
            stopped = api.DOWN if agent.down and not agent.links else api.STOPPED
            with trio.CancelScope(shield=True):  # the writer task is gone: this is the last write
                await trio.to_thread.run_sync(agent.indicator.write_stopped, config.wall_clock(), stopped)
            log.info("agent_stopped")


def _start_watchers(agent: AgentBackend, nursery: trio.Nursery, identity: tuple[int, int] | None) -> None:
    nursery.start_soon(agent.indicator.run)  # writes the route files in a worker thread, latest state only
    nursery.start_soon(_indicator_heartbeat, agent)
    nursery.start_soon(agent.store_watcher.run, partial(nursery.start_soon, agent.store_changed))
    nursery.start_soon(agent.desktop.watch)  # idle links look at the policy files only when they changed
    nursery.start_soon(_indicator_approvals, agent)
    nursery.start_soon(pairing.keep_pending, agent)
    nursery.start_soon(_clock_watch, agent)
    nursery.start_soon(_fence, agent, identity)
    if agent.watcher is not None:
        nursery.start_soon(_netwatch, agent)
    if agent.config.idle_exit > 0:
        nursery.start_soon(_idle_exit, agent)


async def _recover_pending(agent: AgentBackend) -> None:
    """Credentials a crashed agent kept but did not store go into the store before any link starts
    (a link would otherwise try the retired token first). A busy store is left to keep_pending."""
    try:
        await pairing.flush_pending(agent, store=SessionStore(agent.store.path, lock_timeout=RECOVER_LOCK_TIMEOUT))
    except (StateError, OSError) as exc:
        log.warning("pending_recovery_deferred error=%s", exc)


async def _indicator_heartbeat(agent: AgentBackend) -> None:
    """Rewrite the route file every heartbeat, and within NAMES_POLL of a rename or a new default: the
    names file is watched (agent/storewatch.py) and read in a worker thread only when it changed."""
    names_file = agent.indicator.names_file
    renamed = [trio.Event()]
    async with trio.open_nursery() as nursery:
        if names_file is not None:
            watcher = StoreWatcher(names_file, poll_interval=NAMES_POLL)
            nursery.start_soon(watcher.run, lambda: renamed[0].set())
        look, due = True, clockwatch.next_tick(agent.config.indicator_heartbeat)
        while True:
            if (look and await trio.to_thread.run_sync(agent.indicator.names_changed)) or trio.current_time() >= due:
                agent.refresh_indicator()
                due = clockwatch.next_tick(agent.config.indicator_heartbeat)
            with trio.move_on_at(due):
                await renamed[0].wait()
            look = renamed[0].is_set()
            if look:
                renamed[0] = trio.Event()


async def _indicator_approvals(agent: AgentBackend) -> None:
    """The prompt counts waiting approvals (``[LAN !1]``): rewrite it when one is requested or resolved."""
    with agent.approvals.subscribe() as events:
        async for _ in events:
            agent.refresh_indicator()


async def _idle_exit(agent: AgentBackend) -> None:
    """Stop once nothing has been paired (stored, paused, down, or waiting to be stored), no client is
    connected and no approval waits, for ``idle_exit`` seconds: a command that autostarted the agent on
    a fresh HOME (``approvals``, ``status --json``...) leaves no agent with no relays behind it."""
    period = agent.config.idle_exit / 2
    idle_since: float | None = None
    while True:
        await trio.sleep_until(clockwatch.next_tick(period))
        clients = agent.ipc.clients if agent.ipc is not None else None
        busy = bool(agent.links or agent.down or agent.pending.memory or agent.follower.known != {}
                    or agent.approvals.pending or (clients is not None and clients.child_tasks))
        if not busy:  # the paused pairings are read from disk (a thread hop) only when nothing else says busy
            busy = bool(await trio.to_thread.run_sync(agent.follower.entries))
        if busy:
            idle_since = None
        elif idle_since is None:
            idle_since = trio.current_time()
        elif trio.current_time() - idle_since >= agent.config.idle_exit - period:
            log.info("agent_idle_exit reason=nothing paired and no client seconds=%g", agent.config.idle_exit)
            agent.stop()
            return


async def _fence(agent: AgentBackend, identity: tuple[int, int] | None) -> None:
    """Exit when our endpoint is deleted or replaced (gpg-agent's self-fencing): an agent nobody
    can reach must not keep relay connections and the route indicator to itself."""
    while True:
        await trio.sleep_until(clockwatch.next_tick(agent.config.fence_interval))
        now = _identity(agent.config.socket_path)
        if now != identity:
            log.warning("agent_fenced endpoint=%s reason=%s", agent.config.socket_path,
                        "removed" if now is None else "replaced by another process")
            agent.stop()
            return


async def _netwatch(agent: AgentBackend) -> None:
    send, receive = trio.open_memory_channel[Any](16)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(agent.watcher.run, send)
        async for change in receive:
            if change.major:
                agent.network_changed(change.reason)
            else:
                log.debug("network_minor_change reason=%s", change.reason)


async def _clock_watch(agent: AgentBackend, kernel: bool | None = None) -> None:
    """Sleep/resume shows as the wall clock moving much further than trio's monotonic clock. Where the
    kernel tells when the clock is set or the computer resumes (agent/clockwatch.py; ``kernel``, by default
    when the wall clock is the system's), it looks then, and every ``CLOCK_SAFETY`` checks in case;
    elsewhere every ``clock_check_interval``."""
    config = agent.config
    steps = clockwatch.open_steps() if (config.wall_clock is time.time if kernel is None else kernel) else None
    try:
        await _compare_clocks(agent, steps)
    finally:
        if steps is not None:
            steps.close()


async def _compare_clocks(agent: AgentBackend, steps: clockwatch.ClockSteps | None) -> None:
    config = agent.config
    wall, mono = config.wall_clock(), trio.current_time()
    while True:
        if steps is None:
            await trio.sleep(config.clock_check_interval)
        else:
            await steps.wait(clockwatch.next_tick(CLOCK_SAFETY * config.clock_check_interval))
        new_wall, new_mono = config.wall_clock(), trio.current_time()
        jump = (new_wall - wall) - (new_mono - mono)
        wall, mono = new_wall, new_mono
        if abs(jump) >= CLOCK_STEP:
            agent.clock_changed()  # the links' expiry watches sleep in trio's clock: they look again
        if abs(jump) >= config.clock_jump_threshold:
            log.info("clock_jump seconds=%.0f (sleep/resume or clock change)", jump)
            if agent.watcher is not None:
                agent.watcher.poke("clock jump")
            agent.network_changed("clock jump")


def _identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of the endpoint file, or None when it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino
