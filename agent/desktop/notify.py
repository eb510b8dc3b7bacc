"""A desktop notification for a pending approval: notify-send (Linux) or osascript (macOS).

Best effort by design: when neither exists, or it hangs, the approval still waits on the watch
stream and ``hermes-relay approvals``. Never blocks a call beyond ``NOTIFY_TIMEOUT``. The caller
passes visible text only (approvals.notification: control, ANSI and bidi characters escaped).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from ...core.apitypes import DoctorNotifier

log = logging.getLogger(__name__)

NOTIFY_TIMEOUT = 3.0


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def command(title: str, body: str, env: Mapping[str, str]) -> list[str] | None:
    """The argv that shows a notification here, or None (disabled with HERMES_RELAY_NOTIFY=0)."""
    if env.get("HERMES_RELAY_NOTIFY", "1") == "0":
        return None
    if sys.platform == "darwin" and shutil.which("osascript"):
        return ["osascript", "-e", f'display notification "{_quoted(body)}" with title "{_quoted(title)}"']
    if shutil.which("notify-send", path=env.get("PATH")):
        import html  # notification servers read the body as markup: a `<span>` could hide part of it

        return ["notify-send", "--app-name=hermes-relay", title, html.escape(body, quote=False)]
    return None


def notifier(env: Mapping[str, str]) -> DoctorNotifier:
    """Which notifier ``notify`` would run here (for doctor): ``{program, disabled}``; program None when none."""
    if env.get("HERMES_RELAY_NOTIFY", "1") == "0":
        return {"program": None, "disabled": "HERMES_RELAY_NOTIFY=0"}
    argv = command("hermes-relay", "doctor", env)
    return {"program": argv[0] if argv else None, "disabled": None}


async def notify(title: str, body: str, env: Mapping[str, str]) -> bool:
    argv = command(title, body, env)
    if argv is None:
        return False
    with trio.move_on_after(NOTIFY_TIMEOUT):
        try:
            result = await trio.run_process(argv, check=False, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(env))
            return result.returncode == 0
        except OSError as exc:
            log.debug("notify_failed error=%s", exc)
    return False
