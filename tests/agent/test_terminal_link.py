"""A shell through a real agent: a real IPC connection sends ``shell.open`` and numbered keys as
``shell.input`` notifies; the agent's real link carries them to a relay scripted in terminal_link_rig.py
(trio-websocket on loopback) that speaks (a) our resume extension or (b) the reference's semantics
(per-socket sessions, input before ``terminal.attached`` dropped, ``system/ping`` answered inline, no
acks). The relay drops the socket mid-typing; afterwards (a) every byte reached its "PTY" exactly once,
and (b) nothing was duplicated or reordered and every byte lost was reported in doubt. Real sockets,
real clock."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import trio
from terminal_link_rig import (
    DEADLINE,
    STREAM,
    Forwarder,
    IpcShell,
    TerminalRelay,
    agent_env,
    detach,
    keys,
    make_agent,
    open_shell,
    pair,
)

from hermes_relay.agent import link, runner
from hermes_relay.core import api


@pytest.fixture
def relay_test_guard() -> float:
    return 30.0


async def run_shell(tmp_path: Path, relay: TerminalRelay) -> tuple[IpcShell, bytes]:
    agent = make_agent(agent_env(tmp_path), backoff_base=0.05, backoff_cap=0.1)
    typed = b"".join(keys())
    async with trio.open_nursery() as nursery:
        with trio.fail_after(DEADLINE):
            await relay.serve(nursery)
            pair(agent, relay.url)
            await nursery.start(runner.run, agent)
            shell = await open_shell(agent, nursery, term="xterm", out_seq=0, in_base=0, in_sent=0, unacked=b"",
                                     reopen=False)
            attached = await shell.until(api.SHELL_ATTACHED)
            assert attached.params["relay"] == ("ours" if relay.ours else "reference")
            offset = 0
            for key in keys():  # typed while the relay drops the socket and the agent reconnects
                await shell.send([2, api.SHELL_INPUT, {"seq": offset, "d": key}])
                offset += len(key)
                await trio.sleep(0)
            while shell.acked < len(typed):  # every byte acknowledged, or counted done (in doubt)
                await shell.until(api.SHELL_ACK)
            await detach(shell)
        nursery.cancel_scope.cancel()
    assert shell.response is not None and shell.response.error is None
    assert shell.response.result == {"reason": "detached", "code": None}
    assert relay.sockets >= 2  # it did drop the first one
    assert shell.problems == []
    return shell, typed


async def test_our_relay_gets_every_key_exactly_once_across_a_drop(tmp_path: Path) -> None:
    relay = TerminalRelay(ours=True)
    shell, typed = await run_shell(tmp_path, relay)
    assert bytes(relay.pty) == typed
    assert [a["resume"]["stream"] for a in relay.attaches] == [STREAM] * len(relay.attaches)
    assert not any("in doubt" in n for n in shell.notices())
    assert relay.duplicates == 0  # the resend started exactly at resume.in_seq...
    assert len(relay.first_seqs) == 2 and relay.first_seqs[1][0] == relay.first_seqs[1][1] > 0  # ...mid-typing
    links = [m.params["state"] for m in shell.seen if m.method == api.SHELL_LINK]
    assert "reconnecting" in links and links[-1] == "live"


async def test_our_relay_restarting_cleanly_mid_typing_loses_no_key_and_puts_none_in_doubt(tmp_path: Path) -> None:
    """The relay acknowledges what it wrote, says ``detached {server shutdown}`` and closes: input sent
    after that final ack never reached the PTY, so it goes to the new attachment (the tmux session lives
    on) instead of being reported in doubt and lost."""
    relay = TerminalRelay(ours=True)
    relay.shutdown = True
    shell, typed = await run_shell(tmp_path, relay)
    assert not any("in doubt" in n for n in shell.notices()), shell.notices()
    assert bytes(relay.pty) == typed
    assert [a["resume"]["stream"] for a in relay.attaches] == [STREAM] * len(relay.attaches)


async def test_after_our_relay_restarted_the_new_attachments_output_continues_the_clis_offsets(
        tmp_path: Path) -> None:
    """The scripted relay counts the new attachment's output from 0 (as ours did before a new attachment
    continued the attach's offsets); the CLI's offsets go on from where they were (else the CLI takes it
    for output it has written already, and the screen stays still)."""
    relay = TerminalRelay(ours=True)
    relay.shutdown = relay.echo = True
    shell, typed = await run_shell(tmp_path, relay)
    out = [m.params for m in shell.seen if m.method == api.SHELL_OUTPUT]
    ends = [len(b"".join(o["d"] for o in out[:i + 1])) for i in range(len(out))]
    assert [o["seq_end"] for o in out] == ends
    assert len(relay.attaches) == 2 and ends[-1] == len(relay.pty)  # every byte echoed reached the CLI
    assert [a["resume"]["stream"] for a in relay.attaches] == [STREAM] * len(relay.attaches)


async def test_the_reference_relay_never_gets_a_key_twice_and_every_loss_was_reported(tmp_path: Path) -> None:
    relay = TerminalRelay(ours=False)
    shell, typed = await run_shell(tmp_path, relay)
    got = re.findall(rb"\d{5}\r", bytes(relay.pty))
    assert b"".join(got) == bytes(relay.pty)  # whole keys only
    numbers = [int(k[:5]) for k in got]
    assert numbers == sorted(set(numbers))  # nothing duplicated, nothing reordered
    lost = len(typed) - len(relay.pty)
    reported = sum(int(m.group(1)) for n in shell.notices() if (m := re.match(r"(\d+) bytes .* in doubt", n)))
    assert 0 < lost <= reported
    assert relay.pings > 0


async def test_a_bare_shell_on_our_relay_is_not_said_to_die_on_a_reconnect(tmp_path: Path) -> None:
    relay = TerminalRelay(ours=True)
    relay.tmux = False  # our relay keeps a bare shell across a socket drop (its grace period)
    shell, typed = await run_shell(tmp_path, relay)
    assert bytes(relay.pty) == typed
    assert [n for n in shell.notices() if "tmux" in n] == ["the relay host has no tmux: this shell ends if the relay "
                                                           "restarts"]  # once, not again on the reattach


async def test_a_bare_shell_on_the_reference_is_said_to_die_on_a_reconnect(tmp_path: Path) -> None:
    relay = TerminalRelay(ours=False)
    relay.tmux = False
    shell, _ = await run_shell(tmp_path, relay)
    assert "the relay host has no tmux: this shell will not survive a reconnect" in shell.notices()


@pytest.mark.parametrize("typing", [False, True])
async def test_an_attached_shell_notices_a_black_hole_soon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           typing: bool) -> None:
    """Idle: within two shell pings (5 s each in production: 10 s; 0.5 s here). Typing: the input goes
    unacknowledged for 1 s, then a ping with a 1 s deadline. Every other way to notice is set far beyond
    the test's hang guard (the keepalive interval, the probe timeout, and the shell ping while typing), so
    the test hangs, and fails, unless the mechanism under test notices."""
    monkeypatch.setattr(link, "SHELL_PING", 3600.0 if typing else 0.5)
    relay = TerminalRelay(ours=False)
    agent = make_agent(agent_env(tmp_path), ping_interval=3600.0, probe_timeout=3600.0)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(DEADLINE):
            await relay.serve(nursery)
            proxy = Forwarder(relay.port)
            await proxy.serve(nursery)
            url = f"ws://127.0.0.1:{proxy.port}"
            pair(agent, url)
            await nursery.start(runner.run, agent)
            shell = await open_shell(agent, nursery)
            await shell.until(api.SHELL_ATTACHED)
            proxy.blackholed = True
            if typing:
                await shell.send([2, api.SHELL_INPUT, {"seq": 0, "d": b"x"}])
            while (await shell.until(api.SHELL_LINK)).params["state"] != "reconnecting":
                pass
            await detach(shell)
        nursery.cancel_scope.cancel()
    assert shell.response is not None and shell.response.result == {"reason": "detached", "code": None}


async def test_a_cli_reopening_after_the_agent_stopped_resumes_exactly_on_our_relay(tmp_path: Path) -> None:
    relay = TerminalRelay(ours=True)
    env = agent_env(tmp_path)
    typed = b"".join(keys())
    half = len(typed) // 2
    async with trio.open_nursery() as nursery:
        with trio.fail_after(DEADLINE):
            await relay.serve(nursery)
            relay.hold_acks_after = half - 100
            shells: list[IpcShell] = []
            for reopen in (False, True):
                agent = make_agent(env, backoff_base=0.05, backoff_cap=0.1)
                if not reopen:
                    pair(agent, relay.url)
                async with trio.open_nursery() as agent_nursery:
                    await agent_nursery.start(runner.run, agent)
                    acked, sent = (0, 0) if not reopen else (shells[0].acked, shells[0].sent)
                    shell = await open_shell(agent, agent_nursery, reopen=reopen, out_seq=0, in_base=acked, in_sent=sent,
                                             unacked=typed[acked:half] if reopen else b"")
                    shells.append(shell)
                    await shell.until(api.SHELL_ATTACHED)
                    start, end = (0, half) if not reopen else (half, len(typed))
                    for offset in range(start, end, 6):
                        await shell.send([2, api.SHELL_INPUT, {"seq": offset, "d": typed[offset:offset + 6]}])
                    if not reopen:
                        while shell.sent < half:  # all of it on the socket, part of it acknowledged
                            await shell.until(api.SHELL_ACK)
                        agent_nursery.cancel_scope.cancel()  # the agent stops: the call ends without a response
                        relay.hold_acks_after = None
                        continue
                    while shell.acked < len(typed):
                        await shell.until(api.SHELL_ACK)
                    await shell.send([2, api.SHELL_DETACH, {}])
                    await shell.done.wait()
                    agent_nursery.cancel_scope.cancel()
            for shell in shells:
                await shell.stream.aclose()
        nursery.cancel_scope.cancel()
    assert shells[0].response is None
    assert shells[1].response is not None and shells[1].response.result == {"reason": "detached", "code": None}
    assert bytes(relay.pty) == typed and relay.duplicates == 0
    assert {a["resume"]["stream"] for a in relay.attaches} == {STREAM} and len(relay.attaches) >= 2
    assert shells[0].acked < shells[0].sent  # the dead agent left input in flight: resent from resume.in_seq only


async def test_moving_up_to_a_better_route_detaches_the_reference_shell_first(tmp_path: Path) -> None:
    relay = TerminalRelay(ours=False)
    agent = make_agent(agent_env(tmp_path), upgrade_interval=0.2, upgrade_hysteresis=0.1)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(DEADLINE):
            await relay.serve(nursery)
            lan, public = Forwarder(relay.port), Forwarder(relay.port)
            await lan.serve(nursery)
            await public.serve(nursery)
            lan.refuse = True
            lan_url, public_url = f"ws://127.0.0.1:{lan.port}", f"ws://127.0.0.1:{public.port}"
            pair(agent, lan_url, route_candidates=[{"url": lan_url, "role": "lan", "priority": 0},
                                                   {"url": public_url, "role": "public", "priority": 2}])
            await nursery.start(runner.run, agent)
            shell = await open_shell(agent, nursery)
            first = await shell.until(api.SHELL_ATTACHED)
            lan.refuse = False  # the better route returns: the upgrade watch moves up
            second = await shell.until(api.SHELL_ATTACHED)
            await detach(shell)
        nursery.cancel_scope.cancel()
    assert first.params["route"] != second.params["route"]  # public, then LAN
    assert relay.detaches[0] == 1  # detached on the old socket before it closed: no stale tmux client
    assert len(relay.attaches) == 2


async def test_after_a_black_hole_the_shell_moves_to_the_next_route_without_waiting_out_the_silent_one(
        tmp_path: Path) -> None:
    """LAN (priority 0) goes silent while typing; Public answers. The silent LAN would hold the reconnect
    race for a whole probe timeout (set far beyond the hang guard here) before Public may win: the shell must
    reattach on Public after the suspicion and its ping alone."""
    relay = TerminalRelay(ours=True)
    agent = make_agent(agent_env(tmp_path), ping_interval=3600.0, probe_timeout=3600.0,
                       backoff_base=0.05, backoff_cap=0.1)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(DEADLINE):
            await relay.serve(nursery)
            lan = Forwarder(relay.port)
            await lan.serve(nursery)
            lan_url = f"ws://127.0.0.1:{lan.port}"
            pair(agent, lan_url, route_candidates=[{"url": lan_url, "role": "lan", "priority": 0},
                                                   {"url": relay.url, "role": "public", "priority": 2}])
            await nursery.start(runner.run, agent)
            shell = await open_shell(agent, nursery)
            first = await shell.until(api.SHELL_ATTACHED)
            assert first.params["route"] == "LAN", first.params
            lan.blackholed = True
            await shell.send([2, api.SHELL_INPUT, {"seq": 0, "d": b"x"}])
            again = await shell.until(api.SHELL_ATTACHED)
            assert again.params["route"] == "Public", again.params
            while shell.acked < 1:
                await shell.until(api.SHELL_ACK)
            await detach(shell)
        nursery.cancel_scope.cancel()
    assert bytes(relay.pty) == b"x"


async def test_a_shell_waiting_to_reattach_redials_soon_whatever_the_backoff(tmp_path: Path) -> None:
    """The relay goes away and refuses dials for a while (a restart): the backoff (base set far beyond the
    hang guard here) would keep the user waiting long after it is back; with a shell waiting, the link dials
    again within SHELL_RETRY, and the shell reattaches once the relay answers."""
    relay = TerminalRelay(ours=True)
    agent = make_agent(agent_env(tmp_path), backoff_base=3600.0, backoff_cap=3600.0)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(DEADLINE):
            await relay.serve(nursery)
            front = Forwarder(relay.port)
            await front.serve(nursery)
            url = f"ws://127.0.0.1:{front.port}"
            pair(agent, url)
            await nursery.start(runner.run, agent)
            shell = await open_shell(agent, nursery)
            await shell.until(api.SHELL_ATTACHED)
            front.refuse = True
            front.cut()
            await shell.send([2, api.SHELL_INPUT, {"seq": 0, "d": b"x"}])
            while front.refused < 2:  # the relay is away: dials fail, and the backoff grows
                await trio.sleep(0.05)
            front.refuse = False
            await shell.until(api.SHELL_ATTACHED)
            while shell.acked < 1:
                await shell.until(api.SHELL_ACK)
            await detach(shell)
        nursery.cancel_scope.cancel()
    assert bytes(relay.pty) == b"x"
