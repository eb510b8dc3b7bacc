"""The backend behind the local API (agent/handlers.py): one method per IPC operation.

Each method is one call into the module that does the work (status, devices, pairing, forget,
doctor, storefollow, the desktop service) with the agent's parts; the handlers only decode params
and encode the reply. The ``watch`` stream lives here: every relay's state, then each change, and
the approval events, until the client leaves.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Protocol

import trio

from hermes_relay import __version__
from hermes_relay.agent import devices, doctor, forget, pairing, statusview, storefollow
from hermes_relay.agent.ipc_server import CallContext
from hermes_relay.core import api, policy_log

if TYPE_CHECKING:
    from hermes_relay.agent.desktop.service import DesktopService
    from hermes_relay.agent.indicator import Indicator
    from hermes_relay.agent.marks import Pending
    from hermes_relay.agent.storefollow import StoreFollower
    from hermes_relay.agent.terminal.service import TerminalService
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
        ShellOpenReply,
        StatusReply,
        TerminalKillReply,
        TerminalListReply,
    )


class Host(devices.SessionHost, statusview.StatusHost, pairing.PairingHost, forget.ForgetHost, doctor.DoctorHost,
           storefollow.RestoreHost, Protocol):
    """The agent's parts the operations use (each operation declares its own narrower Protocol)."""

    @property
    def desktop(self) -> DesktopService: ...
    @property
    def follower(self) -> StoreFollower: ...
    @property
    def pending(self) -> Pending: ...
    @property
    def indicator(self) -> Indicator: ...
    @property
    def watchers(self) -> set[trio.MemorySendChannel[dict[str, Any]]]: ...
    @property
    def terminal(self) -> TerminalService: ...

    async def set_down(self, url: str | None, *, down: bool) -> DownReply: ...
    def stop(self) -> None: ...


class AgentBackend:
    """The agent's operations for the local API (handlers.Backend)."""

    def __init__(self, agent: Host):
        self.agent = agent

    def hello(self) -> HelloReply:
        return {"api_version": api.API_VERSION, "agent_version": __version__, "pid": os.getpid(),
                "started_at": self.agent.started_at}

    async def status(self, reveal: bool) -> StatusReply:
        return await statusview.status(self.agent, reveal)

    async def pair(self, params: dict[str, Any], ctx: CallContext) -> PairReply:
        async def progress(event: dict[str, Any]) -> None:
            await ctx.notify(api.PAIR_PROGRESS, event)

        return await pairing.pair(self.agent, params, progress)

    async def pair_check(self, params: dict[str, Any]) -> PairCheckReply:
        return await pairing.check(self.agent, params)

    async def devices_list(self, url: Any) -> DevicesListReply:
        return await devices.list_sessions(self.agent, url)

    async def devices_revoke(self, url: Any, prefix: Any) -> DevicesRevokeReply:
        return await devices.revoke(self.agent, url, prefix)

    async def devices_extend(self, url: Any, prefix: Any, ttl: Any) -> DevicesExtendReply:
        return await devices.extend(self.agent, url, prefix, ttl)

    def route(self) -> RouteIndicator:
        current: Any = dict(self.agent.indicator.current)
        return current

    async def pin_accept(self, url: Any, shown: Any, apply: bool) -> PinAcceptReply:
        return await devices.accept_pin(self.agent, url, shown, apply)

    async def forget(self, url: str, contact_relay: bool) -> ForgetReply:
        agent = self.agent

        async def revoke(owner: str, rec: dict[str, Any], prefix: str) -> Any:
            return await devices.session_call(agent, owner, rec, "DELETE", f"/sessions/{prefix}")

        return await forget.forget(agent, url, revoke, contact_relay=contact_relay)

    def reload(self) -> ReloadReply:
        return {"relays": self.agent.reload()}

    async def restore(self, url: str) -> RestoreReply:
        return await storefollow.restore(self.agent, url)

    async def set_down(self, url: str | None, down: bool) -> DownReply:
        return await self.agent.set_down(url, down=down)

    def approvals_list(self) -> ApprovalsListReply:
        approvals: Any = self.agent.desktop.approvals.list()
        return {"approvals": approvals}

    async def approvals_decide(self, pid: Any, approve: Any, always: bool, reason: str | None) -> ApprovalsDecideReply:
        return await self.agent.desktop.approvals.decide(pid, approve, always=always, reason=reason)

    def access_changing(self, url: str, by_forget: bool) -> AccessChangingReply:
        return {"url": self.agent.desktop.announce(url, policy_log.BY_FORGET if by_forget else policy_log.BY_ACCESS)}

    async def doctor(self, params: dict[str, Any]) -> DoctorReply:
        return await doctor.run_doctor(self.agent, params)

    def stop(self) -> None:
        self.agent.stop()

    async def shell_open(self, params: dict[str, Any], ctx: CallContext) -> ShellOpenReply:
        reply: Any = await self.agent.terminal.open(params, ctx.notify, ctx.inbox)
        return reply

    async def terminal_list(self, remote: Any) -> TerminalListReply:
        reply: Any = await self.agent.terminal.list(remote)
        return reply

    async def terminal_kill(self, remote: Any, session: Any) -> TerminalKillReply:
        reply: Any = await self.agent.terminal.kill(remote, session)
        return reply

    async def watch(self, ctx: CallContext) -> None:
        """Every relay's state (paused pairings too), then each change, and the approval events, until
        the client leaves; a slow client misses intermediate states (agent.Agent._fan_out)."""
        agent = self.agent
        send, receive = trio.open_memory_channel[dict[str, Any]](64)
        agent.watchers.add(send)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_until_closed, ctx, nursery.cancel_scope)
                nursery.start_soon(self._forward_approvals, ctx)
                try:
                    for state in agent.states() + [paused for paused, _ in agent.paused_states()]:
                        await ctx.notify(api.STATE, state)
                    async with receive:
                        async for state in receive:
                            await ctx.notify(api.STATE, state)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    nursery.cancel_scope.cancel()
        finally:
            agent.watchers.discard(send)

    async def _forward_approvals(self, ctx: CallContext) -> None:
        """The watch stream's approval events: every pending request first, then each new one and outcome."""
        approvals = self.agent.desktop.approvals
        try:
            with approvals.subscribe() as events:
                for item in approvals.list():
                    await ctx.notify(api.APPROVAL, {"event": "approval.requested", **item})
                async for event in events:
                    await ctx.notify(api.APPROVAL, event)
        except (trio.BrokenResourceError, trio.ClosedResourceError):  # the client left
            pass


async def _until_closed(ctx: CallContext, scope: trio.CancelScope) -> None:
    await ctx.closed.wait()
    scope.cancel()
