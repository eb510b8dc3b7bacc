"""The route indicator: a tiny file the shell prompt reads without starting any process.

``route`` holds two lines of plain text (no json needed to read it)::

    <valid_until epoch seconds> <label>             e.g.  1795650000 LAN
    <agent pid> <state> <since epoch or -> <url or ->      4242 connected 1795649000.5 ws://10.0.0.2:8767

The prompt snippets read the first line (and bash/zsh the pid) with builtins: the label is shown
stale when the agent stopped refreshing it or its pid is gone. ``hermes-relay route`` reads both.
The label is the route's (``LAN``, ``Tailscale``, ...), ``expired`` or ``revoked`` when the link needs
a new pairing, ``down`` when ``hermes-relay down`` took this computer off (also once the agent
stopped), else ``offline``. With several relays paired and one connected, every relay is on the
one line, the default relay (``hermes-relay use``, else the best connected one) first and unnamed, the
others by name (``hermes-relay rename``, else their host): ``LAN | office: Tailscale``. Desktop calls
waiting for approval are counted at the end: ``LAN !1``. ``route.json`` holds the same state, plus
``approvals_waiting`` and each relay's part, for other programs. Both are written atomically on every
change (approvals requested and resolved included) and at least every ``heartbeat`` seconds.

The agent never writes them on its event loop: ``publish`` updates ``current`` at once and hands the
files to ``run``, one writer task that writes them in a worker thread, one state after another and
always the latest (states published while a write runs are coalesced into the newest: an earlier
state never lands after a later one). ``write`` is the blocking form (tests; the stop, after the
writer is gone). The names file is read by ``names_changed`` (blocking: the runner calls it in a thread).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import trio

from ..core import api, fileio, hosts

log = logging.getLogger(__name__)
VALIDITY_HEARTBEATS = 3  # the file stays "fresh" this many heartbeats past its last write
FLUSH_WAIT = 1.0  # `route` waits at most this long for the files to show what it answers
STOPPED_VALIDITY = 10 * 365 * 86400  # a clean stop's "offline" is true until the next start


# Offline states the prompt names instead of "offline": the user has to pair again.
NAMED_STATES = (api.EXPIRED, api.REVOKED, api.DOWN)


def offline(state: str) -> dict[str, Any]:
    label = state if state in NAMED_STATES else api.OFFLINE
    return {"label": label, "state": state, "url": None, "role": None, "since": None, "relay": None}


def route_lines(current: dict[str, Any], pid: int) -> bytes:
    """The route file's two lines for an indicator dict (see the module docstring)."""
    since = current.get("since")
    url = current.get("url")
    second = [str(pid), str(current.get("state") or "unknown"),
              repr(float(since)) if isinstance(since, (int, float)) else "-",
              url if isinstance(url, str) and url and not any(c.isspace() for c in url) else "-"]
    return f"{current['valid_until']} {current['label']}\n{' '.join(second)}\n".encode()


def summarize(states: list[dict[str, Any]], *, waiting: int = 0, names: hosts.Control | None = None) -> dict[str, Any]:
    """The state the prompt shows: the best connected relay (every relay when several are paired and
    one is connected), else the most hopeful other one; ``waiting`` approvals marked ``!N``."""
    connected = [s for s in states if s["state"] == api.CONNECTED and s.get("route")]
    if connected:
        best = min(connected, key=lambda s: (s["route"]["priority"], s["url"]))
        route = best["route"]
        out = {"label": route["label"], "state": api.CONNECTED, "url": route["url"], "role": route["role"],
               "since": best.get("since"), "relay": best["url"]}
        if len(states) > 1:
            out["label"], out["relays"] = _every_relay(states, best, names or hosts.Control())
    else:
        state = next((s["state"] for s in states if s["state"] in (api.CONNECTING, api.BACKOFF, api.RATE_LIMITED)),
                     states[0]["state"] if states else api.NOT_PAIRED)
        out = offline(state)
    out["approvals_waiting"] = waiting
    if waiting > 0:
        out["label"] = f"{out['label']} !{waiting}"
    return out


def _relay_label(state: dict[str, Any]) -> str:
    route = state.get("route")
    if state["state"] == api.CONNECTED and isinstance(route, dict):
        return str(route["label"])
    return str(offline(state["state"])["label"])


def _every_relay(states: list[dict[str, Any]], best: dict[str, Any],
                 names: hosts.Control) -> tuple[str, list[dict[str, Any]]]:
    """``LAN | office: Tailscale``: the default relay (else ``best``) first and unnamed, then the others."""
    first = next((s for s in states if names.is_default(s["url"])), best)
    ordered = [first, *(s for s in states if s is not first)]
    parts, relays = [], []
    for s in ordered:
        name = _name(names.name_for(s["url"]) or _host(s["url"]))
        label = _relay_label(s)
        parts.append(label if s is first else f"{name}: {label}")
        relays.append({"url": s["url"], "name": name, "label": label, "state": s["state"]})
    return " | ".join(parts), relays


