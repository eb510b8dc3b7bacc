"""Fixtures for the desktop tool tests: a ToolContext over real directories in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest
from toolctx import make_ctx

from hermes_relay.core.desktop import ToolContext


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    return make_ctx(tmp_path)
