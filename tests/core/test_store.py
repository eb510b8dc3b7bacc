"""The shared session store: keeps what it does not understand, never clobbers a damaged file, and
loses no update when several processes write at once."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import helpers
import pytest

from hermes_relay.core import store
from hermes_relay.core.errors import NotPairedError, StateCorruptError, StateError, StateVersionError
from hermes_relay.core.store import SessionStore, redact_record, resolve_in, route_urls

OWNER = "ws://192.168.1.20:8767"
FOREIGN_DOC: dict[str, Any] = {
    "version": 1,
    "written_by": "hermes-desktop 2.3",  # a top-level field from another client
    "sessions": {
        OWNER: {
            "token": "tok-1",
            "server_version": "1.9.0",
            "paired_at": 1767225600,
            "route_candidates": [
                "ws://100.101.102.103:8767",
                {"url": "wss://relay.example.com", "role": "public"},
                {"relay": {"url": "ws://relay.tail1234.ts.net:8767/"}, "role": "tailscale"},
            ],
            "future_field": {"nested": [1, 2, {"x": None}]},
        },
        "ws://10.0.0.9:8767": {"token": "tok-2", "unknown_flag": True},
    },
}


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "home" / ".hermes" / "remote-sessions.json"


def _write(path: Path, raw: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)


def test_missing_file_reads_as_an_empty_store(path: Path) -> None:
    assert SessionStore(path).read() == {"version": 1, "sessions": {}}
    assert not path.exists()


def test_unknown_fields_and_records_survive_an_update(path: Path) -> None:
    _write(path, json.dumps(FOREIGN_DOC).encode())
    s = SessionStore(path)

    def touch(sessions: dict[str, dict[str, Any]]) -> str:
        sessions[OWNER]["token"] = "tok-1b"
        return "done"

    assert s.update(touch) == "done"
    expected = json.loads(json.dumps(FOREIGN_DOC))
    expected["sessions"][OWNER]["token"] = "tok-1b"
    assert json.loads(path.read_text()) == expected


def test_update_that_changes_nothing_does_not_rewrite(path: Path) -> None:
    raw = json.dumps(FOREIGN_DOC).encode()
    _write(path, raw)
    before = path.stat()
    assert SessionStore(path).update(lambda sessions: len(sessions)) == 2
    after = path.stat()
    assert path.read_bytes() == raw
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_first_write_creates_a_0600_file_in_a_0700_dir(path: Path) -> None:
    SessionStore(path).update(lambda s: s.setdefault("ws://h:8767", {"token": "t"}))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert json.loads(path.read_text()) == {"version": 1, "sessions": {"ws://h:8767": {"token": "t"}}}


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        pytest.param(b'{"version": 1, "sessions": {"ws://h:8767": {"tok', StateCorruptError, id="truncated"),
        pytest.param(b"\x00\x00\x00garbage", StateCorruptError, id="binary"),
        pytest.param(b'{"version": 1, "sessions": []}', StateCorruptError, id="sessions-not-a-map"),
        pytest.param(b"", StateCorruptError, id="empty"),
        pytest.param(b"  \n", StateCorruptError, id="whitespace-only"),
        pytest.param(b'{"version": 2, "sessions": {}}', StateVersionError, id="newer-version"),
    ],
)
def test_damaged_or_newer_file_is_never_overwritten(path: Path, raw: bytes, error: type[Exception]) -> None:
    _write(path, raw)
    called = []
    with pytest.raises(error) as info:
        SessionStore(path).update(lambda s: called.append(s) or s.clear())
    assert info.value.path == str(path)  # type: ignore[attr-defined]
    assert called == []
    assert path.read_bytes() == raw
    assert sorted(p.name for p in path.parent.iterdir()) == ["remote-sessions.json", "remote-sessions.json.lock"]
    with pytest.raises(error):
        SessionStore(path).read()


def test_an_empty_store_is_unreadable_not_no_pairings(path: Path) -> None:
    _write(path, b"")
    with pytest.raises(StateCorruptError) as info:
        SessionStore(path).sessions()
    assert "is empty (0 bytes)" in info.value.message and "left untouched" in info.value.message
    assert "doctor --fix" in (info.value.hint or "") and "backup" in (info.value.hint or "")
    assert path.read_bytes() == b""


def test_a_record_that_is_not_an_object_is_kept_skipped_and_reported(path: Path) -> None:
    doc = {"version": 1, "sessions": {"ws://h:8767": "tok", OWNER: {"token": "t", "route_candidates": 5}}}
    _write(path, json.dumps(doc).encode())
    s = SessionStore(path)
    assert s.sessions() == {OWNER: {"token": "t", "route_candidates": 5}}
    parsed = s.records()
    assert parsed.problems() == [
        {"url": "ws://h:8767", "problem": "the record is str, expected an object: skipped"},
        {"url": OWNER, "problem": "route_candidates is int, expected a list: ignored"},
    ]
    assert resolve_in(json.loads(path.read_text())["sessions"], "ws://h:8767") is None
    s.update(lambda sessions: sessions[OWNER].__setitem__("token", "t2"))
    assert json.loads(path.read_text())["sessions"]["ws://h:8767"] == "tok"


@pytest.mark.skipif(os.name != "posix", reason="POSIX file types")
@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_store_that_is_not_a_regular_file_is_refused_without_hanging(path: Path, kind: str) -> None:
    path.parent.mkdir(parents=True)
    if kind == "directory":
        path.mkdir()
    else:
        os.mkfifo(path)
    with pytest.raises(StateError) as info:
        SessionStore(path).sessions()
    assert str(path) in info.value.message and "not a regular file" in info.value.message
    assert "move" in (info.value.hint or "")
    with pytest.raises(StateError):
        SessionStore(path, lock_timeout=1).update(lambda s: s.clear())
    assert path.is_dir() if kind == "directory" else stat.S_ISFIFO(os.stat(path).st_mode)


@pytest.mark.skipif(os.name != "posix", reason="file modes")
def test_an_unreadable_store_is_a_state_error_naming_the_file(path: Path, request: pytest.FixtureRequest) -> None:
    if helpers.bypasses_file_permissions():
        helpers.rerun_without_file_permission_bypass(request.node.nodeid)
        return
    _write(path, json.dumps(FOREIGN_DOC).encode())
    os.chmod(path, 0)
    with pytest.raises(StateError) as info:
        SessionStore(path).sessions()
    assert info.value.message == f"cannot read {path}: Permission denied"
    assert "0600" in (info.value.hint or "")


@pytest.mark.skipif(os.name != "posix", reason="symlinks")
def test_a_symlinked_store_is_written_through_to_its_target(path: Path, tmp_path: Path) -> None:
    real = tmp_path / "synced" / "remote-sessions.json"
    _write(real, json.dumps(FOREIGN_DOC).encode())
    path.parent.mkdir(parents=True)
    path.symlink_to(real)
    SessionStore(path).update(lambda s: s.__setitem__("ws://new:8767", {"token": "n"}))
    assert path.is_symlink() and os.readlink(path) == str(real)
    assert json.loads(real.read_text())["sessions"]["ws://new:8767"] == {"token": "n"}
    assert stat.S_IMODE(real.stat().st_mode) == 0o600


@pytest.mark.skipif(os.name != "posix", reason="device files")
def test_a_store_linked_to_dev_zero_is_refused_not_read_into_memory(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.symlink_to("/dev/zero")
    with pytest.raises(StateError) as info:
        SessionStore(path).sessions()
    assert "a device, not a regular file" in info.value.message


def test_a_full_disk_is_a_state_error_that_keeps_the_store(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(path, json.dumps(FOREIGN_DOC).encode())
    s = SessionStore(path)
    real_open = os.open

    def full(p, flags, *a):  # type: ignore[no-untyped-def]
        if flags & os.O_CREAT and ".lock" not in str(p):
            raise OSError(28, "No space left on device")
        return real_open(p, flags, *a)

    monkeypatch.setattr(os, "open", full)
    with pytest.raises(StateError) as info:
        s.check_writable()
    assert info.value.message == f"cannot write {path}: No space left on device"
    assert "free some disk space" in (info.value.hint or "")
    with pytest.raises(StateError) as info:
        s.update(lambda sessions: sessions.__setitem__("ws://new:8767", {"token": "n"}))
    assert "No space left on device" in info.value.message
    monkeypatch.undo()
    assert json.loads(path.read_text()) == FOREIGN_DOC


@pytest.mark.skipif(os.name != "posix", reason="file modes")
def test_a_failed_write_is_a_state_error_and_check_writable_finds_it_first(path: Path,
                                                                           request: pytest.FixtureRequest) -> None:
    if helpers.bypasses_file_permissions():
        helpers.rerun_without_file_permission_bypass(request.node.nodeid)
        return
    _write(path, json.dumps(FOREIGN_DOC).encode())
    s = SessionStore(path)
    s.check_writable()
    os.chmod(path.parent, 0o500)
    try:
        with pytest.raises(StateError) as info:
            s.check_writable()
        assert info.value.message.startswith(f"cannot write {path}: Permission denied")
        assert "writable" in (info.value.hint or "")
        with pytest.raises(StateError):
            s.update(lambda sessions: sessions.__setitem__("ws://new:8767", {"token": "n"}))
    finally:
        os.chmod(path.parent, 0o700)
    assert json.loads(path.read_text()) == FOREIGN_DOC


def test_document_without_sessions_key_gets_one(path: Path) -> None:
    _write(path, b'{"version": 1, "other": 5}')
    assert SessionStore(path).read() == {"version": 1, "other": 5, "sessions": {}}


_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from hermes_relay.core.store import SessionStore

    store = SessionStore(Path(sys.argv[1]), lock_timeout=30)
    writer = sys.argv[2]
    sys.stdin.readline()  # start line: every writer begins together
    for i in range(25):
        url = f"ws://writer{writer}-{i}.test:8767"
        store.update(lambda s: s.__setitem__(url, {"token": f"t-{writer}-{i}", "writer": writer}))
    """
)


