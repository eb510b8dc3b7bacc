"""Per-host roots: the default, refusals, expansion around protected paths, safe writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hermes_relay.core import roots
from hermes_relay.core.errors import StateCorruptError, UsageError

URL = "ws://192.168.1.5:8767"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    for d in ("src/app", ".hermes/run", "docs", "a/b/c", "a/d"):
        (home / d).mkdir(parents=True)
    (home / "notes.txt").write_text("x")
    return Path(os.path.realpath(home))


def test_no_entry_means_the_home_directory(home: Path, tmp_path: Path) -> None:
    table = roots.load(tmp_path / "missing.json")
    assert roots.for_url(table, URL, {"HOME": str(home)}) == roots.HostRoots((home,), True)


def test_add_resolves_and_says_what_stays_out_of_reach(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "roots.json"
    protected = (home / ".hermes",)
    root, inside, replaced = roots.add(path, URL, str(home / "src" / ".." / "src"), protected=protected)
    assert (root, inside, replaced) == (home / "src", [], True)
    root, inside, replaced = roots.add(path, URL + "/", str(home), protected=protected)
    assert (inside, replaced) == ([home / ".hermes"], False)
    table = roots.load(path)
    assert roots.for_url(table, URL) == roots.HostRoots((home / "src", home), False)
    assert path.stat().st_mode & 0o777 == 0o600
    roots.add(path, URL, str(home / "src"), protected=protected)  # twice: kept once
    assert roots.load(path)[URL] == (home / "src", home)


@pytest.mark.parametrize(("raw", "message"), [
    ("", "not a directory path"), ("a\0b", "not a directory path"), ("/nonexistent/dir", "not an existing directory"),
    ("NOTES", "not an existing directory"), ("HERMES", "the agent's own state"), ("RUN", "the agent's own state"),
])
def test_bad_roots_are_refused_and_change_nothing(home: Path, tmp_path: Path, raw: str, message: str) -> None:
    raw = {"NOTES": str(home / "notes.txt"), "HERMES": str(home / ".hermes"),
           "RUN": str(home / ".hermes" / "run")}.get(raw, raw)
    path = tmp_path / "roots.json"
    with pytest.raises(UsageError, match=message):
        roots.add(path, URL, raw, protected=(home / ".hermes",))
    assert not path.exists()
    with pytest.raises(UsageError):
        roots.add(path, "http://not-a-relay", str(home / "src"))


def test_a_root_is_expanded_around_protected_paths(home: Path) -> None:
    (home / "docs" / "link-to-state").symlink_to(home / ".hermes")
    (home / "sneaky").symlink_to(home / ".hermes" / "run")
    expanded = roots.expand((home,), (home / ".hermes", home / "a" / "b"))
    assert expanded == (home / "a" / "d", home / "docs", home / "notes.txt", home / "src")
    # a root inside a protected path reaches nothing; one beside them is kept whole
    assert roots.expand((home / ".hermes" / "run", home / "src"), (home / ".hermes",)) == (home / "src",)
    # a protected path reached through a symlink is protected too
    (home / "state").symlink_to(home / ".hermes")
    assert roots.expand((home / "src",), (home / "state",)) == (home / "src",)
    assert home / ".hermes" not in roots.expand((home,), (home / "state",))


def test_remove_and_reset(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "roots.json"
    roots.add(path, URL, str(home / "src"))
    assert roots.remove(path, URL, str(home / "docs")) is False
    assert roots.remove(path, URL, str(home / "src")) is True
    assert roots.for_url(roots.load(path), URL, {"HOME": str(home)}) == roots.HostRoots((), False)  # none, not the default
    roots.reset(path, URL)
    assert roots.for_url(roots.load(path), URL, {"HOME": str(home)}).default


def test_writes_keep_unknown_fields_items_and_odd_names(home: Path, tmp_path: Path) -> None:
    odd = home / "caf\udce9"  # a non-UTF-8 file name, as os.fsdecode gives it
    os.mkdir(os.fsencode(odd))
    path = tmp_path / "roots.json"
    path.write_text(json.dumps({"version": 1, "note": "mine", "hosts": {
        URL: {"roots": [7, str(home / "docs")], "label": "office"}, "ws://other:1": {"roots": [], "x": 1}}}))
    roots.add(path, URL, str(odd))
    doc = json.loads(path.read_text())
    assert doc["note"] == "mine" and doc["hosts"]["ws://other:1"] == {"roots": [], "x": 1}
    assert doc["hosts"][URL]["label"] == "office" and doc["hosts"][URL]["roots"][:2] == [7, str(home / "docs")]
    assert roots.load(path)[URL] == (home / "docs", odd)
    assert roots.forget(path, [URL + "/"]) is True
    assert URL not in json.loads(path.read_text())["hosts"]


@pytest.mark.parametrize("content", [b"{ nope", b"[1]", b'{"version": 1, "hosts": {"ws://a:1": ', b"\xff"])
def test_an_unparseable_file_is_an_error_and_is_never_overwritten(home: Path, tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "roots.json"
    path.write_bytes(content)
    with pytest.raises(StateCorruptError) as info:
        roots.load(path)
    assert "reach nothing" in (info.value.hint or "")
    with pytest.raises(StateCorruptError):
        roots.add(path, URL, str(home / "src"))
    assert path.read_bytes() == content


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def walks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths os.path.realpath walked (roots.realpath reuses answers in between)."""
    seen: list[str] = []
    real = os.path.realpath

    def counted(path: str) -> str:
        seen.append(path)
        return real(path)

    monkeypatch.setattr(roots.os.path, "realpath", counted)
    monkeypatch.setattr(roots, "_resolved", {})
    return seen


