"""The tcp-mode IPC admission check under the autojump clock: a client has exactly ``nonce_timeout``
seconds to prove it read the endpoint file."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from hermes_relay.agent.ipc_endpoint import IpcListener

NONCE = bytes(range(32))


async def admit_after(chunks: list[tuple[float, bytes]], timeout: float) -> tuple[bool, float]:
    client, server = trio.testing.memory_stream_pair()
    listener = IpcListener(None, "unused", NONCE, nonce_timeout=timeout)  # type: ignore[arg-type]
    started = trio.current_time()
    result: list[Any] = []
    async with trio.open_nursery() as nursery:
        async def send() -> None:
            for at, data in chunks:
                await trio.sleep_until(started + at)
                await client.send_all(data)

        nursery.start_soon(send)
        result.append(await listener.admit(server))  # type: ignore[arg-type]
        nursery.cancel_scope.cancel()
    return result[0], trio.current_time() - started


async def test_the_nonce_in_pieces_within_the_timeout_is_admitted(autojump_clock: trio.abc.Clock) -> None:
    assert await admit_after([(0.5, NONCE[:10]), (2.9, NONCE[10:])], timeout=3.0) == (True, pytest.approx(2.9))


async def test_a_silent_client_is_refused_when_the_timeout_passes(autojump_clock: trio.abc.Clock) -> None:
    assert await admit_after([], timeout=3.0) == (False, pytest.approx(3.0))
    assert await admit_after([(3.5, NONCE)], timeout=3.0) == (False, pytest.approx(3.0))


async def test_a_wrong_nonce_is_refused_at_once(autojump_clock: trio.abc.Clock) -> None:
    assert await admit_after([(0.1, b"\x00" * 32)], timeout=3.0) == (False, pytest.approx(0.1))
