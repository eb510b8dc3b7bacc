"""Argument checks shared by the desktop tools: each failure is a ToolError naming the field.

Tool arguments arrive as decoded JSON from the relay, so every value is checked for its type before
use; a wrong type or an out-of-range value is refused with a message the calling agent can act on.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Final

from ....core import envguard
from ....core.desktop import ToolContext, ToolError

_MISSING = object()
_POSIX: Final = os.sep == "/" and os.altsep is None


def text(args: dict[str, Any], name: str, *, default: Any = _MISSING, allow_empty: bool = False) -> Any:
    """A string argument; absent or null gives ``default`` (required when no default)."""
    value = args.get(name)
    if value is None:
        if default is _MISSING:
            raise ToolError(f'missing required argument "{name}" (a string)')
        return default
    if not isinstance(value, str):
        raise ToolError(f'argument "{name}" must be a string, got {_kind(value)}')
    if not value and not allow_empty:
        if default is _MISSING:
            raise ToolError(f'argument "{name}" must not be empty')
        return default
    if "\x00" in value:
        raise ToolError(f'argument "{name}" must not contain NUL characters')
    return value


def integer(
    args: dict[str, Any],
    name: str,
    *,
    default: Any = _MISSING,
    minimum: int | None = None,
    maximum: int | None = None,
) -> Any:
    """An integer argument (a whole JSON number); out of [minimum, maximum] is refused."""
    value = args.get(name)
    if value is None:
        if default is _MISSING:
            raise ToolError(f'missing required argument "{name}" (an integer)')
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ToolError(f'argument "{name}" must be an integer, got {_kind(value)}')
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise ToolError(f'argument "{name}" must be a whole number, got {value!r}')
        value = int(value)
    if minimum is not None and value < minimum:
        raise ToolError(f'argument "{name}" must be at least {minimum}, got {value}')
    if maximum is not None and value > maximum:
        raise ToolError(f'argument "{name}" must be at most {maximum}, got {value}')
    return value


def number(args: dict[str, Any], name: str, *, minimum: float = 0.0) -> float | None:
    """A finite number argument, or None when absent."""
    value = args.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ToolError(f'argument "{name}" must be a number, got {_kind(value)}')
    if value < minimum:
        raise ToolError(f'argument "{name}" must be at least {minimum:g}, got {value:g}')
    return float(value)


def boolean(args: dict[str, Any], name: str, default: bool) -> bool:
    value = args.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ToolError(f'argument "{name}" must be true or false, got {_kind(value)}')
    return value


def choice(args: dict[str, Any], name: str, options: tuple[str, ...], default: str) -> str:
    """One of ``options`` (compared case-insensitively); absent gives ``default``."""
    value = text(args, name, default=default).lower()
    if value not in options:
        raise ToolError(f'argument "{name}" must be one of {", ".join(options)}, got {value!r}')
    return value


def env_map(args: dict[str, Any], name: str = "env") -> dict[str, str]:
    """An object of string to string (environment overrides); absent gives {}.

    A name that changes what the command loads or runs (``core.envguard.dangerous_env``: ``BASH_FUNC_*``,
    ``LD_PRELOAD``, ``BASH_ENV``, ``PATH`` ...) is refused, naming the variable.
    """
    value = args.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ToolError(f'argument "{name}" must be an object of strings, got {_kind(value)}')
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(item, str) or not key or "=" in key or "\x00" in key or "\x00" in item:
            raise ToolError(f'argument "{name}" entry {key!r} must be a non-empty name without "=" mapped to a string')
        reason = envguard.dangerous_env(key)
        if reason:
            raise ToolError(f'refusing the environment override in "{name}": {reason}; '
                            f"set it inside the command instead, where the approval shows it")
        out[key] = item
    return out


def path(args: dict[str, Any], name: str, ctx: ToolContext, *, default: Path | None = None) -> Path:
    """A path argument resolved against the call's cwd (``~`` expands to the user's home)."""
    raw = text(args, name, default=None) if default is not None else text(args, name)
    if raw is None:
        return default  # type: ignore[return-value]
    if _POSIX and not raw.startswith("~"):  # the same path without three Path objects parsed on the way
        return Path(os.path.abspath(os.path.join(ctx.cwd, raw)))
    return Path(os.path.abspath(ctx.cwd / Path(raw).expanduser()))


def directory(args: dict[str, Any], name: str, ctx: ToolContext) -> Path:
    """An existing directory argument; absent gives the call's cwd."""
    resolved = path(args, name, ctx, default=ctx.cwd)
    if not resolved.is_dir():
        what = "does not exist" if not resolved.exists() else "is not a directory"
        raise ToolError(f'{name} {resolved} {what}; pass an existing directory')
    return resolved


# What a workspace (kernel-confined) command keeps of the agent's environment: the agent's may hold the
# user's secrets (an API key, a token, a DATABASE_URL with its password, exported by a login shell), and a
# workspace host may read only its roots and system paths. Folders (*_HOME, *_ROOT, *_DIR, *_PATH) stay.
SANDBOX_ENV: Final = frozenset({"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TERM", "COLORTERM",
                                "NO_COLOR", "TZ", "TMPDIR", "PWD", "CI"})
_SANDBOX_ENV_SUFFIXES: Final = ("_HOME", "_ROOT", "_DIR", "_PATH")


def base_env(ctx: ToolContext, overrides: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process: the agent's (under the workspace preset only what cannot be a
    secret, ``SANDBOX_ENV``), then the call's overrides. Call it once the call's confinement is resolved
    (``ctx.confined()`` in a tool thread: it touches user paths); here it is only read back."""
    env = dict(ctx.env) if ctx.env else dict(os.environ)
    if ctx.confined().kernel_commands:
        env = {k: v for k, v in env.items()
               if k in SANDBOX_ENV or k.startswith("LC_") or k.endswith(_SANDBOX_ENV_SUFFIXES)}
    env.update(overrides or {})
    return env


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
