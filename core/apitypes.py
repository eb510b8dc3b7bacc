"""The IPC contract as types: one TypedDict per params/result shape of core/api.py's methods.

The CLI never imports this module at run time (typing costs every start ~3 ms): its client
annotations name these types under ``TYPE_CHECKING``. Tests import it to check both the real agent's
replies and the CLI tests' fake replies against the same shapes (``check``), so the two cannot drift.
Optional keys live in ``total=False`` bases (``NotRequired`` needs Python 3.11).
"""

from __future__ import annotations

import sys
import types
import typing
from typing import Any, Literal, TypedDict, Union

Seconds = float  # epoch seconds (wall clock); None means never/unknown


class ErrorObj(TypedDict):
    code: str
    message: str
    data: dict[str, Any]


class HelloParams(TypedDict):
    client_version: str
    api_version: int


class HelloReply(TypedDict):
    api_version: int
    agent_version: str
    pid: int
    started_at: float


class RouteInfo(TypedDict):
    url: str
    role: str
    label: str
    priority: int


class _RelayStateBase(TypedDict):
    url: str
    state: str
    route: RouteInfo | None
    since: float | None
    latency_ms: float | None
    attempts: int
    last_error: dict[str, Any] | None
    next_retry_at: float | None
    routes: list[RouteInfo]
    server_version: str | None


class DesktopCall(TypedDict):
    tool: str
    ok: bool
    ts: float


class DesktopSummary(TypedDict):
    tools_advertised: int
    policy: str
    policy_label: str
    policy_error: str | None
    calls_today: int
    last_call: DesktopCall | None
    pending_approvals: int


class RelayState(_RelayStateBase, total=False):
    token_prefix: str | None  # in status replies
    token: str  # only with reveal_tokens
    desktop: DesktopSummary | None  # in status replies: the desktop channel for this relay
    replaced_by: str | None  # state "replaced": the newer pairing of the same relay


class StoreProblem(TypedDict):
    url: str
    problem: str


class UnsavedPairing(TypedDict):
    url: str
    since: float | None
    error: str | None


class AgentInfo(TypedDict):
    pid: int
    version: str
    started_at: float
    socket: str
    store: str
    store_error: ErrorObj | None
    netwatch: str
    tasks: int
    ipc_clients: int
    open_files: int | None
    store_problems: list[StoreProblem]  # records skipped as malformed, and why
    unsaved_pairings: list[UnsavedPairing]  # pairings held by the agent until the store can be written
    knobs: dict[str, str]  # the test switches set in the agent's environment (core/knobs.py), name -> value


class PairedRelay(TypedDict):
    """A store record joined with its live state; ``record`` is None for a relay only the agent knows."""

    url: str
    record: dict[str, Any] | None  # the store record, redacted unless reveal_tokens
    live: RelayState | None
    alternates: list[str]  # the record's other route URLs
    role_label: str | None  # the record's endpoint role as shown ("LAN", "Tailscale", ...)


class StatusParams(TypedDict, total=False):
    reveal_tokens: bool


class StatusReply(TypedDict):
    agent: AgentInfo
    relays: list[RelayState]
    paired: list[PairedRelay]


class PairStartParams(TypedDict, total=False):
    url: str
    code: str
    invite: str
    device_name: str
    ignore_signature: bool
    carry_over: bool  # the same relay under another URL, identified only by its relay_id: carry its access over


class PairReplaced(TypedDict):
    """The stored pairing a pairing replaces (the same relay: same URL, certificate pin or relay_id)."""
    url: str
    device_name: str | None
    paired_at: float | None
    authenticated: bool  # recognised by a matching certificate pin (not only the relay's claim)
    carried_over: bool  # its desktop access, roots and jobs moved to the new URL (False when the URL is the same)
    access: str  # its desktop access as `access` labels it, with its roots: "trusted, roots ~/src"


class PairCheckReply(TypedDict):
    replaces: PairReplaced | None


class _PairProgressBase(TypedDict):
    kind: Literal["info", "probe", "pick", "warn"]
    line: str


class PairProgress(_PairProgressBase, total=False):
    route: RouteInfo
    ok: bool
    ms: float


class PairReply(TypedDict):
    url: str
    server_version: str | None
    route: RouteInfo
    expires_at: float | None
    grants: dict[str, Any]
    port_added: bool
    verified: bool | None
    verify_note: str
    attempts: list[dict[str, Any]]
    store: str
    device_name: str | None
    cert_pin_sha256: str | None  # the certificate pinned by this pairing (wss:// only)
    replaced: PairReplaced | None  # the pairing of the same relay this one replaced


class DevicesListReply(TypedDict):
    url: str
    sessions: list[dict[str, Any]]


class DevicesRevokeReply(TypedDict):
    url: str
    revoked: str
    is_current: bool
    revoked_self: bool


class DevicesExtendReply(TypedDict):
    url: str
    session: dict[str, Any]
    store_updated: bool


class _RouteIndicatorBase(TypedDict):
    label: str
    state: str
    url: str | None
    role: str | None
    since: float | None
    relay: str | None


class IndicatorRelay(TypedDict):
    url: str
    name: str
    label: str
    state: str


