"""Which paths live on local file systems only (Linux: ``/proc/self/mountinfo``), so that a small read may
run on the event loop instead of a worker thread (agent/desktop/tools/files.py, ``_guard.Guard.open_here``).

A worker thread exists for file tools because a path may be on a network or user-space file system
(NFS, SMB, sshfs, any FUSE mount) whose server can stop answering: every system call on it then waits,
and on the loop that would stall the whole agent. A path is *local* here when every mount at or above it
(its own and each one it is reached through) has a type from ``LOCAL_TYPES``, file systems the kernel
serves from memory or a local block device. Unknown types count as remote: the worker thread is always
the safe answer. Mounts below a path are not looked at: reads on the loop open with ``RESOLVE_NO_XDEV``,
so the kernel refuses to cross into them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Final

LOCAL_TYPES: Final = frozenset({
    "ext2", "ext3", "ext4", "xfs", "btrfs", "bcachefs", "f2fs", "jfs", "reiserfs", "nilfs2", "zfs",
    "tmpfs", "ramfs", "overlay", "squashfs", "erofs", "iso9660", "udf", "vfat", "exfat", "ntfs3",
    "hfsplus",
})
MOUNTINFO: Final = "/proc/self/mountinfo"
Table = list[tuple[str, str]]  # (mount point, file system type), in the table's order


def parse(text: str) -> Table:
    """(mount point, type) of each line of a mountinfo text (proc(5)); lines that do not parse are
    kept as a mount of unknown type at "/", which makes every path remote (fail towards the thread)."""
    table: Table = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            point, kind = _unescape(fields[4]), fields[fields.index("-", 6) + 1]
        except (IndexError, ValueError):
            table.append(("/", "?"))
            continue
        table.append((point, kind))
    return table


def _unescape(field: str) -> str:
    r"""A mountinfo path: space, tab, newline and backslash are written as ``\040``, ``\011``, ``\012``, ``\134``."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def local(path: str, table: Table) -> bool:
    """Whether every mount at or above ``path`` (absolute and resolved) is of a local type."""
    for point, kind in table:
        if _at_or_above(point, path) and kind not in LOCAL_TYPES:
            return False
    return True


def _at_or_above(point: str, path: str) -> bool:
    return point == "/" or path == point or path.startswith(point.rstrip("/") + "/")


def read_table() -> Table | None:
    """This process's mount table, or None where there is none to read (not Linux, no /proc): then no
    path counts as local."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        with open(MOUNTINFO, encoding="utf-8", errors="surrogateescape") as f:
            return parse(f.read())
    except OSError:
        return None


def all_local(paths: Iterable[str | os.PathLike[str]], table: Table | None = None) -> bool:
    """Whether every one of ``paths`` is local, as written (made absolute) and resolved. Blocking: the
    resolutions touch the disk, so this runs in a worker thread."""
    table = read_table() if table is None else table
    if table is None:
        return False
    for p in paths:
        name = os.path.abspath(os.fspath(p))
        if not local(name, table) or not local(os.path.realpath(name), table):
            return False
    return True
