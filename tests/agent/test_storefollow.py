"""agent/storefollow.py: what another client did to the store, decided from two looks at it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hermes_relay.agent.credentials import Paused
from hermes_relay.agent.storefollow import PAUSED_REASON, StoreFollower
from hermes_relay.core import api

A, B = "ws://10.0.0.1:8767", "ws://10.0.0.2:8767"


def _rec(token: str, **extra: Any) -> dict[str, Any]:
    return {"token": token, "paired_at": 100, **extra}


def _follower(tmp_path: Path, first: dict[str, dict[str, Any]]) -> StoreFollower:
    f = StoreFollower(Paused(tmp_path / "paused.json"), lambda: 1000.0)
    assert f.follow(first, list(first)) == (set(), None)  # the first look is the baseline
    return f


def test_a_removed_record_is_paused_with_its_credentials(tmp_path: Path) -> None:
    f = _follower(tmp_path, {A: _rec("t" * 43), B: _rec("u" * 43)})
    assert f.follow({B: _rec("u" * 43)}, [B]) == (set(), set())
    assert f.paused.get(A) == {"record": _rec("t" * 43), "at": 1000.0, "reason": PAUSED_REASON}
    (state,) = f.just_paused(running=set())
    assert state["url"] == A and state["state"] == api.PAUSED
    assert f"hermes-relay restore {A}" in state["last_error"]["data"]["hint"]
    assert f.just_paused(running=set()) == []  # announced once
    assert [s["url"] for s, _ in f.paused_states(running=set())] == [A]


def test_our_own_forget_and_a_replacing_pairing_are_not_pauses(tmp_path: Path) -> None:
    f = _follower(tmp_path, {A: _rec("t" * 43), B: _rec("u" * 43)})
    f.dropping.add(A)
    replacing = {"ws://relay.lan:8767": _rec("v" * 43, route_candidates=[{"relay": {"url": B}, "role": "lan"}])}
    f.follow(replacing, list(replacing))
    assert f.paused.all() == {}
    assert f.dropping == set()


def test_credentials_changed_by_another_client_restart_the_link_and_ours_do_not(tmp_path: Path) -> None:
    f = _follower(tmp_path, {A: _rec("t" * 43)})
    f.written_tokens[A] = "r" * 43  # a rotation this agent stored
    assert f.follow({A: _rec("r" * 43)}, [A]) == (set(), {A})
    assert f.follow({A: _rec("x" * 43)}, [A]) == ({A}, {A})  # another client's token
    moved = _rec("x" * 43, route_candidates=[{"relay": {"url": B}, "role": "lan"}])
    assert f.follow({A: moved}, [A]) == ({A}, {A})  # its routes changed
    assert f.follow({A: {**moved, "server_version": "2"}}, [A]) == (set(), {A})  # nothing the link uses


def test_a_paused_pairing_back_in_the_store_is_no_longer_paused(tmp_path: Path) -> None:
    f = _follower(tmp_path, {A: _rec("t" * 43)})
    f.follow({}, [])
    assert A in f.paused.all()
    f.follow({A: _rec("t" * 43)}, [A])  # restored by hand
    assert f.paused.all() == {}
