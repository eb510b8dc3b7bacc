"""The HermesError tree shared by the agent, the CLI and the relay.

Every user-facing failure is one of these classes. Each carries an ``exit_code`` for the CLI, an
optional ``hint`` (the next step for the user) and a stable snake_case ``code`` that travels over the
IPC connection, so that ``except NotPairedError`` works on both sides of the socket (rule B5.7).
Library exceptions (trio, trio-websocket, OSError, ssl) are translated into these at the boundary
modules only; nothing above them sees a library type.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs the CLI ~3 ms per start; annotations are strings here
if TYPE_CHECKING:
    from typing import Any, ClassVar, TextIO

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_AGENT_NOT_RUNNING = 3


class HermesError(Exception):
    """Base of every error this project raises on purpose. Never raised bare."""

    code: ClassVar[str] = "error"
    exit_code: ClassVar[int] = EXIT_FAILURE
    default_hint: ClassVar[str | None] = None

    def __init__(self, message: str, *, hint: str | None = None, data: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint
        self.data: dict[str, Any] = dict(data or {})

    def __str__(self) -> str:
        return self.message

    def report(self, prog: str, stream: TextIO) -> int:
        """Print ``prog: message`` and the hint to ``stream``; the exit code (relay-host commands)."""
        print(f"{prog}: {self.message}", file=stream)
        if self.hint:
            print(f"  {self.hint}", file=stream)
        return self.exit_code

    def to_wire(self) -> dict[str, Any]:
        """The ``{"code", "message", "data"}`` error object sent over IPC."""
        data = dict(self.data)
        if self.hint:
            data["hint"] = self.hint
        return {"code": self.code, "message": self.message, "data": data}


class ConfigError(HermesError):
    code = "config_error"
    exit_code = EXIT_USAGE


class UsageError(ConfigError):
    """A bad argument on the command line or in an RPC request."""

    code = "usage_error"


class StateError(HermesError):
    code = "state_error"


class StateCorruptError(StateError):
    """A state file exists but cannot be parsed. It is kept as it is, never treated as empty."""

    code = "state_corrupt"

    def __init__(self, path: str, detail: str, **kw: Any):
        super().__init__(
            f"{path} cannot be parsed ({detail}); it was left untouched",
            hint=kw.pop("hint", "run `hermes-relay doctor --fix` to move it aside and start a fresh one"),
            data={"path": path, **kw.pop("data", {})},
        )
        self.path = path


class StateVersionError(StateError):
    """A state file was written by a newer program. We refuse to touch it."""

    code = "state_version"

    def __init__(self, path: str, found: Any, supported: int):
        super().__init__(
            f"{path} has format version {found!r}; this hermes-relay understands version {supported}",
            hint="upgrade hermes-relay; the file was not modified",
            data={"path": path, "found": found, "supported": supported},
        )
        self.path = path


class StateLockError(StateError):
    code = "state_locked"


class ProtocolError(HermesError):
    """Abstract: a protocol rule was broken by one side."""

    code = "protocol_error"

    def __init__(self, message: str, **kw: Any):
        if type(self) is ProtocolError:
            raise TypeError("ProtocolError is abstract; raise RemoteProtocolError or a subclass")
        super().__init__(message, **kw)


class RemoteProtocolError(ProtocolError):
    """The peer sent something we cannot accept."""

    code = "remote_protocol_error"

    def __init__(self, message: str, *, close_code_hint: int = 1002, **kw: Any):
        super().__init__(message, **kw)
        self.close_code_hint = close_code_hint


class FrameTooLargeError(RemoteProtocolError):
    code = "frame_too_large"

    def __init__(self, size: int, limit: int):
        super().__init__(
            f"frame of {size} bytes exceeds the {limit}-byte limit",
            close_code_hint=1009,
            data={"size": size, "limit": limit},
        )
        self.size = size
        self.limit = limit


class PayloadError(HermesError):
    """A pairing payload, invite or code that cannot be used."""

    code = "invalid_payload"
    exit_code = EXIT_USAGE


class TransportError(HermesError):
    code = "transport_error"


class ConnectRefusedError(TransportError):
    code = "connect_refused"


class HostNotFoundError(TransportError):
    code = "host_not_found"


class ConnectTimeoutError(TransportError):
    code = "connect_timeout"


class TlsError(TransportError):
    code = "tls_error"


class NoRouteError(TransportError):
    """Every route failed. ``__cause__`` is the group of per-route errors; ``attempts`` summarises them."""

    code = "no_route"

    def __init__(self, message: str, attempts: list[dict[str, Any]] | None = None, **kw: Any):
        super().__init__(message, data={"attempts": attempts or []}, **kw)
        self.attempts = attempts or []


class HandshakeRejectedError(TransportError):
    """The HTTP upgrade was answered with a non-101 status."""

    code = "handshake_rejected"

    def __init__(self, status: int, body: str = "", **kw: Any):
        msg = kw.pop("message", None) or f"relay refused the WebSocket upgrade with HTTP {status}"
        if body and "message" not in kw:
            msg += f": {body}"
        super().__init__(msg, data={"status": status, **kw.pop("data", {})}, **kw)
        self.status = status


class RateLimitedError(HandshakeRejectedError):
    code = "rate_limited"

    def __init__(self, body: str = "", retry_after: float | None = None):
        super().__init__(
            429,
            message="relay is rate limiting this address after repeated failed attempts (HTTP 429)"
            + (f": {body}" if body else ""),
            hint=f"try again in {_wait_words(retry_after)} (or mint a new code with `hermes-pair`, which lifts the block)",
            data={"retry_after": retry_after},
        )
        self.retry_after = retry_after


def _wait_words(seconds: float | None) -> str:
    """``45 s``, ``2 min``, ``1 h``, rounded up (waiting a little longer is safe); ``a few minutes`` unknown."""
    if seconds is None or seconds != seconds or seconds <= 0:
        return "a few minutes"
    import math

    if seconds < 60:
        return f"{math.ceil(seconds)} s"
    if seconds < 3600:
        return f"{math.ceil(seconds / 60)} min"
    return f"{math.ceil(seconds / 3600)} h"


class ConnectionLostError(TransportError):
    code = "connection_lost"


class PinMismatchError(TransportError):
    """The wss:// certificate does not match the pin recorded on first use."""

    code = "pin_mismatch"

    def __init__(self, url: str, expected: str, got: str):
        super().__init__(
            f"certificate pin mismatch for {url}: expected {expected}, got {got}",
            hint=(
                "if you rotated the relay's certificate on purpose, accept the new one with "
                f"`hermes-relay pin accept {url}` (or re-pair); otherwise do not continue: "
                "someone may be intercepting the connection"
            ),
            data={"url": url, "expected": expected, "got": got},
        )
        self.url = url
        self.expected = expected
        self.got = got


