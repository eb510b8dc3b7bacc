"""The relay's output coalescing (relay/term_attach.py): a busy PTY's output goes out at most once per
16 ms, but the echo of a key the user just typed is never held back by it.

The program on the PTY is a fake echo program in memory, so the test runs on trio's fake clock (a real
PTY's echo arrives on the real clock, which the autojumping clock does not wait for).
"""

from __future__ import annotations

import base64
from typing import Any

import trio

from hermes_relay.relay import term_config as tc
from hermes_relay.relay.term_attach import Attachment


class EchoProgram:
    """A PtyProcess stand-in: whatever is written comes back as output at once; ``say`` is output of its own."""

    def __init__(self) -> None:
        self.out_send, self.out_recv = trio.open_memory_channel[bytes](100)
        self.exited = trio.Event()
        self.status = 0
        self.stream = self

    async def read(self, n: int) -> bytes:
        return await self.out_recv.receive()

    async def write_some(self, data: bytes, stop: Any) -> int:
        if stop():
            return 0
        self.out_send.send_nowait(data)
        return len(data)

    def say(self, data: bytes) -> None:
        self.out_send.send_nowait(data)

    def hangup(self) -> None:
        self.exited.set()

    def close(self) -> None:
        pass


async def _running(nursery: trio.Nursery) -> tuple[Attachment, EchoProgram, trio.MemoryReceiveChannel[Any]]:
    proc = EchoProgram()
    frames_send, frames_recv = trio.open_memory_channel[Any](100)

    async def send(ws: Any, env: Any) -> None:
        if env.type == "terminal.output":
            p = env.payload
            data = base64.b64decode(p["data_b64"]) if "data_b64" in p else p["data"].encode()
            frames_send.send_nowait((trio.current_time(), data))

    att = Attachment(scope_key=1, owner=None, name="main", stream="s" * 22, proc=proc,  # type: ignore[arg-type]
                     tmux=False, shell="echo", cols=80, rows=24, ring_size=tc.RING_BARE, send=send)
    att.attach_socket(object(), 0)
    att.ready = True
    att.poke()
    nursery.start_soon(att.run, lambda a, r: None)
    return att, proc, frames_recv


def _type(att: Attachment, data: bytes) -> None:
    """What relay/terminal.py does with a terminal.input."""
    att.ledger.offer(att.ledger.accepted, data)
    att.queue += data
    att.poke()


async def test_each_key_typed_right_after_the_last_echo_is_echoed_at_once(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        att, _, frames = await _running(nursery)
        for key in b"abcdefghij":
            typed_at = trio.current_time()
            _type(att, bytes([key]))
            at, data = await frames.receive()
            assert data == bytes([key])
            assert at == typed_at  # not held for the 16 ms frame time although the last frame went out just now
        nursery.cancel_scope.cancel()


async def test_a_busy_program_without_input_is_still_sent_once_per_frame_time(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        att, proc, frames = await _running(nursery)
        proc.say(b"y\n")
        first, _ = await frames.receive()
        proc.say(b"y\n")
        proc.say(b"y\n")
        second, data = await frames.receive()
        assert second - first >= tc.COALESCE and data == b"y\ny\n"  # coalesced into one frame
        _type(att, b"\x03")  # a key during the flood: its echo is not held back
        at, data = await frames.receive()
        assert at == second and data == b"\x03"
        nursery.cancel_scope.cancel()
