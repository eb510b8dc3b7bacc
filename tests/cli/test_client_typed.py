"""The typed IPC client is the only way the CLI calls the agent (core/apitypes.py is the contract)."""

from __future__ import annotations

import re
from pathlib import Path

import hermes_relay.cli as cli_pkg
from hermes_relay.cli import client
from hermes_relay.core import api, apitypes

CLI = Path(cli_pkg.__file__).parent


def test_no_command_calls_the_agent_by_a_raw_method_name() -> None:
    raw = re.compile(r"\.call\(")
    found = [f"{path.relative_to(CLI)}:{n}" for path in sorted(CLI.rglob("*.py")) if path.name != "client.py"
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if raw.search(line)]
    assert found == []


def test_the_client_needs_no_type_ignore() -> None:
    assert "type: ignore" not in Path(client.__file__).read_text(encoding="utf-8")


def test_every_method_of_the_contract_has_a_typed_wrapper() -> None:
    source = Path(client.__file__).read_text(encoding="utf-8")
    names = {value: name for name, value in vars(api).items() if isinstance(value, str) and name.isupper()}
    wrapped = {m for m in apitypes.METHODS if f"api.{names[m]}" in source}
    assert wrapped == set(apitypes.METHODS)
