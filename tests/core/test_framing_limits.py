"""Decoding is bounded: a hostile client cannot make the agent build ~160 times its frame in objects."""

from __future__ import annotations

import tracemalloc

import msgpack
import pytest

from hermes_relay.core import framing
from hermes_relay.core.errors import RemoteProtocolError


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _hostile_bodies(size: int) -> dict[str, bytes]:
    """msgpack bodies of about ``size`` bytes that expand the most when decoded."""
    n = size // 2
    return {
        "empty maps": msgpack.packb([{}] * (size - 5)),
        "empty arrays": msgpack.packb([[]] * (size - 5)),
        "one-entry maps": msgpack.packb([{"": 0}] * (size // 3 - 2)),
        "short strings": msgpack.packb(["a"] * (n - 3)),
        "nested arrays": b"\x91" * (size - 1) + b"\xc0",
    }


@pytest.mark.parametrize("kind", sorted(_hostile_bodies(64)))
def test_a_request_frame_decodes_into_at_most_about_a_megabyte(kind: str) -> None:
    body = _hostile_bodies(framing.MAX_REQUEST_FRAME)[kind]
    assert len(body) <= framing.MAX_REQUEST_FRAME

    def decode() -> None:
        dec = framing.FrameDecoder(**framing.REQUEST_LIMITS)
        dec.feed(len(body).to_bytes(4, "big") + body)
        try:
            list(dec)
        except RemoteProtocolError:
            pass

    assert _peak_bytes(decode) < 1_500_000, kind


def test_the_container_cap_counts_maps_and_arrays_at_every_depth() -> None:
    limit = framing.MAX_REQUEST_CONTAINERS
    ok = [{"a": [1]}] * ((limit - 1) // 2)  # the outer list counts too
    assert framing.unpack(framing.pack(ok), max_containers=limit) == ok
    with pytest.raises(RemoteProtocolError, match=f"more than {limit} maps and arrays"):
        framing.unpack(framing.pack(ok + [[]] * 2), max_containers=limit)


def test_a_decoder_with_a_poisoned_frame_stays_poisoned() -> None:
    dec = framing.FrameDecoder(max_frame=1024, max_containers=3)
    body = framing.pack([[], [], []])
    dec.feed(len(body).to_bytes(4, "big") + body)
    with pytest.raises(RemoteProtocolError):
        list(dec)
    with pytest.raises(RemoteProtocolError):
        dec.feed(b"\x00")


def test_a_status_reply_for_many_relays_fits_the_reply_limits() -> None:
    relay = {"url": "ws://h:1", "route": {"url": "ws://h:1", "role": "lan", "label": "LAN", "priority": 0},
             "routes": [{"url": "ws://h:1", "role": "lan", "label": "LAN", "priority": 0}] * 3,
             "last_error": {"code": "x", "message": "y", "data": {"hint": "z"}}}
    reply = {"relays": [relay] * 500, "paired": [{"record": {"grants": {"a": 1}}, "live": relay}] * 500}
    assert framing.unpack(framing.pack(reply)) == reply
