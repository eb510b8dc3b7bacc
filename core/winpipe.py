"""The Windows named-pipe IPC endpoint, the parts that need no Windows (pure; tested everywhere).

On Windows the agent may serve its IPC API on a named pipe instead of loopback TCP + nonce
(``HERMES_RELAY_IPC=pipe``; TCP stays the default until a Windows CI run has passed once):

- the pipe is named by the user's SID and a digest of the Hermes home, so two users, or two homes
  of one user, never share one: ``\\\\.\\pipe\\hermes-relay.S-1-5-21-….<12 hex>``;
- it is created with a protected DACL that admits only that SID (no inherited entries, no Everyone,
  no network logons: remote clients are rejected by the pipe mode as well), and the first instance
  with ``FILE_FLAG_FIRST_PIPE_INSTANCE`` so the agent fails instead of joining a squatter's pipe;
- a squatter that created the name *before* the agent is not stopped by that flag, so the client
  checks who serves the pipe (``GetNamedPipeServerProcessId``, then that process's owner SID)
  before it sends a single byte (pairing codes travel over this pipe), and opens it with
  ``SECURITY_IDENTIFICATION`` so a server can never impersonate the client beyond identifying it.

The Win32 calls live in ``core/winsec.py`` (SIDs), ``agent/_winpipe.py`` (the trio server on the
IOCP) and ``cli/_winpipe.py`` (the blocking client); this module holds the names, flags and verdicts.
"""

from __future__ import annotations

import os

from .errors import UnsafeRuntimeError, UsageError

TYPE_CHECKING = False  # the CLI imports this module on every call: typing, re and hashlib cost it ~15 ms
if TYPE_CHECKING:
    from typing import Final

PREFIX: Final = "\\\\.\\pipe\\"
_NAME: Final = "hermes-relay"
_SID: Final = r"S-1-[0-9]+(-[0-9]+)+"

# CreateNamedPipeW open mode and pipe mode (winbase.h).
PIPE_ACCESS_DUPLEX: Final = 0x00000003
FILE_FLAG_OVERLAPPED: Final = 0x40000000
FILE_FLAG_FIRST_PIPE_INSTANCE: Final = 0x00080000
PIPE_TYPE_BYTE: Final = 0x00000000
PIPE_READMODE_BYTE: Final = 0x00000000
PIPE_WAIT: Final = 0x00000000
PIPE_REJECT_REMOTE_CLIENTS: Final = 0x00000008
PIPE_UNLIMITED_INSTANCES: Final = 255
BUFFER_SIZE: Final = 64 * 1024  # a pipe buffer; frames larger than this simply take several writes

# CreateFileW for the client: overlapped (for timeouts), and the server may only identify us.
GENERIC_READ: Final = 0x80000000
GENERIC_WRITE: Final = 0x40000000
OPEN_EXISTING: Final = 3
SECURITY_SQOS_PRESENT: Final = 0x00100000
SECURITY_IDENTIFICATION: Final = 0x00010000

# Win32 error codes the endpoint tells apart.
ERROR_FILE_NOT_FOUND: Final = 2
ERROR_ACCESS_DENIED: Final = 5
ERROR_BROKEN_PIPE: Final = 109
ERROR_SEM_TIMEOUT: Final = 121
ERROR_PIPE_BUSY: Final = 231
ERROR_NO_DATA: Final = 232
ERROR_PIPE_NOT_CONNECTED: Final = 233
ERROR_PIPE_CONNECTED: Final = 535
ERROR_OPERATION_ABORTED: Final = 995
ERROR_IO_PENDING: Final = 997

# Errors that mean "the other end went away": a read then sees end of stream.
DISCONNECTED: Final = frozenset({ERROR_BROKEN_PIPE, ERROR_NO_DATA, ERROR_PIPE_NOT_CONNECTED})


def valid_sid(sid: str) -> bool:
    import re

    return bool(re.fullmatch(_SID, sid))


def pipe_name(sid: str, hermes_home: str) -> str:
    """The agent's pipe for this user and this Hermes home."""
    if not valid_sid(sid):
        raise UsageError(f"not a Windows security identifier: {sid!r}")
    import hashlib

    home = os.path.normcase(os.path.abspath(hermes_home))
    digest = hashlib.sha256(home.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{PREFIX}{_NAME}.{sid}.{digest}"


def is_pipe_path(path: str) -> bool:
    return path.startswith(PREFIX)


def pipe_sddl(sid: str) -> str:
    """The pipe's security descriptor: owned by the user, a protected DACL granting only the user.

    ``P`` keeps inherited entries out; ``GA`` (generic all) for the one SID; nobody else (not even
    SYSTEM or Administrators) is listed, so every other caller gets access denied on open.
    """
    if not valid_sid(sid):
        raise UsageError(f"not a Windows security identifier: {sid!r}")
    return f"O:{sid}G:{sid}D:P(A;;GA;;;{sid})"


def open_mode(first: bool) -> int:
    mode = PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED
    return mode | FILE_FLAG_FIRST_PIPE_INSTANCE if first else mode


PIPE_MODE: Final = PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS
CLIENT_ACCESS: Final = GENERIC_READ | GENERIC_WRITE
CLIENT_FLAGS: Final = FILE_FLAG_OVERLAPPED | SECURITY_SQOS_PRESENT | SECURITY_IDENTIFICATION


def check_server(path: str, my_sid: str, server_pid: int | None, server_sid: str | None) -> None:
    """Raise UnsafeRuntimeError unless the pipe is served by a process of this user.

    ``server_sid`` is None when the owner of ``server_pid`` could not be read (another user's
    process, usually): that is refused too, before anything is sent.
    """
    if server_pid is None or server_pid <= 0:
        raise UnsafeRuntimeError(f"cannot tell which process serves {path}; refusing to talk to it",
                                 hint="stop whatever holds that pipe name, then start the agent again",
                                 data={"path": path})
    if server_sid != my_sid:
        owner = server_sid or "another user (its owner cannot be read)"
        raise UnsafeRuntimeError(
            f"the agent pipe {path} is served by process {server_pid} of {owner}, not by you ({my_sid}); "
            "refusing to talk to it",
            hint="another user's program holds the name: end it (as its owner or an administrator), "
                 "then run `hermes-relay agent start`",
            data={"path": path, "pid": server_pid, "sid": server_sid},
        )
