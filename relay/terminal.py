"""The relay's ``terminal`` channel (``hermes-relay-server --terminal``): shells on the relay host.

The contract is docs/shell-protocol.md (the reference's messages, desktop-channel.md §2.4, plus the
negotiated ``resume`` extension); the design is ../shared/design/shell.md §3(c). The core (relay/core.py)
checks the session's ``terminal`` grant on every message and hands the message here (``on_envelope``);
the driver (relay/conn.py) tells this service when a socket ends (``socket_gone``), when the relay shuts
down (``socket_closing``) and when sessions were revoked or replaced (``check_sessions``).

Attachments (relay/term_attach.py) are keyed by (scope, session name). With ``resume`` (our clients)
the scope is the device's session, so a stream resumes from any socket of that device and survives a
socket drop for a grace period; without it (a reference client) the scope is the socket, as the
reference keys sessions, but unlike the reference a dropped socket's PTYs close after a short grace
(the reference leaks the tmux client and its PTY until it restarts).
"""

from __future__ import annotations

import sys

assert sys.platform != "win32", "PTYs are POSIX only: relay/main.py refuses --terminal on Windows"

import logging  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import trio  # noqa: E402

from ..core.envelope import Envelope  # noqa: E402
from . import term_config as tc  # noqa: E402
from . import term_open, term_tmux  # noqa: E402
from .term_attach import Attachment  # noqa: E402
from .term_pty import PtyProcess, allowed_shell, find_shell  # noqa: E402
from .term_ring import decode_input  # noqa: E402

log = logging.getLogger(__name__)
TERM = "xterm-256color"  # the outer terminal a shell (or tmux client) writes to; tmux sets its own inside
KILL_AFTER = 5.0  # seconds a hung-up shell gets to exit before SIGKILL
SHUTDOWN_KILL = 1.0  # the same when the relay stops (it waits for them)


