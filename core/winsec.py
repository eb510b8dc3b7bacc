"""Windows security identifiers through ctypes: who this process runs as, and who runs another one.

Used by the named-pipe endpoint (``core/winpipe.py``): the pipe is named by the user's SID, and each
side checks the other end's owner. Off Windows every function answers None.
"""

from __future__ import annotations

import sys
from typing import Final

TOKEN_QUERY: Final = 0x0008
TOKEN_USER: Final = 1  # TOKEN_INFORMATION_CLASS.TokenUser
PROCESS_QUERY_LIMITED_INFORMATION: Final = 0x1000


if sys.platform == "win32":
    import ctypes
    from ctypes import wintypes

    class _SidAndAttributes(ctypes.Structure):
        _fields_ = [("Sid", ctypes.c_void_p), ("Attributes", wintypes.DWORD)]

    def _token_sid(process: int, *, close: bool) -> str | None:
        kernel32, advapi32 = ctypes.windll.kernel32, ctypes.windll.advapi32
        token = wintypes.HANDLE()
        try:
            if not advapi32.OpenProcessToken(wintypes.HANDLE(process), TOKEN_QUERY, ctypes.byref(token)):
                return None
            try:
                size = wintypes.DWORD(0)
                advapi32.GetTokenInformation(token, TOKEN_USER, None, 0, ctypes.byref(size))
                if not size.value:
                    return None
                buf = ctypes.create_string_buffer(size.value)
                if not advapi32.GetTokenInformation(token, TOKEN_USER, buf, size, ctypes.byref(size)):
                    return None
                user = _SidAndAttributes.from_buffer(buf)
                text = wintypes.LPWSTR()
                if not advapi32.ConvertSidToStringSidW(ctypes.c_void_p(user.Sid), ctypes.byref(text)):
                    return None
                try:
                    return str(text.value) if text.value else None
                finally:
                    kernel32.LocalFree(text)
            finally:
                kernel32.CloseHandle(token)
        finally:
            if close:
                kernel32.CloseHandle(wintypes.HANDLE(process))
else:
    def _token_sid(process: int, *, close: bool) -> str | None:
        return None


def current_user_sid() -> str | None:
    """This process's user SID (``S-1-5-21-…``)."""
    if sys.platform != "win32":
        return None
    import ctypes

    return _token_sid(ctypes.windll.kernel32.GetCurrentProcess(), close=False)


def process_user_sid(pid: int) -> str | None:
    """The user SID of process ``pid``; None when it cannot be read (gone, or another user's)."""
    if sys.platform != "win32":
        return None
    import ctypes

    handle = ctypes.windll.kernel32.OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
    if not handle:
        return None
    return _token_sid(handle, close=True)