WRITERS = 20  # the reliability target: 20 processes updating the store at once


def test_concurrent_updates_from_twenty_processes_lose_nothing(path: Path) -> None:
    _write(path, json.dumps(FOREIGN_DOC).encode())
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), str(w)],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(WRITERS)
    ]
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    failures = []
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        if proc.returncode != 0:
            failures.append(err)
    assert failures == []

    sessions = SessionStore(path).sessions()
    written = {k for k in sessions if k not in FOREIGN_DOC["sessions"]}
    assert written == {f"ws://writer{w}-{i}.test:8767" for w in range(WRITERS) for i in range(25)}
    assert sessions["ws://writer3-7.test:8767"] == {"token": "t-3-7", "writer": "3"}
    assert sessions[OWNER] == FOREIGN_DOC["sessions"][OWNER]
    assert json.loads(path.read_text())["written_by"] == "hermes-desktop 2.3"


@pytest.mark.parametrize(
    "url",
    [
        OWNER,
        OWNER + "/",
        "ws://100.101.102.103:8767",
        "wss://relay.example.com",
        "wss://relay.example.com/",
        "ws://relay.tail1234.ts.net:8767",
    ],
)
def test_resolve_maps_alternate_route_urls_to_the_owner_record(path: Path, url: str) -> None:
    _write(path, json.dumps(FOREIGN_DOC).encode())
    key, record = SessionStore(path).resolve(url)
    assert key == OWNER
    assert record["token"] == "tok-1"


