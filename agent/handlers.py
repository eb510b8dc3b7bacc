"""The local API: each IPC method decodes its params, makes one backend call and returns its typed reply.

No logic lives here: the backend (agent/backend.py) does the work; core/apitypes.py is the contract
each handler's reply is annotated with, so mypy checks the producer side too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from hermes_relay.agent.ipc_server import AfterResponse, CallContext, Handler
from hermes_relay.core import api
from hermes_relay.core.errors import UsageError

if TYPE_CHECKING:
    from hermes_relay.core.apitypes import (
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
        StatusReply,
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
    def route(self) -> RouteIndicator: ...
    async def watch(self, ctx: CallContext) -> None: ...
    async def pin_accept(self, url: Any, shown: Any, apply: bool) -> PinAcceptReply: ...
    async def forget(self, url: str, contact_relay: bool) -> ForgetReply: ...
    def reload(self) -> ReloadReply: ...
    async def restore(self, url: str) -> RestoreReply: ...
    async def set_down(self, url: str | None, down: bool) -> DownReply: ...
    def approvals_list(self) -> ApprovalsListReply: ...
    async def approvals_decide(self, pid: Any, approve: Any, always: bool, reason: str | None) -> ApprovalsDecideReply: ...
    def access_changing(self, url: str, by_forget: bool) -> AccessChangingReply: ...
    async def doctor(self, params: Params) -> DoctorReply: ...
    def stop(self) -> None: ...


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


def table(backend: Backend) -> dict[str, Handler]:
    async def hello(params: Params, ctx: CallContext) -> HelloReply:
        return backend.hello()

    async def status(params: Params, ctx: CallContext) -> StatusReply:
        return await backend.status(bool(params.get("reveal_tokens")))

    async def pair_start(params: Params, ctx: CallContext) -> PairReply:
        return await backend.pair(params, ctx)

    async def pair_check(params: Params, ctx: CallContext) -> PairCheckReply:
        return await backend.pair_check(params)

    async def devices_list(params: Params, ctx: CallContext) -> DevicesListReply:
        return await backend.devices_list(params.get("url"))

    async def devices_revoke(params: Params, ctx: CallContext) -> DevicesRevokeReply:
        return await backend.devices_revoke(params.get("url"), params.get("prefix"))

    async def devices_extend(params: Params, ctx: CallContext) -> DevicesExtendReply:
        return await backend.devices_extend(params.get("url"), params.get("prefix"), params.get("ttl_seconds", 86400))

    async def route(params: Params, ctx: CallContext) -> RouteIndicator:
        return backend.route()

    async def watch(params: Params, ctx: CallContext) -> None:
        await backend.watch(ctx)

    async def pin_accept(params: Params, ctx: CallContext) -> PinAcceptReply:
        return await backend.pin_accept(params.get("url"), params.get("pin"), params.get("apply") is not False)

    async def forget(params: Params, ctx: CallContext) -> ForgetReply:
        url = _url(params, "forget needs the relay URL of the pairing to remove")
        return await backend.forget(url, params.get("contact_relay", True) is not False)

    async def reload(params: Params, ctx: CallContext) -> ReloadReply:
        return backend.reload()

    async def restore(params: Params, ctx: CallContext) -> RestoreReply:
        return await backend.restore(
            _url(params, "restore needs the URL of the paused pairing (as `hermes-relay status` shows it)"))

    async def down(params: Params, ctx: CallContext) -> DownReply:
        return await backend.set_down(_down_url(params), True)

    async def up(params: Params, ctx: CallContext) -> DownReply:
        return await backend.set_down(_down_url(params), False)

    async def approvals_list(params: Params, ctx: CallContext) -> ApprovalsListReply:
        return backend.approvals_list()

    async def approvals_decide(params: Params, ctx: CallContext) -> ApprovalsDecideReply:
        reason = params.get("reason")
        return await backend.approvals_decide(params.get("id"), params.get("approve"), params.get("always") is True,
                                              reason if isinstance(reason, str) else None)

    async def access_changing(params: Params, ctx: CallContext) -> AccessChangingReply:
        url = _url(params, "access.changing needs the relay URL whose policy is about to change")
        return backend.access_changing(url, params.get("command") == "forget")

    async def doctor(params: Params, ctx: CallContext) -> DoctorReply:
        return await backend.doctor(params)

    async def agent_stop(params: Params, ctx: CallContext) -> AfterResponse:
        return AfterResponse({"stopping": True}, backend.stop)

    return {
        api.HELLO: hello, api.STATUS: status, api.PAIR_START: pair_start, api.PAIR_CHECK: pair_check,
        api.DEVICES_LIST: devices_list, api.DEVICES_REVOKE: devices_revoke, api.DEVICES_EXTEND: devices_extend,
        api.ROUTE: route, api.WATCH: watch, api.PIN_ACCEPT: pin_accept, api.RELOAD: reload,
        api.AGENT_STOP: agent_stop, api.DOCTOR: doctor, api.APPROVALS_LIST: approvals_list,
        api.APPROVALS_DECIDE: approvals_decide, api.FORGET: forget, api.ACCESS_CHANGING: access_changing,
        api.RESTORE: restore, api.DOWN_SET: down, api.UP_SET: up,
    }
