"""desktop_read_file, desktop_write_file, desktop_patch, desktop_checksum, desktop_copy_directory on real files."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from hermes_relay.agent.desktop.tools import _args, all_tools
from hermes_relay.agent.desktop.tools.files import (
    desktop_checksum,
    desktop_copy_directory,
    desktop_patch,
    desktop_read_file,
    desktop_write_file,
)
from hermes_relay.core.desktop import COMMANDS, FILES, ToolError

pytestmark = pytest.mark.usefixtures("folder_handles")  # full access: descriptors (POSIX) and paths (Windows)

EXPECTED = {
    "desktop_read_file": FILES,
    "desktop_write_file": FILES,
    "desktop_patch": FILES,
    "desktop_search_files": FILES,
    "desktop_terminal": COMMANDS,
    "desktop_job_start": COMMANDS,
    "desktop_job_status": FILES,
    "desktop_job_logs": FILES,
    "desktop_job_cancel": COMMANDS,
    "desktop_job_list": FILES,
    "desktop_spawn_detached": COMMANDS,
    "desktop_list_processes": COMMANDS,
    "desktop_kill_process": COMMANDS,
    "desktop_find_pid_by_port": COMMANDS,
    "desktop_copy_directory": FILES,
    "desktop_zip": FILES,
    "desktop_unzip": FILES,
    "desktop_checksum": FILES,
}


def test_the_table_serves_the_relay_visible_set_with_the_spec_capabilities():
    tools = all_tools()
    assert {t.name: t.capability for t in tools} == EXPECTED
    assert len(tools) == len(EXPECTED)
    for tool in tools:
        assert isinstance(tool.preview({"path": "/x", "command": "ls", "source": "a", "dest": "b"}), str)
        assert isinstance(tool.preview({}), str)


# -- read ----------------------------------------------------------------------------------------


async def test_read_returns_the_text_of_a_relative_path(ctx):
    (ctx.cwd / "notes.txt").write_text("héllo\nworld\n")
    assert await desktop_read_file({"path": "notes.txt"}, ctx) == "héllo\nworld\n"


async def test_read_replaces_bytes_that_are_not_utf8(ctx):
    (ctx.cwd / "bin").write_bytes(b"ok\xff\xfeend")
    assert await desktop_read_file({"path": "bin"}, ctx) == "ok\ufffd\ufffdend"


async def test_read_of_an_oversize_file_gives_the_head_and_a_marker(ctx):
    (ctx.cwd / "big").write_bytes(b"a" * 5000)
    text = await desktop_read_file({"path": "big", "max_bytes": 100}, ctx)
    assert text == "a" * 100 + "\n[... truncated at 100 bytes]"


async def test_read_never_cuts_a_character_in_half(ctx):
    (ctx.cwd / "u").write_text("é" * 10)
    text = await desktop_read_file({"path": "u", "max_bytes": 5}, ctx)
    assert text == "éé\n[... truncated at 5 bytes]"


async def test_read_is_clamped_to_the_read_budget(ctx):
    (ctx.cwd / "big").write_bytes(b"b" * 3000)
    small = replace(ctx, max_read=1000)
    text = await desktop_read_file({"path": "big", "max_bytes": 1_000_000}, small)
    assert text == "b" * 1000 + "\n[... truncated at 1000 bytes]"


async def test_read_honours_max_bytes_up_to_what_fits_in_a_response_frame(ctx):
    from hermes_relay.core.desktop import bound_response, response_envelope

    (ctx.cwd / "big").write_bytes(b"c" * (3 << 20))
    assert await desktop_read_file({"path": "big", "max_bytes": 3_500_000}, ctx) == "c" * (3 << 20)
    (ctx.cwd / "huge").write_bytes(b"d" * (5 << 20))
    text = await desktop_read_file({"path": "huge", "max_bytes": 10 << 20}, ctx)
    assert text == "d" * ctx.max_read + f"\n[... truncated at {ctx.max_read} bytes]"
    envelope = response_envelope("r1", True, result=text)
    assert bound_response(envelope) is envelope  # the agent sends it as read, its own marker included


async def test_read_refuses_directories_and_missing_files(ctx):
    with pytest.raises(ToolError, match="not a regular file"):
        await desktop_read_file({"path": "."}, ctx)
    with pytest.raises(ToolError, match="no such file"):
        await desktop_read_file({"path": "nope.txt"}, ctx)


@pytest.mark.parametrize(
    "args, message",
    [
        ({}, 'missing required argument "path"'),
        ({"path": 3}, '"path" must be a string, got a number'),
        ({"path": ""}, '"path" must not be empty'),
        ({"path": "a", "max_bytes": "10"}, '"max_bytes" must be an integer'),
        ({"path": "a", "max_bytes": -1}, '"max_bytes" must be at least 0'),
        ({"path": "a", "max_bytes": True}, '"max_bytes" must be an integer, got a boolean'),
        ({"path": "a", "max_bytes": 1.5}, "whole number"),
    ],
)
async def test_read_bad_arguments_are_named(ctx, args, message):
    with pytest.raises(ToolError, match=message):
        await desktop_read_file(args, ctx)


# -- write ---------------------------------------------------------------------------------------


async def test_write_creates_and_overwrites_counting_utf8_bytes(ctx):
    result = await desktop_write_file({"path": "out.txt", "content": "ünï"}, ctx)
    assert result == {"ok": True, "bytes_written": 5, "path": str(ctx.cwd / "out.txt")}
    await desktop_write_file({"path": "out.txt", "content": ""}, ctx)
    assert (ctx.cwd / "out.txt").read_bytes() == b""


async def test_write_keeps_the_mode_of_the_file_it_replaces(ctx):
    target = ctx.cwd / "script.sh"
    target.write_text("old")
    target.chmod(0o751)
    await desktop_write_file({"path": "script.sh", "content": "new"}, ctx)
    assert stat.S_IMODE(target.stat().st_mode) == 0o751
    assert target.read_text() == "new"
    assert sorted(p.name for p in ctx.cwd.iterdir()) == ["script.sh"]


async def test_write_into_a_missing_directory_needs_create_dirs(ctx):
    with pytest.raises(ToolError, match="create_dirs: true"):
        await desktop_write_file({"path": "a/b/c.txt", "content": "x"}, ctx)
    assert not (ctx.cwd / "a").exists()
    result = await desktop_write_file({"path": "a/b/c.txt", "content": "x", "create_dirs": True}, ctx)
    assert result["bytes_written"] == 1
    assert (ctx.cwd / "a/b/c.txt").read_text() == "x"


async def test_write_refuses_a_directory_and_bad_arguments(ctx):
    (ctx.cwd / "d").mkdir()
    with pytest.raises(ToolError, match="is a directory"):
        await desktop_write_file({"path": "d", "content": "x"}, ctx)
    with pytest.raises(ToolError, match='"content" must be a string'):
        await desktop_write_file({"path": "f", "content": 5}, ctx)
    with pytest.raises(ToolError, match='missing required argument "content"'):
        await desktop_write_file({"path": "f"}, ctx)
    with pytest.raises(ToolError, match='"create_dirs" must be true or false'):
        await desktop_write_file({"path": "f", "content": "", "create_dirs": "yes"}, ctx)


# -- patch ---------------------------------------------------------------------------------------

ORIGINAL = "".join(f"line {i}\n" for i in range(1, 11))
TWO_HUNKS = """--- a/f.txt
+++ b/f.txt
@@ -1,3 +1,3 @@
 line 1
