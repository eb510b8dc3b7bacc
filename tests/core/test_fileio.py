"""State-file primitives: atomic private writes, versioned reads that never hide damage, and a real
inter-process lock (checked with a second process, not a second file descriptor)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hermes_relay.core import fileio
from hermes_relay.core.errors import StateCorruptError, StateError, StateLockError, StateVersionError

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---- bounded reads -----------------------------------------------------------------------------


@posix_only
def test_read_bounded_refuses_a_fifo_at_once_instead_of_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "state.json"
    os.mkfifo(fifo)
    with pytest.raises(StateError) as info:
        fileio.read_bounded(fifo)
    assert info.value.message == f"{fifo} is a named pipe (FIFO), not a regular file; it was left untouched"


def test_read_bounded_caps_the_size(tmp_path: Path) -> None:
    big = tmp_path / "state.json"
    big.write_bytes(b" " * 2049)
    with pytest.raises(StateError) as info:
        fileio.read_bounded(big, limit=2048)
    assert "2049 bytes" in info.value.message and "was not read" in info.value.message
    assert fileio.read_bounded(big, limit=4096) == b" " * 2049
    assert fileio.read_bounded(tmp_path / "missing") is None
    assert fileio.MAX_STATE_BYTES == 16 << 20


def test_read_json_versioned_empty_is_missing_only_when_allowed(tmp_path: Path) -> None:
    empty = tmp_path / "state.json"
    empty.write_bytes(b"")
    assert fileio.read_json_versioned(empty, supported=1) is None
    with pytest.raises(StateCorruptError) as info:
        fileio.read_json_versioned(empty, supported=1, empty_ok=False)
    assert "empty (0 bytes)" in info.value.message


# ---- ensure_private_dir / atomic_write ----------------------------------------------------------


@posix_only
def test_ensure_private_dir_creates_parents_and_makes_the_leaf_0700(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "state"
    fileio.ensure_private_dir(target)
    assert target.is_dir()
    assert _mode(target) == 0o700


@posix_only
def test_ensure_private_dir_creates_every_missing_parent_0700_whatever_the_umask(tmp_path: Path) -> None:
    existing = tmp_path / "home"
    existing.mkdir()
    os.chmod(existing, 0o755)
    old = os.umask(0o022)
    try:
        fileio.ensure_private_dir(existing / ".hermes" / "run" / "x")
    finally:
        os.umask(old)
    assert [_mode(p) for p in (existing / ".hermes", existing / ".hermes" / "run", existing / ".hermes" / "run" / "x")] == [0o700] * 3
    assert _mode(existing) == 0o755  # not created here: left alone


@posix_only
def test_ensure_private_dir_tightens_an_existing_open_dir(tmp_path: Path) -> None:
    target = tmp_path / "open"
    target.mkdir()
    os.chmod(target, 0o755)
    fileio.ensure_private_dir(target)
    assert _mode(target) == 0o700


@posix_only
def test_atomic_write_creates_a_0600_file_in_a_0700_dir(tmp_path: Path) -> None:
    path = tmp_path / "state" / "s.json"
    old_umask = os.umask(0)  # even a permissive umask must not leak into the file mode
    try:
        assert fileio.atomic_write(path, b"hello") is True
    finally:
        os.umask(old_umask)
    assert path.read_bytes() == b"hello"
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700


@posix_only
def test_atomic_write_replaces_a_world_readable_file_with_a_0600_one(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_bytes(b"old")
    os.chmod(path, 0o644)
    assert fileio.atomic_write(path, b"new") is True
    assert path.read_bytes() == b"new"
    assert _mode(path) == 0o600


def test_atomic_write_skips_unchanged_contents(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    assert fileio.atomic_write(path, b"same") is True
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))  # any rewrite would move the mtime off this
    before = path.stat()
    assert fileio.atomic_write(path, b"same") is False
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


@posix_only
def test_atomic_write_of_unchanged_contents_still_fixes_the_mode(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_bytes(b"same")
    os.chmod(path, 0o644)
    assert fileio.atomic_write(path, b"same") is False
    assert _mode(path) == 0o600


def test_atomic_write_replaces_by_rename_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    fileio.atomic_write(path, b"one")
    first_inode = path.stat().st_ino
    assert fileio.atomic_write(path, b"two") is True
    assert path.read_bytes() == b"two"
    assert path.stat().st_ino != first_inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]


def test_failed_write_keeps_the_old_file_and_removes_the_temp(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    fileio.atomic_write(path, b"precious")
    with pytest.raises(TypeError):
        fileio.atomic_write(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]


def test_dump_json_is_readable_utf8_with_a_trailing_newline() -> None:
    out = fileio.dump_json({"version": 1, "name": "café"})
    assert out == '{\n  "version": 1,\n  "name": "café"\n}\n'.encode()


# ---- read_json_versioned ------------------------------------------------------------------------


def test_missing_file_reads_as_none(tmp_path: Path) -> None:
    assert fileio.read_json_versioned(tmp_path / "nope.json", supported=1) is None


@pytest.mark.parametrize("raw", [b"", b"   \n\t"])
def test_empty_file_reads_as_none(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "s.json"
    path.write_bytes(raw)
    assert fileio.read_json_versioned(path, supported=1) is None
    assert path.read_bytes() == raw


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        pytest.param(b'{"version": 1, "sessions": ', "not valid JSON", id="truncated"),
        pytest.param(b"\xff\xfe{}", "not valid JSON", id="not-utf8"),
        pytest.param(b"[1, 2]", "top level is list, expected an object", id="array"),
        pytest.param(b'"text"', "top level is str, expected an object", id="string"),
        pytest.param(b'{"version": "2"}', "version is '2', expected an integer", id="string-version"),
        pytest.param(b'{"version": true}', "version is True, expected an integer", id="bool-version"),
    ],
)
def test_corrupt_file_raises_and_is_left_untouched(tmp_path: Path, raw: bytes, detail: str) -> None:
    path = tmp_path / "s.json"
    path.write_bytes(raw)
    with pytest.raises(StateCorruptError) as info:
        fileio.read_json_versioned(path, supported=1)
    assert info.value.path == str(path)
    assert detail in info.value.message
    assert info.value.message.startswith(f"{path} cannot be parsed")
    assert path.read_bytes() == raw
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]


def test_newer_version_raises_and_is_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    raw = b'{"version": 3, "sessions": {}}'
    path.write_bytes(raw)
    with pytest.raises(StateVersionError) as info:
        fileio.read_json_versioned(path, supported=2)
    assert info.value.data == {"path": str(path), "found": 3, "supported": 2}
    assert info.value.hint == "upgrade hermes-relay; the file was not modified"
    assert path.read_bytes() == raw


@pytest.mark.parametrize(
    ("doc", "supported"),
    [({"version": 2, "x": 1}, 2), ({"version": 1}, 2), ({"x": 1}, 1)],
    ids=["same-version", "older-version", "no-version-means-1"],
)
def test_supported_versions_are_returned(tmp_path: Path, doc: dict, supported: int) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps(doc))
    assert fileio.read_json_versioned(path, supported=supported) == doc


# ---- quarantine --------------------------------------------------------------------------------


def test_quarantine_moves_the_file_aside_with_a_utc_stamp(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_bytes(b"{broken")
    now = 1767225600.0  # 2026-01-01T00:00:00Z
    dest = fileio.quarantine(path, now=now)
    assert dest == tmp_path / "s.json.corrupt-20260101T000000Z"
    assert dest.read_bytes() == b"{broken"
    assert not path.exists()

    path.write_bytes(b"{broken again")
    second = fileio.quarantine(path, now=now)
    assert second == tmp_path / "s.json.corrupt-20260101T000000Z-1"
    assert second.read_bytes() == b"{broken again"
    assert dest.read_bytes() == b"{broken"


# ---- FileLock ----------------------------------------------------------------------------------

_HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from hermes_relay.core.fileio import FileLock

    lock = FileLock(Path(sys.argv[1]))
    if sys.argv[2] == "hold":
        lock.acquire()
        print("locked", flush=True)
        sys.stdin.read()  # hold until the parent closes our stdin
        lock.release()
    else:
        print("acquired" if lock.acquire(blocking=False) else "busy", flush=True)
    """
)


