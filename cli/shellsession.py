"""One ``hermes-relay shell`` run: the source of record and the ``poll`` loop (blocking, no trio).

The CLI is the source of record of its shell (docs/shell-protocol.md): a random ``stream`` id, the
input not yet acknowledged (``unacked``, from offset ``in_base``; at most ``MAX_UNACKED`` bytes, then
stdin is not read until acks come) and ``out_seq``, the output bytes written to the terminal. When the
IPC connection ends without the call's response (the agent died), the loop restarts the agent as
every command does (``ensure_agent``) and calls ``shell.open`` again with ``reopen: true`` and that
record; it gives up after ``REOPEN_TIMEOUT`` seconds.

The loop polls stdin, the agent's socket and a self-pipe fed by ``signal.set_wakeup_fd`` (PEP 475
retries ``poll`` after a handler, so the pipe is what wakes it). The caller owns the terminal
(``termmode.RawTerminal``) and restores it whatever this raises; signals end the loop with
``128 + signo``.
"""

from __future__ import annotations

import sys

if sys.platform == "win32":  # poll, SIGWINCH, termios: cli/commands/shell.py says so before importing this
    raise ImportError(f"{__name__} needs a POSIX terminal")

import os  # noqa: E402
import secrets  # noqa: E402
import select  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402

from ..core import rpc  # noqa: E402
from ..core.errors import AgentNotRunningError, IpcError, RemoteProtocolError, error_from_wire  # noqa: E402
from . import escapekey, shellscreen, termmode  # noqa: E402
from .outfilter import OutputFilter  # noqa: E402
from .shellconn import AgentGone  # noqa: E402

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    from ..core.apitypes import ShellOpenParams
    from .shellconn import ShellConnection

# Input held for a resend; stdin is not read beyond it. 2 KiB under 64 KiB: a reopen's shell.open carries it
# all and must fit the agent's 64 KiB request frame (core/framing.MAX_REQUEST_FRAME) with the other params.
MAX_UNACKED = 62 << 10
READ_CHUNK = 4096
REOPEN_TIMEOUT = 15.0  # seconds to get a restarted agent to take the shell back
STATUS_DELAY = 1.0  # a gap shorter than this shows nothing
NOTICE_SECONDS = 4.0
END_WAIT = 5.0  # seconds to wait for the agent to confirm a detach or kill
SIGNALS = ("SIGWINCH", "SIGTERM", "SIGHUP", "SIGINT", "SIGCONT")
QUIT_SIGNALS = frozenset({signal.SIGTERM, signal.SIGHUP, signal.SIGINT})


def new_stream() -> str:
    return secrets.token_urlsafe(16)