-line 2
+LINE TWO
 line 3
@@ -8,3 +8,4 @@
 line 8
 line 9
+line 9.5
 line 10
"""


async def test_patch_applies_every_hunk(ctx):
    (ctx.cwd / "f.txt").write_text(ORIGINAL)
    result = await desktop_patch({"path": "f.txt", "patch": TWO_HUNKS}, ctx)
    assert result == {"ok": True, "hunks_applied": 2, "path": str(ctx.cwd / "f.txt")}
    expected = ORIGINAL.replace("line 2\n", "LINE TWO\n").replace("line 9\n", "line 9\nline 9.5\n")
    assert (ctx.cwd / "f.txt").read_text() == expected


async def test_patch_with_one_bad_hunk_writes_nothing(ctx):
    target = ctx.cwd / "f.txt"
    target.write_text(ORIGINAL.replace("line 9\n", "line nine\n"))
    before = target.read_bytes()
    with pytest.raises(ToolError, match=r"does not match at line 9.*unchanged|unchanged.*does not match at line 9"):
        await desktop_patch({"path": "f.txt", "patch": TWO_HUNKS}, ctx)
    assert target.read_bytes() == before


async def test_patch_has_no_fuzz_a_shifted_hunk_is_refused(ctx):
    target = ctx.cwd / "f.txt"
    target.write_text("extra\n" + ORIGINAL)
    with pytest.raises(ToolError, match="does not match"):
        await desktop_patch({"path": "f.txt", "patch": TWO_HUNKS}, ctx)
    assert target.read_text() == "extra\n" + ORIGINAL


async def test_patch_refuses_a_diff_for_several_files(ctx):
    (ctx.cwd / "f.txt").write_text(ORIGINAL)
    other = "diff --git a/g.txt b/g.txt\nindex 1111111..2222222 100644\n" + TWO_HUNKS.replace("f.txt", "g.txt")
    with pytest.raises(ToolError, match="changes 2 files"):
        await desktop_patch({"path": "f.txt", "patch": TWO_HUNKS + other}, ctx)
    assert (ctx.cwd / "f.txt").read_text() == ORIGINAL


async def test_patch_accepts_git_headers(ctx):
    (ctx.cwd / "f.txt").write_text(ORIGINAL)
    diff = "diff --git a/f.txt b/f.txt\nindex 1111111..2222222 100644\n" + TWO_HUNKS
    assert (await desktop_patch({"path": "f.txt", "patch": diff}, ctx))["hunks_applied"] == 2


async def test_patch_creates_a_file_from_dev_null(ctx):
    diff = "--- /dev/null\n+++ b/new.txt\n@@ -0,0 +1,2 @@\n+first\n+second\n"
    result = await desktop_patch({"path": "new.txt", "patch": diff}, ctx)
    assert result["hunks_applied"] == 1
    assert (ctx.cwd / "new.txt").read_text() == "first\nsecond\n"


async def test_patch_on_a_missing_file_that_is_not_a_creation_fails(ctx):
    with pytest.raises(ToolError, match="does not exist"):
        await desktop_patch({"path": "f.txt", "patch": TWO_HUNKS}, ctx)
    assert not (ctx.cwd / "f.txt").exists()


async def test_patch_honours_no_newline_at_end_of_file(ctx):
    target = ctx.cwd / "f.txt"
    target.write_text("a\nb\n")
    diff = "@@ -1,2 +1,2 @@\n a\n-b\n+c\n\\ No newline at end of file\n"
    await desktop_patch({"path": "f.txt", "patch": diff}, ctx)
    assert target.read_text() == "a\nc"


@pytest.mark.parametrize(
    "diff, message",
    [
        ("just text\n", "no hunks found"),
        ("@@ -1,3 +1,3 @@\n line 1\n-line 2\n", "ends early"),
        ("@@ -1,1 +1,1 @@\n line 1\n line 2\n", "unexpected line|more lines"),
        ("@@ -1,2 +1,2 @@\n line 1\n*line 2\n", "not a context"),
    ],
)
async def test_patch_refuses_malformed_diffs(ctx, diff, message):
    (ctx.cwd / "f.txt").write_text(ORIGINAL)
    with pytest.raises(ToolError, match=message):
        await desktop_patch({"path": "f.txt", "patch": diff}, ctx)
    assert (ctx.cwd / "f.txt").read_text() == ORIGINAL


async def test_patch_leaves_a_non_utf8_file_alone(ctx):
    (ctx.cwd / "f.bin").write_bytes(b"\xff\xfe\n")
    with pytest.raises(ToolError, match="not UTF-8"):
        await desktop_patch({"path": "f.bin", "patch": "@@ -1 +1 @@\n-x\n+y\n"}, ctx)
    assert (ctx.cwd / "f.bin").read_bytes() == b"\xff\xfe\n"


# -- checksum ------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["sha256", "sha1", "md5"])
async def test_checksum_matches_hashlib(ctx, algorithm):
    data = os.urandom(3 << 20) + b"tail"
    (ctx.cwd / "blob").write_bytes(data)
    result = await desktop_checksum({"path": "blob", "algorithm": algorithm}, ctx)
    assert result == {
        "path": str(ctx.cwd / "blob"),
        "algorithm": algorithm,
        "hash": hashlib.new(algorithm, data).hexdigest(),
        "size_bytes": len(data),
    }


async def test_checksum_defaults_to_sha256_and_checks_its_arguments(ctx):
    (ctx.cwd / "f").write_bytes(b"abc")
    assert (await desktop_checksum({"path": "f"}, ctx))["hash"] == hashlib.sha256(b"abc").hexdigest()
    with pytest.raises(ToolError, match="must be one of sha256, sha1, md5"):
        await desktop_checksum({"path": "f", "algorithm": "crc32"}, ctx)
    with pytest.raises(ToolError, match="not a regular file"):
        await desktop_checksum({"path": "."}, ctx)


# -- copy_directory ------------------------------------------------------------------------------


def _tree(root):
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "a.txt").write_text("a")
    (root / "sub" / "b.txt").write_text("b")
    (root / "sub" / "deep" / "c.txt").write_text("c")
    os.symlink("a.txt", root / "link")
    os.utime(root / "a.txt", (1_000_000_000, 1_000_000_000))


async def test_copy_directory_copies_the_tree_and_keeps_links_and_times(ctx):
    _tree(ctx.cwd / "src")
    result = await desktop_copy_directory({"source": "src", "dest": "dst"}, ctx)
    dst = ctx.cwd / "dst"
    assert result == {
        "ok": True,
        "source": str(ctx.cwd / "src"),
        "dest": str(dst),
        "files_copied": 4,
        "dirs_copied": 3,
    }
    assert (dst / "sub" / "deep" / "c.txt").read_text() == "c"
    assert os.readlink(dst / "link") == "a.txt"
    assert (dst / "a.txt").stat().st_mtime == 1_000_000_000


async def test_copy_directory_dereferences_on_request_and_can_skip_times(ctx):
    _tree(ctx.cwd / "src")
    await desktop_copy_directory({"source": "src", "dest": "dst", "dereference": True, "preserve_timestamps": False}, ctx)
    dst = ctx.cwd / "dst"
    assert not (dst / "link").is_symlink() and (dst / "link").read_text() == "a"
    assert (dst / "a.txt").stat().st_mtime != 1_000_000_000


async def test_copy_directory_needs_overwrite_for_an_existing_dest(ctx):
    _tree(ctx.cwd / "src")
    (ctx.cwd / "dst").mkdir()
    (ctx.cwd / "dst" / "a.txt").write_text("old")
    with pytest.raises(ToolError, match="overwrite: true"):
        await desktop_copy_directory({"source": "src", "dest": "dst"}, ctx)
    assert (ctx.cwd / "dst" / "a.txt").read_text() == "old"
    await desktop_copy_directory({"source": "src", "dest": "dst", "overwrite": True}, ctx)
    assert (ctx.cwd / "dst" / "a.txt").read_text() == "a"


async def test_copy_directory_refuses_a_dest_inside_the_source_and_a_file_source(ctx):
    _tree(ctx.cwd / "src")
    with pytest.raises(ToolError, match="inside source"):
        await desktop_copy_directory({"source": "src", "dest": "src/inner"}, ctx)
    with pytest.raises(ToolError, match="not a directory"):
        await desktop_copy_directory({"source": "src/a.txt", "dest": "x"}, ctx)
    with pytest.raises(ToolError, match='missing required argument "dest"'):
        await desktop_copy_directory({"source": "src"}, ctx)
    with pytest.raises(ToolError, match='"overwrite" must be true or false'):
        await desktop_copy_directory({"source": "src", "dest": "x", "overwrite": 1}, ctx)


async def test_a_hunk_header_with_a_huge_number_is_a_clear_error(ctx):
    # int() refuses more than 4300 digits with a ValueError: the call failed as a crash, logged as a bug.
    (ctx.cwd / "f.txt").write_text("a\n")
    for header in ("@@ -" + "9" * 5000 + " +1 @@", "@@ -1," + "9" * 5000 + " +1 @@"):
        with pytest.raises(ToolError, match="patch did not apply"):
            await desktop_patch({"path": "f.txt", "patch": header + "\n-a\n+b\n"}, ctx)
    assert (ctx.cwd / "f.txt").read_text() == "a\n"


@pytest.mark.parametrize("raw", ["notes.txt", "a//b/./c/", "../up", "/abs/x", "//x/y", "/", ".", "a/..", "~",
                                 "~/f", "x~/y", "/..//..", "a\nb", "\udcff"])
def test_a_path_argument_resolves_against_the_cwd_as_pathlib_would(ctx, raw):
    assert _args.path({"path": raw}, "path", ctx) == Path(os.path.abspath(ctx.cwd / Path(raw).expanduser()))
