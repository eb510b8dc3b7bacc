"""The agent's named-pipe listener on Windows, served from trio on the IOCP.

trio has no public named-pipe API, so this is a ``trio.abc.Listener`` over ``CreateNamedPipeW``
(ctypes) and trio's low-level IOCP calls: each instance is registered with the completion port,
``ConnectNamedPipe`` is awaited with ``wait_overlapped``, and the connected instance becomes a
``PipeStream`` whose reads and writes are ``readinto_overlapped`` / ``write_overlapped``. A fresh
instance is created before a connected one is handed out, so a client never finds the name gone.

Names, flags and the security descriptor come from ``core/winpipe.py``. ``PipeStream`` takes its I/O
as a ``PipeOps`` so the stream itself (and the IPC framing over it) is tested on every platform.
"""

from __future__ import annotations

import sys
from typing import Protocol

import trio

from ..core import winpipe
from ..core.errors import AgentAlreadyRunningError, IpcError

RECEIVE_SIZE = 64 * 1024


class PipeOps(Protocol):
    """Overlapped I/O on one pipe handle."""

    async def readinto(self, handle: int, buffer: bytearray) -> int: ...

    async def write(self, handle: int, data: bytes) -> int: ...

    def close(self, handle: int) -> None: ...


class PipeStream(trio.abc.Stream):
    """One connected pipe instance as a trio stream (end of stream when the client goes)."""

    def __init__(self, handle: int, ops: PipeOps):
        self._handle = handle
        self._ops = ops
        self._closed = False
        self._sending = False
        self._receiving = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this pipe")
        self._sending = True
        try:
            if self._closed:
                raise trio.ClosedResourceError("the pipe is closed")
            view = memoryview(bytes(data))
            while view:
                try:
                    sent = await self._ops.write(self._handle, bytes(view))
                except OSError as exc:
                    if self._closed:
                        raise trio.ClosedResourceError("the pipe is closed") from None
                    raise trio.BrokenResourceError(f"the pipe broke: {exc}") from exc
                view = view[sent:]
            await trio.lowlevel.checkpoint()
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the pipe is closed")
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this pipe")
        self._receiving = True
        try:
            if self._closed:
                raise trio.ClosedResourceError("the pipe is closed")
            size = RECEIVE_SIZE if max_bytes is None else max_bytes
            if size < 1:
                raise ValueError("max_bytes must be >= 1")
            buffer = bytearray(size)
            try:
                n = await self._ops.readinto(self._handle, buffer)
            except OSError as exc:
                if self._closed:
                    raise trio.ClosedResourceError("the pipe is closed") from None
                if getattr(exc, "winerror", None) in winpipe.DISCONNECTED:
                    return b""
                raise trio.BrokenResourceError(f"the pipe broke: {exc}") from exc
            return bytes(buffer[:n])
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._ops.close(self._handle)
        await trio.lowlevel.checkpoint()


class PipeListener(trio.abc.Listener[trio.abc.Stream]):
    """Accepts clients on the agent's pipe; the first instance refuses a name someone already holds."""

    def __init__(self, name: str, sddl: str):
        self.name = name
        self._sddl = sddl
        self._ops = _IocpOps()
        self._next: int | None = self._create(first=True)
        self._closed = False

    def _create(self, *, first: bool) -> int:
        try:
            return _create_instance(self.name, self._sddl, first=first)
        except OSError as exc:
            if first and getattr(exc, "winerror", None) == winpipe.ERROR_ACCESS_DENIED:
                raise AgentAlreadyRunningError(
                    f"the agent pipe {self.name} is already held by another process",
                    hint="`hermes-relay agent status`; if no agent runs, end the process holding the name") from None
            raise IpcError(f"cannot create the agent pipe {self.name}: {exc}") from exc

    async def accept(self) -> trio.abc.Stream:
        if self._closed or self._next is None:
            raise trio.ClosedResourceError("the listener is closed")
        handle = self._next
        await _connect(handle)
        self._next = self._create(first=False)  # the name stays served while this client talks
        return PipeStream(handle, self._ops)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            if self._next is not None:
                self._ops.close(self._next)
                self._next = None
        await trio.lowlevel.checkpoint()


if sys.platform == "win32":
    import ctypes
    from ctypes import wintypes

    _kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    _advapi32 = ctypes.WinDLL("advapi32", use_last_error=True)
    _INVALID = wintypes.HANDLE(-1).value

    class _SecurityAttributes(ctypes.Structure):
        _fields_ = [("nLength", wintypes.DWORD), ("lpSecurityDescriptor", ctypes.c_void_p),
                    ("bInheritHandle", wintypes.BOOL)]

    class _Overlapped(ctypes.Structure):
        _fields_ = [("Internal", ctypes.c_void_p), ("InternalHigh", ctypes.c_void_p), ("Offset", wintypes.DWORD),
                    ("OffsetHigh", wintypes.DWORD), ("hEvent", wintypes.HANDLE)]

    def _create_instance(name: str, sddl: str, *, first: bool) -> int:
        descriptor = ctypes.c_void_p()
        if not _advapi32.ConvertStringSecurityDescriptorToSecurityDescriptorW(
                sddl, 1, ctypes.byref(descriptor), None):
            raise ctypes.WinError(ctypes.get_last_error())
        try:
            attrs = _SecurityAttributes(ctypes.sizeof(_SecurityAttributes), descriptor, False)
            handle = _kernel32.CreateNamedPipeW(
                name, winpipe.open_mode(first), winpipe.PIPE_MODE, winpipe.PIPE_UNLIMITED_INSTANCES,
                winpipe.BUFFER_SIZE, winpipe.BUFFER_SIZE, 0, ctypes.byref(attrs))
            if handle is None or handle == _INVALID:
                raise ctypes.WinError(ctypes.get_last_error())
        finally:
            _kernel32.LocalFree(descriptor)
        trio.lowlevel.register_with_iocp(int(handle))
        return int(handle)

    async def _connect(handle: int) -> None:
        overlapped = _Overlapped()
        if _kernel32.ConnectNamedPipe(wintypes.HANDLE(handle), ctypes.byref(overlapped)):
            return
        error = ctypes.get_last_error()
        if error == winpipe.ERROR_PIPE_CONNECTED:
            return  # the client came between CreateNamedPipeW and ConnectNamedPipe
        if error != winpipe.ERROR_IO_PENDING:
            raise ctypes.WinError(error)
        await trio.lowlevel.wait_overlapped(handle, ctypes.addressof(overlapped))

    class _IocpOps:
        async def readinto(self, handle: int, buffer: bytearray) -> int:
            return int(await trio.lowlevel.readinto_overlapped(handle, buffer))

        async def write(self, handle: int, data: bytes) -> int:
            return int(await trio.lowlevel.write_overlapped(handle, data))

        def close(self, handle: int) -> None:
            _kernel32.CancelIoEx(wintypes.HANDLE(handle), None)
            _kernel32.CloseHandle(wintypes.HANDLE(handle))
else:
    def _create_instance(name: str, sddl: str, *, first: bool) -> int:
        raise IpcError("named pipes exist only on Windows", hint="unset HERMES_RELAY_IPC")

    async def _connect(handle: int) -> None:  # pragma: no cover - Windows only
        raise OSError("named pipes exist only on Windows")

    class _IocpOps:  # pragma: no cover - Windows only
        async def readinto(self, handle: int, buffer: bytearray) -> int:
            raise OSError("named pipes exist only on Windows")

        async def write(self, handle: int, data: bytes) -> int:
            raise OSError("named pipes exist only on Windows")

        def close(self, handle: int) -> None:
            pass
