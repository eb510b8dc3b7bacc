"""A desktop call's scheduler passes: the send lock and the tool limiter cost none when free, and keep
their order and their cancellation when not (agent/transport.py SendLock, agent/desktop/tools/_thread.py);
the link's socket reads and writes without trio's pass after each (agent/transport.py _WatchedStream)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

import pytest
import trio

from hermes_relay.agent import transport
from hermes_relay.agent.desktop.tools import _thread
from hermes_relay.agent.transport import SendLock, _WatchedStream
from hermes_relay.core.desktop import ToolError


class Steps(trio.abc.Instrument):
    """Counts the steps of one task: a step more means it yielded to the scheduler."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.count = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.count += 1


async def steps_of(fn) -> int:  # type: ignore[no-untyped-def]
    """How many extra steps the current task takes while ``fn()`` runs."""
    steps = Steps(trio.lowlevel.current_task())
    trio.lowlevel.add_instrument(steps)
    try:
        await fn()
    finally:
        trio.lowlevel.remove_instrument(steps)
    return steps.count


async def test_a_free_send_lock_costs_no_scheduler_pass_and_trio_lock_does() -> None:
    lock = SendLock()

    async def send() -> None:
        async with lock:
            assert lock.locked()

    async def with_trio_lock() -> None:
        async with trio.Lock():
            pass

    assert await steps_of(send) == 0
    assert not lock.locked()
    assert await steps_of(with_trio_lock) == 1  # what each of the two locks on a call's answer cost before


async def test_a_busy_send_lock_is_taken_in_turn() -> None:
    lock = SendLock()
    order: list[int] = []
    async with trio.open_nursery() as nursery:
        async with lock:
            for i in range(5):
                nursery.start_soon(_hold, lock, order, i)
                await trio.testing.wait_all_tasks_blocked()
            assert order == []
    assert order == [0, 1, 2, 3, 4]


async def _hold(lock: SendLock, order: list[int], i: int) -> None:
    async with lock:
        order.append(i)
        await trio.sleep(0)  # held across a pass: the others keep waiting


async def test_a_cancelled_sender_stops_at_a_free_send_lock() -> None:
    lock = SendLock()
    entered = []
    with trio.CancelScope() as scope:
        scope.cancel()
        async with lock:
            entered.append(True)
    assert scope.cancelled_caught and not entered and not lock.locked()


async def test_a_free_tool_thread_token_costs_no_scheduler_pass() -> None:
    limiter = _thread.limiter()
    borrower = object()

    async def acquire() -> None:
        await limiter.acquire_on_behalf_of(borrower)

    assert await steps_of(acquire) == 0
    assert limiter.inner.borrowed_tokens == 1
    limiter.release_on_behalf_of(borrower)


async def test_a_tool_thread_hop_takes_one_step(autojump_clock: trio.abc.Clock) -> None:
    # The step after the thread's answer; taking its token costs none (two steps before).
    async def hop() -> None:
        assert await _thread.run(lambda stop: 7) == 7

    assert await steps_of(hop) == 1


class AllSteps(trio.abc.Instrument):
    def __init__(self) -> None:
        self.count = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.count += 1


@pytest.mark.skipif(not _thread._EVENTFD, reason="the eventfd way back is Linux's (elsewhere trio's: two steps)")
async def test_a_tool_thread_hop_costs_one_step_of_the_whole_run() -> None:
    # trio's way back from a thread (run_sync_soon) steps its own task first, then the caller.
    steps = AllSteps()
    trio.lowlevel.add_instrument(steps)
    try:
        assert await _thread.run(lambda stop: 7) == 7
    finally:
        trio.lowlevel.remove_instrument(steps)
    assert steps.count == 1


