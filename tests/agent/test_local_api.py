"""The local API (agent/handlers.py) is thin: decode params, one backend call, the typed reply."""

from __future__ import annotations

import ast
import inspect

from hermes_relay.agent import handlers
from hermes_relay.core import apitypes


def test_no_function_in_the_local_api_is_longer_than_15_lines() -> None:
    tree = ast.parse(inspect.getsource(handlers))
    long = [f"{n.name}: {n.end_lineno - n.lineno + 1}" for n in ast.walk(tree)  # type: ignore[operator]
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 15]  # type: ignore[operator]
    assert long == []


def test_the_table_serves_every_method_of_the_contract() -> None:
    class Nothing:
        pass

    served = handlers.table(Nothing())  # type: ignore[arg-type]  # the table only binds; nothing is called
    assert set(served) == set(apitypes.METHODS)
