"""DesktopRouter on trio's autojump clock: per-class timeouts at their exact times, the recent-call ring.

The sockets here are recorders of what the router sends (the router needs only ``send_message``);
everything that needs a real socket is in test_relay_desktop.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from hermes_relay.core.envelope import Envelope
from hermes_relay.relay.desktop import HEALTH_RECENT, DesktopRouter, preview, redact, response_timeout


class RecordingSocket:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.arrived = trio.Event()

    async def send_message(self, message: str | bytes) -> None:
        self.sent.append(json.loads(message))
        self.arrived.set()


def attach(router: DesktopRouter, device_id: str = "dev-1", tools: list[str] | None = None) -> RecordingSocket:
    ws = RecordingSocket()
    router.authed(ws, device_id=device_id, name="WORKPC")
    status = {"advertised_tools": tools} if tools is not None else {}  # None: an older client, any tool
    router.on_envelope(ws, Envelope("desktop", "desktop.status", status))
    return ws


@pytest.mark.parametrize("tool, seconds", [
    ("desktop_terminal", 30.0),
    ("desktop_usb_run", 30.0),  # as the reference: USB calls get the ordinary 30 s
    ("desktop_computer_screenshot", 180.0),
    ("desktop_adb_shell", 300.0),
])
async def test_a_silent_client_times_out_at_its_tool_class_deadline(autojump_clock, tool, seconds):
    router = DesktopRouter()
    attach(router, tools=[tool])
    start = trio.current_time()
    status, body = await router.call(tool, {})
    assert trio.current_time() - start == pytest.approx(seconds)
    assert (status, body) == (504, {"ok": False, "error": f"Desktop client did not respond within {seconds:g}s (timeout)"})
    assert response_timeout(tool) == seconds
    assert router.health()["pending_commands"] == 0


async def test_an_answer_just_before_the_deadline_wins(autojump_clock):
    router = DesktopRouter()
    ws = attach(router)
    result: list[tuple[int, dict[str, Any]]] = []

    async def run() -> None:
        result.append(await router.call("desktop_terminal", {"command": "true"}))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await ws.arrived.wait()
        await trio.sleep(29.9)
        request_id = ws.sent[0]["payload"]["request_id"]
        router.on_envelope(ws, Envelope("desktop", "response", {"request_id": request_id, "ok": True, "result": 1}))
    [(status, body)] = result
    assert (status, body["result"]) == (200, 1)


async def test_health_shows_the_last_20_calls_oldest_first(autojump_clock):
    router = DesktopRouter(timeout=1.0)
    attach(router)
    for i in range(HEALTH_RECENT + 5):
        await router.call("desktop_terminal", {"command": f"echo {i}"})
    recent = router.health()["recent_commands"]
    assert [r["args"]["command"] for r in recent] == [f"echo {i}" for i in range(5, HEALTH_RECENT + 5)]
    assert {r["decision"] for r in recent} == {"timeout"}
    assert all(r["duration_ms"] == 1000 for r in recent)


def test_redaction_matches_secret_looking_keys_at_any_depth_and_leaves_the_input_alone():
    args = {"AUTH_HEADER": "a", "apiKey": "b", "nested": [{"refresh_token": "c", "path": "/x"}], "Secret": None}
    assert redact(args) == {"AUTH_HEADER": "[redacted]", "apiKey": "[redacted]",
                            "nested": [{"refresh_token": "[redacted]", "path": "/x"}], "Secret": "[redacted]"}
    assert args["apiKey"] == "b"


def test_previews_are_redacted_short_and_shallow():
    deep: Any = "bottom"
    for _ in range(6):
        deep = [deep]
    got = preview({"token": "t" * 1000, "list": list(range(50)), "deep": deep, "text": "a" * 250})
    assert got["token"] == "[redacted]"
    assert got["list"] == list(range(20))
    assert got["deep"] == [[["..."]]]  # four levels below the arguments object
    assert got["text"] == "a" * 200 + "... (250 chars)"


def test_unknown_identity_words_are_no_device_id():
    router = DesktopRouter()
    a, b = RecordingSocket(), RecordingSocket()
    for ws in (a, b):
        router.authed(ws, device_id="unknown", name="PC")
        router.on_envelope(ws, Envelope("desktop", "workspace", {"cwd": "/"}))
    # Two legacy sockets without a real device id stay two targets.
    assert len(router.targets()) == 2
