"""``status``: the agent's own facts, every relay's live state, and the store joined with them.

The store is read in a worker thread once per call; everything else is the agent's memory, so
``status`` answers while another process holds the store lock. The operation takes the narrow
``StatusHost`` it needs, not the agent.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import trio

from .. import __version__
from ..core import record, wire
from ..core.errors import StateError
from ..core.routes import role_label
from ..core.store import join, redact_record

if TYPE_CHECKING:
    from ..core.apitypes import AgentInfo, PairedRelay, StatusReply
    from ..core.store import SessionStore
    from .config import AgentConfig


class DesktopStatus(Protocol):
    async def refresh(self) -> None: ...

    def status_for(self, url: str) -> Any: ...


class PendingView(Protocol):
    @property
    def memory(self) -> Mapping[str, dict[str, Any]]: ...


class StatusHost(Protocol):
    """What ``status`` reads from the agent."""

    @property
    def config(self) -> AgentConfig: ...
    @property
    def store(self) -> SessionStore: ...
    @property
    def started_at(self) -> float: ...
    @property
    def watcher(self) -> Any: ...
    @property
    def ipc(self) -> Any: ...
    @property
    def pending(self) -> PendingView: ...

    @property
    def desktop(self) -> DesktopStatus: ...

    def states(self) -> list[dict[str, Any]]: ...

    async def paused_states(self) -> list[tuple[dict[str, Any], dict[str, Any]]]: ...


async def status(host: StatusHost, reveal: bool) -> StatusReply:
    store_error, problems = None, []
    sessions: dict[str, dict[str, Any]] = {}
    try:
        raw = (await trio.to_thread.run_sync(host.store.read))["sessions"]
        sessions = {url: rec for url, rec in raw.items() if isinstance(rec, dict)}
        parsed = record.parse_sessions(raw)
        records, problems = parsed.records, parsed.problems()
    except StateError as exc:
        records, store_error = {}, exc.to_wire()
    await host.desktop.refresh()  # the policy as it is on disk now (read in a worker thread)
    relays = [_live(host, state, records.get(state["url"]), reveal) for state in host.states()]
    paused = await host.paused_states()
    relays.extend(state for state, _ in paused)
    view = paired_view(sessions, relays, reveal=reveal)
    kept = {state["url"]: rec for state, rec in paused}
    for item in view:  # a paused pairing shows the record the agent keeps for it
        if item["record"] is None and item["url"] in kept:
            item["record"] = kept[item["url"]] if reveal else _redacted(kept[item["url"]])
    relay_states: Any = relays
    return {"agent": _agent_info(host, store_error, problems), "relays": relay_states, "paired": view}


def _live(host: StatusHost, state: dict[str, Any], rec: record.Record | None, reveal: bool) -> dict[str, Any]:
    """A link's state as ``status`` shows it: with its token's prefix (the token itself only when revealed)."""
    token = rec.token if rec is not None and rec.token else ""
    out = {**state, "token_prefix": token[:wire.TOKEN_PREFIX_LEN] if token else None,
           "desktop": host.desktop.status_for(state["url"])}
    if reveal:
        out["token"] = token
    return out


def _agent_info(host: StatusHost, store_error: Any, problems: Any) -> AgentInfo:
    config = host.config
    tasks, clients, files = _resources(host.ipc)
    return {"pid": os.getpid(), "version": __version__, "started_at": host.started_at,
            "socket": config.socket_path, "store": str(config.sessions_file),
            "store_error": store_error, "store_problems": problems,
            "unsaved_pairings": pending_status(host.pending),
            "netwatch": getattr(host.watcher, "backend", None) or "off",
            "knobs": config.knobs.shown(), "tasks": tasks, "ipc_clients": clients, "open_files": files}


def pending_status(pending: PendingView) -> Any:
    """Pairings not yet in the store: URL, since when, and why (never the token)."""
    return [{"url": e.get("owner", key), "since": e.get("at"), "error": e.get("last_error")}
            for key, e in pending.memory.items()]


def _redacted(rec: dict[str, Any]) -> dict[str, Any]:
    """A record for the CLI without secrets; the token keeps only its prefix, which ``status`` shows."""
    out = redact_record(rec)
    token = record.from_dict("", rec).token
    if token:
        out["token"] = token[:wire.TOKEN_PREFIX_LEN]
    return out


def paired_view(sessions: dict[str, dict[str, Any]], live: list[dict[str, Any]], *,
                reveal: bool) -> list[PairedRelay]:
    """Store records joined with live states (PairedRelay), so ``status`` needs no store read in the CLI.

    Store order first, then relays only the agent knows; a live relay also matches a record through
    its alternate routes. Records are redacted unless ``reveal``.
    """
    out: list[PairedRelay] = []
    for url, rec, state in join(sessions, live):
        live_state: Any = state
        if rec is None:
            out.append({"url": url, "record": None, "live": live_state, "alternates": [], "role_label": None})
            continue
        view = record.from_dict(url, rec)
        role = view.endpoint_role
        out.append({"url": url, "record": rec if reveal else _redacted(rec), "live": live_state,
                    "alternates": [c.url for c in view.candidates], "role_label": role_label(role) if role else None})
    return out


def _resources(ipc: Any) -> tuple[int, int, int | None]:
    """Live trio tasks outside the IPC clients' own, and open files: both must stay flat across
    reconnects (the soak test and doctor read them)."""
    clients = ipc.clients if ipc is not None else None
    root = trio.lowlevel.current_root_task()
    count, todo = 0, [root] if root is not None else []
    while todo:
        task = todo.pop()
        count += 1
        for nursery in task.child_nurseries:
            if nursery is not clients:
                todo.extend(nursery.child_tasks)
    return count, len(clients.child_tasks) if clients is not None else 0, _open_files()


def _open_files() -> int | None:
    """Open file descriptors of this process (Linux; None elsewhere)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None
