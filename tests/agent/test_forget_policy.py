"""agent/forget.py's policy step: only the forgotten hosts go; an unreadable file is never rewritten."""

from __future__ import annotations

import json

import pytest

from hermes_relay.agent.forget import forget_policy
from hermes_relay.core.errors import StateError


def test_only_the_forgotten_urls_leave_the_policy(tmp_path) -> None:
    path = tmp_path / "desktop-host-access.json"
    doc = {"version": 2, "hosts": {"ws://a:8767": {"access_mode": "trusted"}, "ws://b:8767/": {"access_mode": "ask"},
                                   "ws://c:8767": {"access_mode": "structured"}}, "extra": [1]}
    path.write_text(json.dumps(doc))
    assert forget_policy(path, ["ws://a:8767", "ws://b:8767"]) is True
    assert json.loads(path.read_text()) == {"version": 2, "hosts": {"ws://c:8767": {"access_mode": "structured"}},
                                            "extra": [1]}
    assert forget_policy(path, ["ws://a:8767"]) is False
    assert forget_policy(tmp_path / "missing.json", ["ws://a:8767"]) is False


def test_an_unparseable_policy_is_left_untouched(tmp_path) -> None:
    path = tmp_path / "desktop-host-access.json"
    path.write_bytes(b'{"version": 2, "hosts": {"ws://a:8767"')
    with pytest.raises(StateError, match="cannot be parsed"):
        forget_policy(path, ["ws://a:8767"])
    assert path.read_bytes() == b'{"version": 2, "hosts": {"ws://a:8767"'
