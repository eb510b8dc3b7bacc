"""One terminal attachment's trio tasks: read the PTY into the ring, send frames, write input, reap.

An attachment (``Attachment``) is a PTY (a tmux client or a bare shell) with its output ring, its input
ledger and queue, and the socket it is attached to, or none (orphaned: the PTY is still read into the
ring until the grace period ends). Its tasks run in the terminal service's nursery under the
attachment's own cancel scope:

- reader: PTY → ring, but never more than ``MAX_UNSENT`` bytes ahead of what the socket was sent (tmux
  then holds the rest and turns a flood into a redraw); while orphaned it reads freely (the ring drops
  the oldest bytes, and a resume past them is a gap). A read that began while orphaned may return after
  a socket resumed, with more than the ring holds: the ring then keeps what that socket was not sent
  (``OutputRing.append``'s ``keep``), so a resume the relay answered without a gap continues exactly.
  EOF (EIO) ends the attachment.
- sender: ring → socket: a frame at once when the PTY was idle or input was written to it since the last
  frame (an echo is what the user waits for), else at most one per ``COALESCE`` (16 ms) unless a full frame
  (16 KiB) is ready; never inside a UTF-8 character while more may follow.
- writer: the input queue → PTY in ``WRITE_SIZE`` pieces, waiting while the PTY is full (never a fatal
  EAGAIN), then ``terminal.ack`` (at most one per input frame received).
Messages are sent through ``send(socket, envelope)``, which the service provides and which never raises.
"""

from __future__ import annotations

import sys

assert sys.platform != "win32", "PTYs are POSIX only: relay/main.py refuses --terminal on Windows"

import codecs  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
from collections.abc import Awaitable, Callable  # noqa: E402
from typing import Any  # noqa: E402

import trio  # noqa: E402

from ..core.envelope import Envelope  # noqa: E402
from . import term_config as tc  # noqa: E402
from .term_pty import PtyProcess  # noqa: E402
from .term_ring import InputLedger, OutputRing, output_frame  # noqa: E402

log = logging.getLogger(__name__)
Send = Callable[[Any, Envelope], Awaitable[None]]


