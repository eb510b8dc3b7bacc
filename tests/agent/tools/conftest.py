"""Fixtures for the desktop tool tests: a ToolContext over real directories in tmp_path."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from toolctx import make_ctx

from hermes_relay.agent.desktop.tools import _at
from hermes_relay.core.desktop import ToolContext


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    return make_ctx(tmp_path)


@pytest.fixture(params=["descriptors", "paths"])
def folder_handles(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a full-access file tool test twice: with folder descriptors (POSIX) and with folder paths
    (how Windows runs the file tools, ``tools/_at.PATHS``)."""
    if request.param == "descriptors" and sys.platform == "win32":
        pytest.skip("Windows has no folder descriptors (the file tools use folder paths there)")
    monkeypatch.setattr(_at, "PATHS", request.param == "paths")
    return str(request.param)
