"""Kernel-helped path resolution for the file tools: open a path *beneath* a directory descriptor.

A confined tool opens its root folder once, then resolves the rest of the path relative to that
descriptor so that no symbolic link, ``..`` or concurrent rename can lead it out:

- Linux 5.6+: ``openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`` through its syscall (437 on every
  architecture: syscalls added since 5.1 share one number table). The kernel refuses any step that
  would leave the directory (``EXDEV``), including absolute symlinks and ``/proc/*/fd`` magic links.
- elsewhere (macOS, older kernels, a seccomp filter answering ``ENOSYS``/``EPERM``): a component walk
  that opens one name at a time with ``O_NOFOLLOW``, holds every directory it passed as a descriptor,
  answers ``..`` by going back to the held parent (never by a lookup) and splices a relative link's
  target into the remaining names; an absolute link or a ``..`` above the start is ``EXDEV`` as well.

Both follow a symlink in the last component unless ``O_NOFOLLOW`` is passed, as ``open`` would.
Everything here is synchronous and meant for worker threads.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import sys
from collections.abc import Callable
from typing import Final

SYS_OPENAT2: Final = 437  # include/uapi/asm-generic/unistd.h; the same on x86_64, arm64, riscv, ...
RESOLVE_NO_XDEV: Final = 0x01
RESOLVE_NO_MAGICLINKS: Final = 0x02
RESOLVE_BENEATH: Final = 0x08
MAX_LINKS: Final = 40  # Linux's MAXSYMLINKS: the walk gives ELOOP after as many links as the kernel would
_OPENAT2_RETRIES: Final = 8  # EAGAIN: a rename or mount raced a ".." step; the kernel asks us to try again
_NOFOLLOW_ERRNOS: Final = (errno.ELOOP, errno.EMLINK, errno.ENOTDIR)  # FreeBSD/macOS say EMLINK for O_NOFOLLOW

O_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
O_DIRECTORY: Final = getattr(os, "O_DIRECTORY", 0)
O_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
O_NONBLOCK: Final = getattr(os, "O_NONBLOCK", 0)
O_NOCTTY: Final = getattr(os, "O_NOCTTY", 0)
if sys.platform == "win32":
    O_BINARY: Final = os.O_BINARY  # without it Windows reads and writes a descriptor as text (CRLF)
else:
    O_BINARY: Final = 0
DIR_FLAGS: Final = os.O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NONBLOCK
READ_FLAGS: Final = os.O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY | O_BINARY  # O_NONBLOCK: a FIFO or device never blocks open


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


class _Openat2:
    """The syscall, or None once the kernel said it does not offer it."""

    def __init__(self) -> None:
        self.available = sys.platform.startswith("linux")
        self._syscall = None
        if self.available:
            try:
                self._syscall = ctypes.CDLL(None, use_errno=True).syscall
            except (OSError, AttributeError):
                self.available = False

    def __call__(self, dirfd: int, rel: str, flags: int, mode: int, resolve: int = 0) -> int | None:
        """The new descriptor; None when openat2 is missing (the caller walks instead)."""
        if not self.available or self._syscall is None:
            return None
        how = _OpenHow(flags, mode if flags & os.O_CREAT else 0, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | resolve)
        name = os.fsencode(rel)
        for _ in range(_OPENAT2_RETRIES):
            fd = self._syscall(ctypes.c_long(SYS_OPENAT2), ctypes.c_int(dirfd), ctypes.c_char_p(name),
                               ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
            if fd >= 0:
                return int(fd)
            err = ctypes.get_errno()
            if err in (errno.ENOSYS, errno.EPERM):  # EPERM: a seccomp filter (containers) refusing it
                self.available = False
                return None
            if err != errno.EAGAIN:
                raise OSError(err, os.strerror(err), rel)
        raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN), rel)


_openat2 = _Openat2()


def use_openat2(enabled: bool) -> None:
    """Tests: force the component walk (False) to exercise the fallback on a kernel that has openat2."""
    _openat2.available = enabled and _openat2._syscall is not None


def openat2_available() -> bool:
    return _openat2.available


def open_beneath(dirfd: int, rel: str, flags: int, mode: int = 0o666) -> int:
    """Open ``rel`` relative to ``dirfd`` without ever leaving it (``OSError(EXDEV)`` when it would).

    ``rel`` is a relative path (``""`` or ``"."`` opens the directory itself again).
    """
    if rel.startswith("/"):
        raise OSError(errno.EXDEV, "absolute path", rel)
    rel = rel or "."
    fd = _openat2(dirfd, rel, flags | O_CLOEXEC, mode)
    if fd is not None:
        return fd
    return _walk(dirfd, rel, flags | O_CLOEXEC, mode)


class Slow(Exception):
    """What was asked cannot be done on the event loop with certainty that it will not wait on a remote file
    system (``open_here``); the caller does it in a worker thread instead."""


def open_here(dirfd: int, rel: str, flags: int) -> int:
    """``open_beneath`` that also never leaves ``dirfd``'s mount (``RESOLVE_NO_XDEV``): ``Slow`` when the path
    crosses into another file system, leads out, or openat2 is missing (the walk would look at every name)."""
    if rel.startswith("/") or not _openat2.available:
        raise Slow(rel)
    try:
        fd = _openat2(dirfd, rel or ".", flags | O_CLOEXEC, 0, RESOLVE_NO_XDEV)
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            raise Slow(rel) from None
        raise
    if fd is None:
        raise Slow(rel)
    return fd


def _walk(dirfd: int, rel: str, flags: int, mode: int) -> int:
    todo = [p for p in rel.split("/") if p not in ("", ".")]
    todo.reverse()  # a stack: the next name is at the end
    held: list[int] = []  # directories passed on the way (dirfd itself is not ours to close)
    links = 0
    try:
        while todo:
            name = todo.pop()
            if name in ("", "."):
                continue
            here = held[-1] if held else dirfd
            if name == "..":
                if not held:
                    raise OSError(errno.EXDEV, "'..' leads out of the folder", rel)
                os.close(held.pop())
                continue
            last = not todo
            want = (flags | O_NOFOLLOW) if last else (DIR_FLAGS | O_NOFOLLOW)
            try:
                fd = os.open(name, want, mode, dir_fd=here)
            except OSError as exc:
                if exc.errno not in _NOFOLLOW_ERRNOS or (last and flags & O_NOFOLLOW):
                    raise
                try:
                    info = os.lstat(name, dir_fd=here)
                except OSError:
                    raise exc from None
                if not stat.S_ISLNK(info.st_mode):
                    raise
                links += 1
                if links > MAX_LINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), rel) from None
                target = os.readlink(name, dir_fd=here)
                if target.startswith("/"):
                    raise OSError(errno.EXDEV, "an absolute symbolic link leads out of the folder", rel) from None
                todo.extend(reversed([p for p in target.split("/") if p not in ("", ".")]))
                if not todo:
                    todo.append(".")
                continue
            if last:
                return fd
            held.append(fd)
        # every name was consumed by "." or "..": the answer is the directory we stand in
        return os.open(".", flags, mode, dir_fd=held[-1] if held else dirfd)
    finally:
        for fd in held:
            os.close(fd)


def read_upto(fd: int, limit: int, check: Callable[[], None] | None = None, chunk: int = 1 << 20) -> bytes:
    """At most ``limit`` bytes from ``fd``, in bounded reads (``check`` runs between them)."""
    parts: list[bytes] = []
    got = 0
    while got < limit:
        if check is not None:
            check()
        data = os.read(fd, min(chunk, limit - got))
        if not data:
            break
        parts.append(data)
        got += len(data)
    return b"".join(parts)
