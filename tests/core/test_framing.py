"""IPC framing: length prefix + msgpack body, fed whole, byte by byte and with trailing bytes."""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hermes_relay.core import framing
from hermes_relay.core.errors import FrameTooLargeError, HermesError, RemoteProtocolError
from hermes_relay.core.framing import FrameDecoder, encode_frame


def _frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def tr(obj: Any) -> None:
    """Decode ``encode_frame(obj)`` three ways (h11's ``tr()``): whole, one byte at a time, and with
    trailing bytes, which must stay buffered and complete into the next frame."""
    data = encode_frame(obj)

    whole = FrameDecoder()
    whole.feed(data)
    assert list(whole) == [obj]
    assert whole.pending == 0

    bytewise = FrameDecoder()
    for i in range(len(data) - 1):
        bytewise.feed(data[i : i + 1])
        assert list(bytewise) == [], f"emitted early at byte {i} of {len(data)}"
        assert bytewise.pending == i + 1
    bytewise.feed(data[-1:])
    assert list(bytewise) == [obj]
    assert bytewise.pending == 0

    follow = encode_frame(["next", 1])
    trailing = FrameDecoder()
    trailing.feed(data + follow[:3])
    assert list(trailing) == [obj]
    assert trailing.pending == 3
    trailing.feed(follow[3:])
    assert list(trailing) == [["next", 1]]
    assert trailing.pending == 0


@pytest.mark.parametrize(
    "obj",
    [
        None,
        0,
        -1,
        2**64 - 1,
        1.5,
        "",
        "héllo ✓",
        b"\x00\xff",
        [],
        {},
        [0, 7, "status", {"verbose": True}],
        [1, 7, None, {"relays": [{"url": "ws://192.168.1.20:8767", "state": "connected"}]}],
        [2, "pair.progress", {"step": "probing", "n": 2}],
        {"nested": {"deep": [1, [2, [3, {"k": b"v"}]]]}},
        "x" * 70_000,
    ],
)
def test_frames_round_trip_whole_bytewise_and_with_trailing_bytes(obj: Any) -> None:
    tr(obj)


def test_length_prefix_counts_body_bytes_only() -> None:
    data = encode_frame("abc")
    assert data == b"\x00\x00\x00\x04" + b"\xa3abc"


def test_two_frames_in_one_feed_come_out_in_order() -> None:
    dec = FrameDecoder()
    dec.feed(encode_frame(1) + encode_frame({"two": 2}) + encode_frame([3]))
    assert list(dec) == [1, {"two": 2}, [3]]
    assert dec.pending == 0


def test_iterating_with_nothing_buffered_yields_nothing() -> None:
    dec = FrameDecoder()
    assert list(dec) == []
    dec.feed(b"")
    assert list(dec) == []


def test_frame_exactly_at_the_limit_is_accepted() -> None:
    body = msgpack.packb(b"x" * 10, use_bin_type=True)
    dec = FrameDecoder(max_frame=len(body))
    dec.feed(_frame(body))
    assert list(dec) == [b"x" * 10]


def test_oversize_prefix_is_rejected_before_any_body_arrives() -> None:
    dec = FrameDecoder(max_frame=100)
    header = struct.pack(">I", 101)
    dec.feed(header[:3])
    with pytest.raises(FrameTooLargeError) as info:
        dec.feed(header[3:])
    assert (info.value.size, info.value.limit) == (101, 100)
    assert info.value.close_code_hint == 1009
    assert dec.pending == 4


def test_huge_prefix_against_the_default_limit_is_rejected_at_once() -> None:
    dec = FrameDecoder()
    with pytest.raises(FrameTooLargeError) as info:
        dec.feed(b"\xff\xff\xff\xff")
    assert info.value.size == 2**32 - 1
    assert info.value.limit == framing.MAX_FRAME == 1 << 20


def test_oversize_prefix_after_a_good_frame_is_rejected_after_that_frame() -> None:
    dec = FrameDecoder(max_frame=100)
    dec.feed(encode_frame("ok") + struct.pack(">I", 5000))
    frames = iter(dec)
    assert next(frames) == "ok"
    with pytest.raises(FrameTooLargeError):
        next(frames)


