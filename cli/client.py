"""The CLI's side of the IPC connection: a blocking socket, the shared sans-IO framing, no trio.

``AgentClient.connect`` opens the socket, checks that the agent at the other end runs as this user,
and sends ``hello`` without waiting for its answer: the first call's request follows it on the wire
and both answers come back in one round trip (the agent answers in order). The API version is
checked when the hello answer arrives (a mismatch warns once on stderr). ``AgentCalls`` gives every
IPC method a typed wrapper (core/apitypes.py), shared with the CLI tests' fake client, and ``watch()``
is an iterator of relay states.

``ensure_agent`` starts the agent when nothing answers: under an exclusive spawn lock it re-checks,
spawns the agent detached in its own session, then polls the socket with growing sleeps
(gpg-agent's autostart), so many CLIs started at once produce exactly one agent.

This module runs on every ``status``: it uses ``_socket`` (``socket`` pulls in enum and
selectors) and imports pathlib, subprocess and the file helpers only where an agent is spawned.
"""

from __future__ import annotations

import _socket
import errno
import os
import sys
import time

from .. import __version__
from ..core import api, framing, ownership, paths, rpc
from ..core.errors import (
    AgentNotRunningError,
    IpcError,
    RemoteProtocolError,
    error_from_wire,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable, Iterator, Mapping
    from typing import Any, TextIO

    from ..core.apitypes import (
        AccessChangingReply,
        ApprovalsDecideParams,
        ApprovalsDecideReply,
        ApprovalsListReply,
        DevicesExtendReply,
        DevicesListReply,
        DevicesRevokeReply,
        DoctorReply,
        DownReply,
        ForgetReply,
        HelloReply,
        PairCheckReply,
        PairProgress,
        PairReply,
        PairStartParams,
        PinAcceptReply,
        RelayState,
        ReloadReply,
        RestoreReply,
        RouteIndicator,
        ShellOpenParams,
        StatusReply,
        StopReply,
        TerminalKillReply,
        TerminalListReply,
    )
    from .shellconn import ShellConnection

    NotifyFn = Callable[[str, dict[str, Any]], None]

DEFAULT_CALL_TIMEOUT = 30.0  # seconds; pairing and probes report progress well within this
TERMINAL_TIMEOUT = 20.0  # the relay answers terminal.list/kill within 15 s (desktop-channel.md §2.7)
AUTOSTART_WAIT = 10.0  # seconds to wait for a freshly spawned agent's socket
_CONNECT_ERRNOS = (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK, errno.EACCES)

_PIPE_PREFIX = "\\\\.\\pipe\\"  # core.winpipe.PREFIX, spelled out: the hot paths never import it


class AgentCalls:
    """Typed wrappers over ``call`` for every IPC method (the contract: core/apitypes.py).

    Each wrapper names its reply type; ``call`` returns ``Any``, so the assignment is what mypy checks
    the caller against (no cast: this module imports no ``typing`` at run time).
    """

    def call(self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = DEFAULT_CALL_TIMEOUT,
             on_notify: NotifyFn | None = None) -> Any:
        raise NotImplementedError

    def status(self, *, reveal_tokens: bool = False, timeout: float = DEFAULT_CALL_TIMEOUT) -> StatusReply:
        reply: StatusReply = self.call(api.STATUS, {"reveal_tokens": reveal_tokens}, timeout=timeout)
        return reply

    def route(self) -> RouteIndicator:
        reply: RouteIndicator = self.call(api.ROUTE, {})
        return reply

    def pair_start(self, params: PairStartParams, *, on_progress: Callable[[PairProgress], None] | None = None,
                   timeout: float | None = DEFAULT_CALL_TIMEOUT) -> PairReply:
        def notify(method: str, p: Any) -> None:
            if method == api.PAIR_PROGRESS and on_progress is not None:
                on_progress(p)

        reply: PairReply = self.call(api.PAIR_START, dict(params), timeout=timeout, on_notify=notify)
        return reply

    def pair_check(self, params: PairStartParams, *, timeout: float | None = DEFAULT_CALL_TIMEOUT) -> PairCheckReply:
        reply: PairCheckReply = self.call(api.PAIR_CHECK, dict(params), timeout=timeout)
        return reply

    def devices_list(self, url: str | None = None) -> DevicesListReply:
        reply: DevicesListReply = self.call(api.DEVICES_LIST, _url(url))
        return reply

    def devices_revoke(self, prefix: str, url: str | None = None) -> DevicesRevokeReply:
        reply: DevicesRevokeReply = self.call(api.DEVICES_REVOKE, {**_url(url), "prefix": prefix})
        return reply

    def devices_extend(self, prefix: str, ttl_seconds: int, url: str | None = None) -> DevicesExtendReply:
        reply: DevicesExtendReply = self.call(api.DEVICES_EXTEND, {**_url(url), "prefix": prefix,
                                                                   "ttl_seconds": ttl_seconds})
        return reply

    def pin_accept(self, url: str, *, apply: bool | None = None, pin: str | None = None) -> PinAcceptReply:
        params: dict[str, Any] = {"url": url}
        if apply is not None:
            params["apply"] = apply
        if pin is not None:
            params["pin"] = pin
        reply: PinAcceptReply = self.call(api.PIN_ACCEPT, params)
        return reply

    def forget(self, url: str, *, timeout: float | None = DEFAULT_CALL_TIMEOUT) -> ForgetReply:
        reply: ForgetReply = self.call(api.FORGET, {"url": url}, timeout=timeout)
        return reply

    def restore(self, url: str, *, timeout: float | None = DEFAULT_CALL_TIMEOUT) -> RestoreReply:
        reply: RestoreReply = self.call(api.RESTORE, {"url": url}, timeout=timeout)
        return reply

    def set_down(self, url: str | None, *, down: bool, timeout: float | None = DEFAULT_CALL_TIMEOUT) -> DownReply:
        """``down`` (``down=True``) or ``up``: one relay, or every relay when ``url`` is None."""
        reply: DownReply = self.call(api.DOWN_SET if down else api.UP_SET, _url(url), timeout=timeout)
        return reply

    def approvals_list(self, *, timeout: float | None = DEFAULT_CALL_TIMEOUT) -> ApprovalsListReply:
        reply: ApprovalsListReply = self.call(api.APPROVALS_LIST, {}, timeout=timeout)
        return reply

    def approvals_decide(self, params: ApprovalsDecideParams) -> ApprovalsDecideReply:
        reply: ApprovalsDecideReply = self.call(api.APPROVALS_DECIDE, dict(params))
        return reply

    def access_changing(self, url: str, *, command: str | None = None,
                        timeout: float | None = DEFAULT_CALL_TIMEOUT) -> AccessChangingReply:
        params = {"url": url, **({"command": command} if command is not None else {})}
        reply: AccessChangingReply = self.call(api.ACCESS_CHANGING, params, timeout=timeout)
        return reply

    def doctor(self, *, deadline: float, url: str | None = None, timeout: float | None = None) -> DoctorReply:
        """Every route of every stored relay (or of ``url``'s pairing) checked within ``deadline`` seconds."""
        params: dict[str, Any] = {"deadline": deadline, **_url(url)}
        reply: DoctorReply = self.call(api.DOCTOR, params, timeout=deadline + 5.0 if timeout is None else timeout)
        return reply

    def watch_notifies(self, on_notify: Callable[[str, Any], None], *, timeout: float | None = None) -> None:
        """Stream ``watch``'s notifies (``state`` RelayState, ``approval`` events) to ``on_notify`` until the
        agent goes or ``timeout`` passes (IpcError)."""
        self.call(api.WATCH, {}, timeout=timeout, on_notify=on_notify)

    def reload(self, *, timeout: float | None = DEFAULT_CALL_TIMEOUT) -> ReloadReply:
        reply: ReloadReply = self.call(api.RELOAD, {}, timeout=timeout)
        return reply

    def stop(self, *, timeout: float | None = DEFAULT_CALL_TIMEOUT) -> StopReply:
        reply: StopReply = self.call(api.AGENT_STOP, {}, timeout=timeout)
        return reply

    def terminal_list(self, remote: str | None = None, *, timeout: float | None = TERMINAL_TIMEOUT) -> TerminalListReply:
        """The relay host's terminal sessions, over the agent's link (`hermes-relay sessions list`)."""
        reply: TerminalListReply = self.call(api.TERMINAL_LIST, {"remote": remote}, timeout=timeout)
        return reply

    def terminal_kill(self, session: str, remote: str | None = None, *,
                      timeout: float | None = TERMINAL_TIMEOUT) -> TerminalKillReply:
        reply: TerminalKillReply = self.call(api.TERMINAL_KILL, {"remote": remote, "session": session},
                                             timeout=timeout)
        return reply


def _url(url: str | None) -> dict[str, Any]:
    return {"url": url} if url else {}


class AgentClient(AgentCalls):
    """One IPC connection to the agent."""

    def __init__(self, sock: Any, path: str, *, stderr: TextIO | None = None, quiet: bool = False):
        self._sock = sock
        self.path = path
        self._decoder = framing.FrameDecoder()
        self._next_id = 1
        self._hello: HelloReply | None = None
        self._hello_id: int | None = None
        self._stderr = stderr
        self._quiet = quiet
        self._hello_timeout = DEFAULT_CALL_TIMEOUT  # connect() sets its own: a hung agent fails as fast as a dead one

    @classmethod
    def connect(cls, path: str, *, timeout: float = 2.0, stderr: TextIO | None = None, quiet: bool = False) -> AgentClient:
        """Connect and send hello. Raises AgentNotRunningError when nothing listens at ``path``."""
        sock = _open_socket(path, timeout)
        client = cls(sock, path, stderr=stderr, quiet=quiet)
        client._hello_timeout = timeout
        try:
            if not path.endswith(".endpoint") and not path.startswith(_PIPE_PREFIX):  # those prove themselves
                ownership.check_peer(sock, path)
            client._hello_id = client._send_request(
                api.HELLO, {"client_version": __version__, "api_version": rpc.API_VERSION})
        except Exception:
            client.close()
            raise
        return client

    @property
    def hello(self) -> HelloReply:
        """The agent's hello answer (read from the socket on first use if no call has read it yet)."""
        if self._hello is None:
            self._finish_hello(time.monotonic() + self._hello_timeout)
        assert self._hello is not None
        return self._hello

    def _finish_hello(self, deadline: float | None) -> None:
        msgid, self._hello_id = self._hello_id, None
        if msgid is None:
            if self._hello is None:
                unknown: Any = {}
                self._hello = unknown
            return
        self._hello = self._result(msgid, deadline, api.HELLO, None)
        theirs = self._hello.get("api_version") if isinstance(self._hello, dict) else None
        if theirs != rpc.API_VERSION and not self._quiet and self._stderr is not None:
            self._stderr.write(
                f"hermes-relay: warning: agent speaks IPC API {theirs}, this CLI speaks {rpc.API_VERSION} "
                f"(agent {self._hello.get('agent_version')}, CLI {__version__}); "
                "run `hermes-relay agent restart`\n"
            )

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        timeout: float | None = DEFAULT_CALL_TIMEOUT,
        on_notify: NotifyFn | None = None,
    ) -> Any:
        """Send one request and return its result, passing streamed notifies to ``on_notify``."""
        msgid = self._send_request(method, params or {})
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._hello_id is not None:
            self._finish_hello(deadline)
        return self._result(msgid, deadline, method, on_notify)

    def watch(self) -> Iterator[RelayState]:
        """Every relay's state now, then each change, until the caller stops iterating (or the agent goes)."""
        msgid = self._send_request(api.WATCH, {})
        if self._hello_id is not None:
            self._finish_hello(time.monotonic() + self._hello_timeout)
        while True:
            msg = self._receive(None, api.WATCH)
            if isinstance(msg, rpc.Notify):
                if msg.method == api.STATE:
                    state: Any = msg.params  # a RelayState (core/apitypes.NOTIFIES)
                    yield state
                continue
            if isinstance(msg, rpc.Response) and msg.msgid == msgid:
                if msg.error is not None:
                    raise error_from_wire(msg.error)
                return
            raise RemoteProtocolError(f"agent sent an unexpected message: {msg!r}")

    def shell_open(self, params: ShellOpenParams) -> ShellConnection:
        """Start ``shell.open`` on this connection and hand it over to the shell's streaming loop.

        The hello answer is read first, so everything after it on the socket belongs to the shell.
        The connection is the shell's from now on: this client must not be used again."""
        from .shellconn import ShellConnection

        _ = self.hello
        msgid = self._send_request(api.SHELL_OPEN, dict(params))
        return ShellConnection(self._sock, msgid, self._decoder)

    def _send_request(self, method: str, params: dict[str, Any]) -> int:
        msgid = self._next_id
        self._next_id += 1
        self._send(rpc.Request(msgid, method, params).to_wire())
        return msgid

    def _result(self, msgid: int, deadline: float | None, method: str, on_notify: NotifyFn | None) -> Any:
        while True:
            msg = self._receive(deadline, method)
            if isinstance(msg, rpc.Notify):
                if on_notify is not None:
                    on_notify(msg.method, msg.params)
                continue
            if isinstance(msg, rpc.Response) and msg.msgid == msgid:
                if msg.error is not None:
                    raise error_from_wire(msg.error)
                return msg.result
            raise RemoteProtocolError(f"agent sent an unexpected message: {msg!r}")

    def _send(self, obj: Any) -> None:
        try:
            self._sock.sendall(framing.encode_frame(obj))
        except OSError as exc:
            raise IpcError(f"lost the connection to the agent: {exc.strerror or exc}") from exc

    def _receive(self, deadline: float | None, method: str) -> rpc.Message:
        while True:
            for obj in self._decoder:
                return rpc.parse_message(obj)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise IpcError(f"the agent did not answer {method} in time", hint="see `hermes-relay agent logs`")
                self._sock.settimeout(left)
            else:
                self._sock.settimeout(None)
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                raise IpcError(f"the agent did not answer {method} in time", hint="see `hermes-relay agent logs`") from None
            except OSError as exc:
                raise IpcError(f"lost the connection to the agent: {exc.strerror or exc}") from exc
            if not data:
                raise IpcError("the agent closed the connection", hint="see `hermes-relay agent logs`")
            self._decoder.feed(data)


