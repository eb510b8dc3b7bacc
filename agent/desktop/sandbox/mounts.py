"""A private mount view for a confined command: read-only ``.git`` and write-protected paths inside its
roots, protected paths inside them hidden (Linux).

Landlock rights are allow-rules over whole hierarchies, so on their own they cannot keep ``R/.git``
read-only while ``R`` stays writable (new files in ``R`` would be impossible). Where the kernel lets
the command's process create a user and mount namespace (as it does for root, and for users on most
distributions), those paths are bind-mounted read-only onto themselves and protected folders are
covered by an empty read-only tmpfs (a protected file by ``/dev/null``, read-only), in a view only
this command and its children see; the roots then get plain Landlock rules. Landlock forbids the
confined command any later mount or unmount, and these mounts are locked for nested namespaces.
When the namespace cannot be had, ``isolate`` returns False and the Landlock plan splits the roots.
"""

from __future__ import annotations

import ctypes
import os
import stat
import sys
from collections.abc import Iterable
from typing import Final

_CLONE_NEWNS: Final = 0x00020000
_CLONE_NEWUSER: Final = 0x10000000
_MS_RDONLY: Final = 0x1
_MS_NOSUID: Final = 0x2
_MS_NODEV: Final = 0x4
_MS_NOEXEC: Final = 0x8
_MS_REMOUNT: Final = 0x20
_MS_BIND: Final = 0x1000
_MS_REC: Final = 0x4000
_MS_PRIVATE: Final = 1 << 18


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _mount(libc: ctypes.CDLL, source: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
    def enc(value: str | None) -> bytes | None:
        return None if value is None else os.fsencode(value)

    if libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def _read_only_bind(libc: ctypes.CDLL, source: str, target: str) -> None:
    _mount(libc, source, target, None, _MS_BIND | _MS_REC)
    _mount(libc, None, target, None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)


def coverable(path: str) -> bool:
    """Whether the mount view can cover ``path``: only what exists, and is not a link, can be mounted on.
    Anything else stays for the Landlock plan to split around (landlock.plan)."""
    return os.path.lexists(path) and not os.path.islink(path)


def isolate(hidden: Iterable[str], frozen: Iterable[str]) -> bool:
    """In the command's process: a private mount view hiding ``hidden`` and freezing ``frozen``
    (the coverable ones). False (and nothing to rely on) when the kernel refuses the namespace."""
    hidden = [p for p in hidden if coverable(p)]
    frozen = [p for p in frozen if coverable(p)]
    if not hidden and not frozen:
        return True
    if sys.platform != "linux":
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(ctypes.c_int(_CLONE_NEWUSER | _CLONE_NEWNS)) != 0:
        return False
    try:
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1\n")
        _write("/proc/self/gid_map", f"{gid} {gid} 1\n")
        _mount(libc, None, "/", None, _MS_REC | _MS_PRIVATE)
        for path in frozen:
            _read_only_bind(libc, path, path)
        for path in hidden:
            if stat.S_ISDIR(os.lstat(path).st_mode):
                _mount(libc, "none", path, "tmpfs", _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC,
                       "size=4k,nr_inodes=1,mode=000")
            else:
                _read_only_bind(libc, "/dev/null", path)
    except OSError:
        return False
    return True