class ShellSession:
    def __init__(self, base: ShellOpenParams, connect: Callable[[ShellOpenParams, float], ShellConnection],
                 term: termmode.RawTerminal, *, escape: int | None, filt: OutputFilter,
                 reopen_timeout: float = REOPEN_TIMEOUT, clock: Callable[[], float] = time.monotonic):
        self.base = base  # remote, session, term, raw, new, conversation, exec
        self.connect = connect  # (params, seconds left) -> a new ShellConnection, shell.open already sent
        self.term = term
        self.in_fd, self.out_fd = term.in_fd, term.out_fd
        self.escape = escapekey.EscapeReader(escape)
        self.filter = filt
        self.reopen_timeout = reopen_timeout
        self.clock = clock
        self.stream = base["stream"]
        self.out_seq = base["out_seq"]
        self.in_base = base["in_base"]
        self.in_sent = base["in_sent"]
        self.unacked = bytearray(base["unacked"])
        self.size = (base["cols"], base["rows"])
        self.conn: ShellConnection | None = None
        self.attached_once = False
        self.ending: tuple[str, float] | None = None  # ("detached"|"killed", deadline) once asked
        self.gap_since: float | None = None  # link reconnecting or agent gone since
        self.gap_text = ""
        self.status_shown = False
        self.notice_until: float | None = None
        self.reopen_deadline: float | None = None
        self.next_attempt = 0.0
        self.attempt_delay = 0.05
        self.outcome: shellscreen.Outcome | None = None

    # -- the record --------------------------------------------------------------------------------
    @property
    def typed(self) -> int:
        return self.in_base + len(self.unacked)

    def open_params(self, *, reopen: bool) -> ShellOpenParams:
        b = self.base
        return {"remote": b["remote"], "session": b["session"], "cols": self.size[0], "rows": self.size[1],
                "term": b["term"], "stream": self.stream, "out_seq": self.out_seq, "in_base": self.in_base,
                "in_sent": max(self.in_sent, self.in_base), "unacked": bytes(self.unacked), "raw": b["raw"],
                "new": b["new"], "conversation": b["conversation"],
                "exec": None if reopen else b["exec"],  # never re-injected
                "reopen": reopen}

    # -- the loop ----------------------------------------------------------------------------------
    def run(self, first: ShellConnection) -> shellscreen.Outcome:
        self.conn = first
        rfd, wfd = os.pipe()
        os.set_blocking(rfd, False)
        os.set_blocking(wfd, False)
        previous = {}
        old_wakeup = signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
        try:
            for name in SIGNALS:
                signum = getattr(signal, name)
                previous[signum] = signal.signal(signum, _noop)
            self._resize()  # a resize while the agent was starting came before the handler
            self._receive_safely()  # frames that arrived behind the hello answer
            while self.outcome is None:
                self._step(rfd)
            return self.outcome
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for signum, handler in previous.items():
                signal.signal(signum, signal.SIG_DFL if handler is None else handler)
            os.close(rfd)
            os.close(wfd)
            if self.conn is not None:
                self.conn.close()

    def _step(self, sig_fd: int) -> None:
        poller = select.poll()
        poller.register(sig_fd, select.POLLIN)
        reading = len(self.unacked) < MAX_UNACKED and self.ending is None
        if reading:
            poller.register(self.in_fd, select.POLLIN)
        if self.conn is not None:
            poller.register(self.conn.fileno(), select.POLLIN | (select.POLLOUT if self.conn.wants_write else 0))
        timeout = self._timeout()
        events = dict(poller.poll(None if timeout is None else max(0, int(timeout * 1000) + 1)))
        if sig_fd in events:
            self._signals(sig_fd)
            if self.outcome is not None:
                return
        if self.conn is not None and self.conn.fileno() in events:
            try:
                if events[self.conn.fileno()] & select.POLLOUT:
                    self.conn.flush()
                self._receive()
            except AgentGone:
                self._agent_gone()
            if self.outcome is not None:
                return
        if reading and events.get(self.in_fd):
            self._stdin()
        self._timers()

    def _timeout(self) -> float | None:
        now = self.clock()
        marks = [t for t in (self.ending[1] if self.ending else None,
                             self.notice_until,
                             self.gap_since + STATUS_DELAY if self.gap_since is not None and not self.status_shown
                             else None,
                             self.next_attempt if self.conn is None else None) if t is not None]
        return max(0.0, min(marks) - now) if marks else None

    def _signals(self, fd: int) -> None:
        try:
            got = os.read(fd, 64)
        except BlockingIOError:
            return
        for signum in got:
            if signum in QUIT_SIGNALS:
                self._send("shell.detach", {})  # the session lives on; the agent need not guess
                name = signal.Signals(signum).name
                self.outcome = shellscreen.Outcome(128 + signum, f"{name}: left session {self.base['session']!r} running")
                return
            if signum == signal.SIGWINCH:
                self._resize()
            elif signum == signal.SIGCONT:  # back from a suspend (ours or a job-control stop)
                self.term.enter()
                self._send("shell.redraw", {})
                self._resize()

    def _resize(self) -> None:
        size = termmode.window_size(self.out_fd)
        if size != self.size:
            self.size = size
            self._send("shell.resize", {"cols": size[0], "rows": size[1]})

    # -- input ---------------------------------------------------------------------------------------
    def _stdin(self) -> None:
        try:
            data = os.read(self.in_fd, min(READ_CHUNK, MAX_UNACKED - len(self.unacked)))
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the terminal went away
            self._send("shell.detach", {})
            self.outcome = shellscreen.Outcome(128 + signal.SIGHUP, None)
            return
        for kind, value in self.escape.feed(data):
            if kind == "data":
                assert isinstance(value, bytes)
                self._type(value)
            else:
                self._command(str(value))

    def _type(self, data: bytes) -> None:
        seq = self.typed
        self.unacked += data
        self._send("shell.input", {"seq": seq, "d": data})
        if self.status_shown and self.gap_since is not None:
            self._draw_status()  # the count of keys queued

    def _command(self, name: str) -> None:
        if name in ("detach", "kill"):
            self._send(f"shell.{name}", {})
            self.ending = ("detached" if name == "detach" else "killed", self.clock() + END_WAIT)
            if self.conn is None:  # no agent to tell: a detach is what happens anyway
                self._end(self.ending[0], None)
        elif name == "help":
            termmode.write_all(self.out_fd, b"\r\n" + termmode.crlf(escapekey.help_text(self.escape.key).encode()))
        elif name == "suspend":
            self.term.restore()
            os.kill(os.getpid(), signal.SIGTSTP)  # stops here until `fg` (or not at all in an orphaned group)
            self.term.enter()
            self._send("shell.redraw", {})
            self._resize()

    def _send(self, method: str, params: dict[str, Any]) -> None:
        if self.conn is None:
            return  # input stays in unacked; the reopen carries it
        try:
            self.conn.notify(method, params)
        except AgentGone:
            self._agent_gone()

    # -- the agent's messages ----------------------------------------------------------------------
    def _receive_safely(self) -> None:
        try:
            self._receive()
        except AgentGone:
            self._agent_gone()

    def _receive(self) -> None:
        assert self.conn is not None
        for msg in self.conn.receive():
            if isinstance(msg, rpc.Notify):
                self._notify(msg.method, msg.params)
            elif isinstance(msg, rpc.Response) and msg.msgid == self.conn.msgid:
                if msg.error is not None:
                    raise error_from_wire(msg.error)
                result = msg.result if isinstance(msg.result, dict) else {}
                self._end(str(result.get("reason")), result.get("code"))
                return
            else:
                raise RemoteProtocolError(f"agent sent an unexpected message on the shell's connection: {msg!r:.200}")

    def _notify(self, method: str, p: Mapping[str, Any]) -> None:
        if method == "shell.output":
            self._output(_field(p, "d", bytes), _field(p, "seq_end", int))
        elif method == "shell.ack":
            self._ack(_field(p, "in_seq", int), _field(p, "sent", int))
        elif method == "shell.attached":
            replay = p.get("replay")
            if isinstance(replay, bytes) and replay and not self.attached_once:
                termmode.write_all(self.out_fd, self.filter.feed(termmode.crlf(replay)))
            self.attached_once = True
        elif method == "shell.link":
            state = p.get("state")
            if state == "live":
                self._gap_over()
            else:
                route = p.get("route") or "another route"
                verb = "reconnecting via" if state == "reconnecting" else "lost the link to the relay:"
                self._gap_start(f"{verb} {route if state == 'reconnecting' else p.get('reason') or route}…",
                                int(p.get("queued") or 0))
        elif method == "shell.notice":
            self._show(str(p.get("text") or ""))
            self.notice_until = self.clock() + NOTICE_SECONDS

    def _output(self, data: bytes, seq_end: int) -> None:
        start = seq_end - len(data)
        if seq_end <= self.out_seq:
            return  # already written (an overlap after a reopen)
        if start < self.out_seq:
            data = data[self.out_seq - start:]
        self.out_seq = seq_end
        termmode.write_all(self.out_fd, self.filter.feed(data))

    def _ack(self, in_seq: int, sent: int) -> None:
        if in_seq > self.in_base:
            drop = min(in_seq - self.in_base, len(self.unacked))  # never past what was typed
            del self.unacked[:drop]
            self.in_base += drop
        self.in_sent = max(self.in_sent, sent, self.in_base)

    def _end(self, reason: str, code: Any) -> None:
        self.outcome = shellscreen.outcome(reason, code, self.base["session"])

    # -- gaps: the status line and the reopen --------------------------------------------------------
    def _gap_start(self, text: str, queued: int) -> None:
        if self.gap_since is None:
            self.gap_since = self.clock()
        self.gap_text = text
        self._queued = queued
        if self.status_shown:
            self._draw_status()

    def _gap_over(self) -> None:
        self.gap_since = None
        if self.status_shown:
            self._erase_status()

    def _status_line(self) -> str:
        keys = max(getattr(self, "_queued", 0), self.typed - max(self.in_sent, self.in_base))
        return self.gap_text + (f" {keys} keys queued" if keys else "")

    def _draw_status(self) -> None:
        self._show(self._status_line())

    def _show(self, text: str) -> None:
        termmode.write_all(self.out_fd, shellscreen.status_line(text, *self.size))
        self.status_shown = True

    def _erase_status(self) -> None:
        termmode.write_all(self.out_fd, shellscreen.erase_status(self.size[1]))
        self.status_shown = False
        self.notice_until = None
        self._send("shell.redraw", {})  # the line under the status belongs to the remote screen

    def _agent_gone(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.ending is not None:  # the user was leaving anyway
            self._end(self.ending[0], None)
            return
        now = self.clock()
        if self.reopen_deadline is None:
            self.reopen_deadline = now + self.reopen_timeout
            self.attempt_delay = 0.05
        self.next_attempt = now
        self._gap_start("the agent restarted, reconnecting…", 0)

    def _reopen(self) -> None:
        assert self.reopen_deadline is not None
        left = self.reopen_deadline - self.clock()
        if left <= 0:
            raise IpcError(f"lost the agent and could not get the shell back within {self.reopen_timeout:g} s",
                           hint=f"session {self.base['session']!r} may live on on the relay host: "
                                "`hermes-relay agent status`, then `hermes-relay sessions resume "
                                f"{self.base['session']}`")
        try:
            self.conn = self.connect(self.open_params(reopen=True), left)
        except (AgentNotRunningError, AgentGone, OSError):
            self.next_attempt = self.clock() + self.attempt_delay
            self.attempt_delay = min(self.attempt_delay * 2, 0.5)
            return
        except IpcError as exc:
            if exc.code != "ipc_error":
                raise  # the agent answered: an error with its own reason (no relay, no grant...)
            self.next_attempt = self.clock() + self.attempt_delay
            return
        self.reopen_deadline = None
        self._gap_over()
        self._receive_safely()

    def _timers(self) -> None:
        now = self.clock()
        if self.ending is not None and now >= self.ending[1]:
            self._end(self.ending[0], None)
            return
        if self.conn is None and self.reopen_deadline is not None and now >= self.next_attempt:
            self._reopen()
        if self.gap_since is not None and not self.status_shown and now >= self.gap_since + STATUS_DELAY:
            self._draw_status()
        if self.notice_until is not None and now >= self.notice_until and self.gap_since is None:
            self._erase_status()


def _field(params: Mapping[str, Any], key: str, kind: type) -> Any:
    value = params.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise RemoteProtocolError(f"agent sent a shell notify whose {key!r} is not {kind.__name__}: {value!r:.60}")
    return value


def _noop(signum: int, frame: Any) -> None:
    """The wakeup pipe carries the signal; the handler only keeps the default action away."""
