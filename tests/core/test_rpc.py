"""IPC message shapes: msgpack-RPC arrays parsed into typed messages, bad shapes refused."""

from __future__ import annotations

from typing import Any

import pytest

from hermes_relay.core import framing, rpc
from hermes_relay.core.errors import RemoteProtocolError
from hermes_relay.core.rpc import Notify, Request, Response, parse_message


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        ([0, 1, "hello", {"api_version": 1}], Request(1, "hello", {"api_version": 1})),
        ([0, 2, "status", {}], Request(2, "status", {})),
        ([0, 3, "devices.list", None], Request(3, "devices.list", {})),
        ([1, 1, None, {"api_version": 1, "agent_version": "0.1.0"}], Response(1, None, {"api_version": 1, "agent_version": "0.1.0"})),
        ([1, 9, {"code": "not_paired", "message": "m", "data": {}}, None], Response(9, {"code": "not_paired", "message": "m", "data": {}}, None)),
        ([1, 4, None, [1, "two"]], Response(4, None, [1, "two"])),
        ([2, "pair.progress", {"step": "probing"}], Notify("pair.progress", {"step": "probing"})),
        ([2, "watch", {}], Notify("watch", {})),
    ],
)
def test_good_shapes_parse_to_typed_messages(wire: list[Any], expected: rpc.Message) -> None:
    assert parse_message(wire) == expected


@pytest.mark.parametrize(
    "msg",
    [
        Request(7, "pair.start", {"code": "F3W7EY", "remote": "ws://h:8767"}),
        Response(7, None, {"ok": True}),
        Response(8, {"code": "no_route", "message": "x", "data": {"attempts": []}}, None),
        Notify("watch", {"state": "connected"}),
    ],
)
def test_messages_round_trip_through_a_frame(msg: rpc.Message) -> None:
    dec = framing.FrameDecoder()
    dec.feed(framing.encode_frame(msg.to_wire()))
    (obj,) = list(dec)
    assert parse_message(obj) == msg


def test_kind_constants_match_msgpack_rpc() -> None:
    assert (rpc.REQUEST, rpc.RESPONSE, rpc.NOTIFY) == (0, 1, 2)
    assert Request(1, "m", {}).to_wire() == [0, 1, "m", {}]
    assert Response(1, None, 5).to_wire() == [1, 1, None, 5]
    assert Notify("n", {}).to_wire() == [2, "n", {}]


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        pytest.param({"method": "status"}, "must be a non-empty array, got dict", id="map"),
        pytest.param("status", "must be a non-empty array, got str", id="string"),
        pytest.param(None, "must be a non-empty array, got NoneType", id="nil"),
        pytest.param((0, 1, "status", {}), "must be a non-empty array, got tuple", id="tuple"),
        pytest.param([], "must be a non-empty array, got list", id="empty"),
        pytest.param([3, 1, "x", {}], "unknown IPC message kind 3 with 4 elements", id="kind-3"),
        pytest.param(["0", 1, "x", {}], "unknown IPC message kind '0' with 4 elements", id="kind-str"),
        pytest.param([True, 1, None, None], "unknown IPC message kind True with 4 elements", id="kind-bool"),
        pytest.param([1.0, 1, None, None], "unknown IPC message kind 1.0 with 4 elements", id="kind-float"),
        pytest.param([0, 1, "x"], "unknown IPC message kind 0 with 3 elements", id="short-request"),
        pytest.param([1, 1, None], "unknown IPC message kind 1 with 3 elements", id="short-response"),
        pytest.param([2, "x", {}, 1], "unknown IPC message kind 2 with 4 elements", id="long-notify"),
        pytest.param([0, "1", "x", {}], "request needs an integer msgid and a string method", id="str-msgid"),
        pytest.param([0, True, "x", {}], "request needs an integer msgid and a string method", id="bool-msgid"),
        pytest.param([0, 1, b"x", {}], "request needs an integer msgid and a string method", id="bytes-method"),
        pytest.param([0, 1, "x", [1]], "request params must be a map, got list", id="list-params"),
        pytest.param([1, None, None, 1], "response needs an integer msgid", id="nil-msgid"),
        pytest.param([1, False, None, 1], "response needs an integer msgid", id="bool-response-msgid"),
        pytest.param([1, 1, "boom", None], "response error must be a map or nil", id="str-error"),
        pytest.param([2, 5, {}], "notify needs a string method and a map of params", id="int-method"),
        pytest.param([2, "watch", None], "notify needs a string method and a map of params", id="nil-notify-params"),
    ],
)
def test_bad_shapes_raise_remote_protocol_error(wire: Any, message: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_message(wire)
    assert message in info.value.message