def _open_socket(path: str, timeout: float) -> Any:
    """Connect to the agent's endpoint: a Unix socket, or (tcp mode) loopback port + nonce from a file."""
    if path.startswith(_PIPE_PREFIX):
        from . import _winpipe

        return _winpipe.connect(path, timeout)
    if path.endswith(".endpoint"):
        import socket

        from ..core import endpoint

        port, nonce = endpoint.read(path)
        try:
            tcp = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            tcp.sendall(nonce)
        except OSError as exc:
            raise AgentNotRunningError(path, exc.strerror or str(exc)) from None
        return tcp
    if sys.platform == "win32":  # pragma: no cover - the agent serves the tcp endpoint there
        raise AgentNotRunningError(path, "Unix sockets are not available on Windows")
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        if exc.errno in _CONNECT_ERRNOS or isinstance(exc, (FileNotFoundError, ConnectionRefusedError)):
            raise AgentNotRunningError(path) from None
        raise AgentNotRunningError(path, exc.strerror or str(exc)) from None
    return sock


def agent_command() -> list[str]:
    """How the agent is started: ``-I`` keeps the current directory, PYTHONPATH and the user site off
    ``sys.path``, so a folder named ``hermes_relay`` where the user stands cannot shadow the install."""
    return [sys.executable, "-I", "-m", "hermes_relay.agent", "run"]


