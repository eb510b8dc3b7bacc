"""What one desktop call may touch on this computer: the confinement a host's policy gives it.

This module is the seam between the consent model (``core/policy.py``, which decides *which*
confinement a relay host gets) and the enforcement (the file tools' kernel-helped path checks, the
command sandbox, the process and job tools). It is pure: no trio, no I/O beyond ``os.path`` names.

- ``unconfined``: ``full_access``. Nothing is checked; the agent's own state is reachable too.
- otherwise every file and process tool refuses the ``protected`` paths (the agent's own state:
  ``~/.hermes`` with the store, credentials, policy, audit and jobs' metadata, and the runtime
  directory with the IPC socket), reads only below ``roots`` and ``read_only``, writes only below
  ``roots`` and never below ``write_protected`` (login and persistence paths) or a ``.git`` folder.
- ``kernel_commands``: commands (terminal, jobs) run inside the kernel sandbox (the ``workspace``
  preset); otherwise they run with the user's full rights and are labelled so.
- ``owner``: the pairing's owner URL; jobs and processes a host started are recorded under it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from . import paths


@dataclass(frozen=True)
class Confinement:
    owner: str = ""
    unconfined: bool = False
    roots: tuple[Path, ...] = ()
    read_only: tuple[Path, ...] = ()
    protected: tuple[Path, ...] = ()
    write_protected: tuple[Path, ...] = ()
    kernel_commands: bool = False
    network: bool = True


UNCONFINED: Final = Confinement(unconfined=True)
PENDING: Final = Confinement(kernel_commands=True, network=False)  # reaches nothing (core/desktop.ToolContext)

# Read-only system paths a confined call may read (never write): programs, libraries, configuration.
SYSTEM_READ_ONLY: Final = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt",
                           "/nix/store", "/System", "/Library", "/Applications", "/private/etc")


def protected_paths(env: Mapping[str, str] | None = None) -> tuple[Path, ...]:
    """The agent's own state: out of reach of every tool below ``full_access``."""
    e = dict(os.environ) if env is None else env
    found = [paths.hermes_home(e), paths.runtime_dir(e), paths.sessions_file(e), paths.log_dir(e)]
    out: list[Path] = []
    for p in found:
        p = Path(os.path.abspath(p))
        if p not in out:
            out.append(p)
    return tuple(out)


# Login and persistence paths below the home directory: writing one is code execution at the next login.
PERSISTENCE_NAMES: Final = (
    ".bashrc", ".bash_profile", ".bash_login", ".bash_logout", ".profile", ".zshrc", ".zshenv", ".zprofile",
    ".zlogin", ".zlogout", ".config/fish", ".cshrc", ".tcshrc", ".kshrc", ".mkshrc", ".inputrc", ".xprofile",
    ".xinitrc", ".xsession", ".xsessionrc", ".pam_environment", ".ssh", ".gnupg", ".config/autostart",
    ".config/systemd", ".config/environment.d", ".local/share/systemd", ".config/upstart", "Library/LaunchAgents",
    ".local/bin", "bin", ".config/git", ".gitconfig", ".npmrc", ".pypirc", ".pip", ".config/pip",
    ".python_history", ".pythonrc", ".config/hermes-relay", ".local/share/hermes-relay",
    # Sourced by the distributions' default shell start-up files, or by bash-completion in every shell.
    ".bash_aliases", ".bashrc.d", ".bash_completion", ".local/share/bash-completion",
    # Code at every start of a program: user site-packages (.pth lines run), cargo's wrappers, hg hooks.
    ".local/lib", ".cargo/config", ".cargo/config.toml", ".hgrc", ".config/hg",
    # Desktop sessions: launchers that shadow the system's, login scripts, files written at login.
    ".local/share/applications", ".config/plasma-workspace", ".config/autostart-scripts", ".config/lxsession",
    ".config/user-tmpfiles.d", ".config/containers/systemd", ".config/i3", ".config/sway", ".config/hypr",
    # Editors, debuggers, shells-in-programs that run their start-up file as code.
    ".vimrc", ".vim", ".exrc", ".config/nvim", ".emacs", ".emacs.d", ".config/emacs", ".tmux.conf",
    ".config/tmux", ".screenrc", ".gdbinit", ".config/gdb", ".lldbinit", ".ipython", ".Rprofile", ".irbrc",
    ".psqlrc", ".config/direnv", ".docker/cli-plugins",
)


def persistence_paths(env: Mapping[str, str] | None = None) -> tuple[Path, ...]:
    """Paths never writable below ``full_access`` (shell start-up files, keys, autostart, units, PATH)."""
    e = dict(os.environ) if env is None else env
    home = Path(os.path.abspath(paths.home_dir(e)))
    out = [home / name for name in PERSISTENCE_NAMES]
    for entry in (e.get("PATH") or "").split(os.pathsep):
        if entry and os.path.isabs(entry):
            p = Path(os.path.abspath(entry))
            if p not in out:
                out.append(p)
    # The agent's own install: its environment, the interpreter it was built on (a pyenv or a venv's base
    # under the home directory is otherwise a root), the interpreter binary and this package's code.
    for own in (sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable)),
                os.path.dirname(os.path.dirname(os.path.realpath(__file__)))):
        p = Path(os.path.abspath(own))
        if p not in out:
            out.append(p)
    for spool in ("/var/spool/cron", "/var/spool/cron/crontabs", "/etc/cron.d"):
        out.append(Path(spool))
    return tuple(out)


_LANDLOCK_CREATE_RULESET: Final = 444  # the same number on every Linux architecture (new syscalls share one table)
_LANDLOCK_CREATE_RULESET_VERSION: Final = 1


def landlock_abi() -> int:
    """The Landlock ABI version the running kernel offers (0: none, not Linux, or disabled)."""
    if not sys.platform.startswith("linux"):
        return 0
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        version = int(libc.syscall(_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0),
                                   ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION)))
    except (OSError, AttributeError):
        return 0
    return version if version > 0 else 0


TRUSTED_COMMANDS: Final = "commands run with your full rights: they can change anything you can, this policy included"


def missing_protections(abi: int) -> list[str]:
    """What a workspace command is NOT kept from on a kernel with Landlock ``abi`` (empty from ABI 6)."""
    missing = []
    if abi < 3:
        missing.append("truncating files it may only read")
    if abi < 6:
        missing.append("signalling your other processes, the agent included")
    return missing


def commands_label(confinement: Confinement, abi: int | None = None, platform: str | None = None) -> str:
    """How commands (terminal, jobs) run under ``confinement`` on this computer, honestly.

    "kernel-enforced" (Landlock ABI 6 and later, with seccomp and no capabilities), "partially
    enforced: …" (older Landlock: what is missing), "refused: …" (no way to confine here: workspace
    commands do not run), or the trusted label when commands are not confined at all.
    """
    if not confinement.kernel_commands:
        return TRUSTED_COMMANDS
    plat = sys.platform if platform is None else platform
    if plat.startswith("linux"):
        version = landlock_abi() if abi is None else abi
        if version <= 0:
            return "refused: this kernel has no Landlock, so workspace commands cannot be confined and do not run"
        missing = missing_protections(version)
        if not missing:
            return "kernel-enforced"
        return f"partially enforced: the kernel (Landlock ABI {version}) does not stop " + "; ".join(missing)
    if plat == "darwin":
        return "enforced by macOS sandbox-exec"
    return f"refused: workspace commands cannot be confined on {plat}, so they do not run"
