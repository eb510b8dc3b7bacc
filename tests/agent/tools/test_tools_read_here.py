"""desktop_read_file answered on the event loop (``ToolContext.here``, ``_thread.run_here``).

A small regular file below a root on a local file system is read without a tool thread. Everything else
(a link at the end of the path, a hard link, another mount, a FIFO, a file bigger than is read there, a
refusal of any kind, a kernel without openat2) is answered by the worker thread exactly as before: the
answers are compared with the threaded read's. The hops are counted by wrapping ``_thread.run``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from toolctx import make_ctx

from hermes_relay.agent.desktop.tools import _fs, _mounts, _thread
from hermes_relay.agent.desktop.tools.files import HERE_READ, desktop_read_file
from hermes_relay.core.confine import Confinement, persistence_paths, protected_paths
from hermes_relay.core.desktop import ToolContext, ToolError

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or not _fs.openat2_available(),
                                reason="reads on the loop need Linux's openat2 (elsewhere every read uses its thread)")
SECRET = b"TOKEN-here-secret"
OWN_STATE = "hermes-relay's own state"


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = _thread.run

    async def counted(fn: Any, *args: Any) -> Any:
        seen.append(getattr(fn, "__name__", "?"))
        return await real(fn, *args)

    monkeypatch.setattr(_thread, "run", counted)
    return seen


@pytest.fixture
def world(tmp_path: Path) -> tuple[ToolContext, Path]:
    home = tmp_path / "home"
    proj = home / "proj"
    for d in (home / ".hermes", proj, tmp_path / "run" / "hermes-relay"):
        d.mkdir(parents=True, exist_ok=True)
    (home / ".hermes" / "credentials").write_bytes(SECRET)
    (proj / "notes.txt").write_text("hello\n")
    os.symlink("notes.txt", proj / "alias")  # stays inside the root
    os.symlink("../.hermes/credentials", proj / "link")
    os.symlink("../.hermes", proj / "ldir")  # a folder link inside the root, to the agent's state
    os.symlink(str(home / ".hermes" / "credentials"), proj / "abs")
    os.link(home / ".hermes" / "credentials", proj / "hard")
    env = {"HOME": str(home), "XDG_RUNTIME_DIR": str(tmp_path / "run"), "PATH": ""}
    c = Confinement(owner="wss://relay.test", roots=(home,), protected=protected_paths(env),
                    write_protected=persistence_paths(env))
    assert _mounts.all_local((*c.roots, *c.protected))  # tmp_path is on a local file system
    return make_ctx(tmp_path, cwd=proj, env={**os.environ, **env}, confinement=c, here=c), proj


async def test_a_small_file_below_a_root_is_read_on_the_loop(world: tuple[ToolContext, Path], hops: list[str]) -> None:
    ctx, proj = world
    assert await desktop_read_file({"path": "notes.txt"}, ctx) == "hello\n"
    assert await desktop_read_file({"path": str(proj / "notes.txt"), "max_bytes": 2}, ctx) == "he\n[... truncated at 2 bytes]"
    assert hops == []


@pytest.mark.parametrize(("path", "refusal"), [
    ("../.hermes/credentials", OWN_STATE),  # the agent's own state, by its path
    ("link", OWN_STATE),  # by a link inside the root (a link at the end: never followed on the loop)
    ("ldir/credentials", OWN_STATE),  # by a folder link inside the root (followed, then refused by identity)
    ("ldir/nothing-here", OWN_STATE),  # not even "no such file" about the agent's state
    ("hard", OWN_STATE),  # by a hard link (its scan of the protected folders: never on the loop)
    ("abs", "leads out of .* through a symbolic link"),
    ("/etc/hostname", "outside the folders"),
    ("missing.txt", "no such file"),
])
async def test_every_refusal_is_the_worker_thread_s(world: tuple[ToolContext, Path], hops: list[str], path: str,
                                                     refusal: str) -> None:
    ctx, _ = world
    with pytest.raises(ToolError, match=refusal):
        await desktop_read_file({"path": path}, ctx)
    assert hops == ["read"]


async def test_what_the_loop_must_not_read_is_read_by_the_thread(world: tuple[ToolContext, Path], hops: list[str]) -> None:
    ctx, proj = world
    assert await desktop_read_file({"path": "alias"}, ctx) == "hello\n"  # a link at the end, inside the root
    big = proj / "big.txt"
    big.write_bytes(b"x" * (HERE_READ + 1))
    assert await desktop_read_file({"path": "big.txt"}, ctx) == "x" * (HERE_READ + 1)  # more than is read here
    assert hops == ["read", "read"]
    assert await desktop_read_file({"path": "big.txt", "max_bytes": 3}, ctx) == "xxx\n[... truncated at 3 bytes]"
    assert hops == ["read", "read"]  # only 4 bytes wanted: on the loop
    os.mkfifo(proj / "pipe")  # nobody writes it: a read that waited would hang the agent
    with pytest.raises(ToolError, match="not a regular file"):
        await desktop_read_file({"path": "pipe"}, ctx)
    assert hops[2:] == ["read"]


async def test_a_path_into_another_mount_is_never_read_on_the_loop(tmp_path: Path, hops: list[str]) -> None:
    """/proc is its own mount below /: the kernel refuses to cross into it (RESOLVE_NO_XDEV), so the thread reads it."""
    whole = Confinement(owner="wss://relay.test", roots=(Path("/"),))
    ctx = make_ctx(tmp_path, confinement=whole, here=whole)
    assert (await desktop_read_file({"path": "/proc/self/status"}, ctx)).startswith("Name:")
    assert hops == ["read"]


async def test_without_openat2_every_read_uses_its_thread(world: tuple[ToolContext, Path], hops: list[str]) -> None:
    ctx, _ = world
    _fs.use_openat2(False)  # (the O_NOFOLLOW walk looks at every name: never on the loop)
    try:
        assert await desktop_read_file({"path": "notes.txt"}, ctx) == "hello\n"
    finally:
        _fs.use_openat2(True)
    assert hops == ["read"]


async def test_a_call_cancelled_before_its_read_reads_nothing(world: tuple[ToolContext, Path], hops: list[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    ctx, _ = world
    opened: list[Path] = []
    real = _fs.open_here
    monkeypatch.setattr(_fs, "open_here", lambda *a: opened.append(a[1]) or real(*a))
    with trio.CancelScope() as scope:
        scope.cancel()  # the caller's deadline passed
        await desktop_read_file({"path": "notes.txt"}, ctx)
    assert scope.cancelled_caught and opened == [] and hops == []


def test_the_mount_table_decides_what_is_local() -> None:
    table = _mounts.parse(
        "22 1 0:21 / /proc rw - proc proc rw\n"
        "30 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
        "31 30 0:40 / /home/u/nas rw - nfs4 srv:/x rw\n"
        "32 30 0:41 / /mnt/with\\040space rw - fuse.sshfs u@h: rw\n"
        "33 30 0:42 / /srv rw - xfs /dev/sdb rw\n"
        "garbage\n")
    assert ("/mnt/with space", "fuse.sshfs") in table
    assert _mounts.local("/home/u/src", table[1:5])  # nas is below src's folders, not above
    assert not _mounts.local("/home/u/nas/file", table) and not _mounts.local("/home/u/nas", table)
    assert not _mounts.local("/mnt/with space/a", table) and _mounts.local("/mnt/withspace", table[1:5])
    assert _mounts.local("/srv/data", table[1:5]) and not _mounts.local("/proc/1", table)
    assert not _mounts.local("/srv/data", table)  # a line that does not parse: nothing is local


def test_a_path_counts_as_local_only_when_it_and_where_it_leads_are(tmp_path: Path) -> None:
    """``all_local`` looks at each path as written and as resolved: a link on a local disk into a network
    mount is remote, and so is a path below that mount; a folder beside it is local."""
    (tmp_path / "nas").mkdir()
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "to-nas").symlink_to(tmp_path / "nas")
    table = [("/", "ext4"), (str(tmp_path / "nas"), "nfs4")]
    assert _mounts.all_local([tmp_path / "work"], table)
    assert not _mounts.all_local([tmp_path / "work" / "to-nas"], table)
    assert not _mounts.all_local([tmp_path / "work", tmp_path / "nas" / "missing"], table)
    assert not _mounts.all_local([tmp_path / "work"], [("/", "fuse.sshfs")])  # an unknown type is remote
    assert _mounts.all_local([], table)
