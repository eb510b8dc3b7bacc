"""One shell: a TerminalSession per (relay, session name), outliving the connections it rides.

    ATTACHING → LIVE ⇄ SUSPENDED → REATTACHING → LIVE | LOST → CLOSED

Everything the link's reader and the CLI's notifies do here is synchronous (state changes, queueing) and
wakes the session's own tasks, which do the I/O: ``_pump`` is the only writer to the connection (attach,
resize, input, pings, detach), ``_timers`` keeps the deadlines (attach, the 60 s gap, suspicion, the
program launch), the outbox sends the notifies to the CLI in order.

This module is the state machine and those tasks; the session's two other concerns are mixins:
agent/terminal/input_flow.py (the CLI's keys toward the relay: ledger, acks, marks, in-doubt ranges) and
agent/terminal/relay_inbound.py (each relay message: attached, output, acks, detached, errors, with the
offset re-basing). Input is held until ``terminal.attached`` (the reference relay drops earlier input).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import trio

from ...core import api
from ...core.errors import ConnectionLostError, HermesError, SessionRevokedError, TerminalRefusedError, UsageError
from . import wire
from .input_flow import InputFlow
from .ledger import InputLedger
from .outbox import Notify, Outbox
from .ports import TerminalPort
from .relay_inbound import RelayInbound
from .states import ENDED, LAUNCH_CAP, OURS, REFERENCE, WAITING, State

__all__ = ["ENDED", "LAUNCH_CAP", "OURS", "REFERENCE", "WAITING", "State", "TerminalSession"]

log = logging.getLogger(__name__)

GAP_LIMIT = 60.0  # seconds without an attachment before queued keys are dropped and the shell is lost
ATTACH_TIMEOUT = 30.0  # the reference CLI's wait for terminal.attached
SUSPECT_MIN = 1.0  # input unacknowledged past max(this, 4 × SRTT): check the connection
LAUNCH_QUIET = 0.1  # the program is typed after the first output and this much quiet (at most LAUNCH_CAP)
DETACH_WAIT = 2.0  # for terminal.detached after a detach or kill


class TerminalSession(InputFlow, RelayInbound):
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

    # -- from the CLI (typed: input_flow.py) --------------------------------------------------
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

    # -- from the link (pong: input_flow.py; on_message: relay_inbound.py) -----------------
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
                                        self.ledger.sent + self.shift, self.shift))
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
