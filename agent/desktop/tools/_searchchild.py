"""The Python content search, in a child process the call can kill (``python -I -m`` this module).

A relay host chooses the regex. Python's ``re`` backtracks, and while it does it holds the GIL: ``(a|a)+b``
against a line of a's, or a plain ``.*x`` against a 1 MiB line (quadratic), ran for minutes in a tool
thread, and the whole agent (every relay's calls, the terminal, the heartbeats) stopped with it, past
every deadline, since no thread can be stopped in the middle of a match. Here the match runs in a process
of its own, which the call kills at its deadline (``search.desktop_search_files``); the walk, the guard's
checks and the matching are the ones ``search.content_search`` always ran, unchanged.

Protocol: one JSON request on stdin ``{root, pattern, limit, confinement, openat2}`` (``search.child_request``);
one JSON answer on stdout, ``{matches, truncated}`` or ``{error}`` (a ToolError's text). Paths travel as strings with the
file system's undecodable bytes as lone surrogates (JSON escapes them).
"""

from __future__ import annotations

import json
import re
import sys
import threading
from pathlib import Path
from typing import Any

from ....core.confine import Confinement
from ....core.desktop import ToolError
from . import _fs, search

_PATHS = search.CHILD_PATHS


def _confinement(doc: dict[str, Any]) -> Confinement:
    values: dict[str, Any] = {k: tuple(Path(p) for p in v) if k in _PATHS else v for k, v in doc.items()}
    return Confinement(**values)


def main() -> int:
    doc = json.loads(sys.stdin.buffer.read())
    if not doc["openat2"]:
        _fs.use_openat2(False)
    try:
        regex = re.compile(doc["pattern"].encode("utf-8", "surrogatepass"))
        matches, truncated = search.content_search(threading.Event(), _confinement(doc["confinement"]),
                                                   Path(doc["root"]), regex, int(doc["limit"]))
        answer: dict[str, Any] = {"matches": matches, "truncated": truncated}
    except ToolError as exc:
        answer = {"error": str(exc)}
    sys.stdout.buffer.write(json.dumps(answer, ensure_ascii=True).encode("ascii"))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
