"""Routes: role inference, URL normalisation, strict-priority ordering and labels."""

from __future__ import annotations

import pytest

from hermes_relay.core import routes
from hermes_relay.core.errors import UsageError
from hermes_relay.core.routes import Route, infer_role, make_routes, normalize_relay_url, tiers


@pytest.mark.parametrize(
    ("url", "role"),
    [
        # Tailscale: CGNAT 100.64.0.0/10 and MagicDNS names
        ("ws://100.64.0.1:8767", "tailscale"),
        ("ws://100.101.102.103:8767", "tailscale"),
        ("ws://100.127.255.254:8767", "tailscale"),
        ("ws://100.63.255.255:8767", "public"),
        ("ws://100.128.0.1:8767", "public"),
        ("ws://relay.tail1234.ts.net:8767", "tailscale"),
        ("wss://RELAY.Tail1234.TS.NET", "tailscale"),
        ("ws://relay.tail1234.ts.net.:8767", "tailscale"),
        ("ws://ts.net:8767", "public"),
        ("ws://evilts.net:8767", "public"),
        ("ws://ts.net.example.com:8767", "public"),
        # RFC 1918
        ("ws://10.0.0.5:8767", "lan"),
        ("ws://10.255.255.255:8767", "lan"),
        ("ws://172.16.0.1:8767", "lan"),
        ("ws://172.31.255.254:8767", "lan"),
        ("ws://172.32.0.1:8767", "public"),
        ("ws://172.15.255.255:8767", "public"),
        ("ws://192.168.1.20:8767", "lan"),
        ("ws://192.169.0.1:8767", "public"),
        # loopback, link-local, mDNS
        ("ws://127.0.0.1:8767", "lan"),
        ("ws://localhost:8767", "lan"),
        ("ws://[::1]:8767", "lan"),
        ("ws://169.254.10.20:8767", "lan"),
        ("ws://[fe80::1]:8767", "lan"),
        ("ws://hermes-box.local:8767", "lan"),
        ("ws://hermes-box.LOCAL.:8767", "lan"),
        # IPv6 unique local fc00::/7 and IPv4-mapped
        ("ws://[fc00::1]:8767", "lan"),
        ("ws://[fd12:3456:789a::1]:8767", "lan"),
        ("ws://[fe00::1]:8767", "public"),
        ("ws://[::ffff:192.168.1.20]:8767", "lan"),
        ("ws://[::ffff:100.64.0.9]:8767", "tailscale"),
        # public
        ("ws://8.8.8.8:8767", "public"),
        ("ws://[2001:4860:4860::8888]:8767", "public"),
        ("wss://relay.example.com", "public"),
        ("ws://localhost.example.com:8767", "public"),
    ],
)
def test_infer_role(url: str, role: str) -> None:
    assert infer_role(url) == role


