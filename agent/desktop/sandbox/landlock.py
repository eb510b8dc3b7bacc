"""Landlock rule sets for a confined command: which paths it may read, write or execute.

Landlock rights are allow-rules that hold for a whole hierarchy: a right granted on a folder covers
everything below it, and nothing can take it back further down. So a folder that contains a path the
command must not reach (``~/.hermes`` inside a readable home, ``.git`` inside a writable root) gets
no right itself; each of its children gets the rights instead, recursively down to the excluded
path, which gets fewer (or none). Symbolic links met on the way are skipped, never followed. The
price: nothing can be created or listed directly in such a split folder, which is why a private
mount view (``mounts.py``) covers the paths inside the roots where the kernel allows one; the split
remains for the rest and as the fallback.

``plan()`` decides the rules (pure apart from listing split folders); ``build_ruleset()`` opens the
paths and creates the kernel rule set; ``restrict_self()`` enforces it. Both run in the command's own
process just before exec (``confine_self.apply``).

Nothing else is granted: no ``/proc`` (other processes' command lines, the agent's ``/proc`` entries),
no ``/sys``, no ``/tmp`` or ``/dev/shm`` unless a root holds them (shared with every other program),
and of ``/dev`` only null, zero, random and urandom. ``/dev/tty`` is not granted: a command runs in
its own session with no controlling terminal, so it could not be opened anyway. ``/dev/fd/N`` and
``/dev/stdin`` still work (the kernel checks the already-open pipe, not a path).

Every ABI from 1 to 7 is handled: rights a kernel does not know are left out of the rule set
(``handled_rights``); ``core.confine.missing_protections`` names what that leaves unguarded.
"""

from __future__ import annotations

import ctypes
import os
import stat
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

# Syscall numbers: the same on every architecture (added after the tables were unified).
_CREATE_RULESET: Final = 444
_ADD_RULE: Final = 445
_RESTRICT_SELF: Final = 446
_RULE_PATH_BENEATH: Final = 1

EXECUTE: Final = 1 << 0
WRITE_FILE: Final = 1 << 1
READ_FILE: Final = 1 << 2
READ_DIR: Final = 1 << 3
REMOVE_DIR: Final = 1 << 4
REMOVE_FILE: Final = 1 << 5
MAKE_CHAR: Final = 1 << 6
MAKE_DIR: Final = 1 << 7
MAKE_REG: Final = 1 << 8
MAKE_SOCK: Final = 1 << 9
MAKE_FIFO: Final = 1 << 10
MAKE_BLOCK: Final = 1 << 11
MAKE_SYM: Final = 1 << 12
REFER: Final = 1 << 13  # ABI 2
TRUNCATE: Final = 1 << 14  # ABI 3
IOCTL_DEV: Final = 1 << 15  # ABI 5
NET_BIND_TCP: Final = 1 << 0  # ABI 4
NET_CONNECT_TCP: Final = 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET: Final = 1 << 0  # ABI 6
SCOPE_SIGNAL: Final = 1 << 1

FILE_RIGHTS: Final = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV  # the rights a non-folder may carry
READ: Final = EXECUTE | READ_FILE | READ_DIR
WRITE: Final = (READ | WRITE_FILE | REMOVE_DIR | REMOVE_FILE | MAKE_DIR | MAKE_REG | MAKE_FIFO | MAKE_SYM
                | REFER | TRUNCATE)  # no device or socket nodes
DEVICE: Final = READ_FILE | WRITE_FILE | TRUNCATE | IOCTL_DEV
DEVICES: Final = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")


def handled_rights(abi: int) -> int:
    """The file-system rights a kernel with Landlock ``abi`` can govern."""
    rights = (1 << 13) - 1
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    if abi >= 5:
        rights |= IOCTL_DEV
    return rights


@dataclass(frozen=True)
class Rule:
    path: str
    rights: int


