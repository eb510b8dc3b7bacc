"""Confining the calling process just before it executes a command (Linux).

``apply(spec, abi)`` runs in the command's own single-threaded process between fork and exec (or in
the exec trampoline): no_new_privs; a private mount view for the read-only and hidden paths inside
the roots (``mounts``); the Landlock rule set planned and built; every capability dropped (bounding
set, ambient, effective/permitted/inheritable: the agent may run as root, and Landlock alone does not
stop a root child); the rule set enforced; then the seccomp filter. Any failure raises: the caller
must then not run the command.

``spec`` is the JSON form of a ``Confinement`` (``spec_of`` in ``tools/_sandbox.py``): ``roots``,
``read_only``, ``protected``, ``write_protected`` (lists of paths), ``network`` (bool) and
``mounts`` (bool: whether to try the private mount view; without it the Landlock plan splits roots).
"""

from __future__ import annotations

import ctypes
import os
from typing import Any, Final

from . import landlock, mounts, seccomp

_PR_SET_NO_NEW_PRIVS: Final = 38
_PR_CAPBSET_DROP: Final = 24
_PR_SET_SECUREBITS: Final = 28
_PR_CAP_AMBIENT: Final = 47
_PR_CAP_AMBIENT_CLEAR_ALL: Final = 4
# NOROOT, NO_SETUID_FIXUP and KEEP_CAPS, each with its lock bit: uid 0 gains nothing at exec.
_SECUREBITS: Final = 0x01 | 0x02 | 0x04 | 0x08 | 0x20
_CAP_VERSION_3: Final = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 63


def _prctl(libc: ctypes.CDLL, option: int, arg: int = 0, arg3: int = 0) -> int:
    result = libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(arg3), ctypes.c_ulong(0), ctypes.c_ulong(0))
    return 0 if result == 0 else ctypes.get_errno()


def drop_capabilities(last_cap: int) -> None:
    """Drop every capability for good; raises when any is still held afterwards."""
    libc = ctypes.CDLL(None, use_errno=True)
    _prctl(libc, _PR_SET_SECUREBITS, _SECUREBITS)  # EPERM without CAP_SETPCAP: nothing to lock then
    for cap in range(last_cap + 1):
        _prctl(libc, _PR_CAPBSET_DROP, cap)  # EPERM without CAP_SETPCAP; no_new_privs keeps exec from gaining
    _prctl(libc, _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL)
    header = _CapHeader(_CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    if libc.capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")
    check = (_CapData * 2)()
    if libc.capget(ctypes.byref(header), check) != 0 or any(
        c.effective or c.permitted or c.inheritable for c in check
    ):
        raise OSError("capabilities are still held after dropping them")


def apply(spec: dict[str, Any], abi: int) -> None:
    """Confine the calling process (single-threaded, between fork and exec) as ``spec`` says; raises on
    any failure, and the caller must then not run the command."""
    code = seccomp.program(bool(spec["network"]))  # ValueError on an architecture without a filter
    libc = ctypes.CDLL(None, use_errno=True)
    err = _prctl(libc, _PR_SET_NO_NEW_PRIVS, 1)
    if err:
        raise OSError(err, f"no_new_privs: {os.strerror(err)}")
    lay = landlock.layout(spec["roots"], spec["read_only"], spec["protected"], spec["write_protected"])
    isolated = bool(spec.get("mounts", True)) and mounts.isolate(lay.inside_roots(lay.hidden),
                                                                lay.inside_roots(lay.frozen))
    ruleset = landlock.build_ruleset(landlock.plan(lay, isolated), abi, bool(spec["network"]))
    drop_capabilities(_last_cap())
    landlock.restrict_self(ruleset)
    os.close(ruleset)
    seccomp.install(code)
