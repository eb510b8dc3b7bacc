"""The CLI's side of the Windows named-pipe endpoint: blocking, trio-free, with timeouts.

``connect(name, timeout)`` opens the agent's pipe (waiting while every instance is busy), checks who
serves it (``GetNamedPipeServerProcessId`` and that process's owner SID must be this user) before a
byte is sent, and returns an object with the socket methods ``cli/client.py`` uses (``sendall``,
``recv``, ``settimeout``, ``close``). I/O is overlapped so a read can time out: the wait is
``WaitForSingleObject`` on the operation's event, and a timed-out operation is cancelled and drained.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from ..core import winpipe, winsec
from ..core.errors import AgentNotRunningError


def connect(name: str, timeout: float) -> Any:
    if sys.platform != "win32":
        raise AgentNotRunningError(name, "named pipes exist only on Windows")
    pipe = _PipeClient(_open(name, timeout), name)
    try:
        server = pipe.server_pid()
        winpipe.check_server(name, winsec.current_user_sid() or "", server,
                             winsec.process_user_sid(server) if server else None)
    except BaseException:
        pipe.close()
        raise
    pipe.settimeout(timeout)
    return pipe


if sys.platform == "win32":
    import ctypes
    from ctypes import wintypes

    _kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    _INVALID = wintypes.HANDLE(-1).value
    _WAIT_OBJECT_0 = 0
    _WAIT_TIMEOUT = 258
    _INFINITE = 0xFFFFFFFF

    class _Overlapped(ctypes.Structure):
        _fields_ = [("Internal", ctypes.c_void_p), ("InternalHigh", ctypes.c_void_p), ("Offset", wintypes.DWORD),
                    ("OffsetHigh", wintypes.DWORD), ("hEvent", wintypes.HANDLE)]

    def _open(name: str, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while True:
            handle = _kernel32.CreateFileW(name, winpipe.CLIENT_ACCESS, 0, None, winpipe.OPEN_EXISTING,
                                           winpipe.CLIENT_FLAGS, None)
            if handle is not None and handle != _INVALID:
                return int(handle)
            error = ctypes.get_last_error()
            left = deadline - time.monotonic()
            if error == winpipe.ERROR_PIPE_BUSY and left > 0:
                _kernel32.WaitNamedPipeW(name, max(1, int(left * 1000)))
                continue
            if error == winpipe.ERROR_FILE_NOT_FOUND:
                raise AgentNotRunningError(name, "no agent serves this pipe")
            raise AgentNotRunningError(name, ctypes.FormatError(error).strip() or f"error {error}")

    class _PipeClient:
        def __init__(self, handle: int, name: str):
            self._handle = wintypes.HANDLE(handle)
            self._name = name
            self._timeout: float | None = None
            self._event = _kernel32.CreateEventW(None, True, False, None)
            if not self._event:
                raise ctypes.WinError(ctypes.get_last_error())

        def server_pid(self) -> int | None:
            pid = wintypes.ULONG(0)
            if not _kernel32.GetNamedPipeServerProcessId(self._handle, ctypes.byref(pid)):
                return None
            return int(pid.value)

        def settimeout(self, timeout: float | None) -> None:
            self._timeout = timeout

        def _io(self, start: Any, buffer: Any, size: int) -> int:
            overlapped = _Overlapped()
            overlapped.hEvent = self._event
            _kernel32.ResetEvent(self._event)
            done = wintypes.DWORD(0)
            if not start(self._handle, buffer, size, None, ctypes.byref(overlapped)):
                error = ctypes.get_last_error()
                if error in winpipe.DISCONNECTED:
                    return 0
                if error != winpipe.ERROR_IO_PENDING:
                    raise ctypes.WinError(error)
                wait = _INFINITE if self._timeout is None else max(0, int(self._timeout * 1000))
                if _kernel32.WaitForSingleObject(self._event, wait) == _WAIT_TIMEOUT:
                    _kernel32.CancelIoEx(self._handle, ctypes.byref(overlapped))
                    _kernel32.GetOverlappedResult(self._handle, ctypes.byref(overlapped), ctypes.byref(done), True)
                    raise TimeoutError(f"no answer on {self._name} in time")
            if not _kernel32.GetOverlappedResult(self._handle, ctypes.byref(overlapped), ctypes.byref(done), True):
                error = ctypes.get_last_error()
                if error in winpipe.DISCONNECTED:
                    return 0
                raise ctypes.WinError(error)
            return int(done.value)

        def recv(self, size: int) -> bytes:
            buffer = ctypes.create_string_buffer(size)
            n = self._io(_kernel32.ReadFile, buffer, size)
            return buffer.raw[:n]

        def sendall(self, data: bytes) -> None:
            view = memoryview(data)
            while view:
                chunk = bytes(view[: winpipe.BUFFER_SIZE])
                n = self._io(_kernel32.WriteFile, chunk, len(chunk))
                if n <= 0:
                    raise BrokenPipeError(f"the agent closed {self._name}")
                view = view[n:]

        def close(self) -> None:
            if self._handle:
                _kernel32.CloseHandle(self._handle)
                self._handle = wintypes.HANDLE(0)
            if self._event:
                _kernel32.CloseHandle(self._event)
                self._event = None
else:
    def _open(name: str, timeout: float) -> int:  # pragma: no cover - Windows only
        raise AgentNotRunningError(name, "named pipes exist only on Windows")

    class _PipeClient:  # pragma: no cover - Windows only
        def __init__(self, handle: int, name: str):
            raise AgentNotRunningError(name, "named pipes exist only on Windows")

        def server_pid(self) -> int | None:
            return None

        def settimeout(self, timeout: float | None) -> None:
            pass

        def close(self) -> None:
            pass
