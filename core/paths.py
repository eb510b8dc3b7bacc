"""Where every file lives, one function per path, each with an environment override.

``~/.hermes`` is shared with the other Hermes clients (the session store, the device id), holds the
per-host agent lock (one agent per HOME and host), and stays there on every platform. What is this
machine's alone goes where the platform keeps such things:

- the runtime directory (socket or endpoint file with its nonce, the socket's lock, route indicator):
  Linux ``$XDG_RUNTIME_DIR/hermes-relay`` (per-user, 0700, cleared at logout); Windows
  ``%LOCALAPPDATA%/hermes-relay/run`` (the profile's local part: never copied by a roaming profile,
  its ACL admits only the user, SYSTEM and administrators); macOS and the rest ``~/.hermes/run``
  (macOS has no per-user runtime directory a launchd agent and a Terminal both see: ``$TMPDIR`` is
  not promised to a LaunchAgent, and the socket path must stay under 104 bytes);
- logs: macOS ``~/Library/Logs/hermes-relay`` (where Console.app looks), Windows
  ``%LOCALAPPDATA%/hermes-relay/logs``, elsewhere ``~/.hermes/logs``.

Functions take an optional ``env`` mapping so that callers resolve configuration once and tests can
pass an explicit environment instead of mutating ``os.environ``.

The ``*_str`` functions resolve the paths the per-prompt commands need as plain strings: importing
pathlib costs a CLI start ~5 ms (it pulls in re and urllib), so this module imports it only inside
the functions that return a ``Path``.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    Env = Mapping[str, str]


def _env(env: Env | None) -> Env:
    return os.environ if env is None else env


def _path(text: str) -> Path:
    from pathlib import Path

    return Path(text)


def home_dir_str(env: Env | None = None) -> str:
    e = _env(env)
    if e.get("HOME"):
        return e["HOME"]
    if sys.platform == "win32" and e.get("USERPROFILE"):
        return e["USERPROFILE"]
    return os.path.expanduser("~")  # what Path.home() does


def home_dir(env: Env | None = None) -> Path:
    return _path(home_dir_str(env))


def hermes_home_str(env: Env | None = None) -> str:
    e = _env(env)
    if e.get("HERMES_HOME"):
        return e["HERMES_HOME"]
    return os.path.join(home_dir_str(e), ".hermes")


def hermes_home(env: Env | None = None) -> Path:
    """``~/.hermes`` (override: ``HERMES_HOME``)."""
    return _path(hermes_home_str(env))


def sessions_file(env: Env | None = None) -> Path:
    """The session store shared with other Hermes clients (override: ``HERMES_RELAY_SESSIONS_FILE``)."""
    return _path(sessions_file_str(env))


def sessions_file_str(env: Env | None = None) -> str:
    e = _env(env)
    if e.get("HERMES_RELAY_SESSIONS_FILE"):
        return e["HERMES_RELAY_SESSIONS_FILE"]
    return os.path.join(hermes_home_str(e), "remote-sessions.json")


def device_id_file(env: Env | None = None) -> Path:
    """Random per-install id sent as ``device_id`` (the same file the reference client uses)."""
    return hermes_home(env) / "desktop-device-id"


def desktop_control_file(env: Env | None = None) -> Path:
    """The default relay and relay names, shared with the reference client (``relay_url``, ``host_aliases``)."""
    return hermes_home(env) / "desktop-control.json"


def agent_state_file(env: Env | None = None) -> Path:
    """The agent's own per-relay facts (revoked, expired) that do not belong in the shared store."""
    return hermes_home(env) / "hermes-relay-agent.json"


def desktop_roots_file(env: Env | None = None) -> Path:
    """Per relay host, the directories its file tools and confined commands may reach (ours alone: the
    shared policy file is rewritten by other clients, which drop what they do not know)."""
    return hermes_home(env) / "hermes-relay-desktop-roots.json"


PAUSED_FILE_NAME = "hermes-relay-paused.json"
DOWN_FILE_NAME = "hermes-relay-down.json"


def down_file(env: Env | None = None) -> Path:
    """The relays ``hermes-relay down`` took this computer off (core/offline.py; the agent's own file)."""
    return hermes_home(env) / DOWN_FILE_NAME


def paused_file(env: Env | None = None) -> Path:
    """Pairings another client removed from the store, kept by the agent until restored or forgotten."""
    return hermes_home(env) / PAUSED_FILE_NAME


