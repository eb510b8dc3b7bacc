"""The local API: each IPC method decodes its params, makes one backend call and returns its typed reply.

No logic lives here: the backend (agent/backend.py) does the work; core/apitypes.py is the contract
each handler's reply is annotated with, so mypy checks the producer side too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from ..core import api
from ..core.errors import UsageError
from .ipc_server import AfterResponse, CallContext, Handler

if TYPE_CHECKING:
    from ..core.apitypes import (
        AccessChangingReply,
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
        PairReply,
        PinAcceptReply,
        ReloadReply,
        RestoreReply,
        RouteIndicator,
        ShellOpenReply,
        StatusReply,
        TerminalKillReply,
        TerminalListReply,
    )

Params = dict[str, Any]


class Backend(Protocol):
    """The operations behind the IPC methods (agent/backend.py)."""

    def hello(self) -> HelloReply: ...
    async def status(self, reveal: bool) -> StatusReply: ...
    async def pair(self, params: Params, ctx: CallContext) -> PairReply: ...
    async def pair_check(self, params: Params) -> PairCheckReply: ...
    async def devices_list(self, url: Any) -> DevicesListReply: ...
    async def devices_revoke(self, url: Any, prefix: Any) -> DevicesRevokeReply: ...
    async def devices_extend(self, url: Any, prefix: Any, ttl: Any) -> DevicesExtendReply: ...
    async def route(self) -> RouteIndicator: ...
    async def watch(self, ctx: CallContext) -> None: ...
    async def pin_accept(self, url: Any, shown: Any, apply: bool) -> PinAcceptReply: ...
    async def forget(self, url: str, contact_relay: bool) -> ForgetReply: ...
    async def reload_all(self) -> ReloadReply: ...
    async def restore(self, url: str) -> RestoreReply: ...
    async def set_down(self, url: str | None, down: bool) -> DownReply: ...
    def approvals_list(self) -> ApprovalsListReply: ...
    async def approvals_decide(self, pid: Any, approve: Any, always: bool, reason: str | None) -> ApprovalsDecideReply: ...
    def access_changing(self, url: str, by_forget: bool) -> AccessChangingReply: ...
    async def doctor(self, params: Params) -> DoctorReply: ...
    def stop(self) -> None: ...
    async def shell_open(self, params: Params, ctx: CallContext) -> ShellOpenReply: ...
    async def terminal_list(self, remote: Any) -> TerminalListReply: ...
    async def terminal_kill(self, remote: Any, session: Any) -> TerminalKillReply: ...


def _url(params: Params, needed: str) -> str:
    """The required ``url`` param (UsageError ``needed`` when it is missing or empty)."""
    url = params.get("url")
    if not isinstance(url, str) or not url:
        raise UsageError(needed)
    return url


def _down_url(params: Params) -> str | None:
    url = params.get("url")
    if url is not None and (not isinstance(url, str) or not url):
        raise UsageError("down/up take a relay URL, or nothing for every relay")
    return url


class LocalApi:
    """The IPC methods over a backend: each decodes its params, makes one backend call, returns the typed reply."""

    def __init__(self, backend: Backend):
        self.backend = backend

    async def hello(self, params: Params, ctx: CallContext) -> HelloReply:
        return self.backend.hello()

    async def status(self, params: Params, ctx: CallContext) -> StatusReply:
        return await self.backend.status(bool(params.get("reveal_tokens")))

    async def pair_start(self, params: Params, ctx: CallContext) -> PairReply:
        return await self.backend.pair(params, ctx)

    async def pair_check(self, params: Params, ctx: CallContext) -> PairCheckReply:
        return await self.backend.pair_check(params)

    async def devices_list(self, params: Params, ctx: CallContext) -> DevicesListReply:
        return await self.backend.devices_list(params.get("url"))

    async def devices_revoke(self, params: Params, ctx: CallContext) -> DevicesRevokeReply:
        return await self.backend.devices_revoke(params.get("url"), params.get("prefix"))

    async def devices_extend(self, params: Params, ctx: CallContext) -> DevicesExtendReply:
        return await self.backend.devices_extend(params.get("url"), params.get("prefix"), params.get("ttl_seconds", 86400))

    async def route(self, params: Params, ctx: CallContext) -> RouteIndicator:
        return await self.backend.route()

    async def watch(self, params: Params, ctx: CallContext) -> None:
        await self.backend.watch(ctx)

    async def pin_accept(self, params: Params, ctx: CallContext) -> PinAcceptReply:
        return await self.backend.pin_accept(params.get("url"), params.get("pin"), params.get("apply") is not False)

    async def forget(self, params: Params, ctx: CallContext) -> ForgetReply:
        url = _url(params, "forget needs the relay URL of the pairing to remove")
        return await self.backend.forget(url, params.get("contact_relay", True) is not False)

    async def reload(self, params: Params, ctx: CallContext) -> ReloadReply:
        return await self.backend.reload_all()

    async def restore(self, params: Params, ctx: CallContext) -> RestoreReply:
        return await self.backend.restore(
            _url(params, "restore needs the URL of the paused pairing (as `hermes-relay status` shows it)"))

    async def down(self, params: Params, ctx: CallContext) -> DownReply:
        return await self.backend.set_down(_down_url(params), True)

    async def up(self, params: Params, ctx: CallContext) -> DownReply:
        return await self.backend.set_down(_down_url(params), False)

    async def approvals_list(self, params: Params, ctx: CallContext) -> ApprovalsListReply:
        return self.backend.approvals_list()

    async def approvals_decide(self, params: Params, ctx: CallContext) -> ApprovalsDecideReply:
        reason = params.get("reason")
        return await self.backend.approvals_decide(params.get("id"), params.get("approve"), params.get("always") is True,
                                              reason if isinstance(reason, str) else None)

    async def access_changing(self, params: Params, ctx: CallContext) -> AccessChangingReply:
        url = _url(params, "access.changing needs the relay URL whose policy is about to change")
        return self.backend.access_changing(url, params.get("command") == "forget")

    async def doctor(self, params: Params, ctx: CallContext) -> DoctorReply:
        return await self.backend.doctor(params)

    async def shell_open(self, params: Params, ctx: CallContext) -> ShellOpenReply:
        return await self.backend.shell_open(params, ctx)

    async def terminal_list(self, params: Params, ctx: CallContext) -> TerminalListReply:
        return await self.backend.terminal_list(params.get("remote"))

    async def terminal_kill(self, params: Params, ctx: CallContext) -> TerminalKillReply:
        return await self.backend.terminal_kill(params.get("remote"), params.get("session"))

    async def agent_stop(self, params: Params, ctx: CallContext) -> AfterResponse:
        return AfterResponse({"stopping": True}, self.backend.stop)

    def table(self) -> dict[str, Handler]:
        return {
            api.HELLO: self.hello, api.STATUS: self.status, api.PAIR_START: self.pair_start,
            api.PAIR_CHECK: self.pair_check, api.DEVICES_LIST: self.devices_list,
            api.DEVICES_REVOKE: self.devices_revoke, api.DEVICES_EXTEND: self.devices_extend, api.ROUTE: self.route,
            api.WATCH: self.watch, api.PIN_ACCEPT: self.pin_accept, api.RELOAD: self.reload,
            api.AGENT_STOP: self.agent_stop, api.DOCTOR: self.doctor, api.APPROVALS_LIST: self.approvals_list,
            api.APPROVALS_DECIDE: self.approvals_decide, api.FORGET: self.forget,
            api.ACCESS_CHANGING: self.access_changing, api.RESTORE: self.restore, api.DOWN_SET: self.down,
            api.UP_SET: self.up, api.SHELL_OPEN: self.shell_open, api.TERMINAL_LIST: self.terminal_list,
            api.TERMINAL_KILL: self.terminal_kill,
        }


def table(backend: Backend) -> dict[str, Handler]:
    """The method table agent/ipc_server.py serves."""
    return LocalApi(backend).table()
