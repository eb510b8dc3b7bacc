"""desktop_zip and desktop_unzip: round trips, and archives that try to escape dest are refused whole."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zipfile

import pytest

from hermes_relay.agent.desktop.tools import archive
from hermes_relay.agent.desktop.tools.archive import desktop_unzip, desktop_zip
from hermes_relay.core.desktop import ToolError

pytestmark = pytest.mark.usefixtures("folder_handles")  # full access: descriptors (POSIX) and paths (Windows)


def _project(root):
    (root / "proj" / "sub").mkdir(parents=True)
    (root / "proj" / "a.txt").write_text("alpha")
    (root / "proj" / "sub" / "b.bin").write_bytes(os.urandom(5000))
    return root / "proj"


def _snapshot(root):
    return {
        p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize("fmt", ["zip", "tar", "tar.gz"])
async def test_round_trip(ctx, fmt):
    source = _project(ctx.cwd)
    result = await desktop_zip({"source": "proj", "dest": f"out.{fmt}", "format": fmt}, ctx)
    archive_path = ctx.cwd / f"out.{fmt}"
    data = archive_path.read_bytes()
    assert result["ok"] is True and result["dest"] == str(archive_path)
    assert result["size_bytes"] == len(data)
    assert result["sha256"] == hashlib.sha256(data).hexdigest()
    assert result["impl"] == ("python-zipfile" if fmt == "zip" else "python-tarfile")
    assert [p.name for p in ctx.cwd.iterdir() if p.name.startswith(".")] == []

    unpacked = await desktop_unzip({"source": f"out.{fmt}", "dest": "restored"}, ctx)
    assert unpacked["ok"] is True and unpacked["dest"] == str(ctx.cwd / "restored")
    assert unpacked["files_extracted"] == 2 and unpacked["bytes_extracted"] == 5005
    assert _snapshot(ctx.cwd / "restored" / "proj") == _snapshot(source)


async def test_zip_of_a_single_file_and_an_archive_inside_its_source(ctx):
    source = _project(ctx.cwd)
    await desktop_zip({"source": "proj/a.txt", "dest": "a.zip"}, ctx)
    with zipfile.ZipFile(ctx.cwd / "a.zip") as zf:
        assert zf.namelist() == ["a.txt"]
    await desktop_zip({"source": "proj", "dest": "proj/self.zip"}, ctx)
    with zipfile.ZipFile(source / "self.zip") as zf:
        assert sorted(zf.namelist()) == ["proj/", "proj/a.txt", "proj/sub/", "proj/sub/b.bin"]


def _zip_with(ctx, name, entries):
    path = ctx.cwd / name
    with zipfile.ZipFile(path, "w") as zf:
        for entry, data in entries:
            zf.writestr(entry, data)
    return path


@pytest.mark.parametrize("evil", ["../evil.txt", "ok/../../evil.txt", "/tmp/evil-abs.txt", "C:/evil.txt"])
async def test_zip_slip_is_refused_and_nothing_is_extracted(ctx, evil):
    _zip_with(ctx, "evil.zip", [("fine.txt", b"fine"), (evil, b"evil")])
    with pytest.raises(ToolError, match="nothing was extracted"):
        await desktop_unzip({"source": "evil.zip", "dest": "out"}, ctx)
    assert not (ctx.cwd / "out").exists()
    assert not (ctx.cwd / "evil.txt").exists()


async def test_a_link_already_in_dest_cannot_be_written_through(ctx, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (ctx.cwd / "out").mkdir()
    os.symlink(outside, ctx.cwd / "out" / "link")
    _zip_with(ctx, "through.zip", [("link/planted.txt", b"x")])
    with pytest.raises(ToolError, match="through a link.*nothing was extracted"):
        await desktop_unzip({"source": "through.zip", "dest": "out"}, ctx)
    assert list(outside.iterdir()) == []


def _tar_with(ctx, name, members):
    path = ctx.cwd / name
    with tarfile.open(path, "w") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


async def test_tar_symlink_out_of_dest_is_refused(ctx):
    link = tarfile.TarInfo("escape")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc"
    plain = tarfile.TarInfo("plain.txt")
    plain.size = 2
    _tar_with(ctx, "evil.tar", [(plain, b"ok"), (link, None)])
    with pytest.raises(ToolError, match="refused"):
        await desktop_unzip({"source": "evil.tar", "dest": "out"}, ctx)
    assert not (ctx.cwd / "out").exists()


async def test_tar_dotdot_entry_is_refused(ctx):
    entry = tarfile.TarInfo("../up.txt")
    entry.size = 1
    _tar_with(ctx, "up.tar", [(entry, b"x")])
    with pytest.raises(ToolError, match="leaves the destination"):
        await desktop_unzip({"source": "up.tar", "dest": "out"}, ctx)
    assert not (ctx.cwd / "up.txt").exists()


async def test_total_size_is_capped_before_extracting(ctx, monkeypatch):
    monkeypatch.setattr(archive, "MAX_EXTRACT_BYTES", 1000)
    _zip_with(ctx, "bomb.zip", [("a", b"\0" * 600), ("b", b"\0" * 600)])
    with pytest.raises(ToolError, match="over the 1000-byte limit"):
        await desktop_unzip({"source": "bomb.zip", "dest": "out"}, ctx)
    assert not (ctx.cwd / "out").exists()


async def test_a_tar_with_too_many_entries_is_refused_before_its_headers_are_all_read(ctx, monkeypatch):
    # A compressed tar of millions of empty headers is a few kilobytes; reading every header before counting
    # them took the agent's memory (a TarInfo each) and ran on past the call's deadline.
    monkeypatch.setattr(archive, "MAX_ENTRIES", 100)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for n in range(3000):
            tf.addfile(tarfile.TarInfo(f"e{n}"), io.BytesIO(b""))
    (ctx.cwd / "many.tar.gz").write_bytes(buf.getvalue())
    read = []
    real = tarfile.TarInfo.fromtarfile.__func__

    def counting(cls, tarobj):
        read.append(1)
        return real(cls, tarobj)

    monkeypatch.setattr(tarfile.TarInfo, "fromtarfile", classmethod(counting))
    with pytest.raises(ToolError, match="more than 100 entries"):
        await desktop_unzip({"source": "many.tar.gz", "dest": "out"}, ctx)
    assert len(read) <= 102, f"{len(read)} headers read"
    assert not (ctx.cwd / "out").exists()


async def test_unzip_refuses_what_is_not_an_archive(ctx):
    (ctx.cwd / "plain.txt").write_text("hello")
    with pytest.raises(ToolError, match="neither a zip nor a tar"):
        await desktop_unzip({"source": "plain.txt", "dest": "out"}, ctx)
    with pytest.raises(ToolError, match="is not a file"):
        await desktop_unzip({"source": "missing.zip", "dest": "out"}, ctx)
    with pytest.raises(ToolError, match='missing required argument "dest"'):
        await desktop_unzip({"source": "plain.txt"}, ctx)
    with pytest.raises(ToolError, match="exists and is not a directory"):
        await desktop_unzip({"source": "plain.txt", "dest": "plain.txt"}, ctx)


@pytest.mark.parametrize(
    "args, message",
    [
        ({"dest": "x.zip"}, 'missing required argument "source"'),
        ({"source": "proj", "dest": "x.zip", "format": "rar"}, "must be one of zip, tar, tar.gz, tgz"),
        ({"source": "nothing", "dest": "x.zip"}, "does not exist"),
        ({"source": "proj", "dest": "proj"}, "is a directory"),
        ({"source": "proj", "dest": "no/such/dir/x.zip"}, "does not exist"),
    ],
)
async def test_zip_bad_arguments_are_named(ctx, args, message):
    _project(ctx.cwd)
    with pytest.raises(ToolError, match=message):
        await desktop_zip(args, ctx)