class Attachment:
    """A PTY, its ring and input ledger, and the socket it is attached to (None: orphaned)."""

    def __init__(self, *, scope_key: Any, owner: Any, name: str, stream: str | None, proc: PtyProcess, tmux: bool,
                 shell: str, cols: int, rows: int, ring_size: int, send: Send, in_seq: int = 0, out_seq: int = 0):
        self.scope_key, self.owner, self.name, self.stream = scope_key, owner, name, stream
        self.proc, self.tmux, self.shell, self.cols, self.rows = proc, tmux, shell, cols, rows
        self.ring = OutputRing(ring_size, out_seq)  # offsets continue the stream's (0 for a new one)
        self.read_limit = min(tc.MAX_UNSENT, ring_size)  # what the socket was not sent always stays in the ring
        self.ledger = InputLedger(in_seq)
        self.in_shift = 0  # the stream's input offsets minus the CLI's: the agent's own input (its launch)
        self.queue = bytearray()
        self.frames_unacked = 0  # input frames received since the last ack
        self.last_ack = in_seq  # the in_seq last acknowledged
        self.socket: Any = None
        self.last_socket: Any = None  # the socket before the last orphaning
        self.ready = False  # terminal.attached went out on ``socket``: output may follow
        self.sent = 0  # output offset sent to the current socket
        self.sending = False  # a frame is on its way to the socket
        self.writes = 0  # input pieces written to the PTY: output after a new one (its echo) is not held back
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")  # reference mode: text only
        self.created_at = time.time()
        self.orphaned_since: float | None = None
        self.closed = False
        self.input_stopped = False  # the final ack went out: nothing more is written to the PTY
        self.scope = trio.CancelScope()
        self.grace_scope: trio.CancelScope | None = None  # the orphan's grace timer
        self.on_close: Callable[[], None] | None = None  # the service's reaper: starts its kill timer
        self._send = send
        self._changed = trio.Event()

    @property
    def resume(self) -> bool:
        return self.stream is not None

    def poke(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _until(self, ready: Callable[[], bool]) -> None:
        while not ready():
            await self._changed.wait()

    # -- tasks -----------------------------------------------------------------------------------
    async def run(self, on_eof: Callable[[Attachment, str], None]) -> None:
        """Run until the PTY ends (then ``on_eof``) or ``close``."""
        eof = False
        with self.scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._sender)
                nursery.start_soon(self._writer)
                await self._reader()
                # EOF: send what the ring still holds for the socket (the last frame included), then end.
                with trio.move_on_after(tc.EOF_FLUSH):
                    await self._until(lambda: self.socket is None or (self.sent >= self.ring.end and not self.sending))
                nursery.cancel_scope.cancel()
                eof = True
            with trio.move_on_after(tc.EOF_FLUSH):  # the exit status, for terminal.detached
                await self.proc.exited.wait()
        if eof and not self.closed:
            on_eof(self, "eof")

    async def _reader(self) -> None:
        while True:
            limit = self.read_limit
            await self._until(lambda: self.socket is None or self.ring.end - self.sent < self.read_limit)
            room = tc.READ_SIZE if self.socket is None else min(tc.READ_SIZE, limit - (self.ring.end - self.sent))
            data = await self.proc.read(room)
            if not data:
                return
            self.ring.append(data, keep=None if self.socket is None else self.sent)
            self.poke()

    async def _sender(self) -> None:
        last_frame = -1.0
        writes_then = 0  # self.writes when the last frame went out
        while True:
            await self._until(lambda: self.ready and self.socket is not None and self.ring.end > self.sent)
            ws = self.socket
            busy = trio.current_time() - last_frame < tc.COALESCE and self.writes == writes_then
            if busy and self.ring.end - self.sent < tc.MAX_FRAME:
                await trio.sleep_until(last_frame + tc.COALESCE)  # coalesce: let a busy PTY fill the frame
                if ws is not self.socket or not self.ready:
                    continue
            frame = self._frame()
            if frame is None:  # the start of a UTF-8 character: wait a frame time for its end
                with trio.move_on_after(tc.COALESCE):
                    await self._until(self._more_or_moved(self.ring.end, ws))
                frame = self._frame(final=True)
                if frame is None:
                    continue
            env, n = frame
            last_frame, writes_then = trio.current_time(), self.writes
            self.sent += n
            self.poke()  # the reader may read again
            if env.payload.get("data") == "" and "seq_end" not in env.payload:
                continue  # a reference frame of only a character's first bytes: they go with the next one
            self.sending = True
            try:
                await self._send(ws, env)
            finally:
                self.sending = False
                self.poke()

    def _more_or_moved(self, end: int, ws: Any) -> Callable[[], bool]:
        return lambda: self.ring.end > end or self.socket is not ws

    def _frame(self, *, final: bool = False) -> tuple[Envelope, int] | None:
        data = self.ring.read(self.sent, tc.MAX_FRAME)
        if not data:
            return None
        if not self.resume:
            text = self.decoder.decode(data)
            return Envelope(tc.CHANNEL, "terminal.output", {"session_name": self.name, "data": text}), len(data)
        cut = output_frame(data, more_may_follow=not final)
        if cut is None:
            return None
        chunk, body = cut
        payload = {"session_name": self.name, **body, "seq_end": self.sent + len(chunk), "in_seq": self.ledger.written}
        return Envelope(tc.CHANNEL, "terminal.output", payload), len(chunk)

    async def _writer(self) -> None:
        while True:
            await self._until(lambda: bool(self.queue) and not self.input_stopped)
            self.writes += 1  # before the write: its echo may be read before the write returns
            n = await self.proc.write_some(bytes(self.queue[:tc.WRITE_SIZE]), lambda: self.input_stopped)
            if not n:
                continue
            del self.queue[:n]
            self.ledger.wrote(n)
            # At most one ack per input frame: one when the queue drains, and while a long paste drains one
            # every ACK_EVERY bytes from the frames beyond the one kept for the drain.
            if not self.resume or self.socket is None or not self.ready or not self.frames_unacked:
                continue
            if not self.queue or (self.frames_unacked > 1 and self.ledger.written - self.last_ack >= tc.ACK_EVERY):
                self.frames_unacked = 0 if not self.queue else self.frames_unacked - 1
                self.last_ack = self.ledger.written
                await self._send(self.socket, self.ack())

    def final_ack(self) -> Envelope:
        """The last ack: no input is written after it, so what it does not cover never reached the PTY."""
        self.input_stopped = True
        self.poke()
        return self.ack()

    def ack(self) -> Envelope:
        return Envelope(tc.CHANNEL, "terminal.ack", {"session_name": self.name, "in_seq": self.ledger.written})

    # -- state changes (synchronous, from the service) -------------------------------------------
    def attach_socket(self, ws: Any, out_seq: int | None) -> bool:
        """Attach to ``ws``; output continues from ``out_seq`` when the ring holds it. Returns gap."""
        self.socket, self.ready, self.orphaned_since, self.last_socket = ws, False, None, None
        if self.grace_scope is not None:
            self.grace_scope.cancel()
            self.grace_scope = None
        self.decoder.reset()
        gap = out_seq is None or not self.ring.holds(out_seq)
        self.sent = self.ring.end if gap else int(out_seq or 0)
        self.frames_unacked = 0
        self.poke()
        return gap

    def orphan(self) -> None:
        self.last_socket = self.socket  # weakly meant: only compared, for the shutdown goodbye
        self.socket, self.ready = None, False
        self.orphaned_since = time.monotonic()
        self.poke()

    def close(self) -> None:
        """End the PTY: a bare shell gets SIGHUP, a tmux client exits (its session lives on)."""
        if self.closed:
            return
        self.closed = True
        self.scope.cancel()
        if self.grace_scope is not None:
            self.grace_scope.cancel()
        self.proc.hangup()  # the shell and its jobs (a tmux client: just the client; its server lives on)
        self.proc.stream.close()
        if self.on_close is not None:
            self.on_close()
