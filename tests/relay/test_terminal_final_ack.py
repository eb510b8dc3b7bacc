"""The final ack on shutdown is exact and final: an attachment's writer counts every byte that reached the
PTY (a piece cut short by a full PTY included) and writes nothing once the final ack went out. A real
PTY whose other side the test holds in raw mode (nothing reads it until the test drains it)."""

from __future__ import annotations

import os
import sys
import tty

import pytest
import trio
import trio.testing

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="PTYs are POSIX only")


async def _nothing(ws, env) -> None:  # type: ignore[no-untyped-def]
    pass


def _drain(fd: int) -> int:
    n = 0
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return n
        if not chunk:
            return n
        n += len(chunk)


async def test_a_full_pty_counts_partial_writes_and_the_final_ack_stops_input() -> None:
    from hermes_relay.relay.term_attach import Attachment
    from hermes_relay.relay.term_pty import PtyProcess

    proc = PtyProcess(["/bin/sleep", "30"], {"PATH": os.defpath}, 80, 24)
    slave = os.open(proc.tty, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    tty.setraw(slave)  # bytes go through untouched, and nothing reads them: the PTY fills
    att = Attachment(scope_key=1, owner=None, name="main", stream="s" * 22, proc=proc, tmux=False, shell="sleep",
                     cols=80, rows=24, ring_size=1 << 16, send=_nothing)
    data = bytes(range(256)) * 4096  # 1 MiB: far more than a PTY buffers
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(att._writer)
            att.ledger.offer(0, data)
            att.queue += data
            att.poke()
            await trio.testing.wait_all_tasks_blocked()  # the writer waits for room: the PTY is full
            reached = _drain(slave)
            assert 0 < reached < len(data)
            assert att.ledger.written == reached  # every byte that reached the PTY, none that did not

            final = att.final_ack()
            assert final.payload["in_seq"] == reached
            await trio.testing.wait_all_tasks_blocked()  # room again: the writer must not use it
            assert _drain(slave) == 0 and att.ledger.written == reached
            nursery.cancel_scope.cancel()
    finally:
        os.close(slave)
        proc.hangup()
        proc.stream.close()
        with trio.fail_after(10):  # a hang guard: SIGHUP ends sleep
            await proc.reap()
