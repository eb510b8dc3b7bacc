"""Wall-clock steps told by the kernel, so an idle agent need not compare clocks every few seconds.

On Linux a timerfd on ``CLOCK_REALTIME``, armed far ahead with ``TFD_TIMER_CANCEL_ON_SET``, becomes
readable when the clock is set (``settimeofday``, NTP stepping it) and when the computer resumes from
suspend (the kernel cancels such timers then): ``ClockSteps.wait`` returns at once. The agent's clock
watch (agent/runner.py) still compares the wall clock with trio's after each wake-up, and decides there
what is a jump. ``open_steps`` returns None where there is no timerfd (other systems, an old libc):
the watch then polls. ctypes, as agent/storewatch.py's inotify: no dependency.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import math
import os
import sys
import time

import trio

log = logging.getLogger(__name__)
_CLOCK_REALTIME = 0
_TFD_NONBLOCK, _TFD_CLOEXEC = 0o4000, 0o2000000
_TFD_TIMER_ABSTIME, _TFD_TIMER_CANCEL_ON_SET = 1, 2
_AHEAD = 365 * 86400  # the timer is armed this far ahead: it only fires early when the clock is set


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class ClockSteps:
    """A timerfd that turns readable when the wall clock is set or the computer resumes (Linux only)."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._settime = libc.timerfd_settime
        self._settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.c_void_p]
        fd = libc.timerfd_create(_CLOCK_REALTIME, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        self.fd = fd
        try:
            self.arm(time.time() + _AHEAD)
        except OSError:
            self.close()
            raise

    def arm(self, at: float) -> None:
        """Fire at wall-clock time ``at``, or before it when the clock is set."""
        spec = _Itimerspec(_Timespec(0, 0), _Timespec(int(at), int(at % 1 * 1e9)))
        if self._settime(self.fd, _TFD_TIMER_ABSTIME | _TFD_TIMER_CANCEL_ON_SET, ctypes.byref(spec), None) < 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))

    async def wait(self, until: float) -> bool:
        """Until the clock is set (True: the timer is armed again) or trio's clock reaches ``until`` (False)."""
        with trio.move_on_at(until):
            await trio.lowlevel.wait_readable(self.fd)
            self._drain()
            self.arm(time.time() + _AHEAD)
            return True
        return False

    def _drain(self) -> None:
        try:
            os.read(self.fd, 8)  # the expiry count, or ECANCELED: the clock was set
        except OSError as exc:
            if exc.errno not in (errno.ECANCELED, errno.EAGAIN):
                raise

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def next_tick(period: float) -> float:
    """The next multiple of ``period`` in trio's clock. The agent's periodic looks that need no phase of
    their own (the store watches' and the network watch's safety looks, the fence, the clock watch's own
    look, idle exit, the route file's heartbeat) wait for it: those that fall due together wake the agent once, in one scheduler
    pass, instead of each on its own (a cold wake-up of an idle process costs more than its work)."""
    now = trio.current_time()
    if period <= 0 or not math.isfinite(period):
        return now if period <= 0 else math.inf
    return (now // period + 1) * period


def open_steps() -> ClockSteps | None:
    """A ``ClockSteps``, or None where the kernel cannot tell (the caller polls)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ClockSteps()
    except (OSError, AttributeError) as exc:  # no timerfd in this libc or kernel, no more descriptors
        log.info("clock_watch_poll reason=%s", exc)
        return None
