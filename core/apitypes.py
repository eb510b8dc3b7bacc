"""The CLI ⇄ agent IPC contract, written once: one TypedDict per params/result shape, with comments.

core/api.py holds only the method-name constants every caller uses; ``METHODS`` below maps each
method to its params and result types and ``NOTIFIES`` each streamed notify to its type. The agent's
handlers (agent/handlers.py) are annotated with these types, so mypy checks the producer, and
``cli.client.AgentCalls`` wraps every method in a typed call, so mypy checks the consumer.

Every value is plain msgpack data (dicts, lists, str, int, float, bool, None). Times are epoch
seconds (float) from the agent's wall clock; ``None`` means never/unknown. Tokens never cross this
API except in ``status`` with ``reveal_tokens=True``. Errors answer with ``ErrorObj`` from
core/errors.py's HermesError tree. A link's ``state`` is one of core/api.py's link states
(core/linkstate.LinkState; its module header says what changes them).

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


class EmptyParams(TypedDict, total=False):
    """Methods that take no params: route, watch, reload, agent.stop, approvals.list."""


class HelloParams(TypedDict):
    """``hello``: the first request on every connection; the client may send its first call right behind
    it without waiting, so hello + one call is one round trip."""

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
    reveal_tokens: bool  # the tokens in relays[].token and paired[].record (never otherwise)


class StatusReply(TypedDict):
    """``status``: reads no file (the store joined with the live states is ``paired``)."""

    agent: AgentInfo
    relays: list[RelayState]  # every link, then every paused pairing (state "paused": restore or forget it)
    paired: list[PairedRelay]  # store order, then relays only the agent knows


class PairStartParams(TypedDict, total=False):
    """``pair.start`` (and ``pair.check``, which sends nothing to the relay).

    An invite whose signature fails is refused (UsageError) unless ``ignore_signature``; then it is used
    with a ``warn`` progress line. ``device_name`` is stored with the pairing and sent on every login;
    omitted, a re-pairing keeps the stored name. Everything the store write needs is checked before the
    code is spent; credentials the store cannot take yet are held (``status`` unsaved_pairings).
    Notifies ``pair.progress`` (PairProgress) while it runs.
    """

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


class UrlParams(TypedDict, total=False):
    """``url`` picks one relay when several are paired; omitted with several is an AmbiguousError."""

    url: str


class DevicesListParams(UrlParams):
    """``devices.list``: the relay's sessions, as GET /sessions returns them."""


class DevicesRevokeParams(UrlParams):
    prefix: str  # a token prefix, as ``devices`` shows it


class _DevicesExtendOptional(UrlParams, total=False):
    ttl_seconds: int  # >= 0; 0 = never; default 86400


class DevicesExtendParams(_DevicesExtendOptional):
    prefix: str


class DevicesListReply(TypedDict):
    url: str
    sessions: list[dict[str, Any]]


class DevicesRevokeReply(TypedDict):
    url: str
    revoked: str  # the prefix
    is_current: bool  # this computer's own session was revoked
    revoked_self: bool  # the same as is_current (the reference's name)


class DevicesExtendReply(TypedDict):
    url: str
    session: dict[str, Any]  # the server's session dict
    store_updated: bool  # it was this computer's session and the stored expiry was updated


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
    """``route``: the indicator the prompt shows (agent/indicator.py). ``label`` carries every relay when
    several are paired and one is connected (``LAN | office: Tailscale``) and the waiting approvals
    (``LAN !1``)."""

    updated_at: float
    valid_until: int
    pid: int
    approvals_waiting: int  # desktop calls waiting for approval (the label ends in " !N")
    relays: list[IndicatorRelay]  # every relay's part of the label, when several are paired and one is connected


class _PinAcceptOptional(TypedDict, total=False):
    apply: bool  # False: only report the presented certificate (default True)
    pin: str  # refuse (PinMismatchError) when the relay now presents another one than the user was shown


class PinAcceptParams(_PinAcceptOptional):
    """``pin.accept``: trust a relay's new certificate; an unchanged pin is never rewritten."""

    url: str


class PinAcceptReply(TypedDict):
    url: str
    old_pin: str | None
    new_pin: str | None
    changed: bool
    applied: bool


class ForgetRelay(TypedDict, total=False):
    status: Literal["revoked", "already_ended", "unreachable", "skipped"]
    message: str


class _ForgetOptional(TypedDict, total=False):
    contact_relay: bool  # default True: revoke this computer's session on the relay first (when reachable)


class ForgetParams(_ForgetOptional):
    """``forget``: revokes the session on the relay, then removes the record (routes, pins), the verdict,
    the refresh token and the desktop access-policy entry. A paused pairing is accepted too."""

    url: str


