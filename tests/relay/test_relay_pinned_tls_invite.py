"""A ``--tls`` relay's invite as the reference desktop CLI needs it (issue #18 item 4).

The reference CLI trusts a self-signed relay only through an endpoint with ``role: "plugin_proxy"``,
``security: "pinned_tls"``, ``recommended: true`` and ``proxy: {url: "https://HOST:PORT", pin_sha256,
cert_der}``. It then probes ``https://HOST:PORT/relay/health`` with that certificate as its only CA and
host-name verification on (sending ``X-Hermes-Relay-Session``), and connects to
``wss://HOST:PORT/relay/ws``. Here a real ``hermes-pair`` process mints the invite from a real TLS
relay, and a client configured exactly that way (OpenSSL, as Node's) probes and pairs through it.
"""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
import sys
from pathlib import Path
from urllib.parse import urlsplit

import helpers
import trio
import trio_websocket
from helpers import auth_frame, http_request, receive_json

from hermes_relay.core import payload
from hermes_relay.core.pin import spki_pin_from_der
from hermes_relay.relay import tls as relay_tls

QR_BYTES = 331  # what a QR code in an 80-column terminal holds (version 13, level M: 77 columns with its quiet zone)


async def tls_relay(relay_factory, tmp_path: Path):
    cert, _ = relay_tls.ensure_certificate(tmp_path / "tls", ["127.0.0.1"])  # the fixture's own certificate
    return await relay_factory(tls=True, cert_der=relay_tls.leaf_der_b64(cert))


async def hermes_pair(home: Path, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "HERMES_HOME": str(home)}
    result = await trio.run_process([sys.executable, "-m", "hermes_relay.relay.pair_cmd", *args], env=env,
                                    capture_stdout=True, capture_stderr=True, check=False)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def reference_context(cert_der_b64: str) -> ssl.SSLContext:
    """The certificate from the invite as the only CA, host names verified (the reference's https.get)."""
    ctx = ssl.create_default_context(cadata=base64.b64decode(cert_der_b64))
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    return ctx


async def test_the_invite_has_a_pinned_proxy_route_the_reference_cli_can_probe_and_pair_through(relay_factory,
                                                                                                 tmp_path: Path):
    relay = await tls_relay(relay_factory, tmp_path)
    code, out, err = await hermes_pair(tmp_path, "--relay", relay.url, "--json")
    assert code == 0, err
    result = json.loads(out)
    invite = result["payload"]
    assert payload.verify(invite, (tmp_path / "hermes-relay-qr-secret").read_bytes())
    proxies = [e for e in invite["endpoints"] if e["role"] == "plugin_proxy"]
    assert len(proxies) == 1
    (proxy,) = proxies
    assert (proxy["security"], proxy["recommended"], "relay" in proxy) == ("pinned_tls", True, False)
    assert proxy["proxy"]["url"] == f"https://localhost:{relay.info.port}"  # the reference refuses an IP as TLS server name
    assert proxy["proxy"]["pin_sha256"] == relay.info.cert_pin
    assert spki_pin_from_der(base64.b64decode(proxy["proxy"]["cert_der"])) == relay.info.cert_pin
    # The reference CLI's own acceptance checks (isValidPinnedProxyCandidate), as stated there.
    assert re.fullmatch(r"sha256/[A-Za-z0-9+/]{43}=", proxy["proxy"]["pin_sha256"])
    assert len(proxy["proxy"]["cert_der"]) <= 8192 and re.fullmatch(r"[A-Za-z0-9+/]+={0,2}", proxy["proxy"]["cert_der"])
    plain = [e for e in invite["endpoints"] if e["role"] != "plugin_proxy"]
    assert [e["relay"]["url"] for e in plain] == [relay.url]  # what we already sent is still there

    # The reference CLI's probe and connection, configured as it configures them.
    ctx = reference_context(proxy["proxy"]["cert_der"])
    base = proxy["proxy"]["url"]
    status, _, body = await http_request("GET", f"{base}/relay/health", None,
                                         [("X-Hermes-Relay-Session", "not-a-token")], ctx)
    assert status == 200 and json.loads(body)["status"] == "ok"
    host = urlsplit(base).hostname
    ws = await trio_websocket.connect_websocket(helpers.CLIENT_NURSERY.get(), host, relay.info.port, "/relay/ws",
                                                use_ssl=ctx, extra_headers=[(b"X-Hermes-Relay-Session", b"")])
    await ws.send_message(auth_frame({"pairing_code": invite["relay"]["code"], "device_id": "ref-cli",
                                      "device_name": "REFPC", "client_surface": "desktop"}))
    reply = await receive_json(ws)
    assert reply["type"] == "auth.ok", reply
    await ws.aclose()

    # Our own client takes the same invite: one pairing, the plain route, pinned.
    parsed = payload.parse(result["invite_url"])
    assert [r.url for r in parsed.routes] == [relay.url]
    assert parsed.pin_for(relay.url) == relay.info.cert_pin


