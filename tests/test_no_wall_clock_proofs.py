"""No test proves anything with the wall clock (house style: fakes for the clock, no sleeps as
synchronisation). A real-time wait proves only that something did not happen *yet*, and a time budget
fails on a loaded machine; both make flaky tests. This scans every file under tests/ with ``ast``.

In test code that does not run on trio's MockClock (a test, or a fixture, that asks for
``autojump_clock``/``mock_clock`` directly or through a fixture, or a function that passes a
``MockClock`` to ``trio.run``; a module helper counts as on the fake clock when every async test of its
module is), it finds:

- ``move-on``: ``trio.move_on_after``/``move_on_at``: the test goes on when the time is up, so the time
  is part of what it proves. Use the fake clock, or wait for a condition (an event, a state, a count)
  under ``fail_after`` as a hang guard.
- ``budget``: ``fail_after(N)`` with N (a number or a module constant) under ``MIN_HANG_GUARD``: a time
  budget rather than a hang guard.

and anywhere under tests/:

- ``sleep``: ``time.sleep(...)``, and off the fake clock a ``trio.sleep(N)`` that is not between the
  looks of a polling loop: sleeping is not synchronisation; poll a condition with a deadline.
- ``elapsed``: a measured wall-clock duration, ``time.monotonic() - start`` (also ``time.time``,
  ``perf_counter``, and ``trio.current_time`` off the fake clock), unless it is only bounded from
  below (``x - start >= timeout`` holds on any machine): an upper bound is one a busy machine may cross.

What remains is listed in ``ALLOWED`` with the reason; an entry that no longer matches anything fails too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
CLOCK_FIXTURES = frozenset({"autojump_clock", "mock_clock"})
MIN_HANG_GUARD = 1.0  # seconds: a fail_after shorter than this is a budget a busy machine can miss
WALL_CLOCKS = frozenset({"time.monotonic", "time.time", "time.perf_counter", "time.monotonic_ns", "time.time_ns"})

# (file relative to tests/, top-level function, rule) -> why this one is not a wall-clock proof
ALLOWED: dict[tuple[str, str, str], str] = {
    ("conftest.py", "relay_factory", "move-on"):
        "teardown closes leftover clients best-effort; the bound only keeps a hung client from hanging it",
    ("conftest.py", "_guard", "sleep"):
        "the real-socket tests' hang guard (RELAY_TEST_GUARD): it fails the test when the time is up",
    ("e2e/procs.py", "wait_gone", "sleep"):
        "polls a process's exit (an OS event this process cannot wait on directly) until a deadline",
    ("e2e/test_desktop_e2e.py", "until", "sleep"):
        "polls a condition of real relay and agent processes over HTTP until a deadline",
    ("agent/tools/test_tools_terminal.py", "test_a_process_ignoring_sigterm_is_killed_after_the_grace", "elapsed"):
        "a real child process cannot run on the fake clock; the upper bound is half the 30 s it would live",
    ("e2e/test_store_lock_e2e.py", "test_a_held_store_lock_never_freezes_the_agent", "elapsed"):
        "real processes; each status answer is bounded by a quarter of the agent's 10 s lock wait it rules out",
    ("e2e/test_store_lock_e2e.py", "test_forget_waits_for_a_held_store_lock_without_freezing_the_agent", "elapsed"):
        "real processes; each status answer is bounded by a quarter of the agent's 10 s lock wait it rules out",
    ("e2e/test_pair_safety_e2e.py",
     "test_held_store_lock_fails_before_the_code_is_spent_and_status_keeps_answering", "elapsed"):
        "real processes; each status answer is bounded by half the 3 s lock wait a frozen loop would show",
    ("relay/test_relay_desktop_process.py", "relay_process", "move-on"):
        "teardown closes leftover clients best-effort; the bound only keeps a hung client from hanging it",
    ("cli/test_complete_candidates.py",
     "test_an_agent_that_never_answers_costs_the_short_timeout_and_prints_nothing", "elapsed"):
        "the blocking CLI has no fake clock; 1.5 s lies between the 0.3 s answer wait and the 2 s connect "
        "timeout it rules out (a thin margin: its owner's call)",
    ("e2e/test_store_follow_e2e.py", "test_a_pairing_another_client_adds_is_followed_within_2_s", "elapsed"):
        "real processes; the store watcher's documented 2 s promise (1 s poll without inotify), against its "
        "10 s safety poll",
    ("cli/test_client_hello.py", "test_an_agent_that_accepts_but_never_says_hello_fails_within_the_connect_timeout",
     "elapsed"):
        "the blocking CLI client has no fake clock; the bound is a third of the 30 s timeout it rules out",
    ("agent/test_desktop_channel.py", "_structured_is_advertised_within_2_s", "elapsed"):
        "called only by tests on the autojump clock (the served fixture); a real-clock test of the audit files "
        "in the same module keeps the scanner from telling",
    ("agent/test_runner_idle.py", "_Told", "move-on"):
        "a fake kernel's clock-step wait (the timerfd's), used only by tests on the autojump clock",
}


@dataclass(frozen=True)
class Finding:
    path: str
    function: str
    rule: str
    line: int

    def __str__(self) -> str:
        return f"tests/{self.path}:{self.line} in {self.function}: {self.rule}"


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    a = fn.args
    return {p.arg for p in [*a.posonlyargs, *a.args, *a.kwonlyargs]}


def _is_fixture(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any("fixture" in _dotted(d.func if isinstance(d, ast.Call) else d) for d in fn.decorator_list)


def _functions(tree: ast.Module) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def clock_fixtures(trees: list[ast.Module]) -> set[str]:
    """Names of fixtures (in ``trees``) that put their test on the fake clock, directly or transitively."""
    fixtures = {fn.name: _params(fn) for tree in trees for fn in _functions(tree) if _is_fixture(fn)}
    clocked = set(CLOCK_FIXTURES)
    while True:
        more = {name for name, params in fixtures.items() if params & clocked} - clocked
        if not more:
            return clocked
        clocked |= more


def _constants(tree: ast.Module) -> dict[str, float]:
    found = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, int | float)):
            found[node.targets[0].id] = float(node.value.value)
    return found


def _seconds(arg: ast.expr, constants: dict[str, float]) -> float | None:
    if isinstance(arg, ast.Constant) and isinstance(arg.value, int | float):
        return float(arg.value)
    if isinstance(arg, ast.Name):
        return constants.get(arg.id)
    return None


def _only_bounded_below(tree: ast.AST) -> set[int]:
    """ids of the subtractions that appear only as ``bound <= X`` / ``X >= bound``: a lower bound on a
    duration holds on any machine (a trio timeout never fires early, the monotonic clock never goes back)."""
    safe = set()
    for cmp in ast.walk(tree):
        if isinstance(cmp, ast.Compare):
            terms = [cmp.left, *cmp.comparators]
            for i, term in enumerate(terms):
                below = i + 1 < len(terms) and isinstance(cmp.ops[i], ast.Gt | ast.GtE) or \
                    i > 0 and isinstance(cmp.ops[i - 1], ast.Lt | ast.LtE)
                above = i + 1 < len(terms) and not isinstance(cmp.ops[i], ast.Gt | ast.GtE) or \
                    i > 0 and not isinstance(cmp.ops[i - 1], ast.Lt | ast.LtE)
                if below and not above:
                    safe.add(id(term))
    return safe


def _in_loops(tree: ast.AST) -> set[int]:
    return {id(sub) for loop in ast.walk(tree) if isinstance(loop, ast.While | ast.For | ast.AsyncFor)
            for sub in ast.walk(loop)}


def _findings_in(node: ast.AST, on_fake_clock: bool, constants: dict[str, float]) -> Iterator[tuple[str, int]]:
    lower_bounds, polling = _only_bounded_below(node), _in_loops(node)
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            name = _dotted(sub.func)
            if name == "time.sleep":
                yield "sleep", sub.lineno
            elif (not on_fake_clock and name == "trio.sleep" and id(sub) not in polling
                  and not (sub.args and _seconds(sub.args[0], constants) == 0)):
                yield "sleep", sub.lineno
            elif not on_fake_clock and name.rsplit(".", 1)[-1] in ("move_on_after", "move_on_at"):
                yield "move-on", sub.lineno
            elif not on_fake_clock and name.rsplit(".", 1)[-1] == "fail_after" and sub.args:
                seconds = _seconds(sub.args[0], constants)
                if seconds is not None and seconds < MIN_HANG_GUARD:
                    yield "budget", sub.lineno
        elif (isinstance(sub, ast.BinOp) and isinstance(sub.op, ast.Sub) and isinstance(sub.left, ast.Call)
              and id(sub) not in lower_bounds):
            clock = _dotted(sub.left.func)
            if clock in WALL_CLOCKS or (clock == "trio.current_time" and not on_fake_clock):
                yield "elapsed", sub.lineno


def _runs_on_a_mock_clock(fn: ast.AST) -> bool:
    """``trio.run(main, clock=MockClock(...))`` inside: everything in ``fn`` runs on the fake clock."""
    return any(isinstance(sub, ast.Call) and _dotted(sub.func).rsplit(".", 1)[-1] == "MockClock"
               for sub in ast.walk(fn))


def scan(source: str, path: str = "<source>", fixture_trees: tuple[ast.Module, ...] = ()) -> list[Finding]:
    """Every wall-clock proof in one test module; ``fixture_trees`` are the conftests it can use."""
    tree = ast.parse(source, path)
    clocked = clock_fixtures([*fixture_trees, tree])
    constants = _constants(tree)
    functions = _functions(tree)
    tests = [fn for fn in functions if fn.name.startswith("test") and isinstance(fn, ast.AsyncFunctionDef)]
    helpers_on_fake_clock = bool(tests) and all(_params(fn) & clocked for fn in tests)
    found: list[Finding] = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if _runs_on_a_mock_clock(node):
                fake = True
            elif node.name.startswith("test") or _is_fixture(node):
                fake = bool(_params(node) & clocked)
            else:
                fake = helpers_on_fake_clock
            name = node.name
        elif isinstance(node, ast.ClassDef):
            fake, name = helpers_on_fake_clock, node.name
        else:
            fake, name = False, "<module>"
        found += [Finding(path, name, rule, line) for rule, line in _findings_in(node, fake, constants)]
    return found


def _conftests(path: Path) -> tuple[ast.Module, ...]:
    trees = []
    for folder in [path.parent, *path.parent.parents]:
        conftest = folder / "conftest.py"
        if conftest.exists():
            trees.append(ast.parse(conftest.read_text(encoding="utf-8"), str(conftest)))
        if folder == TESTS:
            break
    return tuple(trees)


def scan_tests() -> list[Finding]:
    found = []
    for path in sorted(TESTS.rglob("*.py")):
        rel = path.relative_to(TESTS).as_posix()
        found += scan(path.read_text(encoding="utf-8"), rel, _conftests(path))
    return found


def test_no_test_proves_anything_with_the_wall_clock() -> None:
    found = scan_tests()
    unexplained = [str(f) for f in found if (f.path, f.function, f.rule) not in ALLOWED]
    assert unexplained == [], "wall-clock proofs (see this module's docstring for what to do instead):\n" + \
        "\n".join(unexplained)
    stale = set(ALLOWED) - {(f.path, f.function, f.rule) for f in found}
    assert stale == set(), f"ALLOWED entries that match nothing any more: {sorted(stale)}"


REAL = "import time\nimport trio\nHALF = 0.5\n"


@pytest.mark.parametrize("body,rules", [
    ("async def test_x():\n    with trio.move_on_after(0.5):\n        await thing()\n", ["move-on"]),
    ("async def helper():\n    with trio.move_on_after(1):\n        pass\n"
     "async def test_x(autojump_clock):\n    await helper()\nasync def test_y():\n    pass\n", ["move-on"]),
    ("async def test_x():\n    with trio.fail_after(HALF):\n        pass\n", ["budget"]),
    ("async def test_x():\n    with trio.fail_after(0.2):\n        pass\n", ["budget"]),
    ("def test_x():\n    time.sleep(0.1)\n", ["sleep"]),
    ("async def test_x():\n    await trio.sleep(0.5)\n    await trio.sleep(0)\n"
     "    while not done():\n        await trio.sleep(0.01)\n", ["sleep"]),
    ("async def test_x(autojump_clock):\n    await trio.sleep(60)\n", []),
    ("async def test_x(autojump_clock):\n    time.sleep(0.1)\n", ["sleep"]),
    ("def test_x():\n    started = time.monotonic()\n    go()\n    assert time.monotonic() - started < 5\n",
     ["elapsed"]),
    ("async def test_x():\n    start = trio.current_time()\n    assert trio.current_time() - start <= 1\n",
     ["elapsed"]),
    ("@pytest.fixture\nasync def served(autojump_clock):\n    yield 1\n"
     "async def test_x(served):\n    with trio.move_on_after(5):\n        pass\n"
     "    assert trio.current_time() - 0 < 1\n", []),
    ("async def test_x():\n    start = trio.current_time()\n    assert trio.current_time() - start >= 1\n"
     "    assert 1 <= time.monotonic() - start\n", []),
    ("async def test_x():\n    assert 1 <= time.monotonic() - start < 4\n", ["elapsed"]),
    ("def test_x():\n    took = time.monotonic() - started\n", ["elapsed"]),
    ("def _run():\n    async def main():\n        with trio.move_on_after(1):\n            await trio.sleep(60)\n"
     "    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))\n", []),
    ("async def test_x(mock_clock):\n    with trio.move_on_after(0.5):\n        pass\n"
     "    with trio.fail_after(0.1):\n        pass\n", []),
    ("async def test_x():\n    with trio.fail_after(5):\n        pass\n    s = 'import time; time.sleep(60)'\n", []),
])
def test_the_scanner_finds_each_kind_of_wall_clock_proof(body: str, rules: list[str]) -> None:
    assert [f.rule for f in scan(REAL + body)] == rules


def test_a_clock_fixture_in_a_conftest_counts() -> None:
    conftest = ast.parse("@pytest.fixture\ndef harness(mock_clock):\n    return 1\n")
    body = "async def test_x(harness):\n    with trio.move_on_after(0.5):\n        pass\n"
    assert scan(REAL + body, fixture_trees=(conftest,)) == []
    assert [f.rule for f in scan(REAL + body)] == ["move-on"]