def test_encode_frame_refuses_a_body_over_the_limit() -> None:
    with pytest.raises(FrameTooLargeError) as info:
        encode_frame("x" * 200, max_frame=100)
    assert info.value.size == len(msgpack.packb("x" * 200))


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"\xc1", id="never-used-byte"),
        pytest.param(b"\x92\x01", id="truncated-array"),
        pytest.param(msgpack.packb(1) + msgpack.packb(2), id="two-objects-in-one-frame"),
        pytest.param(msgpack.packb({1: "a"}), id="int-map-key"),
        pytest.param(b"\xa2\xff\xfe", id="invalid-utf8-str"),
        pytest.param(b"\x91" * 5000 + b"\xc0", id="nested-too-deep"),
        pytest.param(b"\xc7\x03\xff\x00\x00\x00", id="bad-timestamp-ext"),
        pytest.param(b"", id="empty-body"),
    ],
)
def test_garbage_body_raises_remote_protocol_error(body: bytes) -> None:
    dec = FrameDecoder()
    dec.feed(_frame(body))
    with pytest.raises(RemoteProtocolError, match="undecodable msgpack frame"):
        list(dec)


def test_decoder_is_poisoned_after_an_error() -> None:
    dec = FrameDecoder()
    dec.feed(_frame(b"\xc1"))
    with pytest.raises(RemoteProtocolError) as first:
        list(dec)
    with pytest.raises(RemoteProtocolError) as on_feed:
        dec.feed(encode_frame("fine"))
    assert on_feed.value is first.value
    with pytest.raises(RemoteProtocolError) as on_iter:
        list(dec)
    assert on_iter.value is first.value


def test_decoder_is_poisoned_after_an_oversize_prefix() -> None:
    dec = FrameDecoder(max_frame=8)
    with pytest.raises(FrameTooLargeError) as first:
        dec.feed(struct.pack(">I", 9))
    with pytest.raises(FrameTooLargeError) as again:
        dec.feed(b"")
    assert again.value is first.value
    with pytest.raises(FrameTooLargeError):
        list(dec)


def test_unpack_is_strict_about_string_keys_and_returns_str_not_bytes() -> None:
    assert framing.unpack(framing.pack({"a": "b"})) == {"a": "b"}
    with pytest.raises(RemoteProtocolError):
        framing.unpack(framing.pack({2: "b"}))


def test_unpack_enforces_the_size_limit_on_containers() -> None:
    body = framing.pack(list(range(50)))
    assert framing.unpack(body, max_size=50) == list(range(50))
    with pytest.raises(RemoteProtocolError):
        framing.unpack(body, max_size=49)


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, database=None)
@given(objs=st.lists(_values, min_size=1, max_size=4), cuts=st.lists(st.integers(0, 10_000), max_size=8))
def test_property_frames_survive_any_chunking(objs: list[Any], cuts: list[int]) -> None:
    data = b"".join(encode_frame(o) for o in objs)
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    dec = FrameDecoder()
    out: list[Any] = []
    for start, end in zip(points, points[1:], strict=False):
        dec.feed(data[start:end])
        out.extend(dec)
    assert out == objs
    assert dec.pending == 0


def _framed_garbage() -> st.SearchStrategy[bytes]:
    # Random bodies behind correct prefixes reach msgpack; raw random bytes mostly hit the size check.
    return st.lists(st.binary(max_size=48), min_size=1, max_size=4).map(lambda bodies: b"".join(map(_frame, bodies)))


@settings(max_examples=300, deadline=None, database=None)
@given(
    data=st.one_of(st.binary(max_size=200), _framed_garbage()),
    chunk=st.integers(1, 16),
    max_frame=st.sampled_from([16, 64, framing.MAX_FRAME]),
)
def test_property_random_bytes_raise_only_hermes_errors(data: bytes, chunk: int, max_frame: int) -> None:
    dec = FrameDecoder(max_frame=max_frame)
    try:
        for i in range(0, len(data), chunk):
            dec.feed(data[i : i + chunk])
            for _ in dec:
                pass
    except HermesError as exc:
        assert isinstance(exc, RemoteProtocolError)
        with pytest.raises(RemoteProtocolError):
            dec.feed(b"")
