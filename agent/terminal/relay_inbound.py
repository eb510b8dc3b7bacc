"""What the relay says to a shell (a mixin of agent/terminal/session.py's TerminalSession): attached,
output, acks, detached and errors, including the offset re-basing.

After a drop our relay says exactly what reached the PTY (``attached.resume.in_seq``) and the rest is sent
again, from the relay's offset minus its ``in_shift`` (the launch the agent typed, which the relay counts;
an older relay reports none and the shift is guessed). A new attachment of our relay continues the
offsets the attach gave (docs/shell-protocol.md "Offsets"); one that counts from 0 (an older relay of
ours) is mapped onto the CLI's offsets with ``shift`` and ``out_shift``.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING, Any

import trio

from ...core import api
from ...core.errors import ForbiddenError, HermesError, SessionRevokedError, TerminalRefusedError
from . import wire
from .ledger import InputLedger
from .outbox import Outbox
from .ports import TerminalPort
from .states import ENDED, LAUNCH_CAP, OURS, REFERENCE, WAITING, State

# The session's events keep the session's logger (log configuration and tests select it by that name).
log = logging.getLogger(__name__.rpartition(".")[0] + ".session")


class RelayInbound:
    """The relay-facing half of a TerminalSession: each message the link hands it."""

    url: str
    name: str
    options: wire.ShellOptions
    state: State
    kind: str | None
    port: TerminalPort | None
    route_label: str
    ledger: InputLedger
    outbox: Outbox
    out_seq: int
    out_shift: int
    shift: int
    _shift_guess: int
    _ever_attached: bool
    _attach_port: TerminalPort | None
    _gap_since: float | None
    _sends: deque[tuple[int, float]]
    _suspicious: bool
    _launch: bytes | None
    _launch_cap: float | None
    _first_output: float | None
    _last_output: float
    _want: str | None

    if TYPE_CHECKING:
        def _wake(self) -> None: ...
        def _notice(self, text: str) -> None: ...
        def _link_state(self, state: str, reason: str) -> None: ...
        def _ask_redraw(self) -> None: ...
        def _marks(self) -> None: ...
        def _in_doubt(self, n: int, what: str) -> None: ...
        def _drop_queued(self, why: str) -> None: ...
        def _relay_ack(self, relay_in: int | None) -> None: ...
        def lost(self, port: TerminalPort, reason: str = ...) -> None: ...
        def finish(self, reason: str, code: int | None = None) -> None: ...
        def _fail(self, error: HermesError) -> None: ...

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
        relay_shift = wire.integer(resume, "in_shift")  # the launch counted by the relay (older ones: guess)
        ledger = self.ledger
        if resume.get("resumed") is True and again:
            if relay_shift is not None:
                shifts: tuple[int, ...] = (relay_shift,)
            else:
                shifts = (self._shift_guess, self.shift) if not self._ever_attached else (self.shift,)
            for shift in dict.fromkeys(shifts):
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
