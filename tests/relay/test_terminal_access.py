"""Who may open a shell, and when shells end: the grant per message, revocation, limits, list and kill,
the reference client's mode, a clean shutdown, and a relay without --terminal."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio_websocket
from helpers import FakeWallClock, http_json, receive_json, send_json, ws_auth
from terminal_clients import WAIT, Term, connect, exited, pair_device, settings


@pytest.fixture
def relay_test_guard() -> float:
    return 60.0


async def test_without_the_grant_or_once_it_expired_terminal_messages_get_system_error(relay_factory, tmp_path: Path):
    clock = FakeWallClock()
    relay = await relay_factory(terminal=settings(tmp_path), wall_clock=clock)
    ws, auth = await pair_device(relay, grant=None)  # --terminal: not granted by default
    assert "terminal" not in auth["grants"] and "chat" in auth["grants"]
    msg_id = await send_json(ws, "terminal", "terminal.attach", {"session_name": "main", "cols": 80, "rows": 24})
    reply = await receive_json(ws)
    assert (reply["channel"], reply["type"], reply["id"]) == ("system", "error", msg_id)
    assert reply["payload"]["reason"] == "terminal_not_granted"

    ws2, _ = await pair_device(relay, grant=60)
    term = Term(ws2)
    assert (await term.attach())["type"] == "terminal.attached"
    clock.advance(61)
    msg_id = await term.send("terminal.resize", {"cols": 100, "rows": 30})
    reply = await term.expect("error")
    assert reply["id"] == msg_id and reply["payload"]["message"] == "Terminal grant expired for this device"


async def test_revoking_a_session_closes_its_shells(relay_factory, tmp_path: Path):
    relay = await relay_factory(terminal=settings(tmp_path), close_on_revoke=False)
    ws, auth = await pair_device(relay)
    term = Term(ws)
    pid = (await term.attach())["payload"]["pid"]
    status, _ = await http_json("DELETE", f"{relay.http}/sessions/{auth['session_token'][:8]}")
    assert status == 200
    detached = await term.expect("terminal.detached")
    assert detached["payload"] == {"session_name": "main", "reason": "revoked"}
    await exited(pid)


async def test_turning_the_grant_off_closes_the_devices_shells(relay_factory, tmp_path: Path):
    relay = await relay_factory(terminal=settings(tmp_path, sweep=0.05))
    ws, auth = await pair_device(relay)
    term = Term(ws)
    pid = (await term.attach())["payload"]["pid"]
    status, reply = await http_json("PATCH", f"{relay.http}/sessions/{auth['session_token'][:8]}",
                                    {"grants": {"terminal": "off"}})
    assert status == 200 and "terminal" not in reply["grants"], reply
    detached = await term.expect("terminal.detached")
    assert detached["payload"] == {"session_name": "main", "reason": "grant expired"}
    await exited(pid)
    msg_id = await term.send("terminal.list", {})
    reply = await term.expect("error")
    assert reply["id"] == msg_id and reply["payload"]["reason"] == "terminal_not_granted"


async def test_limits_per_socket_and_per_device_evict_the_oldest_orphan(relay_factory, tmp_path: Path):
    relay = await relay_factory(terminal=settings(tmp_path, max_per_socket=2, max_per_device=3, max_ptys=4))
    ws, auth = await pair_device(relay)
    a1, a2, a3 = Term(ws, name="a1"), Term(ws, name="a2"), Term(ws, name="a3")
    pid1 = (await a1.attach())["payload"]["pid"]
    await a2.attach()
    refused = await a3.attach()
    assert refused["type"] == "terminal.error" and refused["payload"]["reason"] == "limit"
    assert "per connection" in refused["payload"]["message"]
    ws2 = await connect(relay, auth["session_token"])
    b1, b2 = Term(ws2, name="b1"), Term(ws2, name="b2")
    await b1.attach()
    await ws.aclose()  # a1 and a2 are orphans now
    assert (await b2.attach())["type"] == "terminal.attached"  # the device's 4th: the oldest orphan goes
    await exited(pid1)
    other, _ = await pair_device(relay)
    c1, c2 = Term(other, name="c1"), Term(other, name="c2")
    assert (await c1.attach())["type"] == "terminal.attached"  # 4 PTYs in all now
    full = await c2.attach()
    assert full["type"] == "terminal.error" and "try again later" in full["payload"]["message"]


async def test_list_and_kill_bare_sessions(relay_factory, tmp_path: Path):
    relay = await relay_factory(terminal=settings(tmp_path))
    ws, _ = await pair_device(relay)
    term = Term(ws, name="work")
    pid = (await term.attach())["payload"]["pid"]
    msg_id = await send_json(ws, "terminal", "terminal.list", {})
    listed = await term.expect("terminal.sessions")
    assert listed["id"] == msg_id and listed["payload"]["tmux_available"] is False
    [s] = listed["payload"]["sessions"]
    assert (s["name"], s["pid"], s["attached"], s["live"], s["owned_by_client"]) == ("work", pid, 1, True, True)
    await term.send("terminal.kill", {})
    assert (await term.expect("terminal.detached"))["payload"]["reason"] == "client kill"
    await exited(pid)
    await send_json(ws, "terminal", "terminal.kill", {"session_name": "nothing"})
    err = await term.expect("terminal.error")
    assert err["payload"]["session_name"] == "nothing" and err["payload"]["reason"] == "not found"


async def test_a_reference_client_gets_text_without_offsets_and_its_shell_ends_after_its_socket(relay_factory,
                                                                                                tmp_path: Path):
    relay = await relay_factory(terminal=settings(tmp_path, grace_reference=0.2))
    ws, _ = await pair_device(relay)
    term = Term(ws, resume=False)
    attached = await term.attach()
    assert "resume" not in attached["payload"] and attached["payload"]["reattach"] is False
    again = await term.attach()
    assert again["payload"]["reattach"] is True and again["payload"]["pid"] == attached["payload"]["pid"]
    await send_json(ws, "terminal", "terminal.input", {"session_name": "other", "data": "x"})  # dropped silently
    await send_json(ws, "terminal", "terminal.resize", {"session_name": "other", "cols": 90, "rows": 20})
    await term.type(b"echo ref$((6*7))\n")
    await term.until_output(b"ref42")
    outputs = [m for m in term.seen if m["type"] == "terminal.output"]
    assert outputs and all(set(m["payload"]) == {"session_name", "data"} for m in outputs)
    assert not [m for m in term.seen if m["type"] in ("terminal.ack", "terminal.error")]
    await ws.aclose()
    await exited(attached["payload"]["pid"])  # unlike the reference, nothing leaks


async def test_shutdown_sends_a_final_ack_then_detached_then_closes_1001(relay_factory, tmp_path: Path):
    relay = await relay_factory(terminal=settings(tmp_path))
    ws, _ = await pair_device(relay)
    term = Term(ws)
    await term.attach()
    await term.type(b"echo bye\n")
    await term.until_acked(len(term.typed))
    await relay.stop()
    types = []
    with trio.fail_after(WAIT):
        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
            while True:
                msg = await term.recv()
                if msg["type"] in ("terminal.ack", "terminal.detached"):
                    types.append((msg["type"], msg["payload"]))
    assert types[-2:] == [("terminal.ack", {"session_name": "main", "in_seq": len(term.typed)}),
                          ("terminal.detached", {"session_name": "main", "reason": "server shutdown"})]
    assert closed.value.reason.code == 1001


async def test_without_terminal_the_channel_stays_unserved_and_health_says_so(relay_factory, tmp_path: Path):
    plain = await relay_factory()
    status, health = await http_json("GET", f"{plain.http}/health")
    assert status == 200 and health["terminal"] is False
    ws, auth = await pair_device(plain, grant=None)
    assert "terminal" in auth["grants"]  # as the reference relay grants it
    msg_id = await send_json(ws, "terminal", "terminal.attach", {"session_name": "main", "cols": 80, "rows": 24})
    reply = await receive_json(ws)
    assert (reply["type"], reply["id"]) == ("terminal.error", msg_id)
    served = await relay_factory(terminal=settings(tmp_path))
    assert (await http_json("GET", f"{served.http}/health"))[1]["terminal"] is True


async def test_a_rotated_token_resumes_the_same_shell(relay_factory, tmp_path: Path):
    relay = await relay_factory(terminal=settings(tmp_path))
    device = "rotating-device"
    ws, auth = await pair_device(relay, device_id=device)
    term = Term(ws)
    pid = (await term.attach())["payload"]["pid"]
    await term.type(b"echo one$((0+1))\n")
    await term.until_output(b"one1")
    await ws.aclose()
    term.ws, reply = await ws_auth(relay.url, {"refresh_token": auth["refresh_token"], "device_id": device})
    assert reply["type"] == "auth.ok" and reply["payload"]["session_token"] != auth["session_token"]
    resumed = await term.attach()
    assert resumed["payload"]["pid"] == pid and resumed["payload"]["resume"]["resumed"] is True


BAD = [
    ("terminal.attach", {"session_name": ["x"], "cols": 80, "rows": 24}, "bad_request"),
    ("terminal.attach", {"session_name": "", "cols": 80, "rows": 24}, "bad_request"),
    ("terminal.attach", {"session_name": "a/b", "cols": 80, "rows": 24}, "bad_request"),
    ("terminal.attach", {"session_name": "x", "cols": True, "rows": 24}, "bad_request"),
    ("terminal.attach", {"session_name": "x", "cols": 80, "rows": 10**9}, "bad_request"),
    ("terminal.attach", {"session_name": "x", "resume": {"v": 2, "stream": "s" * 22}}, "bad_request"),
    ("terminal.attach", {"session_name": "x", "resume": {"v": 1, "stream": "s" * 22, "out_seq": 1e300}}, "bad_request"),
    ("terminal.attach", {"session_name": "x", "resume": "yes"}, "bad_request"),
    ("terminal.input", {"session_name": "main", "data": "x"}, "bad_input"),  # resume mode: no seq
    ("terminal.input", {"session_name": "main", "data": "\udc80", "seq": 0}, "bad_input"),
    ("terminal.input", {"session_name": "main", "data_b64": "%%%", "seq": 0}, "bad_input"),
    ("terminal.input", {"session_name": "main", "data": None, "seq": 0}, "bad_input"),
    ("terminal.input", {"session_name": "main", "data": "x", "seq": -1}, "bad_input"),
    ("terminal.input", {"session_name": "main", "data": "x", "seq": 10**40}, "input_gap"),
    ("terminal.input", {"session_name": "nope", "data": "x", "seq": 0}, "not attached"),
    ("terminal.detach", {"session_name": "nope"}, "not attached"),
    ("terminal.frobnicate", {"session_name": "main"}, "bad_request"),
]


async def test_bad_terminal_messages_get_a_clear_error_and_the_shell_goes_on(relay_factory, tmp_path: Path):
    relay = await relay_factory(terminal=settings(tmp_path))
    ws, _ = await pair_device(relay)
    term = Term(ws)
    await term.attach()
    for typ, payload, reason in BAD:
        msg_id = await send_json(ws, "terminal", typ, payload)
        err = await term.expect("terminal.error")
        assert (err["id"], err["payload"]["reason"]) == (msg_id, reason), (typ, payload, err)
        assert isinstance(err["payload"]["message"], str) and err["payload"]["message"]
    await term.send("terminal.resize", {"cols": "wide"})  # ignored, as the reference ignores it
    await term.type(b"echo still$((8*8))\n")
    await term.until_output(b"still64")


@pytest.mark.parametrize("attempt", range(8))  # the close raced the goodbye: several tries show it
async def test_a_revoked_sessions_socket_hears_detached_revoked_before_its_close(relay_factory, tmp_path: Path,
                                                                                 attempt: int):
    relay = await relay_factory(terminal=settings(tmp_path))  # the socket is closed on revocation (4001)
    ws, auth = await pair_device(relay)
    term = Term(ws)
    await term.attach()
    status, _ = await http_json("DELETE", f"{relay.http}/sessions/{auth['session_token'][:8]}")
    assert status == 200
    seen = []
    with trio.fail_after(WAIT):
        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
            while True:
                seen.append(await term.recv())
    assert closed.value.reason.code == 4001
    assert [m["payload"] for m in seen if m["type"] == "terminal.detached"] == [
        {"session_name": "main", "reason": "revoked"}]
