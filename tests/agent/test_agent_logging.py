"""The agent's log files are private (0600) even under umask 000, also after rotation."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from hermes_relay.agent.main import PrivateRotatingFileHandler, setup_logging


@pytest.fixture
def umask_000():
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def root_logger():
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    yield root
    for handler in root.handlers:
        if handler not in before:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_log_file_and_rotated_files_are_0600_under_umask_000(tmp_path: Path, umask_000, root_logger) -> None:
    log_file = tmp_path / "logs" / "agent.log"
    setup_logging(log_file, to_stderr=False, level="INFO")
    [handler] = [h for h in root_logger.handlers if isinstance(h, PrivateRotatingFileHandler)]
    handler.maxBytes = 200
    for i in range(20):
        logging.getLogger("test").info("line %d %s", i, "x" * 40)
    handler.flush()
    files = sorted(log_file.parent.iterdir())
    assert log_file in files and len(files) >= 2  # rotated at least once
    assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {f.name: 0o600 for f in files}


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_an_existing_world_readable_log_is_made_private(tmp_path: Path, root_logger) -> None:
    log_file = tmp_path / "agent.log"
    log_file.write_text("old\n")
    log_file.chmod(0o644)
    setup_logging(log_file, to_stderr=False, level="INFO")
    logging.getLogger("test").info("new")
    assert stat.S_IMODE(log_file.stat().st_mode) == 0o600
    assert log_file.read_text().startswith("old\n")
