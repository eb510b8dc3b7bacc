"""Nothing a CLI or a relay sends can break a shell: any JSON value (lone surrogates included) in the
``shell.open`` params is a ShellOptions or a UsageError, and any relay message or CLI notify leaves a live
session working (its next key still goes out, once)."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from terminal_fakes import STREAM, FakePort, Shell, attached, inputs

from hermes_relay.agent.terminal.session import State
from hermes_relay.agent.terminal.wire import ShellOptions
from hermes_relay.core.errors import UsageError

TEXT = st.text(alphabet=st.characters(blacklist_categories=()), max_size=20) | st.sampled_from(
    ["\udce9", "\ud800x", "main", "a.b", ""])
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT | st.binary(max_size=8),
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(TEXT, kids, max_size=4), max_leaves=20)
KEYS = st.sampled_from(["remote", "session", "cols", "rows", "stream", "out_seq", "in_base", "in_sent", "unacked",
                        "raw", "new", "conversation", "exec", "reopen"]) | TEXT
TYPES = st.sampled_from(["terminal.attached", "terminal.output", "terminal.ack", "terminal.detached",
                         "terminal.error", "system.error"]) | TEXT


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(KEYS, JSON, max_size=8))
@example({"exec": "\ud800x"})
@example({"conversation": "caf\udce9", "raw": False})
@example({"session": "\ud800", "cols": True, "unacked": "text"})
def test_any_open_params_are_options_or_a_usage_error(params: dict[str, Any]) -> None:
    try:
        options = ShellOptions.parse({"stream": STREAM, **params})
    except UsageError:
        return
    options.launch()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(TYPES, st.dictionaries(TEXT, JSON, max_size=4) | st.fixed_dictionaries(
    {"session_name": st.just("main")}, optional={"data": JSON, "data_b64": JSON, "in_seq": JSON, "seq_end": JSON,
                                                 "reason": JSON, "resume": JSON, "message": JSON})), max_size=6),
       st.lists(st.tuples(JSON, JSON), max_size=3))
def test_no_relay_message_or_cli_notify_breaks_a_live_session(messages: list[tuple[str, dict[str, Any]]],
                                                              notifies: list[tuple[Any, Any]]) -> None:
    async def main() -> None:
        shell = Shell()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(shell.run)
            port = FakePort()
            shell.session.connected(port)
            await port.next()
            attached(port, shell)
            for seq, data in notifies:
                shell.session.typed(seq, data)
                shell.session.resize(seq, data)
            for typ, payload in messages:
                shell.session.on_message(port, typ, payload)
            await trio.sleep(0.01)
            if shell.session.state is State.LIVE:
                typed = shell.session.ledger.typed
                shell.session.typed(typed, b"<<ok>>")
                await trio.sleep(0.01)
                sent = b"".join(p["data"].encode() for p in inputs(port) if "data" in p)
                if shell.session._suspicious:  # unacknowledged input: new keys wait (never lost)
                    assert shell.session.ledger.typed == typed + 6
                else:
                    assert sent.count(b"<<ok>>") == 1
            shell.session.want("detach")
            nursery.cancel_scope.cancel()
        ledger = shell.session.ledger
        assert ledger.acked <= ledger.sent <= ledger.typed

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
