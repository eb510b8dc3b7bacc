"""The route indicator the agent publishes: which label, and the plain two-line file."""

from __future__ import annotations

import os
from pathlib import Path

from hermes_relay.agent.indicator import Indicator, offline, route_lines, summarize
from hermes_relay.cli.commands.route import parse_route_file
from hermes_relay.core import api

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
    assert summarize([_state("ws://a", api.REVOKED), _state("ws://b", api.CONNECTED, LAN)])["label"] == "LAN"
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
