"""Hide a secret given on the command line from other users' ``ps`` (imported only by ``pair``).

``/proc/<pid>/cmdline`` (and ``ps``) read the process's original argument memory, not
``sys.argv``. On Linux that memory's bounds are in ``/proc/self/stat`` (``arg_start``/``arg_end``),
so each occurrence of the secret is overwritten in place with ``*`` of the same length: the rest of
the command line stays readable. Elsewhere the optional ``setproctitle`` package is used when it is
installed. Either way there is a short window before this runs, which is why ``--code -`` and
``HERMES_RELAY_CODE`` are the recommended forms.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence

HUMAN_UID_MIN = 1000  # login.defs' UID_MIN on Linux distributions; below it are system accounts
NOBODY_UIDS = frozenset({65534, 4294967294})


def scrub(secrets_: Sequence[str]) -> bool:
    """Overwrite every ``secrets_`` in this process's arguments; True when the memory was changed."""
    wanted = [s.encode() for s in secrets_ if s]
    if not wanted:
        return False
    if _scrub_linux(wanted):
        return True
    try:
        import setproctitle  # type: ignore[import-not-found]
    except ImportError:
        return False
    title = " ".join("*" * len(a) if a in secrets_ else a for a in sys.argv)
    setproctitle.setproctitle(title)
    return True


def _scrub_linux(wanted: list[bytes]) -> bool:
    try:
        with open("/proc/self/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    fields = stat[stat.rindex(b")") + 2:].split()
    try:
        start, end = int(fields[45]), int(fields[46])  # fields 48 and 49 of proc(5), counted after comm
    except (IndexError, ValueError):
        return False
    if not 0 < start < end:
        return False
    import ctypes

    memory = ctypes.string_at(start, end - start)
    changed = False
    for secret in wanted:
        at = memory.find(secret)
        while at != -1:
            ctypes.memset(start + at, ord("*"), len(secret))
            changed = True
            at = memory.find(secret, at + len(secret))
    return changed


def other_users_present(proc: str = "/proc", me: int | None = None) -> bool:
    """True when a process of another human user runs here (someone who could read ``ps``)."""
    if sys.platform == "win32":  # no /proc, no uids: nothing to look at
        return False
    me = os.getuid() if me is None else me
    return any(_is_other_human(uid, me) for uid in _process_uids(proc))


def _process_uids(proc: str) -> Iterable[int]:
    try:
        names = os.listdir(proc)
    except OSError:
        return
    for name in names:
        if name.isdigit():
            try:
                yield os.stat(os.path.join(proc, name)).st_uid
            except OSError:
                continue


def _is_other_human(uid: int, me: int) -> bool:
    return uid != me and uid >= HUMAN_UID_MIN and uid not in NOBODY_UIDS
