"""Blocking tool work off the event loop, stoppable, on threads of its own.

The worker receives a ``threading.Event`` and checks it between units of work (a chunk, a file);
when the call is cancelled the caller stops waiting at once and the event is set, so the thread
ends at its next check instead of running on after the call's deadline.

Tool threads draw from their own limiter (``MAX_TOOL_THREADS``), never from trio's default one that
pairing, the store and the policy use: a thread stuck in a system call (a FIFO, a hung network
mount) keeps its token after its call is abandoned, and such threads must not starve the rest of
the agent. When every tool token is held, a call waits ``BUSY_WAIT`` seconds and then answers
"busy" instead of queueing until its deadline. One relay host holds at most ``MAX_PER_HOST`` of them
(``HOST``, set by the channel per call): its slow or stuck calls cannot leave another host only "busy".
Nor can several hosts together: the shared limit grows by a host's share with each host that calls (up to
``MAX_HOSTS_SERVED`` hosts' worth), so every host finds its own share free however many others are stuck.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable
from contextvars import ContextVar
from functools import partial
from typing import TYPE_CHECKING, Any, Final, TypeVar

import trio
from trio.lowlevel import RunVar, enable_ki_protection

from ....core.desktop import ToolError
from . import _fs

if TYPE_CHECKING:
    import outcome

T = TypeVar("T")

MAX_TOOL_THREADS: Final = 16  # tool threads at once while at most two hosts have called (and for calls of no host)
MAX_PER_HOST: Final = MAX_TOOL_THREADS // 2  # one relay host's share: another host always finds threads
MAX_HOSTS_SERVED: Final = 8  # hosts whose whole share stays free whatever the others hold (64 threads at most)
BUSY_WAIT: Final = 2.0  # seconds a call waits for a tool thread before answering busy

# The relay host a call runs for (its URL), set by the channel in the call's own task: its tool threads
# count against that host's share. Unset (tests, the CLI's own uses): only the shared limit applies.
HOST: ContextVar[str] = ContextVar("hermes_relay_tool_host", default="")


class Stopped(Exception):
    """Raised inside a worker that saw its stop event."""


class ToolLimiter:
    """A CapacityLimiter that answers "busy" (a ToolError) after ``BUSY_WAIT`` instead of waiting on."""

    def __init__(self, total: int) -> None:
        self.inner = trio.CapacityLimiter(total)

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        try:  # a free token costs no scheduler pass (to_thread.run_sync checked for cancellation just before)
            self.inner.acquire_on_behalf_of_nowait(borrower)
            return
        except trio.WouldBlock:
            pass
        with trio.move_on_after(BUSY_WAIT):
            await self.inner.acquire_on_behalf_of(borrower)
            return
        raise ToolError(f"busy: all {int(self.inner.total_tokens)} tool threads are still working (a file or "
                        "device that does not answer keeps one until it does); try again later")

    def release_on_behalf_of(self, borrower: object) -> None:
        self.inner.release_on_behalf_of(borrower)


class _HostShare:
    """The shared limiter and one host's share of it, acquired and released together (trio releases a
    thread's tokens when the thread ends, even one its call abandoned: a host's stuck threads keep its share)."""

    def __init__(self, host: ToolLimiter, shared: ToolLimiter, url: str) -> None:
        self.host, self.shared, self.url = host, shared, url

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        try:
            await self.host.acquire_on_behalf_of(borrower)
        except ToolError:
            raise ToolError(f"busy: this relay host already has {MAX_PER_HOST} tool threads working (a file or "
                            "device that does not answer keeps one until it does); try again later") from None
        try:
            await self.shared.acquire_on_behalf_of(borrower)
        except BaseException:
            self.host.release_on_behalf_of(borrower)
            raise

    def release_on_behalf_of(self, borrower: object) -> None:
        self.shared.release_on_behalf_of(borrower)
        self.host.release_on_behalf_of(borrower)


_LIMITER: RunVar[ToolLimiter] = RunVar("hermes_relay_tool_limiter")
_HOSTS: RunVar[dict[str, ToolLimiter]] = RunVar("hermes_relay_tool_hosts")


def limiter() -> ToolLimiter:
    """This trio run's tool limiter (one per run: an abandoned thread's token never leaks into another)."""
    try:
        return _LIMITER.get()
    except LookupError:
        made = ToolLimiter(MAX_TOOL_THREADS)
        _LIMITER.set(made)
        return made


def _limiter_for(url: str) -> ToolLimiter | _HostShare:
    if not url:
        return limiter()
    try:
        hosts = _HOSTS.get()
    except LookupError:
        hosts = {}
        _HOSTS.set(hosts)
    share = hosts.get(url)
    shared = limiter()
    if share is None:
        share = hosts[url] = ToolLimiter(MAX_PER_HOST)
        # A new host's share is added to the shared limit: two hosts with every call stuck must not leave a
        # third only "busy" (a coalition of relay hosts is bounded as one host is).
        shared.inner.total_tokens = max(MAX_TOOL_THREADS, MAX_PER_HOST * min(len(hosts), MAX_HOSTS_SERVED))
    return _HostShare(share, shared, url)


def check(stop: threading.Event) -> None:
    if stop.is_set():
        raise Stopped


@enable_ki_protection
async def run(fn: Callable[..., T], *args: Any) -> T:
    """``fn(stop, *args)`` in a tool thread, abandoned (and ``stop`` set) when the call is cancelled.

    ``trio.to_thread.run_sync`` cut down to what a tool needs, about half its cost per hop: no thread
    renamed there and back (two system calls), no copy of the caller's context (``fn`` sees none of the
    task's context variables: read them before the hop) and no way back into trio (``trio.from_thread``).
    The token is taken before the thread starts and given back when it ends, even after an abandon."""
    stop = threading.Event()
    try:
        await trio.lowlevel.checkpoint_if_cancelled()
        limit = _limiter_for(HOST.get())
        await limit.acquire_on_behalf_of(stop)
        return await _hop(limit, partial(fn, stop, *args), stop)
    except Stopped as exc:
        raise ToolError("stopped") from exc
    finally:
        stop.set()


async def run_here(now: Callable[[], T] | None, fn: Callable[..., T], *args: Any) -> T:
    """``now()`` on the event loop, for an answer it can give without waiting on anything remote; when it
    cannot (``_fs.Slow``), or with no ``now``, ``run(fn, *args)`` in a tool thread. A thread's hop costs more
    than a small read of a local file; the thread stays the only way to anything that may hang."""
    if now is not None:
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            return now()
        except _fs.Slow:
            pass
    return await run(fn, *args)


_EVENTFD: Final = sys.platform == "linux"  # a tool thread wakes its caller through an eventfd (Linux only)


def _eventfd() -> int:
    if sys.platform == "linux":
        return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    raise NotImplementedError


def _wake(fd: int) -> None:
    if sys.platform == "linux":
        os.eventfd_write(fd, 1)


def _woken(fd: int) -> None:
    if sys.platform == "linux":
        os.eventfd_read(fd)


_FREE_FDS: list[int] = []  # eventfds read empty after their last hop, for the next (a cancelled hop's are closed)


async def _hop(limit: ToolLimiter | _HostShare, job: Callable[[], T], borrower: object) -> T:
    """``job()`` in a cached thread; the caller waits for it on an eventfd the thread writes (one pass of the
    scheduler: trio's way back, ``run_sync_soon``, takes two, its own task's and then the caller's)."""
    if not _EVENTFD:
        return await _hop_queued(limit, job, borrower)
    try:  # (a pop, not a look then a pop: two trio runs in two threads may share the list)
        fd = _FREE_FDS.pop()
    except IndexError:
        fd = _eventfd()
    token = trio.lowlevel.current_trio_token()
    lock = threading.Lock()
    done: list[outcome.Outcome[T]] = []
    abandoned = [False]

    def deliver(result: outcome.Outcome[T]) -> None:  # in the tool thread, when ``job`` has ended
        with lock:
            done.append(result)
            if not abandoned[0]:
                _wake(fd)
                return
        os.close(fd)  # the caller is gone (and waits on it no more): the token goes back in trio
        with contextlib.suppress(trio.RunFinishedError):  # the run ended: the call is long gone
            token.run_sync_soon(limit.release_on_behalf_of, borrower)

    try:
        trio.lowlevel.start_thread_soon(job, deliver)
    except BaseException:
        limit.release_on_behalf_of(borrower)
        _FREE_FDS.append(fd)
        raise
    try:
        await trio.lowlevel.wait_readable(fd)
    except BaseException:  # cancelled: abandoned, told to stop by the caller; its token comes back when it ends
        with lock:
            abandoned[0] = True
            ended = bool(done)
        if ended:  # it ended meanwhile: its answer is dropped, its token given back now
            os.close(fd)
            limit.release_on_behalf_of(borrower)
        raise
    _woken(fd)
    _FREE_FDS.append(fd)
    limit.release_on_behalf_of(borrower)
    return done[0].unwrap()


async def _hop_queued(limit: ToolLimiter | _HostShare, job: Callable[[], T], borrower: object) -> T:
    task: list[trio.lowlevel.Task | None] = [trio.lowlevel.current_task()]  # emptied when abandoned
    token = trio.lowlevel.current_trio_token()

    def back_in_trio(result: outcome.Outcome[T]) -> None:
        limit.release_on_behalf_of(borrower)
        if task[0] is not None:
            trio.lowlevel.reschedule(task[0], result)

    def deliver(result: outcome.Outcome[T]) -> None:  # in the tool thread, when ``job`` has ended
        with contextlib.suppress(trio.RunFinishedError):  # the run ended: the call is long gone
            token.run_sync_soon(back_in_trio, result)

    try:
        trio.lowlevel.start_thread_soon(job, deliver)
    except BaseException:
        limit.release_on_behalf_of(borrower)
        raise

    def abandon(_: Any) -> trio.lowlevel.Abort:
        task[0] = None
        return trio.lowlevel.Abort.SUCCEEDED

    return await trio.lowlevel.wait_task_rescheduled(abandon)  # type: ignore[no-any-return]
