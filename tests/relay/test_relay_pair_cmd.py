"""`hermes-pair` as the operator runs it: a real process registering codes with a real relay."""

from __future__ import annotations

import io
import json
import os
import stat
import sys
from pathlib import Path

import pytest
import trio
from helpers import ws_auth

from hermes_relay.core import payload
from hermes_relay.relay import pair_cmd


async def hermes_pair(home: Path, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "HERMES_HOME": str(home)}
    result = await trio.run_process([sys.executable, "-m", "hermes_relay.relay.pair_cmd", *args], env=env,
                                    capture_stdout=True, capture_stderr=True, check=False)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def test_default_output_and_the_code_pairs_once(relay, tmp_path: Path) -> None:
    code, out, err = await hermes_pair(tmp_path, "--relay", relay.url, "--mode", "lan", "--lan-host", "127.0.0.1")
    assert code == 0, err
    lines = out.splitlines()
    minted = lines[0].removeprefix("Code : ")
    assert len(minted) == 6 and minted.isalnum() and minted.isupper()
    assert lines[1] == f"Relay : {relay.url}"
    assert lines[2] == "Session TTL : 2592000 seconds (30 days)"  # the reference hermes-pair's default
    # It teaches the prompt, not the code in argv (readable by other users in the process list).
    assert f"On the computer: hermes-relay pair --remote {relay.url}" in lines
    assert f"  and type the code {minted} when it asks" in lines
    assert not [line for line in lines if f"pair {minted}" in line]
    _, reply = await ws_auth(relay.url, {"pairing_code": minted})
    assert reply["type"] == "auth.ok"
    _, again = await ws_auth(relay.url, {"pairing_code": minted})
    assert again["type"] == "auth.fail"


@pytest.mark.parametrize(("ttl", "seconds"), [("0", 0), ("never", 0), ("7d", 604800), ("3600", 3600)])
async def test_ttl_forms(relay, tmp_path: Path, ttl: str, seconds: int) -> None:
    code, out, _ = await hermes_pair(tmp_path, "--relay", relay.url, "--mode", "lan", "--lan-host", "127.0.0.1",
                                     "--ttl", ttl, "--json")
    assert code == 0
    result = json.loads(out)
    assert result["ttl_seconds"] == seconds
    _, reply = await ws_auth(relay.url, {"pairing_code": result["code"]})
    assert (reply["payload"]["expires_at"] is None) == (seconds == 0)


async def test_multi_route_invite_is_signed_and_drawn(relay, tmp_path: Path) -> None:
    code, out, err = await hermes_pair(tmp_path, "--relay", relay.url, "--lan-host", "192.168.1.20",
                                       "--tailscale-host", "100.101.102.103", "--public-url", "https://relay.example.com")
    assert code == 0, err
    port = relay.info.port
    assert "Routes (strict priority):" in out
    assert not any(ch in out for ch in "\u2588\u2580\u2584")  # stdout is a pipe here: no QR drawn
    assert "{" not in out  # no raw JSON unless asked for (--json)
    link = next(line for line in out.splitlines() if "--pair-qr" in line)
    invite = payload.decode(link.split("'")[1])
    assert invite["hermes"] == 3
    assert [(e["role"], e["priority"], e["relay"]["url"]) for e in invite["endpoints"]] == [
        ("lan", 0, f"ws://192.168.1.20:{port}"), ("tailscale", 1, f"ws://100.101.102.103:{port}"),
        ("public", 2, "wss://relay.example.com"),
    ]
    secret_file = tmp_path / "hermes-relay-qr-secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert payload.verify(invite, secret_file.read_bytes())


@pytest.mark.parametrize(("args", "needle"), [
    (["--mode", "public"], "--mode public needs --public-url"),
    (["--ttl", "3x"], "--ttl must be"),
    (["--code", "AB-1"], 'use 6 characters A-Z/0-9'),
    (["--code", "ABC"], '--code "ABC" is not a pairing code: use 6 characters A-Z/0-9'),
    (["--relay", "ftp://x"], "ws:// or wss://"),
])
async def test_usage_errors_exit_2(relay, tmp_path: Path, args: list[str], needle: str) -> None:
    code, _, err = await hermes_pair(tmp_path, "--relay", relay.url, *args)
    assert code == 2 and needle in err


async def test_relay_down_says_how_to_start_it(tmp_path: Path) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()  # a port nobody listens on
    code, _, err = await hermes_pair(tmp_path, "--relay", f"ws://127.0.0.1:{port}")
    assert code == 1 and "cannot reach the relay" in err and "hermes-relay-server" in err


