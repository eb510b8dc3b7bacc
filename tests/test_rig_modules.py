"""The test rigs are one set of modules that the tests and the bench share: no module name is defined in
two of the folders on their import path, where the folder that comes first on ``sys.path`` would win.

The tests import from tests/ and tests/e2e/ (pyproject.toml's ``pythonpath``); the bench adds bench/ in
front of those (bench/run.py). A second module of the same name (two ``shellrig.py`` once) means one side
silently imports the other's copy: import it from where it lives instead (bench/README.md).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _import_dirs() -> list[Path]:
    tests = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["pytest"]["ini_options"]
    bench = re.findall(r'sys\.path\.insert\(0, str\(ROOT((?: / "[^"]+")+)\)\)', (ROOT / "bench" / "run.py").read_text())
    from_bench = [ROOT.joinpath(*re.findall(r'"([^"]+)"', parts)) for parts in bench]
    return list(dict.fromkeys([*(ROOT / p for p in tests["pythonpath"]), *from_bench]))


def test_the_bench_puts_the_test_rigs_on_its_path() -> None:
    assert {ROOT / "tests", ROOT / "tests" / "e2e", ROOT / "bench"} <= set(_import_dirs())


def test_no_module_name_is_defined_in_two_folders_on_the_import_path() -> None:
    where: dict[str, list[str]] = {}
    for folder in _import_dirs():
        for path in folder.glob("*.py"):
            if path.stem != "conftest":  # pytest loads each conftest by its path, not by name
                where.setdefault(path.stem, []).append(str(path.relative_to(ROOT)))
    assert {name: paths for name, paths in where.items() if len(paths) > 1} == {}