class TerminalService:
    """Every attachment on this relay, and the handling of each terminal message."""

    def __init__(self, settings: tc.TerminalSettings, session_alive: Callable[[Any], bool],
                 gone: tuple[type[BaseException], ...], now: Callable[[], float]):
        self.settings = settings
        self._alive = session_alive
        self._now = now  # the wall clock grants expire on
        self._gone = gone  # what a send to a socket that went away raises
        self.env = dict(settings.env) if settings.env is not None else dict(os.environ)
        self.tmux = term_tmux.find(settings, self.env, Path.home())
        self.atts: dict[tuple[int, str], Attachment] = {}
        self._nursery: trio.Nursery | None = None
        self._orphans = 0
        self._stopping = False
        log.info("terminal_enabled tmux=%s socket=%s", "yes" if self.tmux else "no", settings.tmux_socket)
        if os.geteuid() == 0:
            log.warning("terminal_as_root shells=root hint=run the relay as an ordinary user")

    # -- lifetime -------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the attachments' tasks until cancelled; then every PTY closes (tmux sessions live on)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                while True:
                    await trio.sleep(self.settings.sweep)
                    self.check_sessions()
            finally:
                self._stopping = True
                # Shells hang up now; their reapers (shielded) reap them. The attachments stay listed so
                # socket_closing can still say goodbye on their sockets.
                for att in list(self.atts.values()):
                    att.close()
        self._nursery = None

    def check_sessions(self) -> None:
        """Close the attachments of sessions that were revoked, replaced or expired, or lost the grant."""
        now = self._now()
        for att in list(self.atts.values()):
            if not self._alive(att.owner):
                self.end(att, "revoked")
            elif tc.refusal(att.owner.grants, now, None) is not None:
                self.end(att, "grant expired")

    # -- the driver's hooks ---------------------------------------------------------------------
    def socket_gone(self, ws: Any) -> None:
        """The socket ended: its attachments are orphaned (and closed after their grace period)."""
        for att in [a for a in self.atts.values() if a.socket is ws]:
            att.orphan()
            if not att.resume:  # keyed by the socket, whose id a later socket may reuse: re-key it
                self._drop(att)
                self._orphans += 1
                att.scope_key = -self._orphans
                self.atts[(att.scope_key, att.name)] = att
            grace = tc.grace_for(self.settings, tmux=att.tmux, resume=att.resume)
            att.grace_scope = trio.CancelScope()
            self.spawn(self._grace, att, att.grace_scope, grace)

    async def socket_closing(self, ws: Any) -> None:
        """The relay shuts down: a final ack, then ``terminal.detached {server shutdown}`` (the caller closes 1001)."""
        for att in [a for a in self.atts.values() if a.socket is ws or a.last_socket is ws]:
            if att.resume:
                await self.send(ws, att.final_ack())
            await self.send(ws, tc.detached(att.name, "server shutdown"))

    # -- messages -------------------------------------------------------------------------------
    async def on_envelope(self, ws: Any, sess: Any, env: Envelope) -> None:
        """One terminal message from an authenticated socket whose grant the core checked."""
        p = env.payload
        name = p.get("session_name") if env.type != "terminal.list" else "main"
        if name is None:  # as the reference: this socket's most recent session, else "main"
            recent = max((a for a in self.atts.values() if a.socket is ws), key=lambda a: a.created_at, default=None)
            name = recent.name if recent is not None and env.type != "terminal.attach" else "main"
        if not isinstance(name, str) or not tc.NAME_RE.fullmatch(name):
            await self.error(ws, env, "session_name must be 1-64 characters from A-Z a-z 0-9 _ - . : space",
                              reason="bad_request")
            return
        handler = _HANDLERS.get(env.type)
        if handler is None:
            await self.error(ws, env, f"unknown terminal message type {env.type[:64]!r}", reason="bad_request")
            return
        await handler(self, ws, sess, env, name)

    async def _attach(self, ws: Any, sess: Any, env: Envelope, name: str) -> None:
        await term_open.attach(self, ws, sess, env, name)

    async def _input(self, ws: Any, sess: Any, env: Envelope, name: str) -> None:
        att = await self._mine(ws, env, name)
        if att is None:
            return
        data = decode_input(env.payload)
        if isinstance(data, str):
            if att.resume or "lone surrogate" not in data:
                await self.error(ws, env, data, name, reason="bad_input")
                return
            data = str(env.payload["data"]).encode("utf-8", "replace")  # a reference client: as it would
        if len(att.queue) + len(data) > tc.MAX_INPUT_QUEUE:
            await self.error(ws, env, "the shell is not reading its input; input refused", name, reason="input_full",
                              in_seq=att.ledger.written)
            return
        if att.resume:
            seq = env.payload.get("seq")
            if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
                await self.error(ws, env, "terminal.input needs seq (the input offset of its first byte)", name,
                                  reason="bad_input")
                return
            verdict = att.ledger.offer(seq, data)
            if verdict.gap:
                await self.error(ws, env, f"input from offset {seq} but the relay has {att.ledger.accepted}", name,
                                  reason="input_gap", in_seq=att.ledger.written)
                return
            data = verdict.data
            if env.payload.get("own") is True:  # the agent's own bytes (its launch): not the CLI's offsets
                att.in_shift += len(data)
            att.frames_unacked += 1
            if not data:  # all duplicate: acknowledge what the PTY has
                if not att.queue:
                    att.frames_unacked = 0
                    await self.send(ws, att.ack())
                return
        else:
            att.ledger.append(data)
        att.queue += data
        att.poke()

    async def _resize(self, ws: Any, sess: Any, env: Envelope, name: str) -> None:
        att = await self._mine(ws, env, name)
        size = tc.size_of(env.payload)
        if att is not None and size is not None:
            att.cols, att.rows = size
            att.proc.resize(*size)

    async def _redraw(self, ws: Any, sess: Any, env: Envelope, name: str) -> None:
        att = await self._mine(ws, env, name)
        if att is not None:
            await self.redraw(att)

    async def redraw(self, att: Attachment) -> None:
        if att.tmux and self.tmux is not None:
            await self.tmux.refresh(att.proc.tty)
        else:
            att.proc.resize(att.cols, max(1, att.rows - 1))
            att.proc.resize(att.cols, att.rows)

    async def _detach(self, ws: Any, sess: Any, env: Envelope, name: str) -> None:
        att = await self._mine(ws, env, name)
        if att is not None:
            self.end(att, "client detach")

    async def _kill(self, ws: Any, sess: Any, env: Envelope, name: str) -> None:
        att = self._find(ws, sess, name)
        holder = att.socket if att is not None else None
        if att is not None:  # closed first, so the tmux client's end is not taken for an EOF
            self.end(att, "client kill", quiet=True)
        killed = await self.tmux.kill(name) if self.tmux is not None else False
        if att is None and not killed:
            await self.error(ws, env, f"no terminal session named {name!r}", name, reason="not found")
            return
        # After the kill: whoever hears it may count on the session being gone. The asker is answered, and
        # the socket the shell was attached to, if another, is told.
        for told in {id(s): s for s in (ws, holder) if s is not None}.values():
            await self.send(told, tc.detached(name, "client kill"))

    async def _list(self, ws: Any, sess: Any, env: Envelope, name: str) -> None:
        tmux_sessions = await self.tmux.sessions() if self.tmux is not None else []
        mine = {a.name: a for a in self.atts.values() if a.owner is sess or a.socket is ws}
        out = []
        for t in tmux_sessions:
            att = mine.pop(t["name"], None)
            out.append({**t, "pid": att.proc.pid if att else None, "shell": att.shell if att else "tmux",
                        "live": True, "owned_by_client": att is not None and att.socket is ws})
        for att in mine.values():
            if not att.tmux:
                out.append({"name": att.name, "tmux_name": None, "attached": int(att.socket is not None), "windows": 1,
                            "created_at": int(att.created_at), "pid": att.proc.pid, "shell": att.shell, "live": True,
                            "owned_by_client": att.socket is ws})
        await self.send(ws, Envelope(tc.CHANNEL, "terminal.sessions",
                                      {"sessions": out, "tmux_available": self.tmux is not None}, env.id))

    # -- helpers --------------------------------------------------------------------------------
    def _find(self, ws: Any, sess: Any, name: str) -> Attachment | None:
        """This socket's attachment ``name``, else this device's (resume mode)."""
        for att in self.atts.values():
            if att.name == name and (att.socket is ws or att.owner is sess):
                return att
        return None

    async def _mine(self, ws: Any, env: Envelope, name: str) -> Attachment | None:
        """This socket's attachment ``name``; else None, with an error unless the reference would stay silent
        (it drops input and resizes for names it has not attached; our clients' input carries ``seq``)."""
        for att in self.atts.values():
            if att.socket is ws and att.name == name:
                return att
        if env.type == "terminal.resize" or (env.type == "terminal.input" and "seq" not in env.payload):
            return None
        await self.error(ws, env, f"no terminal session {name!r} is attached on this connection", name,
                          reason="not attached")
        return None

    def add(self, att: Attachment) -> None:
        self.atts[(att.scope_key, att.name)] = att
        self.spawn(att.run, self._on_eof)
        self.spawn(self._reap, att)

    def _drop(self, att: Attachment) -> None:
        if self.atts.get((att.scope_key, att.name)) is att:
            del self.atts[(att.scope_key, att.name)]

    def end(self, att: Attachment, reason: str, *, quiet: bool = False, **extra: Any) -> None:
        """Close ``att`` and (unless ``quiet``) tell its socket ``terminal.detached {reason}``, once."""
        self._drop(att)
        if att.closed:
            return
        ws = att.socket
        att.close()
        if ws is not None and not quiet:
            self.spawn(self.send, ws, tc.detached(att.name, reason, **extra))
        log.info("terminal_closed name=%s reason=%s pid=%d", att.name, reason, att.proc.pid)

    def goodbye(self, ws: Any, reason: str) -> list[Envelope]:
        """``ws`` is about to be closed (its session was revoked or replaced): end its attachments now and
        return their ``terminal.detached {reason}`` for the closer to send first (spawned sends raced the close)."""
        farewell = []
        for att in [a for a in self.atts.values() if a.socket is ws]:
            self.end(att, reason, quiet=True)
            farewell.append(tc.detached(att.name, reason))
        return farewell

    def _on_eof(self, att: Attachment, reason: str) -> None:
        extra: dict[str, Any] = {"exit_code": att.proc.status} if att.proc.status is not None else {}
        self.end(att, reason, **extra)

    async def _grace(self, att: Attachment, scope: trio.CancelScope, seconds: float) -> None:
        with scope:  # cancelled when a socket attaches again (one timer per attachment)
            await trio.sleep(seconds)
            if att.socket is None and not att.closed:
                self.end(att, "grace expired")

    async def _reap(self, att: Attachment) -> None:
        """Reap the shell; one that outlives its hang-up by KILL_AFTER (or the relay's shutdown) is killed."""
        proc = att.proc
        try:
            with trio.CancelScope() as self_scope:
                att.on_close = self_scope.cancel
                if att.closed:
                    self_scope.cancel()
                await proc.reap()
        finally:
            if proc.status is None:
                att.close()  # cancelled by the relay's shutdown: hang up now
                with trio.CancelScope(shield=True):
                    with trio.move_on_after(SHUTDOWN_KILL if self._stopping else KILL_AFTER):
                        await proc.reap()
                    if proc.status is None:
                        proc.kill(signal.SIGKILL)
                        with trio.move_on_after(SHUTDOWN_KILL):
                            await proc.reap()

    def spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(fn, *args)

    async def send(self, ws: Any, env: Envelope) -> None:
        try:
            await ws.send_message(env.encode())
        except self._gone:
            pass  # the socket is gone: socket_gone orphans its attachments

    async def error(self, ws: Any, env: Envelope, message: str, name: str | None = None, **extra: Any) -> None:
        payload: dict[str, Any] = {"message": message, **extra}
        if name is not None:
            payload["session_name"] = name
        await self.send(ws, Envelope(tc.CHANNEL, "terminal.error", payload, env.id) if env.id else
                         Envelope(tc.CHANNEL, "terminal.error", payload))

    def spawn_pty(self, argv: list[str], cols: int, rows: int, *, tmux: bool) -> PtyProcess:
        """``argv`` on a new PTY, started in the home directory (posix_spawn has no chdir before Python 3.13,
        so /bin/sh changes directory and execs it: the pid stays the same)."""
        env = {**(self.tmux.env if tmux and self.tmux is not None else self.env), "TERM": TERM}
        return PtyProcess(["/bin/sh", "-c", 'cd 2>/dev/null; exec "$@"', "sh", *argv], env, cols, rows)

    def bare_shell(self, requested: object) -> str:
        return requested if allowed_shell(requested) and isinstance(requested, str) else \
            find_shell(self.settings.shell, self.env.get("SHELL"))


_HANDLERS = {
    "terminal.attach": TerminalService._attach,
    "terminal.input": TerminalService._input,
    "terminal.resize": TerminalService._resize,
    "terminal.redraw": TerminalService._redraw,
    "terminal.detach": TerminalService._detach,
    "terminal.kill": TerminalService._kill,
    "terminal.list": TerminalService._list,
}
