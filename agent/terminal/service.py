"""The terminal service: every shell of the agent, on every relay link (agent/terminal/ports.TerminalSeam).

agent/link.py runs ``serve_link`` once per authenticated connection: its start tells each session of that
relay "connected on this route" (they reattach), its end tells them "lost" (they wait, queueing keys, for
the next connection: a failover, a relay restart, the agent's own restart when the CLI reopens). It
routes each ``terminal`` envelope by ``session_name``, ``system/pong`` to the session whose ping it
answers (in order: the relay answers pings inline), and ``system/error`` to every session and request
of that connection. The IPC handlers make one call each: ``open`` (runs the shell until it ends),
``list`` and ``kill`` (``hermes-relay sessions``, over the link).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from ...core import hosts
from ...core.errors import (
    AmbiguousError,
    ConnectionLostError,
    ForbiddenError,
    HermesError,
    NotFoundError,
    NotPairedError,
    TerminalRefusedError,
    UsageError,
)
from ...core.record import owner_urls
from ...core.store import resolve_in
from . import wire
from .outbox import Notify
from .ports import TerminalPort
from .session import ENDED, REFERENCE, State, TerminalSession

log = logging.getLogger(__name__)

CONNECT_WAIT = 10.0  # a new shell waits this long for its relay's link to connect
REQUEST_TIMEOUT = 15.0  # terminal.list / terminal.kill (the reference CLI's wait)
DRAIN_WAIT = 1.0  # a planned move waits this long for input in flight to be acknowledged
LEAVE_WAIT = 0.5  # an ending connection's terminal.detach may take this long
REFERENCE_MAX = 4  # shells per connection on the reference relay

Resolve = Callable[[str | None], Awaitable[str]]


def store_resolver(read_sessions: Callable[[], Awaitable[dict[str, dict[str, Any]]]], control: Path | None = None) -> Resolve:
    """``--remote URL|NAME`` (a name from the ``control`` file, core/hosts.py) or nothing (the only paired
    relay, else the default one) to the pairing's owner URL."""

    async def resolve(remote: str | None) -> str:
        sessions = await read_sessions()
        names = await trio.to_thread.run_sync(hosts.load_quietly, control) if control is not None else hosts.Control()
        if remote:
            found = resolve_in(sessions, hosts.resolve_name(names, remote))
            if found is None:
                raise NotPairedError(f"no pairing stored for {remote}", hint="`hermes-relay hosts` lists the paired relays")
            return found[0]
        paired = owner_urls(sessions)
        if not paired:
            raise NotPairedError("this computer is not paired with any relay",
                                 hint="pair first: hermes-relay pair --remote ws://HOST:8767")
        default = resolve_in(sessions, names.relay_url) if names.relay_url else None
        if len(paired) > 1 and default is not None:
            return default[0]
        if len(paired) > 1:
            raise AmbiguousError(f"{len(paired)} relays are paired; choose one with --remote URL|NAME",
                                 hint="paired: " + ", ".join(paired))
        return paired[0]

    return resolve