@pytest.mark.parametrize(
    ("raw", "url", "added"),
    [
        ("ws://192.168.1.20", "ws://192.168.1.20:8767", True),
        ("ws://192.168.1.20/", "ws://192.168.1.20:8767", True),
        ("ws://192.168.1.20:9000", "ws://192.168.1.20:9000", False),
        ("  ws://h:8767  ", "ws://h:8767", False),
        ("WS://h", "ws://h:8767", True),
        ("ws://[fd00::1]", "ws://[fd00::1]:8767", True),
        ("wss://relay.example.com", "wss://relay.example.com", False),
        ("wss://relay.example.com:8443", "wss://relay.example.com:8443", False),
        ("http://192.168.1.20", "ws://192.168.1.20:8767", True),
        ("https://relay.example.com/", "wss://relay.example.com", False),
        ("ws://h:8767/ws", "ws://h:8767/ws", False),
        ("ws://h:8767/?x=1#frag", "ws://h:8767?x=1", False),
    ],
)
def test_normalize_relay_url(raw: str, url: str, added: bool) -> None:
    assert normalize_relay_url(raw) == (url, added)
    assert normalize_relay_url(url) == (url, False)  # idempotent


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "empty relay URL; expected ws://HOST:PORT or wss://HOST[:PORT]"),
        ("   ", "empty relay URL; expected ws://HOST:PORT or wss://HOST[:PORT]"),
        ("192.168.1.20", 'invalid relay URL "192.168.1.20": add a scheme, e.g. ws://192.168.1.20:8767'),
        ("192.168.1.20:9000", 'invalid relay URL "192.168.1.20:9000": add a scheme, e.g. ws://192.168.1.20:9000'),
        ("relay.example.com", 'invalid relay URL "relay.example.com": add a scheme, e.g. ws://relay.example.com:8767'),
        ("ftp://h:8767", 'invalid relay URL "ftp://h:8767": the scheme must be ws:// or wss://, not ftp://'),
        ("tcp://h", 'invalid relay URL "tcp://h": the scheme must be ws:// or wss://, not tcp://'),
        ("ws://:8767", 'invalid relay URL "ws://:8767": no host'),
        ("ws://h:99999", 'invalid relay URL "ws://h:99999": the port is not a number from 1 to 65535'),
        ("ws://h:abc", 'invalid relay URL "ws://h:abc": the port is not a number from 1 to 65535'),
        ("ws://h:0", 'invalid relay URL "ws://h:0": the port is not a number from 1 to 65535'),
        ("ws://h:", 'invalid relay URL "ws://h:": the port is not a number from 1 to 65535'),
    ],
)
def test_normalize_relay_url_errors_say_what_is_wrong(raw: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        normalize_relay_url(raw)
    assert info.value.message == message
    assert info.value.exit_code == 2


def test_host_port_and_http_base() -> None:
    assert routes.host_port("ws://h:9000") == ("h", 9000)
    assert routes.host_port("ws://h") == ("h", 8767)
    assert routes.host_port("wss://h") == ("h", 443)
    assert routes.http_base("wss://h:8443/ws") == "https://h:8443"
    assert routes.http_base("ws://[fd00::1]:8767") == "http://[fd00::1]:8767"


OFFER = [
    ("wss://relay.example.com", None, None),  # 0: public
    ("ws://relay.tail1234.ts.net:8767", None, None),  # 1: tailscale
    ("ws://10.8.0.1:8767", "wireguard", None),  # 2: custom VPN
    ("ws://192.168.1.20:8767", None, None),  # 3: lan
    ("ws://192.168.1.21:8767", "lan", None),  # 4: lan
]


def test_make_routes_orders_by_strict_role_priority_then_offer_order() -> None:
    got = make_routes(OFFER)
    assert [(r.priority, r.index, r.role, r.url) for r in got] == [
        (0, 3, "lan", "ws://192.168.1.20:8767"),
        (0, 4, "lan", "ws://192.168.1.21:8767"),
        (1, 1, "tailscale", "ws://relay.tail1234.ts.net:8767"),
        (2, 0, "public", "wss://relay.example.com"),
        (3, 2, "wireguard", "ws://10.8.0.1:8767"),
    ]
    assert [r.label for r in got] == ["LAN", "LAN", "Tailscale", "Public", "Custom VPN (wireguard)"]


def test_tiers_group_by_priority_most_preferred_first() -> None:
    got = tiers(make_routes(OFFER))
    assert [[r.url for r in tier] for tier in got] == [
        ["ws://192.168.1.20:8767", "ws://192.168.1.21:8767"],
        ["ws://relay.tail1234.ts.net:8767"],
        ["wss://relay.example.com"],
        ["ws://10.8.0.1:8767"],
    ]


def test_explicit_priority_beats_the_role_default() -> None:
    got = make_routes(
        [
            ("ws://192.168.1.20:8767", "lan", 1),
            ("ws://10.8.0.1:8767", "wireguard", 0),
            ("wss://relay.example.com", "public", 0),
        ]
    )
    assert [r.url for r in got] == ["ws://10.8.0.1:8767", "wss://relay.example.com", "ws://192.168.1.20:8767"]
    assert [[r.role for r in t] for t in tiers(got)] == [["wireguard", "public"], ["lan"]]


def test_tiers_are_strict_even_when_a_lower_tier_is_larger() -> None:
    got = tiers(make_routes([("ws://h1.example:8767", "public", 2), ("ws://h2.example:8767", "public", 2), ("ws://10.0.0.1:8767", None, None)]))
    assert [len(t) for t in got] == [1, 2]
    assert got[0][0].role == "lan"


def test_duplicate_urls_keep_the_first_offer() -> None:
    got = make_routes([("ws://10.0.0.1:8767", "wireguard", 5), ("ws://10.0.0.1:8767", "lan", 0)])
    assert got == [Route(5, 0, "wireguard", "ws://10.0.0.1:8767")]


def test_tiers_sorts_unsorted_input_and_handles_empty() -> None:
    a, b = Route(1, 0, "tailscale", "ws://100.64.0.1:8767"), Route(0, 1, "lan", "ws://10.0.0.1:8767")
    assert tiers([a, b]) == [[b], [a]]
    assert tiers([]) == []
    assert make_routes([]) == []


@pytest.mark.parametrize(
    ("role", "label"),
    [
        ("lan", "LAN"),
        ("tailscale", "Tailscale"),
        ("public", "Public"),
        ("custom", "Custom VPN"),
        ("wireguard", "Custom VPN (wireguard)"),
        ("zerotier", "Custom VPN (zerotier)"),
        ("plugin_proxy", "Hermes Secure Link"),
        (None, "Unknown"),
        ("", "Unknown"),
    ],
)
def test_role_labels(role: str | None, label: str) -> None:
    assert routes.role_label(role) == label


@pytest.mark.parametrize(
    ("route", "secure"),
    [(Route(2, 0, "public", "wss://relay.example.com"), True), (Route(1, 0, "tailscale", "ws://100.64.0.1:8767"), False),
     (Route(0, 0, "lan", "ws://192.168.1.20:8767"), False)],
)
def test_secure_means_a_wss_url(route: Route, secure: bool) -> None:
    assert route.secure is secure


@pytest.mark.parametrize("raw,suggested", [
    ("ws//127.0.0.1:50881", "ws://127.0.0.1:50881"),  # used to suggest ws://ws//127.0.0.1:50881:8767
    ("ws:/10.0.0.2", "ws://10.0.0.2:8767"),
    ("wss//relay.example.com", "wss://relay.example.com"),
    ("https//relay.example.com:8443", "wss://relay.example.com:8443"),
])
def test_a_scheme_typed_without_its_colon_slash_slash_gets_the_url_it_meant(raw, suggested):
    with pytest.raises(UsageError) as info:
        normalize_relay_url(raw)
    assert info.value.message.endswith(f'the scheme needs "://", e.g. {suggested}')
    assert normalize_relay_url(suggested)[0].startswith(suggested.split(":")[0].replace("https", "wss"))