class RouteIndicator(_RouteIndicatorBase, total=False):
    updated_at: float
    valid_until: int
    pid: int
    approvals_waiting: int  # desktop calls waiting for approval (the label ends in " !N")
    relays: list[IndicatorRelay]  # every relay's part of the label, when several are paired and one is connected


class PinAcceptReply(TypedDict):
    url: str
    old_pin: str | None
    new_pin: str | None
    changed: bool
    applied: bool


class ForgetRelay(TypedDict, total=False):
    status: Literal["revoked", "already_ended", "unreachable", "skipped"]
    message: str


class ForgetReply(TypedDict):
    url: str
    prefix: str | None
    removed: list[str]
    relay: ForgetRelay


class RestoreReply(TypedDict):
    url: str
    restored: bool


class DownReply(TypedDict):
    url: str | None
    down: list[str]
    all: bool
    changed: bool


class ApprovalDetails(TypedDict, total=False):
    """What will run, exactly and unredacted (control characters escaped visibly): core/desktop.call_details."""

    command: str
    cwd: str
    env: dict[str, str]
    dangerous_env: list[str]
    stdin: str
    paths: dict[str, str]
    reason: str


class _ApprovalOptional(TypedDict, total=False):
    details: ApprovalDetails


class Approval(_ApprovalOptional):
    id: str
    url: str
    tool: str
    capability: str
    preview: str
    reason: str
    request_id: str
    created_at: float
    expires_at: float


class ApprovalsListReply(TypedDict):
    approvals: list[Approval]


class ApprovalsDecideReply(TypedDict):
    id: str
    approved: bool
    always: bool
    tool: str
    url: str
    capability: str


class ReloadReply(TypedDict):
    relays: int


class AccessChangingReply(TypedDict):
    url: str


class StopReply(TypedDict):
    stopping: bool


# method -> (params type, result type); streaming methods' notifies are in NOTIFIES.
METHODS: dict[str, tuple[Any, Any]] = {
    "hello": (HelloParams, HelloReply),
    "status": (StatusParams, StatusReply),
    "pair.start": (PairStartParams, PairReply),
    "pair.check": (PairStartParams, PairCheckReply),
    "devices.list": (dict, DevicesListReply),
    "devices.revoke": (dict, DevicesRevokeReply),
    "devices.extend": (dict, DevicesExtendReply),
    "route": (dict, RouteIndicator),
    "pin.accept": (dict, PinAcceptReply),
    "reload": (dict, ReloadReply),
    "agent.stop": (dict, StopReply),
    "forget": (dict, ForgetReply),
    "restore": (dict, RestoreReply),
    "down": (dict, DownReply),
    "up": (dict, DownReply),
    "approvals.list": (dict, ApprovalsListReply),
    "approvals.decide": (dict, ApprovalsDecideReply),
    "access.changing": (dict, AccessChangingReply),
}
class ApprovalRequested(Approval):
    event: Literal["approval.requested"]


class ApprovalResolved(TypedDict):
    event: Literal["approval.resolved"]
    id: str
    outcome: Literal["approved", "denied", "expired", "withdrawn"]
    tool: str
    url: str


NOTIFIES: dict[str, Any] = {"pair.progress": PairProgress, "state": RelayState,
                            "approval": ApprovalRequested | ApprovalResolved}


def check(value: Any, tp: Any, *, partial: bool = False, where: str = "reply") -> list[str]:
    """Every way ``value`` departs from type ``tp`` ([] when it conforms).

    ``partial`` accepts missing keys at every level (a test fake scripts only what a command reads)
    but never unknown keys or wrong types: a renamed or retyped field is caught either way.
    """
    problems: list[str] = []
    _check(value, tp, partial, where, problems)
    return problems


def _is_typeddict(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__required_keys__")


def _check(value: Any, tp: Any, partial: bool, where: str, problems: list[str]) -> None:
    if tp is Any:
        return
    if _is_typeddict(tp):
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a map ({tp.__name__}), got {type(value).__name__}")
            return
        hints = typing.get_type_hints(tp, globalns=vars(sys.modules[__name__]))
        for key in value:
            if key not in hints:
                problems.append(f"{where}: unknown key {key!r} for {tp.__name__}")
        if not partial:
            for key in tp.__required_keys__:
                if key not in value:
                    problems.append(f"{where}: missing key {key!r} of {tp.__name__}")
        for key, sub in hints.items():
            if key in value:
                _check(value[key], sub, partial, f"{where}.{key}", problems)
        return
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        for option in args:
            trial: list[str] = []
            _check(value, option, partial, where, trial)
            if not trial:
                return
        problems.append(f"{where}: {value!r:.80} is none of {tp}")
        return
    if origin is Literal:
        if value not in args:
            problems.append(f"{where}: {value!r} is not one of {args}")
        return
    if origin is list:
        if not isinstance(value, list):
            problems.append(f"{where}: expected a list, got {type(value).__name__}")
            return
        for i, item in enumerate(value):
            _check(item, args[0], partial, f"{where}[{i}]", problems)
        return
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a map, got {type(value).__name__}")
        return
    if tp is type(None):
        if value is not None:
            problems.append(f"{where}: expected None, got {type(value).__name__}")
        return
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, tp)
    if not ok:
        problems.append(f"{where}: expected {getattr(tp, '__name__', tp)}, got {type(value).__name__} {value!r:.60}")
