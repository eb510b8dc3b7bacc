"""Tests that cannot apply on a platform, with the reason (tests/conftest.py skips them there).

Linux runs everything (.ci/run). The GitHub workflow also runs the suite on macOS and Windows, where
these modules test mechanisms that platform does not have; each entry says which and why, so a
contributor with those runners gets a real answer for everything else.
"""

from __future__ import annotations

# module path (relative to tests/) -> reason, per sys.platform prefix
NOT_ON: dict[str, dict[str, str]] = {
    "win32": {
        "agent/tools/test_tools_confine.py": "file confinement needs folder descriptors; on Windows a confined call "
                                             "fails closed (test_tools_platforms.py checks that refusal)",
        "agent/tools/test_tools_jobs.py": "its commands are POSIX shell (sleep, true, $VAR) and it checks process "
                                          "groups; the detached runner's Windows flags are in test_tools_platforms.py",
        "agent/tools/test_tools_jobs_isolation.py": "workspace hosts: confined commands and files do not run on Windows",
        "agent/tools/test_tools_processes.py": "its commands are POSIX shell and it signals process groups (SIGTERM/SIGKILL "
                                               "to a pgid), which Windows does not have",
        "agent/tools/test_tools_terminal.py": "its commands are POSIX shell (bash/sh) with POSIX signals; on Windows "
                                              "commands run through cmd.exe in a Job Object",
        "cli/test_cli_route_prompt.py": "bash/zsh/fish prompt snippets",
        "cli/test_completion.py": "bash/zsh/fish completion scripts",
        "cli/test_completion_dynamic.py": "bash/zsh/fish completion scripts",
        "cli/test_proctitle.py": "/proc and other users' uids",
        "core/test_ownership.py": "POSIX owners and modes (Windows keeps state under the user's profile ACL)",
        "e2e/test_pair_code_hidden_e2e.py": "reads other processes' argv through /proc",
        "e2e/test_netns_e2e.py": "Linux network namespaces",
    },
    "darwin": {
        "cli/test_proctitle.py": "reads argv through /proc",
        "e2e/test_pair_code_hidden_e2e.py": "reads other processes' argv through /proc",
        "e2e/test_netns_e2e.py": "Linux network namespaces",
    },
}


def reason_to_skip(platform: str, relpath: str) -> str | None:
    for prefix, table in NOT_ON.items():
        if platform.startswith(prefix) and relpath in table:
            return f"not on {prefix}: {table[relpath]}"
    return None
