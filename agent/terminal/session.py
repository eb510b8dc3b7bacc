"""One shell: a TerminalSession per (relay, session name), outliving the connections it rides.

    ATTACHING → LIVE ⇄ SUSPENDED → REATTACHING → LIVE | LOST → CLOSED

Everything the link's reader and the CLI's notifies do here is synchronous (state changes, queueing) and
wakes the session's own tasks, which do the I/O: ``_pump`` is the only writer to the connection (attach,
resize, input, pings, detach), ``_timers`` keeps the deadlines (attach, the 60 s gap, suspicion, the
program launch), the outbox sends the notifies to the CLI in order.

Input is held until ``terminal.attached`` (the reference relay drops earlier input), leaves in order
(agent/terminal/ledger.py), and is acknowledged by our relay's ``terminal.ack`` or, on the reference,
by the pong of a ``system/ping`` with id ``in-<offset>`` (one outstanding). After a drop, our relay says
exactly what reached the PTY (``attached.resume.in_seq``) and the rest is sent again; on the reference
what was in flight is in doubt: reported and never resent. Offsets toward our relay are the CLI's, plus
``shift``: the bytes the agent itself typed (the program launch) and, after a relay lost the attachment,
the difference to the new one's offsets.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import trio

from ...core import api
from ...core.errors import (
    ConnectionLostError,
    ForbiddenError,
    HermesError,
    SessionRevokedError,
    TerminalRefusedError,
    UsageError,
)
from . import wire
from .ledger import InputLedger, InputOverflow
from .outbox import Notify, Outbox
from .ports import TerminalPort

log = logging.getLogger(__name__)

GAP_LIMIT = 60.0  # seconds without an attachment before queued keys are dropped and the shell is lost
ATTACH_TIMEOUT = 30.0  # the reference CLI's wait for terminal.attached
SUSPECT_MIN = 1.0  # input unacknowledged past max(this, 4 × SRTT): check the connection
LAUNCH_QUIET = 0.1  # the program is typed after the first output and this much quiet...
LAUNCH_CAP = 2.0  # ...or this long after the attach, whichever comes first
DETACH_WAIT = 2.0  # for terminal.detached after a detach or kill
OURS, REFERENCE = "ours", "reference"


class State(enum.Enum):
    ATTACHING = "attaching"
    LIVE = "live"
    SUSPENDED = "suspended"
    REATTACHING = "reattaching"
    LOST = "lost"
    CLOSED = "closed"


WAITING = (State.ATTACHING, State.REATTACHING)
ENDED = (State.LOST, State.CLOSED)


class TerminalSession:
    def __init__(self, url: str, options: wire.ShellOptions, *,
                 on_ping: Callable[[TerminalPort, str, TerminalSession], None] = lambda port, msg_id, session: None):
        self.url = url
        self.options = options
        self.name = options.session
        self.state = State.ATTACHING
        self.ledger = InputLedger(options.in_base, options.in_sent, options.unacked)
        self.kind: str | None = None
        self.port: TerminalPort | None = None
        self.route_label = ""
        self.outbox = Outbox()
        self.finished = trio.Event()
        self.result: dict[str, Any] | None = None
        self.error: HermesError | None = None
        self.out_seq = options.out_seq  # output offset in the current attachment's (the relay's) numbers
        self.out_shift = 0  # the CLI's output offset minus the relay's (a new attachment restarts at 0)
        self.cols, self.rows = options.cols, options.rows
        self.srtt: float | None = None
        self.notices: list[str] = []
        self._on_ping = on_ping
        self._changed = trio.Event()
        self._attach_port: TerminalPort | None = None
        self._attach_at = 0.0
        self._ever_attached = False
        self._gap_since: float | None = trio.current_time() if options.reopen else None
        self._sends: deque[tuple[int, float]] = deque()  # (CLI offset just past a chunk, when it was sent)
        self._ping: tuple[str, int, float] | None = None  # (id, offset it acknowledges, when)
        self._suspicious = False
        self._resize = self._redraw = self._nudge = False
        launch = options.launch()
        self._launch: bytes | None = None if options.reopen else launch
        self._launch_cap: float | None = None
        self._first_output: float | None = None
        self._last_output = 0.0
        self._shift_guess = len(launch or b"") if options.reopen else 0  # the launch a previous agent typed
        self.shift = 0  # relay offset - CLI offset (our relay)
        self._want: str | None = None  # "detach" or "kill" asked by the CLI
        self._want_port: TerminalPort | None = None
        self._want_at = 0.0
        self._quick = False  # the CLI is gone: end once the detach is sent

    # -- from the CLI ---------------------------------------------------------------------------
    def typed(self, seq: Any, data: Any) -> None:
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0 or not isinstance(data, bytes):
            self._notice("shell.input needs seq (an offset) and d (binary): ignored")
            return
        try:
            self.ledger.type(seq, data)
        except (ValueError, InputOverflow) as exc:
            self._notice(f"input not taken: {exc}")
            return
        if self.state is not State.LIVE and self._ever_attached:
            self._link_state("reconnecting", "waiting for the relay")
        self._wake()

    def resize(self, cols: Any, rows: Any) -> None:
        if all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= wire.MAX_SIZE for v in (cols, rows)):
            self.cols, self.rows, self._resize = cols, rows, True
            self._wake()

    def redraw(self) -> None:
        self._ask_redraw()

    def want(self, what: str, *, quick: bool = False) -> None:
        """The CLI detaches or kills (``quick``: the CLI is gone; end once the detach is sent)."""
        if self.state in ENDED:
            return
        if self.state is not State.LIVE or self.port is None:
            if what == "kill":
                self._fail(UsageError("the shell is not attached right now, so it cannot be killed",
                                      hint="kill it later with `hermes-relay sessions kill NAME`"))
            else:
                self.finish("detached")
            return
        self._want, self._quick, self._want_at = what, quick, trio.current_time()
        self._wake()

    # -- from the link --------------------------------------------------------------------------
    def connected(self, port: TerminalPort) -> None:
        if self.state in ENDED:
            return
        self.port, self.route_label = port, port.route_label
        self._attach_port = None
        if self.state is State.SUSPENDED:
            self.state = State.REATTACHING
        self._wake()

    def lost(self, port: TerminalPort, reason: str = "connection lost") -> None:
        if port is not self.port or self.state in ENDED:
            return
        if self._want == "detach":  # asked already: the relay keeps the session (tmux) either way
            self.finish("detached")
            return
        now = trio.current_time()
        self.port = self._attach_port = None
        self._ping, self._suspicious = None, False
        self._sends.clear()
        if self.state is State.LIVE and self.kind == REFERENCE:
            unacked, recent = self.ledger.drop_in_doubt(now, self.srtt or 0.0)
            self._in_doubt(unacked + recent, "typed just before the drop")
            self._marks()
        if self._ever_attached:
            self.state = State.SUSPENDED
        if self._gap_since is None:
            self._gap_since = now
        self._link_state("reconnecting", reason)
        log.info("terminal_link_lost url=%s session=%s queued=%d", self.url, self.name, self.ledger.unsent)
        self._wake()

    def pong(self, msg_id: str) -> None:
        if self._ping is None or self._ping[0] != msg_id:
            return
        _, upto, sent_at = self._ping
        self._ping = None
        self._acked(upto, trio.current_time() - sent_at)

    def on_message(self, port: TerminalPort, typ: str, payload: dict[str, Any]) -> None:
        if port is not self.port or self.state in ENDED:
            return
        if typ == "terminal.attached":
            if self.state in WAITING and self._attach_port is port:
                self._attached(payload)
        elif typ == "terminal.output" and self.state is State.LIVE:
            self._output(payload)
        elif typ == "terminal.ack" and self.state is State.LIVE:
            self._relay_ack(wire.number(payload, "in_seq"))
        elif typ == "terminal.detached":
            self._detached(port, payload)
        elif typ == "terminal.error":
            self._relay_error(payload)
        elif typ == "system.error":
            self._system_error(payload)

    # -- relay messages -------------------------------------------------------------------------
    def _attached(self, payload: dict[str, Any]) -> None:
        now = trio.current_time()
        resume = payload.get("resume")
        again = self._ever_attached or self.options.reopen
        tmux = payload.get("tmux_available") is not False
        resumed = False
        if isinstance(resume, dict):
            self.kind = OURS
            resumed = self._resume_ours(resume, again, payload.get("reattach") is True)
            out = wire.number(resume, "out_seq")
            if out is not None:
                if not resumed:  # a new attachment counts from its start: keep the CLI's offsets going
                    self.out_shift += self.out_seq - out
                self.out_seq = out
        else:
            self.kind = REFERENCE
            if again and self.options.reopen and not self._ever_attached:
                unacked, _ = self.ledger.drop_in_doubt()
                self._in_doubt(unacked, "the previous agent sent")
            if again and not tmux:
                self._drop_queued("the relay started a new shell")
        if not tmux and self.kind == REFERENCE:
            self._notice("the relay host has no tmux: this shell will not survive a reconnect")
        elif not tmux and not again:  # ours keeps a bare shell across socket drops: only its restart ends it
            self._notice("the relay host has no tmux: this shell ends if the relay restarts")
        note: dict[str, Any] = {"reattach": payload.get("reattach") is True, "resumed": resumed, "tmux": tmux,
                                "route": self.route_label, "relay": self.kind}
        replay = payload.get("replay")
        if not again and isinstance(replay, str) and replay:
            note["replay"] = replay.encode("utf-8", "replace")
        if again or payload.get("reattach") is True:
            self._launch = None  # never typed into a shell that was running already
        self.state, self._ever_attached, self._gap_since = State.LIVE, True, None
        self._launch_cap = now + LAUNCH_CAP if self._launch else None
        self.outbox.put(api.SHELL_ATTACHED, note)
        self._link_state("live", "attached")
        self._marks()
        log.info("terminal_attached url=%s session=%s relay=%s resumed=%s route=%s", self.url, self.name, self.kind,
                 resumed, self.route_label)
        self._wake()

    def _resume_ours(self, resume: dict[str, Any], again: bool, reattach: bool) -> bool:
        """Our relay's offsets: resend from exactly what reached the PTY, or (a new attachment) settle
        what was in flight as in doubt and map the new attachment's offsets."""
        relay_in = wire.number(resume, "in_seq") or 0
        ledger = self.ledger
        if resume.get("resumed") is True and again:
            for shift in dict.fromkeys((self._shift_guess, self.shift) if not self._ever_attached else (self.shift,)):
                if ledger.acked <= relay_in - shift <= ledger.typed:
                    self.shift = shift
                    ledger.resume(relay_in - shift)
                    return True
            log.warning("terminal_resume_mismatch url=%s session=%s relay_in=%d acked=%d typed=%d", self.url,
                        self.name, relay_in, ledger.acked, ledger.typed)
        if again:
            unacked, _ = ledger.drop_in_doubt()
            self._in_doubt(unacked, "typed just before the drop")
            if not reattach:
                self._drop_queued("the relay started a new shell")
        self.shift = relay_in - ledger.sent
        return False

    def _output(self, payload: dict[str, Any]) -> None:
        data = wire.output_bytes(payload)
        relay_in = wire.number(payload, "in_seq")
        if relay_in is not None:
            self._relay_ack(relay_in)
        seq_end = wire.number(payload, "seq_end") if self.kind == OURS else None
        self.out_seq = seq_end if seq_end is not None else self.out_seq + len(data)
        now = trio.current_time()
        if self._first_output is None:
            self._first_output = now
        self._last_output = now
        if data and not self.outbox.put_output(data, self.out_seq + self.out_shift):
            log.info("terminal_output_overflow url=%s session=%s dropped=%d", self.url, self.name, self.outbox.dropped)
            self._ask_redraw()
        self._wake()

    def _relay_ack(self, relay_in: int | None) -> None:
        if relay_in is None or self.kind != OURS:
            return
        upto = relay_in - self.shift
        sample = None
        while self._sends and self._sends[0][0] <= upto:
            sample = trio.current_time() - self._sends.popleft()[1]
        self._acked(upto, sample)

    def _acked(self, upto: int, rtt: float | None) -> None:
        now = trio.current_time()
        if self.kind == REFERENCE:
            while self._sends and self._sends[0][0] <= upto:
                self._sends.popleft()
        if rtt is not None:
            self.srtt = rtt if self.srtt is None else 0.875 * self.srtt + 0.125 * rtt
        if self.ledger.ack(upto, now):
            self._suspicious = False
            self._marks()
        self._wake()

    def _detached(self, port: TerminalPort, payload: dict[str, Any]) -> None:
        reason = str(payload.get("reason") or "")
        if self._want is not None or reason == "client kill":
            self.finish("killed" if self._want == "kill" or reason == "client kill" else "detached")
        elif reason == "attached elsewhere":
            if self.state is State.LIVE:
                self.finish("replaced")
        elif reason == "server shutdown":
            if self.kind == OURS:  # its final ack came just before: what was sent above it never reached the
                self.ledger.resume(self.ledger.acked)  # PTY and goes to the next attachment, not in doubt
                self._sends.clear()
            self.lost(port, "the relay is restarting")
        elif reason == "revoked":  # an error that says why, not "the link did not come back"
            self._fail(SessionRevokedError("the relay ended the shell: this device's session was revoked, replaced "
                                           "or expired", hint="`hermes-relay status` shows the relay's verdict; "
                                           "pair again for a new session"))
        elif reason == "grant expired":
            self._fail(ForbiddenError("the relay ended the shell: this device's terminal grant expired",
                                      hint="`hermes-relay devices extend` or pair again with the terminal grant"))
        elif reason == "grace expired":
            self._notice(f"the relay ended the attachment: {reason}")
            self.finish("lost")
        elif self.state is State.LIVE:
            code = payload.get("code", payload.get("exit_code"))
            self.finish("exit", code if isinstance(code, int) and not isinstance(code, bool) else None)

    def _relay_error(self, payload: dict[str, Any]) -> None:
        message = str(payload.get("message") or "terminal error")
        if payload.get("reason") == "input_gap" and self.kind == OURS:
            relay_in = wire.number(payload, "in_seq")
            if relay_in is not None:
                self.ledger.resume(relay_in - self.shift)
                self._sends.clear()
                self._suspicious = False
                self._wake()
            return
        if self.state in WAITING and self._attach_port is not None:
            hint = ("the reference relay allows 4 shells per connection: close one" if "max" in message.lower()
                    else "the relay refused the shell")
            self._fail(TerminalRefusedError(f"the relay refused terminal.attach: {message}", hint=hint))
        else:
            self._notice(f"relay: {message}")

    def _system_error(self, payload: dict[str, Any]) -> None:
        message = str(payload.get("message") or payload.get("error") or "error")
        if "grant" in message.lower():
            self._fail(ForbiddenError(f"the relay refused the shell: {message}",
                                      hint="this device has no terminal grant: `hermes-relay devices extend` "
                                           "or pair again with the terminal grant"))
        elif self.state in WAITING and self._attach_port is not None:
            self._fail(TerminalRefusedError(f"the relay refused terminal.attach: {message}",
                                            hint="the relay may serve no terminal (our relay: hermes-relay-server --terminal)"))
        else:
            self._notice(f"relay: {message}")

    # -- the tasks ------------------------------------------------------------------------------
    async def run(self, notify: Notify, inbox: Any) -> dict[str, Any]:
        """Serve the CLI until the shell ends; the final response, or the error that ended it."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pump_loop)
            nursery.start_soon(self._timer_loop)
            if inbox is not None:
                nursery.start_soon(self._read_cli, inbox)
            sent = trio.Event()
            nursery.start_soon(self._send_out, notify, sent)
            await self.finished.wait()
            with trio.move_on_after(1.0):
                await sent.wait()
            nursery.cancel_scope.cancel()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result

    async def _read_cli(self, inbox: Any) -> None:
        async for msg in inbox:
            params = msg.params if isinstance(msg.params, dict) else {}
            if msg.method == api.SHELL_INPUT:
                self.typed(params.get("seq"), params.get("d"))
            elif msg.method == api.SHELL_RESIZE:
                self.resize(params.get("cols"), params.get("rows"))
            elif msg.method == api.SHELL_REDRAW:
                self.redraw()
            elif msg.method in (api.SHELL_DETACH, api.SHELL_KILL):
                self.want("kill" if msg.method == api.SHELL_KILL else "detach")
            else:
                self._notice(f"unknown notify {msg.method!r:.40} ignored")
        self.want("detach", quick=True)  # the CLI is gone without detaching

    async def _send_out(self, notify: Notify, sent: trio.Event) -> None:
        try:
            await self.outbox.pump(notify)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.outbox.close()  # nothing waits for marks the CLI will never hear
            self.want("detach", quick=True)
        sent.set()

    async def _pump_loop(self) -> None:
        while self.state not in ENDED:
            changed = self._changed
            try:
                await self._step()
            except ConnectionLostError as exc:  # the link reports the loss itself
                log.debug("terminal_send_failed url=%s session=%s error=%s", self.url, self.name, exc.message)
            if changed is self._changed:
                await changed.wait()

    async def _step(self) -> None:
        port = self.port
        if port is None:
            return
        if self.state in WAITING and self._attach_port is not port:
            self._attach_port, self._attach_at = port, trio.current_time()
            self._wake()  # a new deadline for the timers
            await port.send(wire.attach(self.name, self.cols, self.rows, self.options.stream, self.out_seq,
                                        self.ledger.sent + self.shift))
            return
        if self.state is not State.LIVE:
            return
        if self._want is not None:
            await self._send_want(port)
            return
        if self._resize:
            self._resize = False
            await port.send(wire.resize(self.name, self.cols, self.rows))
        if self._nudge:  # a redraw without terminal.redraw: a rows-1/rows resize
            self._nudge = False
            await port.send(wire.resize(self.name, self.cols, max(1, self.rows - 1)))
            await port.send(wire.resize(self.name, self.cols, self.rows))
        if self._redraw:
            self._redraw = False
            await port.send(wire.named("terminal.redraw", self.name))
        due = self._launch_due()
        if due is not None and trio.current_time() >= due:
            await self._send_launch(port)
        await self._send_input(port)

    async def _send_input(self, port: TerminalPort) -> None:
        ours = self.kind == OURS
        while not self._suspicious and port is self.port and (chunk := self.ledger.take()) is not None:
            seq, data = chunk
            if not self._sends:
                self._wake()  # a new suspicion deadline for the timers
            self._sends.append((seq + len(data), trio.current_time()))
            self._marks()
            if not ours:  # the CLI hears `sent` before the reference can have the bytes: an agent started after
                await self.outbox.marks_sent()  # a kill -9 resends only above it (the reference would run it twice)
                if port is not self.port:  # lost meanwhile: the chunk was counted in doubt with the rest
                    return
            await port.send(wire.input_message(self.name, data, seq + self.shift if ours else None))
        if not ours and self._ping is None and self.ledger.in_flight > 0:
            msg_id = f"in-{self.ledger.sent}"
            self._ping = (msg_id, self.ledger.sent, trio.current_time())
            self._on_ping(port, msg_id, self)
            await port.send(wire.ping(msg_id))

    async def _send_launch(self, port: TerminalPort) -> None:
        launch, self._launch = self._launch, None
        assert launch is not None
        ours = self.kind == OURS
        seq = self.ledger.sent + self.shift
        if ours:
            self.shift += len(launch)
        log.info("terminal_launch url=%s session=%s bytes=%d", self.url, self.name, len(launch))
        await port.send(wire.input_message(self.name, launch, seq if ours else None))

    async def _send_want(self, port: TerminalPort) -> None:
        if self._want_port is port:
            return
        self._want_port = port
        await port.send(wire.named("terminal.kill" if self._want == "kill" else "terminal.detach", self.name))
        if self._quick:
            self.finish("detached")

    async def _timer_loop(self) -> None:
        while self.state not in ENDED:
            changed = self._changed
            with trio.move_on_at(self._next_deadline()):
                await changed.wait()
            self._check_timers(trio.current_time())

    def _next_deadline(self) -> float:
        deadlines = [float("inf")]
        if self.state is not State.LIVE and self._gap_since is not None:
            deadlines.append(self._gap_since + GAP_LIMIT)
        if self.state in WAITING and self._attach_port is not None:
            deadlines.append(self._attach_at + ATTACH_TIMEOUT)
        if self.state is State.LIVE:
            if self._sends and not self._suspicious:
                deadlines.append(self._sends[0][1] + self._suspect_after())
            due = self._launch_due()
            if due is not None:
                deadlines.append(due)
            if self._want is not None:
                deadlines.append(self._want_at + DETACH_WAIT)
        return min(deadlines)

    def _launch_due(self) -> float | None:
        """When to type the program: after the first output and LAUNCH_QUIET of quiet, at the latest
        LAUNCH_CAP after the attach (None: nothing to type)."""
        if self._launch is None or self._launch_cap is None:
            return None
        if self._first_output is None:
            return self._launch_cap
        return min(self._launch_cap, self._last_output + LAUNCH_QUIET)

    def _suspect_after(self) -> float:
        return max(SUSPECT_MIN, 4 * (self.srtt or 0.0))

    def _check_timers(self, now: float) -> None:
        if self.state is not State.LIVE and self._gap_since is not None and now >= self._gap_since + GAP_LIMIT:
            if self.ledger.in_flight:
                unacked, _ = self.ledger.drop_in_doubt()
                self._in_doubt(unacked, "typed before the drop")
            self._drop_queued(f"the relay link did not come back within {GAP_LIMIT:g}s")
            self.finish("lost")
        elif self.state in WAITING and self._attach_port is not None and now >= self._attach_at + ATTACH_TIMEOUT:
            self._fail(TerminalRefusedError(f"the relay did not answer terminal.attach within {ATTACH_TIMEOUT:g}s",
                                     hint="the relay may serve no terminal (our relay: hermes-relay-server --terminal)"))
        elif self.state is State.LIVE:
            if self._sends and not self._suspicious and now >= self._sends[0][1] + self._suspect_after():
                self._suspicious = True  # new keys stay unsent (safe) until the link proves alive or is replaced
                log.info("terminal_input_unacked url=%s session=%s in_flight=%d", self.url, self.name,
                         self.ledger.in_flight)
                if self.port is not None:
                    self.port.check()
            due = self._launch_due()
            if due is not None and now >= due:
                self._wake()
            if self._want is not None and now >= self._want_at + DETACH_WAIT:
                self.finish("killed" if self._want == "kill" else "detached")

    # -- helpers --------------------------------------------------------------------------------
    async def changed(self) -> None:
        """Wait for the next change of anything (marks, state)."""
        await self._changed.wait()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _ask_redraw(self) -> None:
        if self.kind == OURS:
            self._redraw = True
        else:
            self._nudge = True
        self._wake()

    def _in_doubt(self, n: int, what: str) -> None:
        """Report the ``n`` bytes just counted done below ``acked``: a notice, and their CLI offsets in the
        log (``terminal_input_in_doubt``), so a soak can check that every key lost was among them."""
        if n:
            end = self.ledger.acked
            log.info("terminal_input_in_doubt url=%s session=%s start=%d end=%d", self.url, self.name, end - n, end)
            self._notice(f"{n} bytes {what} are in doubt and were not resent")

    def _drop_queued(self, why: str) -> None:
        n = self.ledger.drop_unsent()
        if n:
            end = self.ledger.acked
            log.info("terminal_input_dropped url=%s session=%s start=%d end=%d", self.url, self.name, end - n, end)
            self._notice(f"{n} bytes typed during the gap were dropped ({why})")
            self._marks()

    def _marks(self) -> None:
        self.outbox.put(api.SHELL_ACK, {"in_seq": self.ledger.acked, "sent": self.ledger.sent})

    def _link_state(self, state: str, reason: str) -> None:
        self.outbox.put(api.SHELL_LINK, {"state": state, "route": self.route_label, "reason": reason,
                                         "queued": self.ledger.unsent})

    def _notice(self, text: str) -> None:
        self.notices.append(text)
        self.outbox.put(api.SHELL_NOTICE, {"text": text})

    def finish(self, reason: str, code: int | None = None) -> None:
        if self.state in ENDED:
            return
        self.state = State.LOST if reason == "lost" else State.CLOSED
        if reason == "lost":
            self._link_state("lost", "gave up")
        self.result = {"reason": reason, "code": code}
        self._end()

    def refused(self, verdict: str) -> None:
        """The relay refused the link's credentials: no reattach will come."""
        self._fail(SessionRevokedError(f"the relay ended the shell: it refused this device's session ({verdict})",
                                       hint="`hermes-relay status` shows the relay's verdict; pair again for a "
                                            "new session"))

    def _fail(self, error: HermesError) -> None:
        if self.state in ENDED:
            return
        self.state, self.error = State.CLOSED, error
        self._end()

    def _end(self) -> None:
        log.info("terminal_session_ended url=%s session=%s reason=%s", self.url, self.name,
                 self.result["reason"] if self.result else self.error)
        self.outbox.close()
        self.finished.set()
        self._wake()
