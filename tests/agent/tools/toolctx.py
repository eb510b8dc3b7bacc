"""A ToolContext over real directories in tmp_path (a plain module: ``from conftest import`` would pick
whichever conftest.py pytest imported last when several test folders run together)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from hermes_relay.core.desktop import ToolContext


def make_ctx(tmp_path: Path, **overrides: Any) -> ToolContext:
    home = tmp_path / "home"
    work = tmp_path / "work"
    home.mkdir(exist_ok=True)
    work.mkdir(exist_ok=True)
    fields: dict[str, Any] = {"home": home, "cwd": work, "deadline": math.inf, "env": dict(os.environ)}
    fields.update(overrides)
    return ToolContext(**fields)
