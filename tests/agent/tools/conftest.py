"""Fixtures for the desktop tool tests: a ToolContext over real directories in tmp_path."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from hermes_relay.core.desktop import ToolContext


def make_ctx(tmp_path: Path, **overrides) -> ToolContext:
    home = tmp_path / "home"
    work = tmp_path / "work"
    home.mkdir(exist_ok=True)
    work.mkdir(exist_ok=True)
    fields = {"home": home, "cwd": work, "deadline": math.inf, "env": dict(os.environ)}
    fields.update(overrides)
    return ToolContext(**fields)


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    return make_ctx(tmp_path)
