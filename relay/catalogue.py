"""The desktop tools a relay host may call, with the capability each belongs to (pure; no trio).

The catalogue is the reference client's (shared/reference/desktop-channel.md §3.4), with our agent's
assignment of the tools the reference leaves without a capability: process control and process/port
listing are ``commands``, the job readers ``files``. The relay host uses it to tell a tool that a computer
has disabled (known, not advertised: its user did not allow that capability) from a typo, and to say
how long a call may take (the relay's class timeouts).
"""

from __future__ import annotations

import difflib

COMMANDS, FILES, SCREEN_INPUT, USB = "commands", "files", "screen_input", "usb"
RESPONSE_TIMEOUT = 30.0  # seconds the relay waits for a tool's answer (reference: 30 s)
COMPUTER_TIMEOUT = 180.0  # desktop_computer_*
ADB_TIMEOUT = 300.0  # desktop_adb_*

_BY_CAPABILITY = {
    FILES: ("read_file", "write_file", "patch", "search_files", "copy_directory", "zip", "unzip", "checksum",
            "open_in_editor", "job_status", "job_logs", "job_list"),
    COMMANDS: ("terminal", "powershell", "spawn_detached", "job_start", "job_cancel", "list_processes",
               "kill_process", "find_pid_by_port"),
    SCREEN_INPUT: ("clipboard_read", "clipboard_write", "screenshot", "computer_status", "computer_screenshot",
                   "computer_action", "computer_grant_request", "computer_cancel"),
    USB: ("usb_devices", "usb_run", "adb_devices", "adb_shell", "adb_push", "adb_pull", "adb_install",
          "adb_logcat"),
}
TOOLS: dict[str, str | None] = {f"desktop_{name}": cap for cap, names in _BY_CAPABILITY.items() for name in names}
TOOLS["desktop_health"] = None  # answered by the relay itself


def capability(tool: str) -> str | None:
    """The capability a known tool needs; None for an unknown tool (or ``desktop_health``)."""
    return TOOLS.get(tool)


def is_known(tool: str) -> bool:
    return tool in TOOLS


def suggestions(tool: str, offered: list[str] | None = None) -> list[str]:
    """Known or offered tool names close to ``tool`` (a typo, a missing ``desktop_`` prefix), best first."""
    names = sorted(set(TOOLS) | set(offered or ()))
    guesses = [f"desktop_{tool}"] if f"desktop_{tool}" in names else []
    return list(dict.fromkeys(guesses + difflib.get_close_matches(tool, names, n=3, cutoff=0.6)))[:3]


def response_timeout(tool: str) -> float:
    """Seconds the relay waits for a tool's answer (desktop-channel.md §2.7)."""
    if tool.startswith("desktop_computer_"):
        return COMPUTER_TIMEOUT
    if tool.startswith("desktop_adb_"):
        return ADB_TIMEOUT
    return RESPONSE_TIMEOUT