class HttpStatusError(TransportError):
    """The relay answered an HTTP API call with an unexpected status."""

    code = "http_status"

    def __init__(self, method: str, path: str, status: int, body: str):
        super().__init__(f"{method} {path} returned {status}: {body}".rstrip(": "), data={"status": status})
        self.status = status


class AuthError(HermesError):
    code = "auth_error"


class NotPairedError(AuthError):
    code = "not_paired"
    default_hint = ("run `hermes-relay pair --remote ws://HOST:8767` (it asks for the code), "
                    "or `hermes-relay pair --pair-qr INVITE`")


class AuthRejectedError(AuthError):
    """The relay answered system/auth.fail to our credentials."""

    code = "auth_rejected"


class PairingRejectedError(AuthRejectedError):
    code = "pairing_rejected"
    default_hint = (
        "the code is wrong, already used, or older than 10 minutes: run `hermes-pair` on the relay host "
        "for a fresh one"
    )


class SessionRevokedError(AuthRejectedError):
    code = "session_revoked"


class NotFoundError(HermesError):
    code = "not_found"


class ForbiddenError(HermesError):
    """The relay understood the request and refused it (HTTP 403): a policy, not a fault."""

    code = "forbidden"


class TerminalRefusedError(HermesError):
    """The relay refused a terminal message (a limit, an unknown session) or never answered it (it serves
    no terminal). A missing terminal grant is a ForbiddenError."""

    code = "terminal_refused"


class AmbiguousError(HermesError):
    code = "ambiguous"


class IpcError(HermesError):
    code = "ipc_error"


class AgentNotRunningError(IpcError):
    code = "agent_not_running"
    exit_code = EXIT_AGENT_NOT_RUNNING

    def __init__(self, path: str, detail: str = "", **kw: Any):
        msg = f"the hermes-relay agent is not running (no answer on {path})"
        if detail:
            msg += f": {detail}"
        super().__init__(msg, hint=kw.pop("hint", "start it with `hermes-relay agent start`"), data={"path": path})
        self.path = path


class AgentAlreadyRunningError(IpcError):
    code = "agent_already_running"


class AgentGoneError(IpcError):
    """The IPC connection ended without the call's response (the agent died or closed it)."""

    code = "agent_gone"


class UnsafeRuntimeError(IpcError):
    """The runtime directory, a file in it, or the agent at the socket belongs to someone else."""

    code = "unsafe_runtime"


class RpcError(IpcError):
    """The agent answered with an error code this client does not map to a subclass."""

    code = "rpc_error"

    def __init__(self, code: str, message: str, data: dict[str, Any] | None = None):
        super().__init__(message, data=data)
        self.remote_code = code

    def to_wire(self) -> dict[str, Any]:
        return {**super().to_wire(), "code": self.remote_code}


def _all_subclasses(cls: type[HermesError]) -> list[type[HermesError]]:
    out: list[type[HermesError]] = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


def error_from_wire(obj: Any) -> HermesError:
    """Rebuild the matching HermesError subclass from an IPC error object.

    Classes whose constructors take structured arguments are rebuilt with the generic base
    constructor so that the message, hint and data arrive exactly as the agent sent them.
    """
    if not isinstance(obj, dict):
        return RpcError("rpc_error", f"agent sent a malformed error: {obj!r}")
    code = str(obj.get("code", "rpc_error"))
    message = str(obj.get("message", "unknown error"))
    data = dict(obj["data"]) if isinstance(obj.get("data"), dict) else {}
    hint = data.pop("hint", None) if data else None
    for cls in _all_subclasses(HermesError):
        if cls.__dict__.get("code") == code and cls is not RpcError:
            err = cls.__new__(cls)
            HermesError.__init__(err, message, hint=hint, data=data)
            for key in ("path", "url", "expected", "got", "status", "size", "limit", "retry_after"):
                if key in data:
                    setattr(err, key, data[key])
            if isinstance(err, RemoteProtocolError):
                err.close_code_hint = 1009 if isinstance(err, FrameTooLargeError) else 1002
            if isinstance(err, NoRouteError):
                err.attempts = list(data.get("attempts", []))
            return err
    err = RpcError(code, message, data)
    err.hint = hint
    return err


def members(exc: BaseException) -> list[BaseException]:
    """The exception itself, or every member of it as a (nested) group; causes are not followed."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for member in exc.exceptions for leaf in members(member)]
    return [exc]
