"""The HermesError tree: wire round trip, codes, exit codes."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from hermes_relay.core import errors, framing
from hermes_relay.core.errors import HermesError, error_from_wire

# One sample per concrete class, built with its real constructor and non-default values. The
# coverage test below fails when a class is added without a sample.
SAMPLES: dict[type[HermesError], Callable[[], HermesError]] = {
    errors.ConfigError: lambda: errors.ConfigError("bad value for --stagger", hint="use seconds"),
    errors.UsageError: lambda: errors.UsageError("unknown command 'frob'"),
    errors.StateError: lambda: errors.StateError("state dir is not writable"),
    errors.StateCorruptError: lambda: errors.StateCorruptError("/h/.hermes/s.json", "not valid JSON"),
    errors.StateVersionError: lambda: errors.StateVersionError("/h/.hermes/s.json", 7, 1),
    errors.StateLockError: lambda: errors.StateLockError("timed out waiting for the lock"),
    errors.RemoteProtocolError: lambda: errors.RemoteProtocolError("peer sent garbage"),
    errors.FrameTooLargeError: lambda: errors.FrameTooLargeError(2_000_000, 1 << 20),
    errors.PayloadError: lambda: errors.PayloadError("invite is not JSON", hint="copy the whole invite"),
    errors.TransportError: lambda: errors.TransportError("transport failed"),
    errors.ConnectRefusedError: lambda: errors.ConnectRefusedError("connection refused by 10.0.0.1:8767"),
    errors.HostNotFoundError: lambda: errors.HostNotFoundError("no such host relay.invalid"),
    errors.ConnectTimeoutError: lambda: errors.ConnectTimeoutError("timed out after 5s"),
    errors.TlsError: lambda: errors.TlsError("certificate verify failed"),
    errors.NoRouteError: lambda: errors.NoRouteError(
        "no route to the relay",
        attempts=[{"url": "ws://192.168.1.20:8767", "error": "refused"}, {"url": "wss://r.example", "error": "tls"}],
    ),
    errors.HandshakeRejectedError: lambda: errors.HandshakeRejectedError(403, "forbidden"),
    errors.RateLimitedError: lambda: errors.RateLimitedError("too many attempts", retry_after=30.0),
    errors.ConnectionLostError: lambda: errors.ConnectionLostError("relay link broke"),
    errors.PinMismatchError: lambda: errors.PinMismatchError("wss://r.example", "sha256/" + "A" * 43 + "=", "sha256/" + "B" * 43 + "="),
    errors.HttpStatusError: lambda: errors.HttpStatusError("POST", "/pairing/register", 403, "loopback only"),
    errors.AuthError: lambda: errors.AuthError("authentication failed"),
    errors.NotPairedError: lambda: errors.NotPairedError("no stored session for ws://h:8767"),
    errors.AuthRejectedError: lambda: errors.AuthRejectedError("relay rejected the token"),
    errors.PairingRejectedError: lambda: errors.PairingRejectedError("pairing code rejected"),
    errors.SessionRevokedError: lambda: errors.SessionRevokedError("session revoked on the relay"),
    errors.NotFoundError: lambda: errors.NotFoundError("no device named laptop"),
    errors.ForbiddenError: lambda: errors.ForbiddenError("cannot modify another session", hint="extend from the relay host"),
    errors.TerminalRefusedError: lambda: errors.TerminalRefusedError("the relay refused terminal.attach: max 4",
                                                                     hint="close one"),
    errors.AmbiguousError: lambda: errors.AmbiguousError("'lap' matches 2 devices", data={"matches": ["a", "b"]}),
    errors.IpcError: lambda: errors.IpcError("ipc failed"),
    errors.AgentNotRunningError: lambda: errors.AgentNotRunningError("/run/user/1/hermes-relay/agent.sock", "refused"),
    errors.AgentAlreadyRunningError: lambda: errors.AgentAlreadyRunningError("another agent answers on the socket"),
    errors.AgentGoneError: lambda: errors.AgentGoneError("lost the connection to the agent"),
    errors.UnsafeRuntimeError: lambda: errors.UnsafeRuntimeError("the runtime directory /run/x belongs to uid 0"),
    errors.RpcError: lambda: errors.RpcError("brand_new_code", "something the CLI does not know", {"k": 1}),
}


def _concrete_subclasses() -> set[type[HermesError]]:
    return {cls for cls in errors._all_subclasses(HermesError) if cls is not errors.ProtocolError}


def test_every_error_class_has_a_round_trip_sample() -> None:
    assert set(SAMPLES) == _concrete_subclasses()


def test_error_codes_are_unique_snake_case() -> None:
    codes = [cls.__dict__["code"] for cls in errors._all_subclasses(HermesError)]
    assert len(codes) == len(set(codes))
    for code in codes:
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", code), code


@pytest.mark.parametrize("cls", list(SAMPLES), ids=lambda c: c.__name__)
def test_wire_round_trip_rebuilds_subclass_and_fields(cls: type[HermesError]) -> None:
    original = SAMPLES[cls]()
    assert type(original) is cls
    wire = framing.unpack(framing.pack(original.to_wire()))  # the real IPC path: msgpack both ways
    rebuilt = error_from_wire(wire)
    assert type(rebuilt) is cls
    assert vars(rebuilt) == vars(original)
    assert rebuilt.args == original.args
    assert str(rebuilt) == str(original)
    assert rebuilt.exit_code == original.exit_code


def test_round_trip_keeps_specific_attributes() -> None:
    pin = error_from_wire(SAMPLES[errors.PinMismatchError]().to_wire())
    assert isinstance(pin, errors.PinMismatchError)
    assert (pin.url, pin.expected, pin.got) == ("wss://r.example", "sha256/" + "A" * 43 + "=", "sha256/" + "B" * 43 + "=")
    assert "pin accept wss://r.example" in (pin.hint or "")

    no_route = error_from_wire(SAMPLES[errors.NoRouteError]().to_wire())
    assert isinstance(no_route, errors.NoRouteError)
    assert [a["url"] for a in no_route.attempts] == ["ws://192.168.1.20:8767", "wss://r.example"]

    big = error_from_wire(SAMPLES[errors.FrameTooLargeError]().to_wire())
    assert isinstance(big, errors.FrameTooLargeError)
    assert (big.size, big.limit, big.close_code_hint) == (2_000_000, 1 << 20, 1009)

    limited = error_from_wire(SAMPLES[errors.RateLimitedError]().to_wire())
    assert isinstance(limited, errors.RateLimitedError)
    assert (limited.status, limited.retry_after) == (429, 30.0)

    rpc = error_from_wire(SAMPLES[errors.RpcError]().to_wire())
    assert isinstance(rpc, errors.RpcError)
    assert rpc.remote_code == "brand_new_code"


def test_rebuilt_error_is_caught_by_its_base_class() -> None:
    wire = errors.PairingRejectedError("code already used").to_wire()
    with pytest.raises(errors.AuthRejectedError) as info:
        raise error_from_wire(wire)
    assert info.value.hint == errors.PairingRejectedError.default_hint


def test_hint_travels_in_data_and_comes_back_as_hint() -> None:
    wire = errors.NotPairedError("not paired").to_wire()
    assert wire == {
        "code": "not_paired",
        "message": "not paired",
        "data": {"hint": errors.NotPairedError.default_hint},
    }
    rebuilt = error_from_wire(wire)
    assert rebuilt.hint == errors.NotPairedError.default_hint
    assert "hint" not in rebuilt.data


def test_error_from_wire_does_not_mutate_its_argument() -> None:
    wire = {"code": "not_paired", "message": "m", "data": {"hint": "pair first", "extra": 1}}
    error_from_wire(wire)
    assert wire == {"code": "not_paired", "message": "m", "data": {"hint": "pair first", "extra": 1}}


def test_unknown_code_becomes_rpc_error_with_the_remote_code() -> None:
    err = error_from_wire({"code": "quota_exceeded", "message": "too many devices", "data": {"hint": "remove one", "n": 5}})
    assert type(err) is errors.RpcError
    assert err.remote_code == "quota_exceeded"
    assert err.message == "too many devices"
    assert err.hint == "remove one"
    assert err.data == {"n": 5}


@pytest.mark.parametrize("obj", [None, "boom", ["not_paired", "m"], 42])
def test_malformed_error_object_becomes_rpc_error(obj: object) -> None:
    err = error_from_wire(obj)
    assert type(err) is errors.RpcError
    assert err.message.startswith("agent sent a malformed error: ")


def test_missing_fields_get_defaults() -> None:
    err = error_from_wire({"code": "auth_rejected", "data": "not a map"})
    assert type(err) is errors.AuthRejectedError
    assert err.message == "unknown error"
    assert err.data == {}
    assert err.hint is None


def test_protocol_error_is_abstract() -> None:
    with pytest.raises(TypeError):
        errors.ProtocolError("x")


@pytest.mark.parametrize(
    ("cls", "code"),
    [
        (errors.ConfigError, errors.EXIT_USAGE),
        (errors.UsageError, errors.EXIT_USAGE),
        (errors.PayloadError, errors.EXIT_USAGE),
        (errors.AgentNotRunningError, errors.EXIT_AGENT_NOT_RUNNING),
        (errors.NotPairedError, errors.EXIT_FAILURE),
        (errors.NoRouteError, errors.EXIT_FAILURE),
    ],
)
def test_exit_codes(cls: type[HermesError], code: int) -> None:
    assert cls.exit_code == code
    assert SAMPLES[cls]().exit_code == code


def test_agent_not_running_message_and_hint() -> None:
    err = errors.AgentNotRunningError("/run/agent.sock", "connection refused")
    assert str(err) == "the hermes-relay agent is not running (no answer on /run/agent.sock): connection refused"
    assert err.hint == "start it with `hermes-relay agent start`"
    assert err.exit_code == 3


@pytest.mark.parametrize(
    ("retry_after", "wait"),
    [(120.0, "2 min"), (90.0, "2 min"), (45.2, "46 s"), (300.0, "5 min"), (7200.0, "2 h"), (None, "a few minutes")],
)
def test_rate_limit_hint_uses_the_servers_retry_after(retry_after: float | None, wait: str) -> None:
    exc = errors.RateLimitedError("", retry_after=retry_after)
    assert exc.hint == f"try again in {wait} (or mint a new code with `hermes-pair`, which lifts the block)"
    assert "extend the block" not in exc.hint
