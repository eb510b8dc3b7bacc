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
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hermes_relay.core import api, fileio, hosts

log = logging.getLogger(__name__)
VALIDITY_HEARTBEATS = 3  # the file stays "fresh" this many heartbeats past its last write
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

    def names(self) -> hosts.Control:
        """The relays' names and the default (core/hosts.py), re-read only when the file changed."""
        self.names_changed()
        return self._names

    def names_changed(self) -> bool:
        """Whether the names file changed since it was last read (one stat); reads it when it did."""
        if self.names_file is None:
            return False
        signature = hosts.signature(self.names_file)
        if signature == self._names_signature:
            return False
        self._names_signature = signature
        self._names = hosts.load_quietly(self.names_file)
        return True

    def write(self, summary: dict[str, Any], now: float, *, valid_for: float | None = None,
              durable: bool = False, pid: int | None = None) -> dict[str, Any]:
        """Publish ``summary``, fresh for ``valid_for`` seconds (default: a few heartbeats).

        Not fsynced by default: rewritten on every change and heartbeat, it only describes the present.
        """
        valid_until = int(now + (VALIDITY_HEARTBEATS * self.heartbeat if valid_for is None else valid_for))
        pid = os.getpid() if pid is None else pid
        self.current = {**summary, "updated_at": now, "valid_until": valid_until, "pid": pid}
        try:
            fileio.atomic_write(self.route_file, route_lines(self.current, pid), durable=durable)
            fileio.atomic_write(self.json_file, fileio.dump_json(self.current), durable=durable)
        except OSError as exc:  # a full disk must not take the agent down; the prompt goes stale
            log.warning("indicator_write_failed error=%s", exc)
        return self.current

    def write_stopped(self, now: float, state: str = api.STOPPED) -> None:
        """On a clean stop: offline (``down`` when every relay is down), valid for a long time (it is the
        truth until the next start). The pid is 0: no process to check, so ``[down]`` is not shown stale."""
        summary = offline(state)
        summary["state"] = api.STOPPED
        self.write(summary, now, valid_for=STOPPED_VALIDITY, durable=True, pid=0)