# Path settings the agent reads; made absolute before it starts in ``/``.
_PATH_VARS = ("HOME", "HERMES_HOME", "HERMES_RELAY_RUNTIME_DIR", "HERMES_RELAY_SOCKET",
              "HERMES_RELAY_SESSIONS_FILE", "HERMES_RELAY_LOG_DIR", "XDG_RUNTIME_DIR")


def daemon_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with every path setting absolute, as seen from the caller's directory."""
    out = dict(env)
    for key in _PATH_VARS:
        if out.get(key) and not os.path.isabs(out[key]):
            out[key] = os.path.abspath(out[key])
    return out


def spawn_agent(env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start the agent detached from this terminal, in ``/``; its own log file receives its output."""
    import subprocess

    from ..core import fileio

    log_dir = paths.log_dir(env)
    fileio.ensure_private_dir(log_dir)
    fd = os.open(log_dir / "agent-start.err", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    out = os.fdopen(fd, "ab")
    def popen(**kwargs: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            agent_command() + ["--detached"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=out,
            env=daemon_env(env),
            cwd=os.path.abspath(os.sep),
            close_fds=True,
            **kwargs,
        )

    try:
        if sys.platform == "win32":  # pragma: no cover - no console, its own process group, and out of the
            # terminal's Job Object where it allows that (an ssh session's job ends its processes at logout)
            flags = subprocess.DETACHED_PROCESS | subprocess.CREATE_NEW_PROCESS_GROUP
            try:
                return popen(creationflags=flags | subprocess.CREATE_BREAKAWAY_FROM_JOB)
            except PermissionError:  # the job forbids breaking away: the agent stays in it
                return popen(creationflags=flags)
        return popen(start_new_session=True)
    finally:
        out.close()


def ensure_agent(
    env: Mapping[str, str],
    *,
    autostart: bool = True,
    stderr: TextIO | None = None,
    quiet: bool = False,
    wait: float = AUTOSTART_WAIT,
) -> AgentClient:
    """Connect to the agent, starting it first if needed and allowed."""
    path = paths.socket_path(env)
    try:
        return AgentClient.connect(path, stderr=stderr, quiet=quiet)
    except AgentNotRunningError as exc:
        if not autostart:
            raise _elsewhere(env, path) or exc from None
    from ..core import fileio

    ownership.check_private(paths.runtime_dir_str(env), directory=True)  # before creating anything in it
    lock_path = paths.spawn_lock_file(env)
    ownership.check_private(str(lock_path), directory=False)
    with fileio.FileLock(lock_path, timeout=wait + 5, suffix=""):
        try:
            return AgentClient.connect(path, stderr=stderr, quiet=quiet)
        except AgentNotRunningError:
            pass
        proc = spawn_agent(env)
        deadline = time.monotonic() + wait
        delay = 0.01
        while True:
            try:
                client = AgentClient.connect(path, stderr=stderr, quiet=quiet)
            except AgentNotRunningError:
                pass
            else:
                _reap_later(proc)
                return client
            code = proc.poll()
            if code is not None:
                other = _elsewhere(env, path)
                if other is not None:
                    raise other
                detail = _tail(str(paths.log_dir(env) / "agent-start.err"))
                raise AgentNotRunningError(path, f"the agent exited with status {code} while starting{detail}",
                                           hint="see `hermes-relay agent logs`, "
                                                "or run `hermes-relay agent run` to watch it start")
            if time.monotonic() >= deadline:
                raise AgentNotRunningError(path, f"started the agent (pid {proc.pid}) but it did not answer within {wait:g}s",
                                           hint="see `hermes-relay agent logs`")
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def _elsewhere(env: Mapping[str, str], path: str) -> AgentNotRunningError | None:
    """An agent runs for this HOME (it holds ~/.hermes/agent-<host>.lock) but on another socket: say where."""
    from ..core import instance

    owner = instance.running_owner(paths.home_lock_file(env))
    if not owner or owner.get("socket") == path:
        return None
    return AgentNotRunningError(
        path, f"an agent for this home runs with another runtime directory ({instance.describe(owner)})",
        hint=instance.reach_hint(owner))


def _reap_later(proc: subprocess.Popen[bytes]) -> None:
    """Collect the agent's exit status if it ends while this process lives (no zombie, no warning).

    A short-lived CLI exits long before the agent, which the init process then adopts.
    """
    import threading

    threading.Thread(target=proc.wait, name="reap-agent", daemon=True).start()


def _tail(path: str, lines: int = 3) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read().strip().splitlines()[-lines:]
    except OSError:
        return ""
    return (": " + " | ".join(text)) if text else ""