class ForgetReply(TypedDict):
    url: str
    prefix: str | None
    removed: list[str]
    relay: ForgetRelay


class RestoreParams(TypedDict):
    """``restore``: put a pairing another client removed from the store (``status`` shows it "paused", its
    record kept by the agent) back into the store and reconnect it."""

    url: str


class RestoreReply(TypedDict):
    url: str  # the store key
    restored: bool  # False when the store already holds a pairing for that relay again (the paused copy is dropped)


class DownParams(TypedDict, total=False):
    """``down``/``up``: take this computer off one relay (``url``) or every relay (none, pairings made later
    included): the links stop, records, tokens and policies stay; kept in the agent's own file
    (core/offline.py) across restarts. ``up`` lifts it (``up URL`` while every relay is down keeps the
    others down). A down relay's RelayState has state "down". NotPairedError for a URL that is neither
    stored nor paused."""

    url: str


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


class _DecideOptional(TypedDict, total=False):
    always: bool  # with approve: set that capability to ``allow`` for that host in the policy file
    reason: str


class ApprovalsDecideParams(_DecideOptional):
    """``approvals.decide``: NotFoundError when the request was answered, expired or its call ended (a late
    answer runs nothing)."""

    id: str
    approve: bool


class ApprovalsDecideReply(TypedDict):
    id: str
    approved: bool
    always: bool
    tool: str
    url: str
    capability: str


class ReloadReply(TypedDict):
    """``reload``: re-read the store, (re)start links, clear revoked marks for records whose token changed."""

    relays: int


class _AccessChangingOptional(TypedDict, total=False):
    command: str  # "forget" when forget drops the policy; else the change is access's


class AccessChangingParams(_AccessChangingOptional):
    """``access.changing``: the CLI is about to change a host's policy or roots (for the audit)."""

    url: str


class AccessChangingReply(TypedDict):
    url: str


class StopReply(TypedDict):
    """``agent.stop``: answered first, then the agent stops."""

    stopping: bool


class DoctorParams(TypedDict, total=False):
    """``doctor``: checks every route of every stored relay (with ``url``: of that pairing only, else
    NotPairedError) on its own short-lived connections; changes nothing."""

    deadline: float  # seconds for the whole run (default 10)
    url: str
    standalone: bool  # no agent runs links (``python -m hermes_relay.agent doctor``); set by that entry only


class _DoctorStepBase(TypedDict):
    step: Literal["dns", "tcp", "tls", "ws", "auth"]
    status: Literal["ok", "warn", "fail", "skip"]
    summary: str
    ms: float | None  # None for a skipped step
    detail: str | None
    fix: str | None


class DoctorStep(_DoctorStepBase, total=False):
    """One step of one route's check, with the facts it found."""

    addresses: list[str]  # dns
    error: str  # tcp: "timeout" | "refused" | "unreachable" | "os_error"
    http_status: int  # ws
    recorded_pin: str | None  # tls
    presented_pin: str | None  # tls
    reason: str  # auth: why the relay refused the token
    expires_at: float | None  # auth
    server_version: str | None  # auth


class DoctorRoute(RouteInfo):
    address: str | None
    status: Literal["ok", "warn", "fail", "skip"]
    steps: list[DoctorStep]


class DoctorRelay(TypedDict):
    url: str
    status: Literal["ok", "warn", "fail", "skip"]
    working_routes: int
    link: RelayState | None
    link_status: Literal["ok", "warn", "fail", "skip"]
    routes: list[DoctorRoute]


class DoctorNetwatch(TypedDict):
    backend: str
    enabled: bool


class DoctorNotifier(TypedDict):
    program: str | None  # the notifier approvals use, None when there is none
    disabled: str | None  # why notifications are off (HERMES_RELAY_NOTIFY=0)


class DoctorDesktop(TypedDict):
    notify: DoctorNotifier


class DoctorReply(TypedDict):
    netwatch: DoctorNetwatch
    relays: list[DoctorRelay]
    desktop: DoctorDesktop
    store_error: ErrorObj | None
    deadline: float
    elapsed_ms: float
    knobs: dict[str, str]  # the test switches set (core/knobs.py), name -> value


