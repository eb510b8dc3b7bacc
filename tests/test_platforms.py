"""The platform skip table names real test modules, and skips nothing on Linux."""

from __future__ import annotations

from pathlib import Path

import platforms


def test_every_platform_entry_names_a_test_module_that_exists() -> None:
    root = Path(__file__).parent
    for table in platforms.NOT_ON.values():
        for rel, reason in table.items():
            assert (root / rel).is_file(), rel
            assert reason


def test_linux_skips_nothing_and_the_others_say_why() -> None:
    assert platforms.reason_to_skip("linux", "agent/tools/test_tools_jobs.py") is None
    assert platforms.reason_to_skip("win32", "agent/tools/test_tools_jobs.py").startswith("not on win32: ")
    assert platforms.reason_to_skip("darwin", "core/test_winpipe.py") is None
