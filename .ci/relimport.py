#!/usr/bin/env python3
"""Rewrite the package's imports of itself to relative ones (``from hermes_relay.core import x`` in
agent/foo.py becomes ``from ..core import x``), so a tool that only reads the checkout resolves them.

    python3 .ci/relimport.py            rewrite the checkout this script is in, then sort: ruff check --fix --select I .
    python3 .ci/relimport.py --check    list the absolute self-imports left (exit 1 if any)
    python3 .ci/relimport.py ROOT       another checkout

Only the package's own files are rewritten: those in the folders ``[tool.setuptools.package-dir]`` in
pyproject.toml maps (not tests/ or bench/, which import the installed ``hermes_relay``). Import
statements are found with ``ast``, so text that merely looks like one (a docstring, a string such as
``"hermes_relay.agent.desktop.sandbox.spawner"`` or ``python -m hermes_relay.agent``) is left alone;
imports under ``if TYPE_CHECKING:`` and inside functions are rewritten like the others. ``import
hermes_relay.a.b as y`` becomes ``from ..a import b as y``; ``import hermes_relay.a`` without ``as``
binds the name ``hermes_relay`` and has no relative spelling: it is reported, not rewritten.
Running it again changes nothing. A rewrite also turns on tests/test_relative_imports.py's guard
(``RELATIVE_ONLY = True``), so an absolute self-import added later fails the tests.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "hermes_relay"
GUARD = Path("tests/test_relative_imports.py")
GUARD_OFF, GUARD_ON = "RELATIVE_ONLY = False", "RELATIVE_ONLY = True"


def package_files(root: Path) -> Iterator[tuple[Path, str]]:
    """(file, the package it is in) for every module of the package, from pyproject's package-dir."""
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    for package, folder in sorted(config["tool"]["setuptools"]["package-dir"].items()):
        for path in sorted((root / folder).glob("*.py")):
            yield path, package


def relative(target: str, package: str) -> str:
    """``target`` (a module or package under PACKAGE) as seen from a module of ``package``."""
    here, there = package.split("."), target.split(".")
    common = 0
    while common < min(len(here), len(there)) and here[common] == there[common]:
        common += 1
    return "." * (1 + len(here) - common) + ".".join(there[common:])


def _ours(name: str | None) -> bool:
    return name is not None and (name == PACKAGE or name.startswith(PACKAGE + "."))


def rewrite(source: str, package: str) -> tuple[str, list[str]]:
    """The source with its absolute self-imports made relative, and the ones that cannot be (line: text)."""
    lines = source.splitlines(keepends=True)
    edits: list[tuple[int, int, int, str]] = []  # (line index, start col, end col, replacement)
    problems: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and _ours(node.module):
            assert node.module is not None
            line = lines[node.lineno - 1]
            found = re.compile(r"from\s+" + re.escape(node.module) + r"\b").match(line, node.col_offset)
            if found is None:
                problems.append(f"{node.lineno}: {line.strip()}")
                continue
            edits.append((node.lineno - 1, found.start(), found.end(), "from " + relative(node.module, package)))
        elif isinstance(node, ast.Import) and any(_ours(alias.name) for alias in node.names):
            alias = node.names[0]
            single_line = node.end_lineno == node.lineno
            if len(node.names) != 1 or alias.asname is None or alias.name == PACKAGE or not single_line:
                problems.append(f"{node.lineno}: {lines[node.lineno - 1].strip()} (no relative spelling; rewrite it by hand)")
                continue
            parent, _, leaf = alias.name.rpartition(".")
            assert node.end_col_offset is not None
            edits.append((node.lineno - 1, node.col_offset, node.end_col_offset,
                          f"from {relative(parent, package)} import {leaf} as {alias.asname}"))
    for index, start, end, text in sorted(edits, reverse=True):
        lines[index] = lines[index][:start] + text + lines[index][end:]
    return "".join(lines), problems


def main(argv: list[str]) -> int:
    check = "--check" in argv
    args = [a for a in argv if a != "--check"]
    root = Path(args[0]) if args else Path(__file__).resolve().parent.parent
    changed, left, problems = 0, 0, []
    for path, package in package_files(root):
        source = path.read_text(encoding="utf-8")
        new, trouble = rewrite(source, package)
        problems += [f"{path.relative_to(root)}:{p}" for p in trouble]
        if new != source:
            if check:
                left += sum(1 for a, b in zip(source.splitlines(), new.splitlines(), strict=True) if a != b)
                print(f"{path.relative_to(root)}: absolute self-import")
            else:
                path.write_text(new, encoding="utf-8")
                changed += 1
    for problem in problems:
        print(problem, file=sys.stderr)
    if check:
        return 1 if left or problems else 0
    guard = root / GUARD
    if guard.exists() and GUARD_OFF in (text := guard.read_text(encoding="utf-8")):
        guard.write_text(text.replace(GUARD_OFF, GUARD_ON), encoding="utf-8")
        print(f"turned on {GUARD}")
    print(f"rewrote {changed} files")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
