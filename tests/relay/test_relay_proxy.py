"""Behind a reverse proxy: forwarding headers count only from ``--trusted-proxy`` addresses, each proxied client
gets its own rate-limit bucket, and a proxied request is never the relay host (no pairing registration,
no operator rights), trusted or not."""

from __future__ import annotations

import json

import pytest
from helpers import http_request, pair

from hermes_relay.relay import peers
from hermes_relay.relay.server import HTTP_FAIL_LIMIT

LOCAL = peers.parse_trusted(["127.0.0.1"])


@pytest.mark.parametrize("socket_ip,headers,trusted,expected", [
    ("127.0.0.1", {}, (), peers.Peer("127.0.0.1", True)),
    ("10.0.0.5", {}, (), peers.Peer("10.0.0.5", False)),
    # An untrusted sender's forwarding headers are ignored, but the request is still not loopback.
    ("127.0.0.1", {"x-forwarded-for": "203.0.113.9"}, (), peers.Peer("127.0.0.1", False, proxied=True)),
    ("127.0.0.1", {"x-forwarded-for": "203.0.113.9"}, LOCAL, peers.Peer("203.0.113.9", False, proxied=True)),
    # Right-most address that is not a trusted proxy: a client cannot pick its bucket by prepending.
    ("127.0.0.1", {"x-forwarded-for": "1.2.3.4, 203.0.113.9"}, LOCAL, peers.Peer("203.0.113.9", False, proxied=True)),
    ("127.0.0.1", {"x-forwarded-for": "203.0.113.9, 127.0.0.1"}, LOCAL, peers.Peer("203.0.113.9", False, proxied=True)),
    ("127.0.0.1", {"forwarded": 'for="[2001:db8::7]:443";proto=https'}, LOCAL,
     peers.Peer("2001:db8::7", False, proxied=True)),
    ("127.0.0.1", {"forwarded": "for=198.51.100.1, for=203.0.113.4:5555"}, LOCAL,
     peers.Peer("203.0.113.4", False, proxied=True)),
    ("127.0.0.1", {"x-real-ip": "203.0.113.2"}, LOCAL, peers.Peer("203.0.113.2", False, proxied=True)),
    ("127.0.0.1", {"x-forwarded-for": "garbage"}, LOCAL, peers.Peer("127.0.0.1", False, proxied=True)),
    ("10.0.0.5", {"x-forwarded-for": "127.0.0.1"}, (), peers.Peer("10.0.0.5", False, proxied=True)),
])
def test_resolve(socket_ip, headers, trusted, expected):
    assert peers.resolve(socket_ip, headers, trusted) == expected


def test_a_bad_trusted_proxy_value_is_named():
    with pytest.raises(ValueError, match="--trusted-proxy 'nope'"):
        peers.parse_trusted(["nope"])
    assert peers.parse_trusted(["10.0.0.0/8", " ::1 "])[1].num_addresses == 1


async def sessions_as(relay, client: str, token: str) -> int:
    status, _, _ = await http_request("GET", f"{relay.http}/sessions", None,
                                      [("Authorization", f"Bearer {token}"), ("X-Forwarded-For", client)])
    return status


async def test_each_proxied_client_has_its_own_bucket_behind_a_trusted_proxy(relay_factory):
    relay = await relay_factory(trusted_proxies=LOCAL)
    _, ok = await pair(relay.url, relay.http)
    for _ in range(HTTP_FAIL_LIMIT):
        assert await sessions_as(relay, "203.0.113.1", "wrong") == 401
    assert await sessions_as(relay, "203.0.113.1", ok["session_token"]) == 429
    assert await sessions_as(relay, "203.0.113.2", ok["session_token"]) == 200


async def test_without_trust_the_header_does_not_choose_the_bucket(relay_factory):
    relay = await relay_factory()
    _, ok = await pair(relay.url, relay.http)
    for i in range(HTTP_FAIL_LIMIT):
        assert await sessions_as(relay, f"203.0.113.{i}", "wrong") == 401  # rotating the header does not help
    assert await sessions_as(relay, "203.0.113.200", ok["session_token"]) == 429


@pytest.mark.parametrize("trusted", [(), LOCAL])
@pytest.mark.parametrize("route", ["register", "mint"])
async def test_a_proxied_request_can_never_register_a_pairing_code(relay_factory, trusted, route):
    relay = await relay_factory(trusted_proxies=trusted)
    status, _, body = await http_request(
        "POST", f"{relay.http}/pairing/{route}", b'{"code": "ABC234", "ttl_seconds": 0}',
        [("Content-Type", "application/json"), ("X-Forwarded-For", "127.0.0.1")])
    assert status == 403
    assert "not through a proxy" in json.loads(body)["error"]


def test_server_flags_reach_the_config(tmp_path):
    from hermes_relay.relay.main import build_parser, config_from_args

    args = build_parser().parse_args(["--memory", "--trusted-proxy", "127.0.0.1", "--trusted-proxy", "10.0.0.0/8",
                                      "--keep-revoked-sockets"])
    config = config_from_args(args)
    assert [str(n) for n in config.trusted_proxies] == ["127.0.0.1/32", "10.0.0.0/8"]
    assert config.close_on_revoke is False
    assert config_from_args(build_parser().parse_args(["--memory"])).close_on_revoke is True
    assert "--keep-revoked-sockets" not in build_parser().format_help()  # test-only, hidden


def test_a_bad_trusted_proxy_is_a_usage_error(capsys):
    from hermes_relay.relay.main import main

    assert main(["--memory", "--trusted-proxy", "proxy.example"]) == 2
    assert "--trusted-proxy 'proxy.example' is not an IP address or network" in capsys.readouterr().err
