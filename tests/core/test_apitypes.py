"""``apitypes.check`` catches the drift it exists for: renamed, missing, extra and retyped fields."""

from __future__ import annotations

from hermes_relay.core import apitypes

ROUTE = {"url": "ws://h:1", "role": "lan", "label": "LAN", "priority": 0}
STATE = {"url": "ws://h:1", "state": "connected", "route": ROUTE, "since": 1.0, "latency_ms": None, "attempts": 0,
         "last_error": None, "next_retry_at": None, "routes": [ROUTE], "server_version": "1"}


def test_a_conforming_value_has_no_problems() -> None:
    assert apitypes.check(STATE, apitypes.RelayState) == []
    assert apitypes.check({**STATE, "token_prefix": None}, apitypes.RelayState) == []  # optional key
    assert apitypes.check({"since": 5}, apitypes.RelayState, partial=True) == []  # an int is a float


def test_renamed_missing_and_retyped_fields_are_named() -> None:
    renamed = {**{k: v for k, v in STATE.items() if k != "latency_ms"}, "latency": 3}
    assert apitypes.check(renamed, apitypes.RelayState) == [
        "reply: unknown key 'latency' for RelayState", "reply: missing key 'latency_ms' of RelayState"]
    assert apitypes.check({"routes": [{**ROUTE, "priority": "0"}]}, apitypes.RelayState, partial=True) == [
        "reply.routes[0].priority: expected int, got str '0'"]
    assert apitypes.check({"attempts": True}, apitypes.RelayState, partial=True) == [
        "reply.attempts: expected int, got bool True"]
    assert apitypes.check({"kind": "shout", "line": "x"}, apitypes.PairProgress) == [
        "reply.kind: 'shout' is not one of ('info', 'probe', 'pick', 'warn')"]


def test_every_request_reply_method_in_core_api_has_types() -> None:
    from hermes_relay.core import api

    methods = {api.HELLO, api.STATUS, api.PAIR_START, api.PAIR_CHECK, api.DEVICES_LIST, api.DEVICES_REVOKE, api.DEVICES_EXTEND,
               api.ROUTE, api.PIN_ACCEPT, api.RELOAD, api.AGENT_STOP, api.FORGET, api.RESTORE, api.APPROVALS_LIST,
               api.APPROVALS_DECIDE, api.ACCESS_CHANGING, api.DOWN_SET, api.UP_SET, api.DOCTOR, api.WATCH,
               api.SHELL_OPEN, api.TERMINAL_LIST, api.TERMINAL_KILL}
    assert set(apitypes.METHODS) == methods  # watch only streams: its reply type is None
    assert set(apitypes.NOTIFIES) == {api.PAIR_PROGRESS, api.STATE, api.APPROVAL, api.SHELL_ATTACHED, api.SHELL_OUTPUT,
                                      api.SHELL_ACK, api.SHELL_LINK, api.SHELL_NOTICE}
    assert set(apitypes.CLIENT_NOTIFIES) == {api.SHELL_INPUT, api.SHELL_RESIZE, api.SHELL_DETACH, api.SHELL_KILL,
                                             api.SHELL_REDRAW}

