"""A strict unified-diff applier for desktop_patch: exact context, no fuzz, all hunks or none.

A hunk applies only where its header says and only when every context and removed line matches the
file exactly; line counts must agree with the header. Any mismatch raises PatchError naming the hunk
and the line, and nothing is produced, so the caller writes nothing. One diff patches one file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_HUNK = re.compile(r"^@@ -(\d{1,12})(?:,(\d{1,12}))? \+(\d{1,12})(?:,(\d{1,12}))? @@")  # (int() refuses 4300 digits)
_NO_EOL = "\\"
_GIT_HEADERS = ("diff ", "index ", "new file mode", "deleted file mode", "old mode", "new mode", "similarity index")


class PatchError(ValueError):
    pass


@dataclass
class Hunk:
    old_start: int
    old_len: int
    new_start: int
    new_len: int
    lines: list[str] = field(default_factory=list)  # each starts with ' ', '-' or '+'
    old_no_eol: bool = False
    new_no_eol: bool = False

    @property
    def label(self) -> str:
        return f"@@ -{self.old_start},{self.old_len} +{self.new_start},{self.new_len} @@"


@dataclass
class Diff:
    hunks: list[Hunk]
    creates: bool  # the old side is /dev/null


def parse(text: str) -> Diff:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    hunks: list[Hunk] = []
    targets = 0
    creates = False
    i = 0
    while i < len(lines):
        line = lines[i].rstrip("\r") if not lines[i].startswith((" ", "+", "-")) else lines[i]
        if line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            targets += 1
            creates = line[4:].split("\t")[0].strip() == "/dev/null"
            i += 2
            continue
        if line.startswith(_GIT_HEADERS):
            i += 1
            continue
        match = _HUNK.match(line)
        if not match:
            if hunks and line.strip():
                raise PatchError(f"unexpected line {i + 1} after hunk {hunks[-1].label}: {line[:60]!r}")
            i += 1
            continue
        hunk = Hunk(
            int(match[1]),
            1 if match[2] is None else int(match[2]),
            int(match[3]),
            1 if match[4] is None else int(match[4]),
        )
        i = _read_body(lines, i + 1, hunk)
        hunks.append(hunk)
    if targets > 1:
        raise PatchError(f"the diff changes {targets} files; desktop_patch applies one file's diff per call")
    if not hunks:
        raise PatchError("no hunks found (expected unified diff lines starting with '@@ -N,M +N,M @@')")
    return Diff(hunks, creates)


def _read_body(lines: list[str], i: int, hunk: Hunk) -> int:
    old = new = 0
    last = ""
    while old < hunk.old_len or new < hunk.new_len or (i < len(lines) and lines[i].startswith(_NO_EOL)):
        if i >= len(lines):
            raise PatchError(f"hunk {hunk.label} ends early: {old}/{hunk.old_len} old and {new}/{hunk.new_len} new lines")
        line = lines[i]
        tag = line[:1] if line else " "
        if tag == _NO_EOL:
            if last in (" ", "-"):
                hunk.old_no_eol = True
            if last in (" ", "+"):
                hunk.new_no_eol = True
            i += 1
            continue
        if tag not in (" ", "-", "+"):
            raise PatchError(f"hunk {hunk.label}: line {i + 1} is not a context, '-' or '+' line: {line[:60]!r}")
        body = line if line else " "
        if tag in (" ", "-"):
            old += 1
        if tag in (" ", "+"):
            new += 1
        if old > hunk.old_len or new > hunk.new_len:
            raise PatchError(f"hunk {hunk.label} has more lines than its header says")
        hunk.lines.append(body)
        last = tag
        i += 1
    return i


def apply(diff: Diff, original: str | None) -> str:
    """The patched text; ``original`` None means the file does not exist (only a creation applies)."""
    if original is None:
        if not diff.creates and not all(h.old_len == 0 for h in diff.hunks):
            raise PatchError("the file does not exist and the diff does not create it")
        original = ""
    src = original.split("\n")
    had_eol = original.endswith("\n") or original == ""
    if had_eol:
        src.pop()
    out: list[str] = []
    cursor = 0  # index in src of the next line not yet copied
    eol = had_eol
    for hunk in diff.hunks:
        start = hunk.old_start - 1 if hunk.old_len else hunk.old_start
        if start < cursor:
            raise PatchError(f"hunk {hunk.label} overlaps or precedes the previous hunk")
        pre = [line[1:] for line in hunk.lines if line[0] in (" ", "-")]
        post = [line[1:] for line in hunk.lines if line[0] in (" ", "+")]
        if start + len(pre) > len(src):
            raise PatchError(f"hunk {hunk.label} is out of range: the file has {len(src)} lines")
        for offset, expected in enumerate(pre):
            if src[start + offset] != expected:
                raise PatchError(
                    f"hunk {hunk.label} does not match at line {start + offset + 1}: "
                    f"expected {expected[:60]!r}, found {src[start + offset][:60]!r}"
                )
        out.extend(src[cursor:start])
        out.extend(post)
        cursor = start + len(pre)
        if cursor == len(src):
            eol = not hunk.new_no_eol
    out.extend(src[cursor:])
    if not out:
        return ""
    return "\n".join(out) + ("\n" if eol else "")
