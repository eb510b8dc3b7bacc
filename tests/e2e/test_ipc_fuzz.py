"""Hypothesis against the real agent's socket: random bytes, and well-framed nonsense after a valid
hello. Whatever arrives, that client is answered or dropped and the agent keeps serving everyone."""

from __future__ import annotations

import socket

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hermes_relay.core import framing, paths, rpc

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=20,
)
_messages = st.one_of(
    _values,
    st.tuples(st.sampled_from([0, 1, 2, 3, -1]), st.integers(-5, 2**40), st.text(max_size=20), _values).map(list),
    st.tuples(st.just(0), st.integers(0, 100), st.sampled_from(["status", "route", "watch", "devices.list",
                                                                 "pin.accept", "pair.start", "devices.revoke"]),
              st.dictionaries(st.sampled_from(["url", "code", "prefix", "invite", "ttl_seconds"]), _values,
                              max_size=3)).map(list),
)


def _exchange(path: str, data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
        return out


def test_random_bytes_and_nonsense_frames_never_take_the_agent_down(agent_env) -> None:
    with agent_env.client() as c:
        pid = c.hello["pid"]
    path = paths.socket_path(agent_env.env)
    hello = framing.encode_frame(rpc.Request(1, "hello", {"api_version": rpc.API_VERSION}).to_wire())

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(st.binary(max_size=400) | st.lists(_messages, min_size=1, max_size=4).map(
        lambda msgs: hello + b"".join(framing.encode_frame(m) for m in msgs)))
    def one_client(data: bytes) -> None:
        reply = _exchange(path, data)
        decoder = framing.FrameDecoder()
        decoder.feed(reply)
        for frame in decoder:  # whatever the agent said is well-formed msgpack-RPC
            rpc.parse_message(frame)

    one_client()
    with agent_env.client() as c:
        assert c.hello["pid"] == pid
        assert c.call("status", {})["agent"]["pid"] == pid
    assert msgpack  # the frames above are msgpack: keep the dependency explicit
