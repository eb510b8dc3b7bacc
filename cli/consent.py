"""What each desktop access preset lets a relay host do here, in words the user can act on (pure).

The words are honest about three things: file tools stay inside the host's roots below full access
(checked by the agent, not the kernel); ``trusted`` commands run with the user's full rights, so
they can change anything the user can, this policy included; and ``workspace`` commands are only as
confined as the running kernel can make them (Landlock from ABI 6 covers what we rely on; below that
the gaps are named; without it ``workspace`` is refused, macOS aside, where sandbox-exec confines).
"""

from __future__ import annotations

from typing import Any, Final

FULL_RIGHTS: Final = "commands run with your full rights: they can change anything you can, this policy included"
FILES_IN_ROOTS: Final = "file tools stay inside its roots"
KERNEL_COMPLETE_ABI: Final = 6  # Landlock ABI 6 scopes signals and abstract Unix sockets; below it those are open

# What each Landlock ABI adds that a confined command would otherwise still be able to do.
_GAPS: Final = ((3, "truncating files outside its roots"), (4, "TCP network access"),
                (5, "device ioctls"), (6, "signals to other processes and abstract Unix sockets"))


def enforcement(abi: int, platform: str) -> str:
    """How workspace commands are confined on this system."""
    if platform == "darwin":
        return "enforced by the macOS sandbox (sandbox-exec)"
    if abi >= KERNEL_COMPLETE_ABI:
        return f"kernel-enforced (Landlock ABI {abi})"
    if abi > 0:
        gaps = [text for needed, text in _GAPS if abi < needed]
        return f"partially enforced (Landlock ABI {abi}): the kernel cannot stop " + ", ".join(gaps)
    return "not enforced here: refused (this system offers no Landlock sandbox)"


def sandbox_available(abi: int, platform: str) -> bool:
    return platform == "darwin" or abi > 0


def describe(host: dict[str, Any], abi: int, platform: str) -> str:
    """One line under the host's title: what its preset allows and how it is confined."""
    mode, caps = host["access_mode"], host["capabilities"]
    if host.get("confined"):
        return (f"commands and files inside its roots, no network; commands {enforcement(abi, platform)}; "
                "file and process tools are confined by the agent's own checks")
    if mode == "full_access":
        return "everything, unconfined: every file (the agent's own state included), every command, the screen, devices"
    if mode == "ask":
        return "nothing: no tool is offered to this host"
    if mode == "ask_every_time":
        return f"each call waits for your approval; approved {FULL_RIGHTS}"
    if mode == "structured":
        return f"files only, no commands; {FILES_IN_ROOTS}"
    if mode == "trusted":
        legacy = " (from an earlier tools consent: set a preset to make it explicit)" if host.get("legacy_consent") else ""
        return f"{FULL_RIGHTS}; {FILES_IN_ROOTS}{legacy}"
    if caps.get("commands") in ("allow", "ask"):
        return f"custom; {FULL_RIGHTS}; {FILES_IN_ROOTS}"
    return f"custom; {FILES_IN_ROOTS}"


def roots_line(host: dict[str, Any]) -> str:
    if host["access_mode"] == "full_access" and not host.get("confined"):
        return "roots: not applied (full access reaches everything)"
    listed = host.get("roots") or []
    if host.get("roots_default"):
        return f"roots: {', '.join(listed)} (the default: your home directory, without the agent's own state)"
    if not listed:
        return "roots: none (file tools and confined commands reach only read-only system paths)"
    return "roots: " + ", ".join(listed)


def abi() -> int:
    """The Landlock ABI of the running kernel (read at call time: tests stand in for the kernel)."""
    from ..core import confine

    return confine.landlock_abi()


def host_view(policies: Any, table: Any, url: str, legacy: bool, env: Any) -> dict[str, Any]:
    """One host's policy and roots as `access` shows them (and `--json` prints them)."""
    from ..core import policy, roots

    host = policies.for_url(url, legacy_consented=legacy)
    listed = roots.for_url(table, url, env)
    return {"url": policy.canonical_url(url), "access_mode": host.access_mode, "label": host.label,
            "capabilities": host.capabilities, "confined": host.confined, "legacy_consent": host.legacy,
            "updated_at": host.updated_at, "roots": [str(r) for r in listed.roots],
            "roots_default": listed.default}