def _eventfds() -> set[int]:
    """This process's open eventfds (the hops' wake-ups). Other descriptors open and close as they will, and
    so do an earlier test's abandoned hops' eventfds (closed when their threads end): the test looks at the
    descriptors it made, never at a count of all of them."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[eventfd]":
                found.add(int(fd))
        except OSError:  # closed meanwhile (the listing's own descriptor, too)
            pass
    return found


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _thread._EVENTFD, reason="the eventfd way back is Linux's")
async def test_hops_reuse_their_wake_up_and_an_abandoned_hop_s_is_closed_when_its_thread_ends() -> None:
    for _ in range(3):
        await _thread.run(lambda stop: 7)
    before, free = _eventfds(), list(_thread._FREE_FDS)
    assert free and set(free) <= before  # the wake-up the hops share, kept for the next one
    for _ in range(50):
        assert await _thread.run(lambda stop: 7) == 7
    assert _eventfds() <= before and _thread._FREE_FDS == free  # every hop reused it: none made, none kept
    entered, release = threading.Event(), threading.Event()

    def stuck(stop: threading.Event) -> str:
        entered.set()
        release.wait(30)
        return "late"

    taken = _thread._FREE_FDS[-1]  # the wake-up the stuck hop takes from the free list
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_thread.run, stuck)
            await trio.to_thread.run_sync(entered.wait, 30)
            scope.cancel()
    assert scope.cancelled_caught and taken not in _thread._FREE_FDS and _is_open(taken)  # its thread still runs
    release.set()
    inner = _thread.limiter().inner
    holders = [object() for _ in range(int(inner.total_tokens))]
    with trio.fail_after(30):  # the stuck thread ends: it closes its wake-up, then gives its token back (in trio)
        for holder in holders:  # the last one is free once that token came back
            await inner.acquire_on_behalf_of(holder)
    for holder in holders:
        inner.release_on_behalf_of(holder)
    assert inner.borrowed_tokens == 0
    assert not _is_open(taken)  # closed by its thread, not put back for a hop to share
    assert await _thread.run(lambda stop: 7) == 7
    others = [fd for fd in free if fd != taken]  # wake-ups other hops left (earlier tests' calls at once)
    if others:
        assert _thread._FREE_FDS == others  # one of them reused and put back
    else:
        assert len(_thread._FREE_FDS) == 1  # a new one made for this hop, and kept


async def test_tool_thread_tokens_are_still_shared_in_turn(autojump_clock: trio.abc.Clock) -> None:
    limiter = _thread.limiter()
    holders = [object() for _ in range(_thread.MAX_TOOL_THREADS)]
    for h in holders:
        await limiter.acquire_on_behalf_of(h)
    waiter = object()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(limiter.acquire_on_behalf_of, waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert waiter not in limiter.inner._borrowers  # waits for a token, not past it
        limiter.release_on_behalf_of(holders[0])
    assert limiter.inner.borrowed_tokens == _thread.MAX_TOOL_THREADS
    with pytest.raises(RuntimeError):  # a borrower holds one token at most, as with trio's own limiter
        await limiter.acquire_on_behalf_of(waiter)
    for h in [*holders[1:], waiter]:
        limiter.release_on_behalf_of(h)


async def test_a_cancelled_tool_call_returns_at_once_and_its_thread_gives_its_token_back_when_it_ends() -> None:
    entered, release = threading.Event(), threading.Event()
    stops: list[threading.Event] = []

    def stuck(stop: threading.Event) -> str:
        stops.append(stop)
        entered.set()
        release.wait(30)  # a system call that does not come back while the call lives
        return "late"

    limiter = _thread.limiter()
    others = [object() for _ in range(_thread.MAX_TOOL_THREADS - 1)]
    for other in others:  # the stuck call takes the last token
        await limiter.acquire_on_behalf_of(other)
    scope = trio.CancelScope()

    async def call() -> None:
        with scope:
            await _thread.run(stuck)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call)
        await trio.to_thread.run_sync(entered.wait, 30)
        scope.cancel()
    assert scope.cancelled_caught and stops[0].is_set()  # abandoned, and told to stop
    assert limiter.inner.borrowed_tokens == _thread.MAX_TOOL_THREADS  # still in its system call: token kept
    async with trio.open_nursery() as nursery:
        results: list[int] = []

        async def next_call() -> None:
            results.append(await _thread.run(lambda stop: 7))  # waits for the token (BUSY_WAIT at most)

        nursery.start_soon(next_call)
        await trio.testing.wait_all_tasks_blocked()
        assert results == []
        release.set()  # the stuck thread ends: its token comes back and the waiting call runs
    assert results == [7]
    for other in others:
        limiter.release_on_behalf_of(other)
    assert limiter.inner.borrowed_tokens == 0


async def test_a_tool_thread_s_error_reaches_its_caller_and_a_stop_is_answered_stopped() -> None:
    def fails(stop: threading.Event) -> None:
        raise OSError(5, "I/O error")

    def stopped(stop: threading.Event) -> None:
        stop.set()
        _thread.check(stop)

    with pytest.raises(OSError, match="I/O error"):
        await _thread.run(fails)
    with pytest.raises(ToolError, match="^stopped$"):
        await _thread.run(stopped)
    assert _thread.limiter().inner.borrowed_tokens == 0


# -- the link's socket (agent/transport.py _WatchedStream) -----------------------------------------
@contextlib.contextmanager
def _watched_pair() -> Iterator[tuple[_WatchedStream, trio.SocketStream]]:
    a, b = trio.socket.socketpair()
    try:
        yield _WatchedStream(trio.SocketStream(a)), trio.SocketStream(b)
    finally:
        a.close()
        b.close()


async def test_an_answer_the_socket_takes_at_once_costs_no_scheduler_pass() -> None:
    with _watched_pair() as (watched, peer):

        async def send() -> None:
            async with watched.lock:
                await watched.send_locked(b"answer")

        assert await steps_of(send) == 0  # trio's send_all yields after its write
        assert await peer.receive_some(100) == b"answer"


async def test_a_frame_bigger_than_the_socket_takes_is_written_whole_and_in_order() -> None:
    with _watched_pair() as (watched, peer):
        frame = bytes(range(256)) * (8 << 12)  # 8 MiB: many times a socket's buffer
        got = bytearray()

        async def read() -> None:
            while len(got) < 2 * len(frame) + 4:
                got.extend(await peer.receive_some(1 << 16))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            async with watched.lock:
                await watched.send_locked(frame)
            await watched.send_all(b"next")  # trio-websocket's writes: after it, never inside it
            async with watched.lock:
                await watched.send_locked(memoryview(frame))
        assert bytes(got) == frame + b"next" + frame


async def test_a_read_of_bytes_waiting_costs_no_scheduler_pass_until_a_peer_keeps_sending() -> None:
    with _watched_pair() as (watched, peer):
        await peer.send_all(b"x" * 10_000)
        await trio.testing.wait_all_tasks_blocked()

        async def reads(n: int) -> None:
            for _ in range(n):
                assert await watched.receive_some(10) == b"x" * 10

        assert await steps_of(lambda: reads(transport.MAX_READS_NOW)) == 0  # trio's receive_some: one step each
        assert await steps_of(lambda: reads(1)) == 1  # then it lets the other tasks run once
        assert await steps_of(lambda: reads(transport.MAX_READS_NOW - 1)) == 0  # and again at the 16th read
        assert await steps_of(lambda: reads(1)) == 1


async def test_a_read_waits_for_the_peer_and_sees_its_close() -> None:
    with _watched_pair() as (watched, peer):
        got: list[bytes | bytearray] = []

        async def read() -> None:
            got.append(await watched.receive_some(100))
            got.append(await watched.receive_some(100))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await trio.testing.wait_all_tasks_blocked()
            assert got == []
            await peer.send_all(b"command")
            await trio.testing.wait_all_tasks_blocked()
            assert got == [b"command"]
            await peer.aclose()
        assert got == [b"command", b""] and watched.ended.is_set() and watched.how == "closed the connection"


async def test_a_cancelled_reader_leaves_the_waiting_bytes_to_the_next_read() -> None:
    with _watched_pair() as (watched, peer):
        await peer.send_all(b"command")
        with trio.CancelScope() as scope:
            scope.cancel()
            await watched.receive_some(100)
        assert scope.cancelled_caught
        assert await watched.receive_some(100) == b"command"
