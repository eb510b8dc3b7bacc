"""argparse help shared by the CLIs: positionals that may start with ``-`` (token prefixes).

A session token is base64url, so 1 prefix in 64 starts with ``-``; argparse would read
``revoke -meWxcQq`` as an unknown option. A parser that sets ``dash_positionals = True`` takes any word of
more than two characters that is not one of its ``--long`` options as a positional instead (``-y`` and
``--yes`` still parse as options; ``--`` works as usual).
"""

from __future__ import annotations

from typing import Any


class DashPositionalsMixin:
    """Mix into an ``argparse.ArgumentParser`` subclass; enable per parser with ``dash_positionals = True``."""

    dash_positionals: bool = False
    _option_string_actions: dict[str, Any]

    def _parse_optional(self, arg_string: str) -> Any:
        if (self.dash_positionals and len(arg_string) > 2 and arg_string.startswith("-") and arg_string != "--"
                and not (arg_string.startswith("--") and self._is_long_option(arg_string))):
            return None
        return super()._parse_optional(arg_string)  # type: ignore[misc]  # argparse's private hook

    def _is_long_option(self, arg_string: str) -> bool:
        name = arg_string.split("=", 1)[0]
        return any(opt.startswith(name) for opt in self._option_string_actions if opt.startswith("--"))