def test_resolve_prefers_a_direct_key_over_an_alternate_route(path: Path) -> None:
    sessions = {
        OWNER: {"token": "a", "route_candidates": ["ws://10.0.0.9:8767"]},
        "ws://10.0.0.9:8767": {"token": "b"},
    }
    assert resolve_in(sessions, "ws://10.0.0.9:8767") == ("ws://10.0.0.9:8767", {"token": "b"})


def test_resolve_unknown_url_is_not_paired(path: Path) -> None:
    _write(path, json.dumps(FOREIGN_DOC).encode())
    with pytest.raises(NotPairedError) as info:
        SessionStore(path).resolve("ws://203.0.113.5:8767")
    assert info.value.message == "no stored session for ws://203.0.113.5:8767"
    assert info.value.hint and "hermes-relay pair" in info.value.hint
    assert resolve_in({}, OWNER) is None


def test_route_urls_reads_every_candidate_shape() -> None:
    record = {
        "route_candidates": [
            "ws://a:8767",
            {"url": "ws://b:8767"},
            {"relay": {"url": "ws://c:8767"}},
            {"url": "ws://ignored:8767", "relay": {"url": "ws://d:8767"}},  # relay.url wins, as the reference reads it
            {"relay": "not a map"},
            {"url": 5},
            42,
            None,
        ]
    }
    assert route_urls(record) == ["ws://a:8767", "ws://b:8767", "ws://c:8767", "ws://d:8767"]
    assert route_urls({"route_candidates": 5}) == [] and route_urls({"route_candidates": ["http//x"]}) == []
    assert route_urls({}) == []
    assert route_urls({"route_candidates": None}) == []


def test_redact_record_hides_tokens_everywhere_and_copies() -> None:
    record = {
        "token": "tok-secret",
        "refresh_token": "refresh-secret",
        "paired_at": 1767225600,
        "cert_pin_sha256": "sha256/" + "A" * 43 + "=",
        "api": {"host": "h", "key": "api-secret", "session_token": "s-secret"},
        "route_candidates": [{"url": "ws://a:8767", "access_token": "a-secret"}],
        "token_count": 3,
        "empty_token": "",
        "grants": {"chat": 1},
    }
    original = json.loads(json.dumps(record))
    redacted = redact_record(record)
    assert redacted == {
        "token": "(redacted)",
        "refresh_token": "(redacted)",
        "paired_at": 1767225600,
        "cert_pin_sha256": "sha256/" + "A" * 43 + "=",
        "api": {"host": "h", "key": "(redacted)", "session_token": "(redacted)"},
        "route_candidates": [{"url": "ws://a:8767", "access_token": "(redacted)"}],
        "token_count": 3,
        "empty_token": "",
        "grants": {"chat": 1},
    }
    assert record == original
    assert "secret" not in json.dumps(redacted)
    assert store.REDACTED == "(redacted)"