class TerminalService:
    def __init__(self, resolve: Resolve):
        self._resolve = resolve
        self.sessions: dict[tuple[str, str], TerminalSession] = {}
        self.ports: dict[str, TerminalPort] = {}
        self._pings: dict[TerminalPort, deque[tuple[str, TerminalSession]]] = {}
        self._waiters: dict[str, tuple[TerminalPort, trio.MemorySendChannel[tuple[str, dict[str, Any]]]]] = {}
        self._port_event = trio.Event()
        self._on_open: dict[str, Callable[[], None]] = {}  # per relay URL: its link's keepalive (on_open)

    # -- the link's side (ports.TerminalSeam) ---------------------------------------------------
    async def serve_link(self, port: TerminalPort, inbound: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:
        self.ports[port.url] = port
        self._pings[port] = deque()
        self._port_event.set()
        self._port_event = trio.Event()
        for session in self._of(port.url):
            session.connected(port)
        try:
            async for message in inbound:
                self._route(port, message)
        finally:
            _drain(inbound, lambda message: self._route(port, message))  # read before the close: our relay's
            # final ack and `detached {server shutdown}` say which input never reached the PTY
            with trio.CancelScope(shield=True), trio.move_on_after(LEAVE_WAIT):
                await self._detach_reference(port)  # the agent stopping: no stale tmux client on the reference
            if self.ports.get(port.url) is port:
                del self.ports[port.url]
            self._pings.pop(port, None)
            for session in self._of(port.url):
                session.lost(port)
            for key, (waiting_on, send) in list(self._waiters.items()):
                if waiting_on is port:
                    send.send_nowait(("lost", {}))
                    del self._waiters[key]

    def attached(self, url: str) -> bool:
        return any(s.state not in ENDED for s in self._of(url))

    def on_open(self, url: str, wake: Callable[[], None]) -> None:
        self._on_open[url] = wake

    async def leave(self, url: str, *, drain: bool) -> None:
        """Only the reference's attachments are detached: ours resume on the next connection (the relay
        tells this one "attached elsewhere"), which keeps the output exact instead of a redraw."""
        port = self.ports.get(url)
        if port is None:
            return
        if drain:
            with trio.move_on_after(DRAIN_WAIT):
                for session in self._live_reference(port):
                    while session.ledger.in_flight and session.port is port:
                        await session.changed()
        await self._detach_reference(port)

    def refused(self, url: str, verdict: str) -> None:
        for session in self._of(url):
            session.refused(verdict)

    def _live_reference(self, port: TerminalPort) -> list[TerminalSession]:
        return [s for s in self._of(port.url) if s.port is port and s.state is State.LIVE and s.kind == REFERENCE]

    async def _detach_reference(self, port: TerminalPort) -> None:
        live = self._live_reference(port)
        for session in live:
            session.lost(port, "moving to another route")  # first: its replies on this connection are not its own
            try:
                await port.send(wire.named("terminal.detach", session.name))
            except ConnectionLostError:
                break
        if live:
            log.info("terminal_planned_leave url=%s detached=%d", port.url, len(live))

    def _of(self, url: str) -> list[TerminalSession]:
        return [s for (u, _), s in self.sessions.items() if u == url]

    def _ping_sent(self, port: TerminalPort, msg_id: str, session: TerminalSession) -> None:
        pings = self._pings.get(port)
        if pings is not None:
            pings.append((msg_id, session))

    def _route(self, port: TerminalPort, message: dict[str, Any]) -> None:
        channel, typ, msg_id = message.get("channel"), str(message.get("type") or ""), str(message.get("id") or "")
        raw = message.get("payload")
        payload: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if channel == "system":
            if typ == "pong":
                self._pong(port, msg_id)
            elif typ == "error":
                for each in self._of(port.url):
                    each.on_message(port, "system.error", payload)
                self._answer(port, None, "system.error", payload)
            return
        name = payload.get("session_name")
        if typ == "terminal.sessions":
            self._answer(port, msg_id, typ, payload)
            return
        killed = False
        if typ in ("terminal.detached", "terminal.error") and isinstance(name, str):
            killed = self._answer(port, f"kill:{port.url}:{name}", typ, payload) and typ == "terminal.detached"
        session: TerminalSession | None = self.sessions.get((port.url, name)) if isinstance(name, str) else None
        if killed and session is not None and session.port is port:
            session.finish("killed")  # `hermes-relay sessions kill` of a shell open here
            return
        if session is None and typ == "terminal.error":
            waiting = [s for s in self._of(port.url) if s.port is port and s.state in (State.ATTACHING, State.REATTACHING)]
            if waiting:
                session = waiting[0]
            else:
                self._answer(port, None, typ, payload)
        if session is not None:
            session.on_message(port, typ, payload)
        else:
            log.debug("terminal_message_unrouted url=%s type=%s", port.url, typ)

    def _pong(self, port: TerminalPort, msg_id: str) -> None:
        pings = self._pings.get(port)
        if not pings:
            return
        for i, (pending, session) in enumerate(pings):
            if pending == msg_id:
                del pings[i]
                session.pong(msg_id)
                return

    def _answer(self, port: TerminalPort, key: str | None, typ: str, payload: dict[str, Any]) -> bool:
        """Hand a reply to the request waiting under ``key`` (None: every request on ``port``); any waited?"""
        answered = False
        for waiting_key, (waiting_on, send) in list(self._waiters.items()):
            if waiting_on is port and (key is None or waiting_key == key):
                send.send_nowait((typ, payload))
                del self._waiters[waiting_key]
                answered = True
        return answered

    # -- the IPC side ---------------------------------------------------------------------------
    async def open(self, params: dict[str, Any], notify: Notify, inbox: Any) -> dict[str, Any]:
        """``shell.open``: run the shell until it ends; its final response ``{reason, code}``."""
        options = wire.ShellOptions.parse(params)
        url = await self._resolve(options.remote)
        key = (url, options.session)
        if not options.reopen:
            await self._port(url)
        others = [s for s in self._of(url) if s.kind == REFERENCE and s.state not in ENDED and s.name != options.session]
        if len(others) >= REFERENCE_MAX:
            raise UsageError(f"{len(others)} shells are open on {url} already: the reference relay allows {REFERENCE_MAX}",
                             hint="close one (Ctrl+A .) or kill an old one: hermes-relay sessions kill NAME")
        old = self.sessions.get(key)
        if old is not None:
            old.finish("replaced")
        session = TerminalSession(url, options, on_ping=self._ping_sent)
        self.sessions[key] = session
        wake = self._on_open.get(url)
        if wake is not None:
            wake()
        port = self.ports.get(url)
        if port is not None:
            session.connected(port)
        log.info("terminal_open url=%s session=%s reopen=%s", url, options.session, options.reopen)
        try:
            return await session.run(notify, inbox)
        finally:
            if self.sessions.get(key) is session:
                del self.sessions[key]

    async def list(self, remote: Any) -> dict[str, Any]:
        url = await self._resolve(_remote(remote))
        typ, payload = await self._request(url, None, wire.envelope("terminal.list", {}))
        if typ != "terminal.sessions":
            raise _refused(url, typ, payload)
        sessions = payload.get("sessions")
        return {"sessions": [{k: s[k] for k in wire.SESSION_FIELDS if k in s} for s in sessions if isinstance(s, dict)]
                if isinstance(sessions, list) else [],
                "tmux_available": payload.get("tmux_available") is True}

    async def kill(self, remote: Any, name: Any) -> dict[str, Any]:
        if not isinstance(name, str) or not wire.SESSION_NAME.fullmatch(name):
            raise UsageError(f"session names are 1-64 letters, digits, '_' or '-' (got {name!r:.80})")
        url = await self._resolve(_remote(remote))
        typ, payload = await self._request(url, f"kill:{url}:{name}", wire.named("terminal.kill", name))
        if typ != "terminal.detached":
            if typ == "terminal.error" and payload.get("session_name") == name:
                raise NotFoundError(f"no terminal session {name!r} on {url}: {payload.get('message') or ''}".rstrip(": "),
                                    hint="hermes-relay sessions list")
            raise _refused(url, typ, payload)
        return {"reason": str(payload.get("reason") or "killed")}

    async def _port(self, url: str) -> TerminalPort:
        with trio.move_on_after(CONNECT_WAIT):
            while url not in self.ports:
                await self._port_event.wait()
            return self.ports[url]
        raise ConnectionLostError(f"not connected to {url}", hint="`hermes-relay status` says why; the agent keeps trying")

    async def _request(self, url: str, key: str | None, envelope: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        port = await self._port(url)
        key = key or envelope["id"]
        send, receive = trio.open_memory_channel[tuple[str, dict[str, Any]]](1)
        self._waiters[key] = (port, send)
        try:
            await port.send(envelope)
            with trio.move_on_after(REQUEST_TIMEOUT):
                typ, payload = await receive.receive()
                if typ == "lost":
                    raise ConnectionLostError(f"the connection to {url} was lost during {envelope['type']}",
                                              hint="try again: the agent reconnects by itself")
                return typ, payload
            raise TerminalRefusedError(f"{url} did not answer {envelope['type']} within {REQUEST_TIMEOUT:g}s",
                                hint="the relay may serve no terminal (our relay: hermes-relay-server --terminal)")
        finally:
            if self._waiters.get(key, (None,))[0] is port:
                del self._waiters[key]


def _remote(remote: Any) -> str | None:
    if remote is not None and not isinstance(remote, str):
        raise UsageError("remote must be a relay URL or name")
    return remote or None


def _refused(url: str, typ: str, payload: dict[str, Any]) -> HermesError:
    message = str(payload.get("message") or payload.get("error") or "refused")
    if "grant" in message.lower():
        return ForbiddenError(f"{url} refused: {message}",
                              hint="this device has no terminal grant: `hermes-relay devices extend`")
    if typ == "terminal.error":  # it serves a terminal channel, and that failed the request
        return TerminalRefusedError(f"{url} refused the terminal request: {message}",
                                    hint="the relay's own error: its log on the relay host says more")
    return TerminalRefusedError(f"{url} refused the terminal request: {message}",
                         hint="the relay may serve no terminal (our relay: hermes-relay-server --terminal)")


def _drain(inbound: trio.MemoryReceiveChannel[dict[str, Any]], route: Callable[[dict[str, Any]], None]) -> None:
    """Route the messages already received on a connection that ended (or whose service is cancelled)."""
    while True:
        try:
            route(inbound.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            return
