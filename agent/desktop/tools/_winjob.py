"""A Windows Job Object that ends every process in it: how desktop_terminal kills a command's tree there.

Windows keeps no process groups to signal and never re-parents an orphan, so a walk of psutil's
children from the command misses a grandchild whose parent already exited (``start /b``, a build
tool's daemon). A Job Object holds every process started inside it, orphans included;
``TerminateJobObject`` ends them all at once and ``JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE`` ends them
when the last handle closes, so even an agent that crashes mid-call leaves nothing behind.

The command is put in the job just after it starts (``subprocess`` cannot start it suspended): a
process it starts in that first instant is outside the job, which is why ``_sandbox`` also kills the
psutil tree. Windows 8 and later allow jobs to nest, so this works while the agent itself runs in one.
"""

from __future__ import annotations

import ctypes
import sys
from ctypes import wintypes
from typing import Final

if sys.platform != "win32":
    raise ImportError("Job Objects exist only on Windows")

JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE: Final = 0x00002000
_EXTENDED_LIMIT_INFORMATION: Final = 9  # JOBOBJECTINFOCLASS JobObjectExtendedLimitInformation
_PROCESS_SET_QUOTA: Final = 0x0100
_PROCESS_TERMINATE: Final = 0x0001
KILLED_EXIT_CODE: Final = 1  # what the processes of a terminated job exit with, as TerminateProcess gives


class _BasicLimit(ctypes.Structure):
    _fields_ = [
        ("PerProcessUserTimeLimit", ctypes.c_int64),
        ("PerJobUserTimeLimit", ctypes.c_int64),
        ("LimitFlags", wintypes.DWORD),
        ("MinimumWorkingSetSize", ctypes.c_size_t),
        ("MaximumWorkingSetSize", ctypes.c_size_t),
        ("ActiveProcessLimit", wintypes.DWORD),
        ("Affinity", ctypes.c_size_t),
        ("PriorityClass", wintypes.DWORD),
        ("SchedulingClass", wintypes.DWORD),
    ]


class _IoCounters(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "ReadOperationCount", "WriteOperationCount", "OtherOperationCount",
        "ReadTransferCount", "WriteTransferCount", "OtherTransferCount")]


class _ExtendedLimit(ctypes.Structure):
    _fields_ = [
        ("BasicLimitInformation", _BasicLimit),
        ("IoInfo", _IoCounters),
        ("ProcessMemoryLimit", ctypes.c_size_t),
        ("JobMemoryLimit", ctypes.c_size_t),
        ("PeakProcessMemoryUsed", ctypes.c_size_t),
        ("PeakJobMemoryUsed", ctypes.c_size_t),
    ]


_k32 = ctypes.WinDLL("kernel32", use_last_error=True)
_k32.CreateJobObjectW.argtypes = [ctypes.c_void_p, wintypes.LPCWSTR]
_k32.CreateJobObjectW.restype = wintypes.HANDLE
_k32.SetInformationJobObject.argtypes = [wintypes.HANDLE, ctypes.c_int, ctypes.c_void_p, wintypes.DWORD]
_k32.SetInformationJobObject.restype = wintypes.BOOL
_k32.OpenProcess.argtypes = [wintypes.DWORD, wintypes.BOOL, wintypes.DWORD]
_k32.OpenProcess.restype = wintypes.HANDLE
_k32.AssignProcessToJobObject.argtypes = [wintypes.HANDLE, wintypes.HANDLE]
_k32.AssignProcessToJobObject.restype = wintypes.BOOL
_k32.TerminateJobObject.argtypes = [wintypes.HANDLE, wintypes.UINT]
_k32.TerminateJobObject.restype = wintypes.BOOL
_k32.CloseHandle.argtypes = [wintypes.HANDLE]
_k32.CloseHandle.restype = wintypes.BOOL


def _error(what: str) -> OSError:
    err = ctypes.get_last_error()
    return OSError(0, f"{what}: {ctypes.FormatError(err)}", None, err)


class KillOnClose:
    """A new, unnamed job that kills its processes when terminated or when its handle closes."""

    def __init__(self) -> None:
        handle = _k32.CreateJobObjectW(None, None)
        if not handle:
            raise _error("CreateJobObject")
        info = _ExtendedLimit()
        info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
        if not _k32.SetInformationJobObject(handle, _EXTENDED_LIMIT_INFORMATION, ctypes.byref(info),
                                            ctypes.sizeof(info)):
            exc = _error("SetInformationJobObject")
            _k32.CloseHandle(handle)
            raise exc
        self.handle: int | None = handle

    def add(self, pid: int) -> None:
        """Put the running process ``pid`` (a child we hold, so the pid cannot be reused) in the job."""
        proc = _k32.OpenProcess(_PROCESS_SET_QUOTA | _PROCESS_TERMINATE, False, pid)
        if not proc:
            raise _error("OpenProcess")
        try:
            if not _k32.AssignProcessToJobObject(self.handle, proc):
                raise _error("AssignProcessToJobObject")
        finally:
            _k32.CloseHandle(proc)

    def terminate(self) -> None:
        """End every process in the job now."""
        if self.handle is not None:
            _k32.TerminateJobObject(self.handle, KILLED_EXIT_CODE)

    def close(self) -> None:
        if self.handle is not None:
            _k32.CloseHandle(self.handle)
            self.handle = None
