"""desktop_search_files: path globs, content regex with ripgrep and with the Python fallback."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest

from hermes_relay.agent.desktop.tools.search import compile_glob, desktop_search_files
from hermes_relay.core.desktop import ToolError

pytestmark = pytest.mark.usefixtures("folder_handles")  # full access: descriptors (POSIX) and paths (Windows)


@pytest.fixture
def tree(ctx):
    root = ctx.cwd
    for rel, text in {
        "a.py": "def alpha():\n    pass\n",
        "b.txt": "nothing here\n",
        "sub/c.py": "x = 1\ndef gamma(): ...\n",
        "sub/deep/d.py": "print('d')\n",
        "sub/deep/e.md": "def in markdown(\n",
        "node_modules/m.py": "def skipped(): pass\n",
        ".git/g.py": "def skipped(): pass\n",
        "dist/x.py": "def skipped(): pass\n",
        ".cache/y.py": "def skipped(): pass\n",
        ".next/z.py": "def skipped(): pass\n",
    }.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "blob.bin").write_bytes(b"\x00def binary(\n")
    return root


def names(result, root):
    return sorted(str(p)[len(str(root)) + 1 :] for p in result["matches"])


@pytest.mark.parametrize(
    "pattern, expected",
    [
        ("*.py", ["a.py", "sub/c.py", "sub/deep/d.py"]),
        ("sub/*.py", ["sub/c.py"]),
        ("**/*.py", ["a.py", "sub/c.py", "sub/deep/d.py"]),
        ("sub/**/*.md", ["sub/deep/e.md"]),
        ("?.txt", ["b.txt"]),
        ("*.none", []),
    ],
)
async def test_glob_matches_paths_and_skips_vendored_dirs(ctx, tree, pattern, expected):
    result = await desktop_search_files({"pattern": pattern}, ctx)
    assert names(result, tree) == expected
    assert result["truncated"] is False
    assert all(p.startswith(str(tree)) for p in result["matches"])


def test_glob_star_stays_within_a_segment():
    assert compile_glob("*.py").match("a.py")
    assert not compile_glob("*.py").match("sub/a.py")
    assert compile_glob("**/a.py").match("a.py")
    assert compile_glob("a[1].py").match("a[1].py")


async def test_max_results_truncates(ctx, tree):
    result = await desktop_search_files({"pattern": "*.py", "max_results": 2}, ctx)
    assert len(result["matches"]) == 2 and result["truncated"] is True
    exact = await desktop_search_files({"pattern": "*.py", "max_results": 3}, ctx)
    assert len(exact["matches"]) == 3 and exact["truncated"] is False


async def test_cwd_argument_narrows_the_search(ctx, tree):
    result = await desktop_search_files({"pattern": "*.py", "cwd": "sub"}, ctx)
    assert names(result, tree) == ["sub/c.py", "sub/deep/d.py"]


async def test_content_search_python_fallback(ctx, tree):
    no_rg = replace(ctx, env={"PATH": str(tree / "nowhere")})
    result = await desktop_search_files({"pattern": r"def \w+\(", "content": True}, no_rg)
    assert result["impl"] == "python"
    assert names(result, tree) == ["a.py", "sub/c.py"]
    limited = await desktop_search_files({"pattern": r"def", "content": True, "max_results": 1}, no_rg)
    assert len(limited["matches"]) == 1 and limited["truncated"] is True


@pytest.mark.skipif(shutil.which("rg") is None, reason="ripgrep is not installed on this machine")
async def test_content_search_with_ripgrep_finds_the_same_files(ctx, tree):
    result = await desktop_search_files({"pattern": r"def \w+\(", "content": True}, ctx)
    assert result["impl"] == "ripgrep"
    assert names(result, tree) == ["a.py", "sub/c.py"]
    limited = await desktop_search_files({"pattern": r"def", "content": True, "max_results": 1}, ctx)
    assert len(limited["matches"]) == 1 and limited["truncated"] is True


async def test_content_search_refuses_a_bad_regex(ctx, tree):
    with pytest.raises(ToolError, match="invalid regex"):
        await desktop_search_files({"pattern": "def (", "content": True}, ctx)


@pytest.mark.parametrize(
    "args, message",
    [
        ({}, 'missing required argument "pattern"'),
        ({"pattern": "*", "max_results": 0}, '"max_results" must be at least 1'),
        ({"pattern": "*", "content": 1}, '"content" must be true or false'),
        ({"pattern": "*", "cwd": "missing"}, "does not exist"),
        ({"pattern": "*", "cwd": "a.py"}, "is not a directory"),
    ],
)
async def test_bad_arguments_are_named(ctx, tree, args, message):
    with pytest.raises(ToolError, match=message):
        await desktop_search_files(args, ctx)
