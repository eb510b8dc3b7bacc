"""Path globs for desktop_search_files, matched without backtracking.

``*`` and ``?`` stay within one path segment, ``**`` crosses segments and ``**/`` is zero or more folders
(the same language ``search`` always had). A relay host chooses the pattern: as a backtracking regex,
``**a**a**a**a**b`` against a long name ran for minutes holding the GIL, which stopped the whole agent
past every deadline. ``Glob`` steps a set of pattern positions one character at a time instead.
"""

from __future__ import annotations

import threading

from ....core.desktop import ToolError
from . import _thread

MAX_GLOB = 4096  # characters of a glob pattern (PATH_MAX): matching costs its length times the path's
_LIT, _ONE, _STAR, _DSTAR, _SKIP = range(5)
_DFA_CACHE = 4096  # states a Glob remembers; past it, it starts over (never exponential, never unbounded)


class Glob:
    """A path glob (``*`` and ``?`` within one segment, ``**`` across them, ``**/`` zero or more folders),
    matched against a whole string by stepping its set of states one character at a time.

    Never a backtracking regex: ``**a**a**a**a**b`` against a long name took minutes in ``re``, holding the
    GIL (the whole agent stopped, past every deadline). Here a match costs at most the pattern's length per
    character, and the transitions already seen are remembered (the usual pattern costs one lookup per
    character)."""

    def __init__(self, pattern: str) -> None:
        glob = pattern.replace("\\", "/")
        tokens: list[tuple[int, str | int]] = []
        i = 0
        while i < len(glob):
            if glob.startswith("**", i):
                i += 2
                if glob.startswith("/", i):
                    i += 1
                    tokens += [(_SKIP, 3), (_DSTAR, ""), (_LIT, "/")]  # (?:.*/)?
                else:
                    tokens.append((_DSTAR, ""))
                continue
            c = glob[i]
            tokens.append((_STAR, "") if c == "*" else (_ONE, "") if c == "?" else (_LIT, c))
            i += 1
        self._tokens = tokens
        self._reset()

    def _reset(self) -> None:
        """Forget the states met so far (a pattern that makes too many keeps only what it needs)."""
        self._ids: dict[frozenset[int], int] = {}
        self._sets: list[frozenset[int]] = []
        self._next: list[dict[str, int]] = []  # per state: character -> state
        self._accepts: list[bool] = []
        self._dead = self._id(frozenset())
        self._start = self._id(self._closure({0}))

    def _id(self, states: frozenset[int]) -> int:
        found = self._ids.get(states)
        if found is None:
            found = self._ids[states] = len(self._sets)
            self._sets.append(states)
            self._next.append({})
            self._accepts.append(len(self._tokens) in states)
        return found

    def _closure(self, states: set[int]) -> frozenset[int]:
        out: set[int] = set()
        todo = list(states)
        while todo:
            s = todo.pop()
            if s in out:
                continue
            out.add(s)
            if s < len(self._tokens):
                kind, arg = self._tokens[s]
                if kind in (_STAR, _DSTAR):
                    todo.append(s + 1)
                elif kind == _SKIP:
                    todo += [s + 1, s + int(arg)]
        return frozenset(out)

    def _step(self, state: int, ch: str) -> int:
        """The state after ``ch`` from ``state``, worked out from the pattern (then remembered)."""
        nxt: set[int] = set()
        for s in self._sets[state]:
            if s >= len(self._tokens):
                continue
            kind, arg = self._tokens[s]
            if kind == _LIT:
                if ch == arg:
                    nxt.add(s + 1)
            elif kind == _ONE:
                if ch != "/":
                    nxt.add(s + 1)
            elif kind == _STAR:
                if ch != "/":
                    nxt.add(s)
            elif kind == _DSTAR:
                nxt.add(s)
        target = self._closure(nxt)
        if len(self._sets) >= _DFA_CACHE and target not in self._ids:
            self._reset()
            return self._id(target)  # (``state`` is gone with the rest: nothing is remembered for it)
        found = self._id(target)
        self._next[state][ch] = found
        return found

    def match(self, text: str, stop: threading.Event | None = None) -> bool:
        """Does the whole of ``text`` match? (``stop`` is checked as it goes: a path can be 4096 characters.)"""
        state = self._start
        for at in range(0, len(text), 256):
            if stop is not None and at:
                _thread.check(stop)
            for ch in text[at : at + 256]:
                nxt = self._next[state].get(ch)
                if nxt is None:
                    nxt = self._step(state, ch)
                if nxt == self._dead:
                    return False
                state = nxt
        return self._accepts[state]


def compile_glob(pattern: str) -> Glob:
    if len(pattern) > MAX_GLOB:
        raise ToolError(f'argument "pattern" is a glob of {len(pattern)} characters; at most {MAX_GLOB} are searched for')
    return Glob(pattern)
