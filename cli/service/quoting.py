"""Filling the packaging/ templates and quoting values for the formats they are written in: systemd
unit files, launchd property lists (XML), Windows batch files and PowerShell single-quoted strings.
A value that would break a line is refused, so a service file never carries an injected directive.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ...core.errors import ConfigError

PACKAGE = "hermes_relay.packaging"
# Set at install time, these must reach the service too, or its agent would look elsewhere than the
# CLI for its socket, logs and session store. The service manager supplies HOME and XDG_RUNTIME_DIR.
PINNED_ENV = ("HERMES_HOME", "HERMES_RELAY_RUNTIME_DIR", "HERMES_RELAY_SOCKET", "HERMES_RELAY_IPC",
              "HERMES_RELAY_LOG_DIR", "HERMES_RELAY_SESSIONS_FILE")
_PLACEHOLDER = re.compile(r"@([A-Z][A-Z_]*)@")
_LINE_PLACEHOLDER = re.compile(r"^[ \t]*@([A-Z][A-Z_]*)@[ \t]*\n", re.MULTILINE)
_SYSTEMD_BARE = re.compile(r"[A-Za-z0-9_@+=:,./-]+")


def read_template(name: str) -> str:
    """The text of a template shipped as package data in ``hermes_relay.packaging``."""
    from importlib import resources

    return resources.files(PACKAGE).joinpath(name).read_text(encoding="utf-8")


def fill(template: str, values: Mapping[str, str]) -> str:
    """Replace every ``@NAME@``; a placeholder alone on its line whose value is empty drops the line.

    Raises KeyError for a placeholder without a value, so a template typo never ships. Values are
    not rescanned: a path containing ``@X@`` stays as it is.
    """

    def whole_line(m: re.Match[str]) -> str:
        value = values[m.group(1)]
        return value if not value or value.endswith("\n") else value + "\n"

    text = _LINE_PLACEHOLDER.sub(whole_line, template)
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def pinned_env(env: Mapping[str, str]) -> dict[str, str]:
    """The path variables set in ``env`` that the service must see as well."""
    return {name: env[name] for name in PINNED_ENV if env.get(name)}


def no_newline(value: str) -> str:
    if "\n" in value or "\r" in value or "\0" in value:
        raise ConfigError(f"cannot write a service file for a value with a line break: {value!r}")
    return value


def systemd_quote(value: str) -> str:
    """One word for a unit file: ``%`` doubled (specifiers), C-quoted unless plain.

    ``$`` is left alone: systemd does not expand variables in Environment= values nor in the
    executable's own path, the only places this is used (``systemd-analyze verify`` agrees).
    """
    value = no_newline(value).replace("%", "%%")
    if _SYSTEMD_BARE.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def xml_text(value: str) -> str:
    return no_newline(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def cmd_text(value: str) -> str:
    return no_newline(value).replace("%", "%%")  # a batch file expands %NAME% even inside quotes


def ps_single(value: str) -> str:
    return no_newline(value).replace("'", "''")
