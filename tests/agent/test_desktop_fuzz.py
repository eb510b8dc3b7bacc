"""Nothing a relay sends can stop the desktop service (issue #18 item 1): arbitrary JSON values, lone
surrogates and deep nesting through the channel, each run followed by a normal call that succeeds."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_desktop_calls import Harness

from hermes_relay.core import desktop, policy
from hermes_relay.core.desktop import ToolContext, ToolSpec

TEXT = st.text(alphabet=st.characters(blacklist_categories=()), max_size=20) | st.sampled_from(
    ["\udce9", "\ud800x", "caf\udce9.txt", "\x1b[2K\u202e", ""])
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(TEXT, kids, max_size=4), max_leaves=20)
TOOLS = st.sampled_from(["desktop_terminal", "desktop_write_file", "desktop_echo", "nope", ""]) | TEXT
MODES = st.sampled_from([policy.TRUSTED, policy.ASK_EVERY_TIME, policy.STRUCTURED])


def _deep(depth: int) -> Any:
    value: Any = "\udce9"
    for _ in range(depth):
        value = [value]
    return value


def _run(mode: str, commands: list[Any]) -> None:
    async def echo(args: dict[str, Any], ctx: ToolContext) -> Any:
        return {"stdout": args.get("text"), "echo": args}

    async def main() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            h = Harness(Path(tmp), mode)
            h.service.table = desktop.ToolTable([*(h.service.table.get(n) for n in h.service.table.names()),
                                                 ToolSpec("desktop_echo", desktop.COMMANDS, echo)])
            async with trio.open_nursery() as nursery:
                nursery.start_soon(h.service.serve_link, h.port, h.inbound)
                await h.port.next("desktop.status")
                for payload in commands:
                    await h.inbound_send.send({"channel": "desktop", "type": "desktop.command", "id": "x",
                                               "payload": payload})
                await trio.sleep(60)  # every call answered or expired
                h.service.approvals.pending.clear()
                policy.set_mode(h.service.policy_path, "ws://relay.test:8767", policy.TRUSTED)
                await trio.sleep(2)
                await h.command("after", "desktop_terminal", {"command": "echo fine"})
                while True:
                    answer = await h.response()
                    if answer["request_id"] == "after":
                        break
                assert answer["ok"] is True, answer
                ran = [m["payload"]["request_id"] for m in h.port.sent
                       if m["type"] == "desktop.response" and m["payload"]["ok"]]
                assert len(ran) == len(set(ran))  # a repeated request id never runs twice
                nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(MODES, st.lists(st.fixed_dictionaries(
    {"request_id": TEXT, "tool": TOOLS, "args": JSON | st.dictionaries(TEXT, JSON, max_size=5)},
    optional={"budget_ms": JSON | st.integers(-10, 100_000)}) | JSON, max_size=6))
def test_arbitrary_commands_never_stop_the_service(mode: str, commands: list[Any]) -> None:
    _run(mode, commands)


def test_deep_nesting_and_lone_surrogates_never_stop_the_service() -> None:
    deep = _deep(50_000)
    _run(policy.TRUSTED, [
        {"request_id": "deep-1", "tool": "desktop_echo", "args": {"text": deep}},
        {"request_id": "deep-2", "tool": "desktop_terminal", "args": {"command": deep, "env": {"X": deep}}},
        {"request_id": "deep-3", "tool": "nope", "args": {"a": deep}},
        {"request_id": "\udce9", "tool": "desktop_echo", "args": {"text": "caf\udce9"}, "budget_ms": deep},
    ])
    _run(policy.ASK_EVERY_TIME, [{"request_id": "ask-deep", "tool": "desktop_terminal",
                                  "args": {"command": "x", "env": {"\udce9": deep}, "stdin": "\ud800"}}])
