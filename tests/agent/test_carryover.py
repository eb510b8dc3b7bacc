"""What a re-pairing under another URL of the same relay hands over (agent/carryover.py), on real files."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from hermes_relay.agent import carryover
from hermes_relay.agent.desktop.tools import _jobrecord
from hermes_relay.core import policy, roots

OLD, NEW, OTHER = "ws://127.0.0.1:8767", "ws://localhost:8767/ws", "ws://10.0.0.9:8767"


def _world(tmp_path: Path) -> tuple[Path, Path, Path]:
    home = tmp_path / ".hermes"
    home.mkdir()
    pol, rts = home / "desktop-host-access.json", home / "desktop-roots.json"
    env = {"HOME": str(tmp_path), "HERMES_HOME": str(home)}
    src = tmp_path / "src"
    src.mkdir()
    policy.set_mode(pol, OLD, "trusted")
    policy.set_mode(pol, OTHER, "structured")
    roots.add(rts, OLD, str(src), env=env)
    roots.add(rts, OTHER, str(src), env=env)
    ctx = SimpleNamespace(home=home)
    for job_id, owner in (("job-0000000000000001", OLD), ("job-0000000000000002", OTHER)):
        _jobrecord.save(ctx, {"job_id": job_id, "owner": owner})  # type: ignore[arg-type]
    return pol, rts, home


def _owners(home: Path) -> dict[str, str]:
    ctx = SimpleNamespace(home=home)
    return {j: _jobrecord.load(ctx, j)["owner"] for j in _jobrecord.record_ids(ctx)}  # type: ignore[arg-type,index]


def test_carry_moves_the_policy_roots_and_jobs_of_the_old_url_only(tmp_path: Path) -> None:
    pol, rts, home = _world(tmp_path)
    assert carryover.describe(pol, rts, OLD).startswith("trusted, roots ")
    carryover.carry(pol, rts, home, OLD, NEW)
    hosts = policy.load(pol).hosts
    assert policy.canonical_url(OLD) not in hosts
    assert hosts[policy.canonical_url(NEW)].label == "trusted"  # type: ignore[index]
    assert hosts[policy.canonical_url(OTHER)].label != "trusted"  # type: ignore[index]
    assert set(roots.load(rts)) == {policy.canonical_url(NEW), policy.canonical_url(OTHER)}
    assert _owners(home) == {"job-0000000000000001": NEW, "job-0000000000000002": OTHER}
    carryover.carry(pol, rts, home, OLD, NEW)  # repeated after a crash: nothing more moves
    assert policy.load(pol).hosts[policy.canonical_url(NEW)].label == "trusted"  # type: ignore[index]


def test_drop_removes_the_old_urls_policy_and_roots_and_the_new_one_starts_restricted(tmp_path: Path) -> None:
    pol, rts, home = _world(tmp_path)
    carryover.drop(pol, rts, OLD)
    assert set(policy.load(pol).hosts) == {policy.canonical_url(OTHER)}
    assert set(roots.load(rts)) == {policy.canonical_url(OTHER)}
    assert carryover.describe(pol, rts, NEW) == "restricted"  # no record: the policy of an unknown host