def _host(url: str) -> str:
    """The relay's host, the way a user names it; the URL itself when it has none (another client's odd record)."""
    try:
        return urlsplit(url).hostname or url
    except ValueError:  # "ws://[not-ipv6": kept in the store, shown as it is
        return url


def _name(text: str) -> str:
    """A name safe in one line of a prompt: printable, no separator, no newline."""
    return "".join(c if c.isprintable() and c != "|" else "?" for c in text)[:hosts.MAX_NAME]


class Indicator:
    def __init__(self, route_file: Path, json_file: Path, heartbeat: float, names_file: Path | None = None):
        self.route_file = route_file
        self.json_file = json_file
        self.heartbeat = heartbeat
        self.names_file = names_file
        self.current: dict[str, Any] = offline("starting")
        self._names = hosts.Control()
        self._names_signature: tuple[int, int, int] | None = None
        self._unwritten: dict[str, Any] | None = None  # the latest published state the writer has not taken
        self._wake = trio.Event()
        self._published = self._on_disk = 0  # states published / the newest of them the writer has written
        self._written = trio.Event()  # set (and replaced) after each write
        self._writing = False  # the writer task runs

    def names(self) -> hosts.Control:
        """The relays' names and the default (core/hosts.py) as last read (no I/O: see ``names_changed``)."""
        return self._names

    def names_changed(self) -> bool:
        """Whether the names file changed since it was last read (one stat); reads it when it did.
        Blocking: the agent calls it in a worker thread (the loop only reads ``names()``'s reference)."""
        if self.names_file is None:
            return False
        signature = hosts.signature(self.names_file)
        if signature == self._names_signature:
            return False
        self._names = hosts.load_quietly(self.names_file)
        self._names_signature = signature
        return True

    def _render(self, summary: dict[str, Any], now: float, valid_for: float | None, pid: int | None) -> dict[str, Any]:
        valid_until = int(now + (VALIDITY_HEARTBEATS * self.heartbeat if valid_for is None else valid_for))
        self.current = {**summary, "updated_at": now, "valid_until": valid_until,
                        "pid": os.getpid() if pid is None else pid}
        return self.current

    def publish(self, summary: dict[str, Any], now: float) -> dict[str, Any]:
        """``summary`` is the current state now; the writer task (``run``) writes it to the files."""
        self._unwritten = self._render(summary, now, None, None)
        self._published += 1
        self._wake.set()
        return self.current

    async def flushed(self, timeout: float = FLUSH_WAIT) -> None:
        """Until the files show ``current`` (so `route` never answers ahead of the prompt, which reads the
        file); a stuck disk delays the answer by ``timeout`` at most."""
        target = self._published
        with trio.move_on_after(timeout):
            while self._writing and self._on_disk < target:
                await self._written.wait()

    async def run(self, run_sync: Callable[..., Awaitable[Any]] = trio.to_thread.run_sync) -> None:
        """The writer: each published state in turn, the latest only, in a worker thread (``run_sync``).
        Never abandons a write on cancel: once this task is gone no write of its can still land."""
        self._writing = True
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                current, self._unwritten, taken = self._unwritten, None, self._published
                if current is not None:
                    await run_sync(self._write_files, current, False)
                self._on_disk = taken
                self._written.set()
                self._written = trio.Event()
        finally:
            self._writing = False
            self._written.set()

    def write(self, summary: dict[str, Any], now: float, *, valid_for: float | None = None,
              durable: bool = False, pid: int | None = None) -> dict[str, Any]:
        """Publish ``summary``, fresh for ``valid_for`` seconds (default: a few heartbeats), blocking.

        Not fsynced by default: rewritten on every change and heartbeat, it only describes the present.
        """
        current = self._render(summary, now, valid_for, pid)
        self._unwritten = None  # this write is newer than anything the writer still holds
        self._write_files(current, durable)
        return current

    def _write_files(self, current: dict[str, Any], durable: bool) -> None:
        try:
            fileio.atomic_write(self.route_file, route_lines(current, current["pid"]), durable=durable)
            fileio.atomic_write(self.json_file, fileio.dump_json(current), durable=durable)
        except OSError as exc:  # a full disk must not take the agent down; the prompt goes stale
            log.warning("indicator_write_failed error=%s", exc)

    def write_stopped(self, now: float, state: str = api.STOPPED) -> None:
        """On a clean stop: offline (``down`` when every relay is down), valid for a long time (it is the
        truth until the next start). The pid is 0: no process to check, so ``[down]`` is not shown stale.
        Blocking; call it after the writer task (``run``) has ended."""
        summary = offline(state)
        summary["state"] = api.STOPPED
        self.write(summary, now, valid_for=STOPPED_VALIDITY, durable=True, pid=0)
