"""core/offline.py: the down switch in the agent's own file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hermes_relay.core import offline
from hermes_relay.core.errors import StateError

A, B, C = "ws://10.0.0.1:8767", "ws://10.0.0.2:8767", "ws://10.0.0.3:8767"


def test_down_all_then_up_one_keeps_the_others_down_and_later_pairings_up(tmp_path: Path) -> None:
    path = tmp_path / "down.json"
    switch, changed = offline.set_down(path, None, 100.0)
    assert changed and switch.is_down(C) and switch.since(C) == 100.0
    assert offline.set_down(path, A, 200.0)[1] is False  # every relay is down already
    switch, changed = offline.set_up(path, A, [A, B], 300.0)
    assert changed and not switch.is_down(A) and switch.is_down(B) and not switch.is_down(C)
    assert offline.read(path).relays == {B: 100.0}
    assert offline.set_up(path, A, [A, B], 400.0)[1] is False
    switch, changed = offline.set_up(path, None, [A, B], 500.0)
    assert changed and not switch.any() and not offline.read(path).any()


def test_down_one_and_drop_it(tmp_path: Path) -> None:
    path = tmp_path / "down.json"
    offline.set_down(path, B, 1.0)
    assert json.loads(path.read_text()) == {"version": 1, "all": None, "relays": {B: {"at": 1.0}}}
    assert offline.drop(path, B) and not offline.drop(path, B)
    assert not offline.read(path).any()


def test_an_unreadable_file_is_never_written_over(tmp_path: Path) -> None:
    path = tmp_path / "down.json"
    path.write_text("{not json")
    with pytest.raises(StateError, match="cannot be parsed") as raised:
        offline.set_down(path, None, 1.0)
    assert raised.value.hint == f"move {path} aside (nothing is down then)"
    assert path.read_text() == "{not json"


def test_entries_of_the_wrong_shape_are_skipped() -> None:
    switch = offline.parse({"version": 1, "all": "yes", "relays": {A: {"at": "x"}, B: 3, 7: {}}})
    assert switch.all_at is None and switch.relays == {A: 0.0}