def test_a_resolution_is_reused_only_while_the_path_names_the_same_folder(home: Path, walks: list[str]) -> None:
    clock = Clock()
    link = home / "root"
    link.symlink_to(home / "src")
    assert roots.realpath(link, clock=clock) == str(home / "src")
    assert roots.realpath(link, clock=clock) == str(home / "src")
    assert walks == [str(link)]  # the second answer cost two stats, no walk
    link.unlink()
    link.symlink_to(home / "docs")  # re-pointed: the very next call sees it, before RESOLVE_TTL
    assert roots.realpath(link, clock=clock) == str(home / "docs")
    link.unlink()
    assert roots.realpath(link, clock=clock) == str(link)  # gone: it names nothing, as os.path.realpath says
    link.symlink_to(home / "a")
    assert roots.realpath(link, clock=clock) == str(home / "a")


def test_a_folder_swapped_for_another_under_the_remembered_name_is_resolved_again(home: Path, walks: list[str]) -> None:
    # The path still names the same folder, but the remembered answer now names another one: walked again.
    clock = Clock()
    link = home / "root"
    link.symlink_to(home / "src")
    assert roots.realpath(link, clock=clock) == str(home / "src")
    (home / "src").rename(home / "moved")
    (home / "src").mkdir()
    link.unlink()
    link.symlink_to(home / "moved")
    assert roots.realpath(link, clock=clock) == str(home / "moved")


def test_a_resolution_is_walked_again_after_its_time(home: Path, walks: list[str]) -> None:
    # A folder moved away and linked back from its old place keeps its identity and its old (still working)
    # spelling, for RESOLVE_TTL at most.
    clock = Clock()
    root = home / "src"
    assert roots.realpath(root, clock=clock) == str(root)
    root.rename(home / "moved")
    root.symlink_to(home / "moved")
    clock.now += roots.RESOLVE_TTL / 2
    assert roots.realpath(root, clock=clock) == str(root)
    clock.now += roots.RESOLVE_TTL
    assert roots.realpath(root, clock=clock) == str(home / "moved")
    assert walks == [str(root), str(root)]


def test_reachable_follows_a_root_link_re_pointed_into_the_agent_state(home: Path, walks: list[str]) -> None:
    link = home / "root"
    link.symlink_to(home / "src")
    protected = (home / ".hermes",)
    assert roots.reachable((link,), protected) == (home / "src",)
    link.unlink()
    link.symlink_to(home / ".hermes" / "run")
    assert roots.reachable((link,), protected) == ()
