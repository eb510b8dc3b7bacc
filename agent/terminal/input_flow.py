"""A shell's input toward the relay (a mixin of agent/terminal/session.py's TerminalSession): the CLI's keys
into the ledger (agent/terminal/ledger.py), out to the relay in order, acknowledged by our relay's
``terminal.ack`` or by the pong of a ``system/ping`` with id ``in-<offset>`` on the reference (one
outstanding), and the marks (``shell.ack``), in-doubt and dropped ranges reported to the CLI.

Offsets toward our relay are the CLI's plus ``shift``: the bytes the agent itself typed (the program
launch). Against the reference the CLI hears the ``sent`` mark before the input goes out (an agent started
after a kill -9 resends only above it).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from ...core import api
from . import wire
from .ledger import InputLedger, InputOverflow
from .outbox import Outbox
from .ports import TerminalPort
from .states import OURS, REFERENCE, State

# The session's events keep the session's logger (log configuration and tests select it by that name).
log = logging.getLogger(__name__.rpartition(".")[0] + ".session")


class InputFlow:
    """The input half of a TerminalSession."""

    url: str
    name: str
    state: State
    kind: str | None
    port: TerminalPort | None
    ledger: InputLedger
    outbox: Outbox
    srtt: float | None
    shift: int
    _ever_attached: bool
    _sends: deque[tuple[int, float]]
    _ping: tuple[str, int, float] | None
    _suspicious: bool
    _launch: bytes | None
    _on_ping: Callable[[TerminalPort, str, Any], None]

    if TYPE_CHECKING:
        def _wake(self) -> None: ...
        def _notice(self, text: str) -> None: ...
        def _link_state(self, state: str, reason: str) -> None: ...

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

    def pong(self, msg_id: str) -> None:
        if self._ping is None or self._ping[0] != msg_id:
            return
        _, upto, sent_at = self._ping
        self._ping = None
        self._acked(upto, trio.current_time() - sent_at)

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
        await port.send(wire.input_message(self.name, launch, seq if ours else None, own=True))

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
