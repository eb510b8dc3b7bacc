"""The route indicator the agent publishes: which label, and the plain two-line file."""

from __future__ import annotations

import os
from pathlib import Path

from hermes_relay.agent.indicator import Indicator, offline, route_lines, summarize
from hermes_relay.cli import render
from hermes_relay.cli.commands.route import parse_route_file
from hermes_relay.core import api, hosts

LAN = {"url": "ws://10.0.0.2:8767", "role": "lan", "label": "LAN", "priority": 0}


def _state(url: str, state: str, route: dict | None = None) -> dict:
    return {"url": url, "state": state, "route": route, "since": 1_800_000_000.5}


def test_expired_and_revoked_links_are_named_instead_of_offline() -> None:
    assert summarize([_state("ws://a", api.REVOKED)])["label"] == "revoked"
    assert summarize([_state("ws://a", api.EXPIRED)])["label"] == "expired"
    assert summarize([_state("ws://a", api.BACKOFF)])["label"] == api.OFFLINE
    assert summarize([_state("ws://a", api.PIN_MISMATCH)])["label"] == api.OFFLINE
    assert summarize([])["label"] == api.OFFLINE and summarize([])["state"] == api.NOT_PAIRED
    # A relay that is trying again is more hopeful than a revoked one, and a connected one wins.
    assert summarize([_state("ws://a", api.REVOKED), _state("ws://b", api.BACKOFF)])["label"] == api.OFFLINE
    assert summarize([_state("ws://a", api.REVOKED), _state("ws://b", api.CONNECTED, LAN)])["label"] == "LAN | a: revoked"
    assert offline(api.STOPPED)["label"] == api.OFFLINE


def test_the_route_file_holds_label_validity_pid_state_since_and_url(tmp_path: Path) -> None:
    ind = Indicator(tmp_path / "route", tmp_path / "route.json", heartbeat=30.0)
    current = ind.write(summarize([_state("ws://a", api.CONNECTED, LAN)]), 1_800_000_000.0)
    text = (tmp_path / "route").read_text()
    assert text == f"1800000090 LAN\n{os.getpid()} connected 1800000000.5 ws://10.0.0.2:8767\n"
    assert current["pid"] == os.getpid() and current["valid_until"] == 1_800_000_090
    assert parse_route_file(text) == {"label": "LAN", "valid_until": 1_800_000_090, "pid": os.getpid(),
                                      "state": "connected", "since": 1_800_000_000.5, "url": "ws://10.0.0.2:8767"}


def test_a_url_with_spaces_never_breaks_the_line_format() -> None:
    line = route_lines({"label": "LAN", "valid_until": 5, "state": "connected", "since": None,
                        "url": "ws://x y"}, 42)
    assert line == b"5 LAN\n42 connected - -\n"


TAILSCALE = {"url": "ws://100.64.0.2:8767", "role": "tailscale", "label": "Tailscale", "priority": 1}


def test_several_relays_share_one_line_the_default_first_and_the_others_by_name() -> None:
    home, office, lab = "ws://10.0.0.2:8767", "wss://office.example", "ws://lab.local:8767"
    states = [_state(home, api.CONNECTED, LAN), _state(office, api.CONNECTED, TAILSCALE), _state(lab, api.BACKOFF)]
    plain = summarize(states)
    assert plain["label"] == "LAN | office.example: Tailscale | lab.local: offline"
    names = hosts.Control(relay_url=office, aliases={office: "office", home: "home|x"})
    named = summarize(states, names=names)
    assert named["label"] == "Tailscale | home?x: LAN | lab.local: offline"
    assert named["url"] == LAN["url"]  # the route and URL stay the best connected relay's
    assert [r["name"] for r in named["relays"]] == ["office", "home?x", "lab.local"]
    odd = summarize([_state(home, api.CONNECTED, LAN), _state("ws://[bad", api.BACKOFF)])  # another client's record
    assert odd["label"] == "LAN | ws://[bad: offline"
    # nothing connected: one word, as with one relay
    assert summarize([_state(home, api.BACKOFF), _state(office, api.REVOKED)])["label"] == api.OFFLINE


def test_waiting_approvals_are_counted_at_the_end_of_the_label(tmp_path: Path) -> None:
    one = summarize([_state("ws://a", api.CONNECTED, LAN)], waiting=1)
    assert one["label"] == "LAN !1" and one["approvals_waiting"] == 1
    assert summarize([_state("ws://a", api.CONNECTED, LAN)])["label"] == "LAN"
    ind = Indicator(tmp_path / "route", tmp_path / "route.json", heartbeat=30.0)
    ind.write(one, 1_800_000_000.0)
    first = (tmp_path / "route").read_text().splitlines()[0]
    assert first == "1800000090 LAN !1"
    assert render.prompt_indicator(first, 1_800_000_000.0) == "[LAN !1]"


def test_the_names_file_is_read_again_only_when_it_changed(tmp_path: Path) -> None:
    names = tmp_path / "desktop-control.json"
    ind = Indicator(tmp_path / "route", tmp_path / "route.json", heartbeat=30.0, names_file=names)
    assert ind.names_changed() is False and ind.names() == hosts.Control()
    hosts.rename(names, "ws://a", "home")
    assert ind.names_changed() is True and ind.names().name_for("ws://a") == "home"
    assert ind.names_changed() is False
    names.write_text("{damaged")
    assert ind.names_changed() is True and ind.names() == hosts.Control()  # a display never fails