# -- the shell (docs/shell-protocol.md) --------------------------------------------------------------
class ShellOpenParams(TypedDict, total=False):
    """``shell.open``: one per dedicated IPC connection; streams until the shell ends."""

    remote: str | None  # relay URL or name; None: the only paired relay
    session: str  # tmux session name, [A-Za-z0-9_-]{1,64} (default "main")
    cols: int
    rows: int
    term: str
    stream: str  # the CLI's stream id (22 characters of base64url)
    out_seq: int  # output bytes the CLI has written to the user's terminal
    in_base: int  # input offset of unacked[0] (the CLI's acked mark)
    in_sent: int  # the last sent mark the CLI heard (>= in_base)
    unacked: bytes  # input not yet seen acknowledged, from in_base
    raw: bool  # bare shell: do not start hermes
    new: bool
    conversation: str | None
    exec: str | None  # never re-injected on a reopen
    reopen: bool  # the CLI reconnects after losing the agent


class ShellOpenReply(TypedDict):
    reason: Literal["exit", "detached", "killed", "replaced", "lost"]
    code: int | None


class _ShellAttachedBase(TypedDict):
    reattach: bool
    resumed: bool
    tmux: bool
    route: str  # the route's label (LAN, Tailscale, public...)
    relay: Literal["ours", "reference"]


class ShellAttached(_ShellAttachedBase, total=False):
    replay: bytes  # first attach of a run only


class ShellOutput(TypedDict):
    d: bytes
    seq_end: int


class ShellAck(TypedDict):
    in_seq: int  # acked: the relay wrote everything below it (or it is counted done: in doubt)
    sent: int  # the agent put everything below it on a socket


class ShellLink(TypedDict):
    state: Literal["live", "reconnecting", "lost"]
    route: str
    reason: str
    queued: int  # bytes typed but not sent


class ShellNotice(TypedDict):
    text: str


class ShellInput(TypedDict):
    seq: int
    d: bytes


class ShellResize(TypedDict):
    cols: int
    rows: int


class TerminalListParams(TypedDict, total=False):
    remote: str | None


class TerminalSessionInfo(TypedDict, total=False):
    """One ``terminal.sessions`` entry, as the relay sent it."""

    name: str
    tmux_name: str
    attached: int
    windows: int
    created_at: float
    pid: int | None
    shell: str
    live: bool
    owned_by_client: bool


class TerminalListReply(TypedDict):
    sessions: list[TerminalSessionInfo]
    tmux_available: bool


class _TerminalKillOptional(TypedDict, total=False):
    remote: str | None


class TerminalKillParams(_TerminalKillOptional):
    session: str


class TerminalKillReply(TypedDict):
    reason: str


# method -> (params type, result type); streaming methods' notifies are in NOTIFIES.
# ``watch`` never answers: it notifies until the client disconnects, ``state`` (RelayState: every relay's
# state first, paused pairings too, then on every change; a pairing another client removed from the store
# shows up once as "paused") and ``approval`` (ApprovalRequested first for every pending one, then each new
# one, and ApprovalResolved).
METHODS: dict[str, tuple[Any, Any]] = {
    "hello": (HelloParams, HelloReply),
    "status": (StatusParams, StatusReply),
    "pair.start": (PairStartParams, PairReply),
    "pair.check": (PairStartParams, PairCheckReply),
    "devices.list": (DevicesListParams, DevicesListReply),
    "devices.revoke": (DevicesRevokeParams, DevicesRevokeReply),
    "devices.extend": (DevicesExtendParams, DevicesExtendReply),
    "route": (EmptyParams, RouteIndicator),
    "watch": (EmptyParams, type(None)),
    "pin.accept": (PinAcceptParams, PinAcceptReply),
    "reload": (EmptyParams, ReloadReply),
    "agent.stop": (EmptyParams, StopReply),
    "forget": (ForgetParams, ForgetReply),
    "restore": (RestoreParams, RestoreReply),
    "down": (DownParams, DownReply),
    "up": (DownParams, DownReply),
    "approvals.list": (EmptyParams, ApprovalsListReply),
    "approvals.decide": (ApprovalsDecideParams, ApprovalsDecideReply),
    "access.changing": (AccessChangingParams, AccessChangingReply),
    "doctor": (DoctorParams, DoctorReply),
    "shell.open": (ShellOpenParams, ShellOpenReply),
    "terminal.list": (TerminalListParams, TerminalListReply),
    "terminal.kill": (TerminalKillParams, TerminalKillReply),
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
                            "approval": ApprovalRequested | ApprovalResolved,
                            "shell.attached": ShellAttached, "shell.output": ShellOutput, "shell.ack": ShellAck,
                            "shell.link": ShellLink, "shell.notice": ShellNotice}
# The notifies a client sends during a call (``shell.open``; agent/ipc_server.py's CallContext.inbox).
CLIENT_NOTIFIES: dict[str, Any] = {"shell.input": ShellInput, "shell.resize": ShellResize, "shell.detach": EmptyParams,
                                   "shell.kill": EmptyParams, "shell.redraw": EmptyParams}


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
