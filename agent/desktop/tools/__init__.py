"""The desktop tools, one module per family; ``all_tools()`` is the table the dispatcher serves."""

from __future__ import annotations

from ....core.desktop import ToolSpec


def all_tools() -> list[ToolSpec]:
    from . import archive, files, jobs, processes, search, terminal

    return [*files.TOOLS, *search.TOOLS, *terminal.TOOLS, *jobs.TOOLS, *processes.TOOLS, *archive.TOOLS]