async def test_a_tls_relay_is_found_from_its_plain_url(relay_factory, tmp_path: Path) -> None:
    relay = await relay_factory(tls=True)
    plain = relay.url.replace("wss://", "ws://")
    code, out, err = await hermes_pair(tmp_path, "--relay", plain, "--mode", "lan", "--lan-host", "127.0.0.1")
    assert code == 0, err
    assert f"Relay : {relay.url}" in out  # the invite names the scheme the relay really speaks


async def test_warns_when_the_relay_only_listens_on_loopback(relay, tmp_path: Path) -> None:
    code, _, err = await hermes_pair(tmp_path, "--relay", relay.url, "--mode", "lan", "--lan-host", "192.168.1.20")
    assert code == 0
    assert "listens on 127.0.0.1 only" in err and "--host 0.0.0.0" in err
    code, _, quiet = await hermes_pair(tmp_path, "--relay", relay.url, "--mode", "lan", "--lan-host", "127.0.0.1")
    assert code == 0 and "warning" not in quiet


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_the_qr_is_drawn_only_on_a_terminal(relay, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HERMES_HOME", str(tmp_path))
    argv = ["--relay", relay.url, "--lan-host", "192.168.1.20", "--tailscale-host", "100.101.102.103"]
    for out, drawn in ((_Terminal(), True), (io.StringIO(), False)):
        code = await trio.to_thread.run_sync(lambda out=out: pair_cmd.main(argv, stdout=out, stderr=io.StringIO()))
        assert code == 0
        assert any(ch in out.getvalue() for ch in "\u2588\u2580\u2584") is drawn


async def test_a_relay_on_loopback_only_is_offered_as_its_loopback_url(relay, tmp_path: Path) -> None:
    code, out, err = await hermes_pair(tmp_path, "--relay", relay.url, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["relay_url"] == relay.url == f"ws://127.0.0.1:{relay.info.port}"
    assert result["endpoints"] == [{"role": "lan", "url": relay.url}]
    assert payload.parse(result["invite_url"]).routes[0].url == relay.url
    assert "warning" not in err
    code, out, _ = await hermes_pair(tmp_path, "--relay", relay.url)
    assert f"Relay : ws://127.0.0.1:{relay.info.port}" in out.splitlines()


async def test_a_tls_relay_puts_its_certificate_pin_where_the_reference_client_reads_it(relay_factory,
                                                                                       tmp_path: Path) -> None:
    relay = await relay_factory(tls=True)
    code, out, err = await hermes_pair(tmp_path, "--relay", relay.url, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["cert_pin"] == relay.info.cert_pin
    invite = result["payload"]
    assert invite["hermes"] == 3
    (endpoint,) = invite["endpoints"]
    assert endpoint["proxy"] == {"url": relay.url, "transport_hint": "wss", "pinSha256": relay.info.cert_pin}
    assert payload.parse(result["invite_url"]).pin_for(relay.url) == relay.info.cert_pin
    assert payload.verify(invite, (tmp_path / "hermes-relay-qr-secret").read_bytes())
    # A pin only in the reference's place is read too, for its route.
    bare = {k: v for k, v in invite.items() if k != "sig"}
    bare["relay"] = {k: v for k, v in invite["relay"].items() if k != "cert_pin_sha256"}
    parsed = payload.from_dict(bare)
    assert (parsed.cert_pin, parsed.pin_for(relay.url)) == (None, relay.info.cert_pin)
    code, out, _ = await hermes_pair(tmp_path, "--relay", relay.url)
    assert f"Certificate pin : {relay.info.cert_pin}" in out and "--pair-qr" in out


def test_a_malformed_pin_in_an_invite_is_ignored() -> None:
    invite = payload.build(code="ABC234", ttl_seconds=60, transport_hint="wss",
                           endpoints=[("lan", "wss://10.0.0.2:8767")], cert_pin="sha256/" + "A" * 43 + "=")
    invite["relay"].pop("cert_pin_sha256")
    invite["endpoints"][0]["proxy"]["pinSha256"] = "not-a-pin"
    assert payload.from_dict(invite).pin_for("wss://10.0.0.2:8767") is None


def test_a_public_route_gets_no_pin_it_could_not_match() -> None:
    pin = "sha256/" + "A" * 43 + "="
    invite = payload.build(code="ABC234", ttl_seconds=60, transport_hint="wss", cert_pin=pin,
                           endpoints=[("lan", "wss://10.0.0.2:8767"), ("public", "wss://relay.example.com")])
    assert "cert_pin_sha256" not in invite["relay"]
    assert [("proxy" in e) for e in invite["endpoints"]] == [True, False]
    parsed = payload.from_dict(invite)
    assert parsed.pin_for("wss://10.0.0.2:8767") == pin
    assert parsed.pin_for(parsed.routes[1].url) is None
