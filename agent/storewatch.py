"""Follow the shared session store: a change by any client (or by hand) reaches the agent within 2 s.

The store is replaced by rename on every write (core/fileio.atomic_write, and other Hermes clients do
the same), so watching the file itself would follow the old inode. On Linux the agent watches the
store's directory with inotify (ctypes; no dependency) for entries created, moved in or out,
deleted, or closed after writing; each wake-up is only a hint to look again. What decides is the
file's key, ``(inode, mtime_ns, size)`` from ``stat`` (following a symlinked store to its target,
whose directory is watched too): when the key changed, ``on_change`` runs. Elsewhere, or when
inotify is not available (no more instances, a directory that does not exist yet), a stat poll
once a second does the same. So does a directory on a network or FUSE file system (NFS, SMB, sshfs...):
inotify sees only this computer's writes there, not another machine's. Under inotify a slow poll
remains as a safety net (``SAFETY_INTERVAL``): on a local file system every write passes this kernel,
which queues its event; a lost queue (overflow) or a watched directory deleted or moved says so
itself and is looked at at once. What is left (a directory renamed above the watched one, a kernel
bug) is rare enough for a look a minute, which costs an idle agent a wake-up per watched file.
kqueue on macOS would save the poll's few stat calls a second; it is not worth a second native backend.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import struct
import sys
from collections.abc import Callable
from pathlib import Path

import trio

from .clockwatch import next_tick

log = logging.getLogger(__name__)
POLL_INTERVAL = 1.0  # seconds between stat polls without inotify (the 2 s promise, with margin)
SAFETY_INTERVAL = 60.0  # seconds between stat polls under inotify: only catches what events missed
SETTLE = 0.05  # seconds to let a burst of events (temp file, rename) finish before looking

_IN_MODIFY, _IN_ATTRIB, _IN_CLOSE_WRITE = 0x2, 0x4, 0x8
_IN_MOVED_FROM, _IN_MOVED_TO, _IN_CREATE, _IN_DELETE = 0x40, 0x80, 0x100, 0x200
_IN_DELETE_SELF, _IN_MOVE_SELF, _IN_Q_OVERFLOW, _IN_IGNORED = 0x400, 0x800, 0x4000, 0x8000
_IN_NONBLOCK, _IN_CLOEXEC = 0o4000, 0o2000000
_MASK = (_IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE | _IN_ATTRIB
         | _IN_DELETE_SELF | _IN_MOVE_SELF)
_EVENT = struct.Struct("iIII")

# statfs f_type of file systems whose files other machines change without this kernel's inotify knowing
# (linux/magic.h): NFS, SMB, CIFS, SMB2, FUSE (sshfs...), Coda, AFS (two), 9P, Ceph, OCFS2, GFS2, Lustre.
_REMOTE = frozenset({0x6969, 0x517B, 0xFF534D42, 0xFE534D42, 0x65735546, 0x73757245, 0x5346414F,
                     0x6B414653, 0x01021997, 0x00C36400, 0x7461636F, 0x01161970, 0x0BD00BD0})

Key = tuple[int, int, int] | None


def store_key(path: Path) -> Key:
    """(inode, mtime_ns, size) of the store (through a symlink); None when it does not exist."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class _Inotify:
    """A non-blocking inotify descriptor watching some directories (Linux only)."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._add = libc.inotify_add_watch
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        self.fd = fd
        self.watched: set[str] = set()
        self.remote_dirs: set[str] = set()  # polled, not watched: other machines' writes make no event
        self._statfs = libc.statfs
        self._statfs.argtypes = [ctypes.c_char_p, ctypes.c_void_p]

    def remote(self, directory: str) -> bool:
        """Whether ``directory`` is on a network or FUSE file system (an unknown one counts as local)."""
        buf = ctypes.create_string_buffer(512)  # struct statfs; f_type (a C long) comes first
        if self._statfs(os.fsencode(directory), buf) != 0:
            return False
        return (ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF) in _REMOTE

    def watch(self, directory: str) -> bool:
        if directory in self.watched:
            return True
        if directory in self.remote_dirs:
            return False
        if self.remote(directory):
            log.info("store_watch_poll directory=%s reason=a network file system", directory)
            self.remote_dirs.add(directory)
            return False
        if self._add(self.fd, os.fsencode(directory), _MASK) < 0:
            return False
        self.watched.add(directory)
        return True

    def drain(self, names: frozenset[bytes] | None = None) -> bool:
        """Read every pending event; True when a watch ended (its directory went away: watch again), or
        (with ``names``) when an event names one of them or events were lost."""
        lost, named = self.read(names or frozenset())
        return lost or (names is not None and named)

    def read(self, names: frozenset[bytes]) -> tuple[bool, bool]:
        """Read every pending event: (a watch ended, an event names one of ``names`` or events were lost)."""
        lost = named = False
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return lost, named
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise
            offset = 0
            while offset + _EVENT.size <= len(data):
                _, mask, _, length = _EVENT.unpack_from(data, offset)
                name = data[offset + _EVENT.size:offset + _EVENT.size + length].rstrip(b"\0")
                offset += _EVENT.size + length
                if mask & (_IN_IGNORED | _IN_DELETE_SELF | _IN_MOVE_SELF):
                    lost = True
                elif name in names or mask & _IN_Q_OVERFLOW:
                    named = True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class StoreWatcher:
    """Calls ``on_change()`` whenever the store's key changes (started once, runs until cancelled)."""

    def __init__(self, path: Path, *, poll_interval: float = POLL_INTERVAL, use_inotify: bool = True):
        self.path = Path(path)
        self.poll_interval = poll_interval
        self.use_inotify = use_inotify and sys.platform.startswith("linux")
        self.backend = "poll"
        self._notify: _Inotify | None = None  # while every directory is watched
        self._missed = False  # ``quiet`` read an event the loop must act on (it looks on its next round)
        self._pending = False  # the loop read an event about the file and looks after its settle time
        self._names: frozenset[bytes] = frozenset()  # the names an event about the file carries
        self._wait: trio.CancelScope | None = None  # the loop's wait for an event or its next look

    def quiet(self) -> bool:
        """Whether the file is as this watcher last saw it, known without touching the disk: it is on
        inotify and no event waiting in the kernel's queue names it (the kernel queues an event within
        the write, close or rename that causes it, so any change made before this call shows here).
        Events about other files in the directory are read and dropped here; one about this file, or
        a lost watch, leaves it not quiet until the loop's look, which it wakes now (the caller reads
        the file itself meanwhile)."""
        notify = self._notify
        if notify is None or self._missed or self._pending:
            return False
        try:
            changed = notify.drain(self._names)
        except OSError:
            changed = True
        if changed:
            self._missed = True
            if self._wait is not None:
                self._wait.cancel()  # the loop will not see this event any more: it looks at once
        return not changed

    def _own_names(self) -> frozenset[bytes]:
        names = {os.fsencode(self.path.name)}
        with contextlib.suppress(OSError):
            names.add(os.fsencode(os.path.basename(os.path.realpath(self.path))))
        return frozenset(names)

    def _directories(self) -> list[str]:
        dirs = [str(self.path.parent)]
        with contextlib.suppress(OSError):
            target = os.path.dirname(os.path.realpath(self.path))
            if target not in dirs:
                dirs.append(target)
        return dirs

    def _open(self) -> _Inotify | None:
        if not self.use_inotify:
            return None
        try:
            return _Inotify()
        except (OSError, AttributeError) as exc:  # no more instances, or no inotify in this libc
            log.info("store_watch_poll reason=%s", exc)
            return None

    async def run(self, on_change: Callable[[], None]) -> None:
        key = store_key(self.path)
        notify = self._open()
        try:
            while True:
                if self._missed:  # quiet() read what this loop would have: a lost watch is watched again
                    self._missed = False
                    if notify is not None:
                        notify.watched.clear()
                covered = notify is not None and all(notify.watch(d) for d in self._directories())
                self.backend = "inotify" if covered else "poll"
                self._names = self._own_names()
                self._notify = notify if covered else None
                look_at = next_tick(SAFETY_INTERVAL) if covered else trio.current_time() + self.poll_interval
                with trio.move_on_at(look_at) as self._wait:
                    if covered:
                        assert notify is not None
                        await self._event(notify)
                    else:
                        await trio.sleep_forever()
                new = store_key(self.path)
                self._pending = False
                if new != key:
                    key = new
                    log.debug("store_changed key=%s", new)
                    on_change()
        finally:
            self._notify = None
            if notify is not None:
                notify.close()

    async def _event(self, notify: _Inotify) -> None:
        """Until an event names the file (or a watch ended), then its settle time. Events about the
        directory's other files (the desktop audit log is appended on every call) are read and dropped
        here, waking nothing else; ``_pending`` keeps ``quiet`` false from the event to the look."""
        while True:
            await trio.lowlevel.wait_readable(notify.fd)
            lost, named = notify.read(self._names)
            if lost or named:
                break
        self._pending = True
        await trio.sleep(SETTLE)
        if lost or notify.read(self._names)[0]:
            notify.watched.clear()