def _within(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _real(paths: Iterable[object]) -> list[str]:
    return [os.path.realpath(os.fspath(p)) for p in paths]  # type: ignore[call-overload]


def _children(path: str) -> list[str]:
    try:
        with os.scandir(path) as entries:
            return sorted(e.path for e in entries if not e.is_symlink())
    except OSError:
        return []


def _grant(path: str, rights: int, excluded: list[str], out: list[Rule],
           children: Callable[[str], list[str]]) -> None:
    if any(_within(path, e) for e in excluded):
        return  # the path itself is excluded, or lies below an excluded one
    inside = [e for e in excluded if _within(e, path)]
    if not inside:
        out.append(Rule(path, rights))
        return
    for child in children(path):
        _grant(child, rights, inside, out, children)


def git_dirs(roots: Iterable[str], children: Callable[[str], list[str]] = _children) -> list[str]:
    """``.git`` entries in each root and one level below it (kept read-only)."""
    found = []
    for root in roots:
        for candidate in [root, *children(root)]:
            git = os.path.join(candidate, ".git")
            if os.path.lexists(git):
                found.append(git)
    return found


@dataclass(frozen=True)
class Layout:
    """Real paths: the roots (existing), what must stay hidden, and what must stay read-only."""

    roots: list[str]
    read_only: list[str]
    hidden: list[str]
    frozen: list[str]

    def inside_roots(self, paths: list[str]) -> list[str]:
        return [p for p in paths if any(_within(p, r) and p != r for r in self.roots)]


def layout(roots: Iterable[object], read_only: Iterable[object], protected: Iterable[object],
           write_protected: Iterable[object], children: Callable[[str], list[str]] = _children) -> Layout:
    real_roots = [r for r in _real(roots) if os.path.exists(r)]
    return Layout(real_roots, [p for p in _real(read_only) if os.path.exists(p)], _real(protected),
                  _real(write_protected) + git_dirs(real_roots, children))


def plan(lay: Layout, isolated: bool = False, children: Callable[[str], list[str]] = _children,
         coverable: Callable[[str], bool] | None = None) -> list[Rule]:
    """The rules: read-write below the roots, read below ``read_only`` and the write-protected parts of
    the roots, the harmless devices; nothing below a hidden path. ``isolated``: the hidden and frozen
    paths inside the roots that the view could cover are handled by it (``mounts.isolate``); those it
    cannot (a login path that does not exist yet, a link) are still split around, or a command could
    create ``~/.ssh`` or ``~/.config/autostart`` in a home root."""
    from . import mounts

    covers: Callable[[str], bool] = mounts.coverable if coverable is None else coverable
    hidden, frozen = lay.hidden, lay.frozen
    if isolated:
        handled = [p for p in lay.inside_roots(hidden + frozen) if covers(p)]
        hidden = [p for p in hidden if p not in handled]
        frozen = [p for p in frozen if p not in handled]
    rules: list[Rule] = []
    for root in lay.roots:
        _grant(root, WRITE, hidden + frozen, rules, children)
    readable = list(lay.read_only)
    readable += [f for f in lay.inside_roots(frozen) if os.path.lexists(f)]
    readable += [r for r in lay.roots if any(_within(r, f) for f in frozen)]  # a root inside a frozen path
    for path in readable:
        _grant(path, READ, hidden, rules, children)
    rules += [Rule(d, DEVICE) for d in DEVICES if os.path.exists(d)]
    return rules


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def build_ruleset(rules: list[Rule], abi: int, network: bool) -> int:
    """Create the kernel rule set for ``rules`` (in the unconfined reaper); returns its fd."""
    if sys.platform != "linux" or abi < 1:
        raise OSError("this kernel has no Landlock")
    libc = _libc()
    handled = handled_rights(abi)
    attr = _RulesetAttr(handled, 0, 0)
    size = 8
    if abi >= 4:
        size = 16
        if not network:
            attr.handled_access_net = NET_BIND_TCP | NET_CONNECT_TCP  # no rule: every TCP bind/connect denied
    if abi >= 6:
        size = 24
        attr.scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
    fd = _check(libc.syscall(ctypes.c_long(_CREATE_RULESET), ctypes.byref(attr), ctypes.c_size_t(size),
                             ctypes.c_uint32(0)), "landlock_create_ruleset")
    try:
        for rule in rules:
            try:
                path_fd = os.open(rule.path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # gone since the plan: nothing to grant
            try:
                rights = rule.rights & handled
                if not stat.S_ISDIR(os.fstat(path_fd).st_mode):
                    rights &= FILE_RIGHTS
                beneath = _PathBeneathAttr(rights, path_fd)
                _check(libc.syscall(ctypes.c_long(_ADD_RULE), ctypes.c_int(fd), ctypes.c_int(_RULE_PATH_BENEATH),
                                    ctypes.byref(beneath), ctypes.c_uint32(0)), f"landlock_add_rule {rule.path}")
            finally:
                os.close(path_fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def restrict_self(ruleset_fd: int) -> None:
    """Enforce the rule set on the calling (single-threaded, no_new_privs) process and its children."""
    _check(_libc().syscall(ctypes.c_long(_RESTRICT_SELF), ctypes.c_int(ruleset_fd), ctypes.c_uint32(0)),
           "landlock_restrict_self")