async def test_the_qr_holds_a_compact_invite_and_the_text_output_no_raw_json(relay_factory, tmp_path: Path):
    relay = await tls_relay(relay_factory, tmp_path)
    code, out, err = await hermes_pair(tmp_path, "--relay", relay.url, "--json")
    result = json.loads(out)
    assert len(result["qr_payload"].encode()) <= QR_BYTES < len(payload.encode(result["payload"]))
    small = payload.parse(result["qr_payload"])
    assert (small.code, [r.url for r in small.routes], small.pin_for(relay.url)) == (
        result["code"], [relay.url], relay.info.cert_pin)
    assert payload.verify(json.loads(result["qr_payload"]), (tmp_path / "hermes-relay-qr-secret").read_bytes())

    code, out, err = await hermes_pair(tmp_path, "--relay", relay.url)
    assert code == 0, err
    assert "{" not in out  # the invite is one hermes-relay:// line, never raw JSON
    (line,) = [line for line in out.splitlines() if "--pair-qr" in line]
    full = payload.decode(line.split("'")[1])
    assert any(e["role"] == "plugin_proxy" for e in full["endpoints"])


def test_an_invite_with_only_a_pinned_proxy_route_pairs_through_relay_ws() -> None:
    # As the reference relay mints it: a plugin_proxy endpoint and a plain ws:// LAN route.
    pin = "sha256/" + "B" * 43 + "="
    invite = {"hermes": 3, "host": "10.0.0.2", "port": 8767, "key": "", "tls": False,
              "relay": {"url": "ws://10.0.0.2:8767", "code": "ABC234", "ttl_seconds": 60},
              "endpoints": [
                  {"role": "plugin_proxy", "priority": 0, "recommended": True, "security": "pinned_tls",
                   "proxy": {"url": "https://10.0.0.2:8443", "pin_sha256": pin, "cert_der": "AAAA"}},
                  {"role": "lan", "priority": 1, "api": {"host": "10.0.0.2", "port": 8767, "tls": False},
                   "relay": {"url": "ws://10.0.0.2:8767", "transport_hint": "ws"}},
                  {"role": "plugin_proxy", "priority": 2, "proxy": {"url": "http://bad", "pin_sha256": pin}},
              ]}
    parsed = payload.from_dict(invite)
    assert [(r.url, r.role) for r in parsed.routes] == [("wss://10.0.0.2:8443/relay/ws", "plugin_proxy"),
                                                        ("ws://10.0.0.2:8767", "lan")]
    assert parsed.pin_for("wss://10.0.0.2:8443/relay/ws") == pin and parsed.pin_for("ws://10.0.0.2:8767") is None