def runtime_dir_str(env: Env | None = None, platform: str | None = None) -> str:
    e = _env(env)
    plat = sys.platform if platform is None else platform
    if e.get("HERMES_RELAY_RUNTIME_DIR"):
        return e["HERMES_RELAY_RUNTIME_DIR"]
    if plat.startswith("linux") and e.get("XDG_RUNTIME_DIR"):
        return os.path.join(e["XDG_RUNTIME_DIR"], "hermes-relay")
    if plat == "win32" and e.get("LOCALAPPDATA"):
        return os.path.join(e["LOCALAPPDATA"], "hermes-relay", "run")
    return os.path.join(hermes_home_str(e), "run")


def runtime_dir(env: Env | None = None, platform: str | None = None) -> Path:
    """Socket, instance lock and route indicator (override: ``HERMES_RELAY_RUNTIME_DIR``)."""
    return _path(runtime_dir_str(env, platform))


def ipc_mode(env: Env | None = None) -> str:
    """``unix`` (a 0600 Unix socket, peer uid checked), ``tcp`` (loopback port + secret nonce) or
    ``pipe`` (a Windows named pipe for this user only, core/winpipe.py).

    Windows uses ``tcp`` by default: Python has no AF_UNIX there, so the agent listens on 127.0.0.1 and
    proves itself with a nonce kept in a per-user file, as gpg-agent's socket emulation does. The
    named pipe is selected with ``HERMES_RELAY_IPC=pipe`` until a Windows CI run has passed with it.
    ``HERMES_RELAY_IPC=tcp`` selects tcp elsewhere too (tests, odd filesystems).
    """
    e = _env(env)
    if e.get("HERMES_RELAY_IPC") in ("unix", "tcp"):
        return e["HERMES_RELAY_IPC"]
    if e.get("HERMES_RELAY_IPC") == "pipe" and sys.platform == "win32":
        return "pipe"
    return "tcp" if sys.platform == "win32" else "unix"


def socket_path(env: Env | None = None) -> str:
    """The agent's IPC endpoint: the Unix socket, or in ``tcp`` mode the file naming port and nonce."""
    e = _env(env)
    if e.get("HERMES_RELAY_SOCKET"):
        return e["HERMES_RELAY_SOCKET"]
    mode = ipc_mode(e)
    if mode == "pipe":
        from . import winpipe, winsec

        return winpipe.pipe_name(winsec.current_user_sid() or "S-1-0-0", hermes_home_str(e))
    name = "agent.endpoint" if mode == "tcp" else "agent.sock"
    return os.path.join(runtime_dir_str(e), name)


def instance_lock_file(env: Env | None = None) -> Path:
    return runtime_dir(env) / "agent.lock"


def instance_lock_str(env: Env | None = None) -> str:
    return os.path.join(runtime_dir_str(env), "agent.lock")


def home_lock_file(env: Env | None = None, host: str | None = None) -> Path:
    """One agent per user, HOME and host (core/instance.py): ``~/.hermes/agent-<host>.lock``."""
    from . import instance

    return hermes_home(env) / f"agent-{host or instance.host_name()}.lock"


def spawn_lock_file(env: Env | None = None) -> Path:
    """Serialises CLI autostarts so that many CLIs at once start one agent."""
    return runtime_dir(env) / "spawn.lock"


def route_file(env: Env | None = None) -> Path:
    """The route indicator in plain text (agent/indicator.py): the shell prompt reads its first line."""
    return _path(route_file_str(env))


def route_file_str(env: Env | None = None) -> str:
    return os.path.join(runtime_dir_str(env), "route")


def route_json_file(env: Env | None = None) -> Path:
    return runtime_dir(env) / "route.json"


def log_dir(env: Env | None = None, platform: str | None = None) -> Path:
    """The agent's logs (override: ``HERMES_RELAY_LOG_DIR``)."""
    e = _env(env)
    plat = sys.platform if platform is None else platform
    if e.get("HERMES_RELAY_LOG_DIR"):
        return _path(e["HERMES_RELAY_LOG_DIR"])
    if plat == "darwin":
        return home_dir(e) / "Library" / "Logs" / "hermes-relay"
    if plat == "win32" and e.get("LOCALAPPDATA"):
        return _path(os.path.join(e["LOCALAPPDATA"], "hermes-relay", "logs"))
    return hermes_home(e) / "logs"


def agent_log_file(env: Env | None = None) -> Path:
    return log_dir(env) / "hermes-relay-agent.log"


def relay_state_dir(env: Env | None = None) -> Path:
    """The relay server's sessions, certificate and keys (override: ``HERMES_RELAY_SERVER_DIR``)."""
    e = _env(env)
    if e.get("HERMES_RELAY_SERVER_DIR"):
        return _path(e["HERMES_RELAY_SERVER_DIR"])
    return hermes_home(e) / "relay"


def qr_secret_file(env: Env | None = None) -> Path:
    """HMAC key for signed pairing payloads (same name as the reference relay's)."""
    return hermes_home(env) / "hermes-relay-qr-secret"
