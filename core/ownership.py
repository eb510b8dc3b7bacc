"""Who owns the agent's endpoint: the runtime directory's owner and mode, and the uid of a socket peer.

Another local user who pre-creates the runtime directory (or a lock file in it) could run a fake
agent there and receive a pairing code, or stop the real agent from starting. The agent refuses a
runtime directory, lock file or socket directory that is not ours or that others can write, and the
CLI checks the uid of the process at the other end of the socket before sending anything.

Uses ``_socket`` constants and plain ``os`` calls only: the CLI runs this on every ``status``.

Windows: a stat has no owner and the mode bits say nothing of the ACL, so nothing here is checked
there. What stands instead: the runtime directory and the logs live in ``%LOCALAPPDATA%`` and the
state in ``~/.hermes`` under the user's profile, whose inherited ACL admits only the user, SYSTEM and
administrators (who can read everything anyway); the loopback endpoint is proven by a nonce read from
that directory, and the named pipe's server is checked by its owner SID (``core/winpipe.py``). Not
checked: a ``HERMES_RELAY_RUNTIME_DIR``/``HERMES_HOME`` override pointing outside the profile (its
ACL is the user's choice), and an ACL someone with the user's rights loosened by hand.
"""

from __future__ import annotations

import os
import sys

from .errors import UnsafeRuntimeError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_XUCRED_SIZE = 4 + 4 + 2 + 2 + 16 * 4  # macOS struct xucred: version, uid, ngroups (+pad), groups[16]


def peer_uid(sock: Any) -> int | None:
    """The uid at the other end of a connected Unix socket; None where the OS cannot say.

    Linux: SO_PEERCRED (struct ucred: pid, uid, gid). macOS/BSD: LOCAL_PEERCRED at level SOL_LOCAL
    (0), a struct xucred whose second field is the uid. ``sock`` is any socket object with
    ``getsockopt`` (the stdlib's, ``_socket``'s or trio's).
    """
    import _socket

    try:
        if hasattr(_socket, "SO_PEERCRED"):
            raw = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
            return int.from_bytes(raw[4:8], sys.byteorder, signed=False)  # struct ucred: pid, uid, gid
        if sys.platform == "darwin" or "bsd" in sys.platform:  # pragma: no cover - not Linux
            raw = sock.getsockopt(0, getattr(_socket, "LOCAL_PEERCRED", 0x001), _XUCRED_SIZE)
            return int.from_bytes(raw[4:8], sys.byteorder, signed=False)
    except OSError:
        return None
    return None


def check_peer(sock: Any, path: str) -> None:
    """Raise UnsafeRuntimeError unless the process at the other end of ``sock`` runs as this user."""
    if sys.platform == "win32":  # pragma: no cover - tcp mode proves the agent with the nonce instead
        return
    uid = peer_uid(sock)
    if uid is not None and uid != os.getuid():
        raise UnsafeRuntimeError(
            f"the agent socket {path} is served by another user (uid {uid}, you are uid {os.getuid()}); "
            "refusing to talk to it",
            hint=f"another user may have created {os.path.dirname(path)}: remove it, or set "
                 "HERMES_RELAY_RUNTIME_DIR to a directory only you can write",
            data={"path": path, "uid": uid},
        )


def check_private(path: str, *, directory: bool) -> None:
    """Raise UnsafeRuntimeError if ``path`` exists and is not ours or can be written by others.

    A missing path is fine (the caller creates it privately). A symlink is judged by its target,
    and the target must be of the expected kind.
    """
    if sys.platform == "win32":  # pragma: no cover - under the user's profile ACL (see the module docstring)
        return
    import stat

    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise UnsafeRuntimeError(f"cannot check {path}: {exc.strerror or exc}",
                                 hint="check the path and its permissions", data={"path": path}) from None
    kind = "directory" if directory else "file"
    if directory != stat.S_ISDIR(st.st_mode):
        raise UnsafeRuntimeError(f"{path} is not a {kind}", hint=f"remove it; the agent creates its own {kind}",
                                 data={"path": path})
    if st.st_uid != os.getuid():
        raise UnsafeRuntimeError(
            f"the runtime {kind} {path} belongs to uid {st.st_uid}, not to you (uid {os.getuid()}): refusing to use it",
            hint="another user may have created it: remove it (as its owner or root), or set "
                 "HERMES_RELAY_RUNTIME_DIR to a directory only you can write",
            data={"path": path, "uid": st.st_uid},
        )
    if st.st_mode & 0o022:
        raise UnsafeRuntimeError(
            f"the runtime {kind} {path} can be written by other users (mode {st.st_mode & 0o777:04o}): "
            "refusing to use it",
            hint=f"run `chmod go-w {path}` (0700 for the directory), or set HERMES_RELAY_RUNTIME_DIR elsewhere",
            data={"path": path, "mode": st.st_mode & 0o777},
        )


def pid_alive(pid: int) -> bool:
    """A process with this pid exists (another user's counts too); never signals it."""
    if pid <= 0:
        return False
    if sys.platform == "win32":
        import psutil

        return bool(psutil.pid_exists(pid))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