def _run_child(target: Path, action: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(target), action], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def test_lock_held_by_another_process_blocks_a_non_blocking_acquire(tmp_path: Path) -> None:
    target = tmp_path / "s.json"
    with _run_child(target, "hold") as child:
        assert child.stdin is not None and child.stdout is not None
        try:
            assert child.stdout.readline().strip() == "locked"
            assert fileio.FileLock(target).acquire(blocking=False) is False
            with pytest.raises(StateLockError, match="timed out after 0.05s"):
                fileio.FileLock(target, timeout=0.05).acquire()
        finally:
            child.stdin.close()
            assert child.wait(timeout=10) == 0

    lock = fileio.FileLock(target, timeout=5)
    assert lock.acquire(blocking=False) is True
    lock.release()


def test_lock_held_here_blocks_another_process(tmp_path: Path) -> None:
    target = tmp_path / "s.json"
    with fileio.FileLock(target):
        busy = subprocess.run(
            [sys.executable, "-c", _HOLDER, str(target), "try"], capture_output=True, text=True, timeout=30
        )
    free = subprocess.run(
        [sys.executable, "-c", _HOLDER, str(target), "try"], capture_output=True, text=True, timeout=30
    )
    assert (busy.returncode, busy.stdout.strip()) == (0, "busy")
    assert (free.returncode, free.stdout.strip()) == (0, "acquired")


@posix_only
def test_lock_uses_a_private_sidecar_file(tmp_path: Path) -> None:
    target = tmp_path / "dir" / "s.json"
    with fileio.FileLock(target) as lock:
        assert lock.path == tmp_path / "dir" / "s.json.lock"
        assert _mode(lock.path) == 0o600
        assert _mode(lock.path.parent) == 0o700
    assert not target.exists()
