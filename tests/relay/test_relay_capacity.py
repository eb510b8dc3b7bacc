"""Connection caps in every phase (idle connections that never send a request included), the descriptor
limit raised at start, and one relay per state directory."""

from __future__ import annotations

import pytest
import trio
from helpers import http_json, open_stream, pair, parse_response, raw_http, read_to_eof, receive_json, send_json

from hermes_relay.core.errors import HermesError
from hermes_relay.relay import capacity
from hermes_relay.relay.server import BUSY_BODY

DEADLINE = 5.0
HEALTH = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


async def health_status(relay) -> int:
    """GET /health on a new connection; a refusal may reset the connection before the 503 is read."""
    try:
        status, _, _ = parse_response(await raw_http(relay.http, HEALTH))
    except trio.BrokenResourceError:
        return 503
    return status


async def until_health(relay, wanted: int) -> None:
    with trio.fail_after(DEADLINE):
        while await health_status(relay) != wanted:
            await trio.sleep(0.01)


async def refused_body(relay, last: trio.abc.Stream) -> bytes:
    """``last`` took the gate's last place, or did not yet: connect once more and return the body of the
    503 that one of the two gets. The relay counts each connection in its own task, in no set order,
    so which of the two is refused is not known; that exactly one is, is."""
    refused: list[bytes] = []
    async with await open_stream(relay.url) as probe:
        with trio.fail_after(DEADLINE):
            async with trio.open_nursery() as nursery:
                async def answer(stream: trio.abc.Stream) -> None:
                    status, _, body = parse_response(await read_to_eof(stream))
                    if status == 503:
                        refused.append(body)
                        nursery.cancel_scope.cancel()  # the other one was let in: it waits for a request

                for stream in (last, probe):
                    nursery.start_soon(answer, stream)
    return refused[0]


async def test_idle_connections_that_never_send_a_request_are_capped_and_authenticated_clients_keep_working(
        relay_factory):
    relay = await relay_factory(max_pending_per_ip=3)
    ws, _ = await pair(relay.url, relay.http)
    idle = [await open_stream(relay.url) for _ in range(2)]
    try:
        with trio.fail_after(DEADLINE):
            while (await http_json("GET", f"{relay.http}/health"))[1]["pending"] != 2:
                await trio.sleep(0.01)
        idle.append(await open_stream(relay.url))
        assert await refused_body(relay, idle[-1]) == BUSY_BODY.encode()

        await send_json(ws, "system", "ping", {"ts": 1})  # the authenticated client is not affected
        assert (await receive_json(ws))["type"] == "pong"

        await idle.pop().aclose()
        await until_health(relay, 200)
    finally:
        for stream in idle:
            await stream.aclose()


def test_gate_counts_per_address_and_in_all_and_trusted_proxies_only_in_all():
    gate = capacity.Gate(total=3, per_key=2)
    assert gate.enter("a") and gate.enter("a")
    assert not gate.enter("a")
    assert gate.enter("proxy", per_key=False)
    assert not gate.enter("b")  # the total is reached
    gate.leave("a")
    assert gate.enter("b")
    assert gate.by_key == {"a": 1, "proxy": 1, "b": 1} and gate.count == 3


@pytest.mark.parametrize("configured,nofile,expected", [(512, 1024, 256), (512, None, 512), (3, 1024, 3),
                                                        (512, 20, 8), (512, 1 << 20, 512)])
def test_each_unauthenticated_phase_gets_at_most_a_quarter_of_the_descriptors(configured, nofile, expected):
    assert capacity.phase_cap(configured, nofile) == expected


@pytest.mark.skipif(capacity.fd_limit() is None, reason="no RLIMIT_NOFILE here")
def test_the_descriptor_limit_is_raised_to_the_hard_limit():
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("unlimited hard limit: the fallback cap depends on the kernel")
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(64, hard), hard))  # start from a low soft limit
        assert capacity.raise_fd_limit() == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_a_second_relay_on_the_same_state_directory_refuses_to_start(relay_factory, tmp_path):
    state = tmp_path / "state"
    first = await relay_factory(state_dir=state)
    with pytest.raises(HermesError) as info:
        await relay_factory(state_dir=state)
    assert "another relay is already using the state directory" in info.value.message
    assert str(state) in info.value.message and "--state-dir" in (info.value.hint or "")
    await first.stop()
    second = await relay_factory(state_dir=state)  # the lock went with the first relay
    status, _ = await http_json("GET", f"{second.http}/health")
    assert status == 200


async def test_binding_an_address_this_machine_does_not_have_says_so(relay_factory):
    with pytest.raises(HermesError) as info:
        await relay_factory(host="192.0.2.77")  # TEST-NET-1: never a local address
    assert "192.0.2.77 is not an address of this machine" in info.value.message
    assert "--host 0.0.0.0" in (info.value.hint or "")
    assert "another relay" not in info.value.message + (info.value.hint or "")