async def test_relay_info_is_loopback_only_in_the_references_shape(relay):
    status, _, body = await http_request("GET", f"{relay.http}/relay/info")
    info = json.loads(body)
    assert status == 200
    assert {"version", "uptime_seconds", "session_count", "paired_device_count", "pending_commands",
            "health"} <= set(info)
    assert (info["session_count"], info["pending_commands"], info["health"]) == (0, 0, "ok")
    status, _, body = await http_request("GET", f"{relay.http}/relay/info", None, [("Origin", "http://evil.example")])
    assert status == 403


async def test_a_route_the_certificate_does_not_name_gets_no_pinned_proxy_and_a_warning(relay_factory,
                                                                                       tmp_path: Path):
    relay = await tls_relay(relay_factory, tmp_path)
    code, out, err = await hermes_pair(tmp_path, "--relay", relay.url, "--mode", "lan", "--lan-host", "192.0.2.7",
                                       "--json")
    assert code == 0, err
    invite = json.loads(out)["payload"]
    assert [e["role"] for e in invite["endpoints"]] == ["lan"]
    assert "certificate does not name 192.0.2.7" in err and "--tls" in err


def test_a_wildcard_relays_certificate_names_its_lan_address(tmp_path: Path, monkeypatch) -> None:
    from hermes_relay.relay import main, peers

    monkeypatch.setattr(peers, "lan_address", lambda: "192.0.2.55")  # this host's LAN address, whatever it is
    args = main.build_parser().parse_args(["--tls", "--host", "0.0.0.0", "--state-dir", str(tmp_path)])
    config = main.config_from_args(args)
    assert config.cert_der is not None
    assert spki_pin_from_der(base64.b64decode(config.cert_der)) == config.cert_pin
    for host in ("192.0.2.55", "127.0.0.1", "localhost"):
        assert relay_tls.names_host(config.cert_der, host), host
    assert not relay_tls.names_host(config.cert_der, "192.0.2.56")


async def test_a_minted_invite_from_a_tls_relay_has_the_pinned_proxy_route_too(relay_factory, tmp_path: Path):
    relay = await tls_relay(relay_factory, tmp_path)
    status, _, body = await http_request("POST", f"{relay.http}/pairing/mint", b"{}",
                                         [("Content-Type", "application/json")], relay.ssl_context)
    assert status == 200
    invite = json.loads(json.loads(body)["qr_payload"])
    (proxy,) = [e for e in invite["endpoints"] if e["role"] == "plugin_proxy"]
    assert proxy["proxy"]["pin_sha256"] == relay.info.cert_pin
    assert proxy["proxy"]["url"] == f"https://localhost:{relay.info.port}"  # the reference refuses an IP as TLS server name


async def test_an_invite_that_fits_goes_into_the_qr_whole(relay, tmp_path: Path):
    code, out, err = await hermes_pair(tmp_path, "--relay", relay.url, "--mode", "lan", "--lan-host", "192.0.2.20",
                                       "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["qr_payload"] == payload.encode(result["payload"])  # small enough: the signed invite itself
    code, out, err = await hermes_pair(tmp_path, "--relay", relay.url, "--lan-host", "192.0.2.20",
                                       "--tailscale-host", "100.101.102.103", "--json")
    result = json.loads(out)
    assert len(result["qr_payload"].encode()) <= QR_BYTES < len(payload.encode(result["payload"]).encode())
    assert [r.url for r in payload.parse(result["qr_payload"]).routes] == [f"ws://192.0.2.20:{relay.info.port}"]


def test_hermes_pair_warns_that_the_reference_cli_cannot_use_a_pinned_route_named_by_an_ip() -> None:
    from hermes_relay.relay.pair_cmd import _ip_routes

    urls = ["wss://192.168.1.20:8767", "wss://127.0.0.1:8767", "wss://relay.local:8767", "wss://[fd00::5]:8767",
            "wss://192.168.1.20:8767"]
    assert _ip_routes(urls) == ["192.168.1.20", "fd00::5"]  # loopback is offered as localhost; names are fine
