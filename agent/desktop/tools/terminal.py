"""desktop_terminal: run one shell command and return its bounded output.

The command runs through ``bash -c`` (``sh -c`` without bash; ``cmd.exe /d /s /c`` on Windows) in its
own session with stdin closed.
Each stream is read as it arrives: at most ``ctx.max_output`` bytes are kept and the rest is only
counted, so a command that prints gigabytes costs no memory. The command's own ``timeout`` (30 s by
default, 10 min at most, and never past the call's deadline, so the caller reads "timed out" rather
than "aborted") or the call's cancellation kills the whole process tree; long work belongs
in desktop_job_start. When the shell exits, output still arriving from processes it left behind is
read for a short moment, then those processes are killed too: nothing outlives the call. On Linux
the command runs under a per-call reaper (a child subreaper, see ``_sandbox``), so even processes
that left the tree (``nohup``, ``setsid``, ``( … & )``) are found and killed; under the ``workspace``
preset the command is confined by the kernel (Landlock, seccomp, no capabilities).
"""

from __future__ import annotations

import signal
from typing import Any

import trio

from ....core.confine import UNCONFINED, Confinement
from ....core.desktop import COMMANDS, ToolContext, ToolError, ToolSpec
from . import _args, _proc, _sandbox, _thread

DEFAULT_TIMEOUT = 30.0
MAX_TIMEOUT = 600.0
LINGER = 0.5  # seconds to keep reading after the shell exits, for output its children still write
DEADLINE_MARGIN = 0.5  # seconds kept before the call's deadline so the timeout error still gets out
_CHUNK = 64 << 10


class Capture:
    """One output stream: the first ``limit`` bytes kept, every byte counted."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.total = 0
        self.eof = trio.Event()

    async def drain(self, stream: trio.abc.ReceiveStream) -> None:
        while True:
            chunk = await stream.receive_some(_CHUNK)
            if not chunk:
                break
            self.total += len(chunk)
            room = self.limit - len(self.data)
            if room > 0:
                self.data += chunk[:room]
        self.eof.set()

    @property
    def truncated(self) -> bool:
        return self.total > len(self.data)

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


def timeout_seconds(args: dict[str, Any]) -> float:
    """``timeout_ms`` wins over ``timeout`` (seconds); default 30 s, clamped to 10 min."""
    millis = _args.number(args, "timeout_ms")
    seconds = _args.number(args, "timeout")
    if millis is not None:
        value = millis / 1000.0
    elif seconds is not None:
        value = seconds
    else:
        value = DEFAULT_TIMEOUT
    if value <= 0:
        raise ToolError('"timeout" must be more than 0 seconds')
    return min(value, MAX_TIMEOUT)


async def run_captured(
    argv: list[str], *, cwd: str, env: dict[str, str], timeout: float, limit: int,
    confinement: Confinement = UNCONFINED,
) -> tuple[int | None, Capture, Capture, bool]:
    """Run ``argv`` with bounded capture; returns (returncode, stdout, stderr, timed_out).

    Whatever the command started is gone when this returns (its reaper kills what is left)."""
    out, err = Capture(limit), Capture(limit)
    command = await _sandbox.start(argv, cwd=cwd, env=env, confinement=confinement)
    returncode: int | None = None
    ended = False
    try:
        with trio.move_on_after(timeout) as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(out.drain, command.stdout)
                nursery.start_soon(err.drain, command.stderr)
                returncode = await command.wait_exit()
                ended = True
                if returncode is not None:
                    with trio.move_on_after(LINGER):
                        await out.eof.wait()
                        await err.eof.wait()
                nursery.cancel_scope.cancel()
    finally:
        await command.finish(at_once=returncode is not None, grace=_proc.KILL_GRACE)
    if ended and returncode is None:
        raise ToolError("the command's sandbox process ended unexpectedly (killed from outside?)")
    return returncode, out, err, scope.cancelled_caught and not ended


def exit_fields(returncode: int | None) -> dict[str, Any]:
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return {"exit_code": None, "signal": name}
    return {"exit_code": returncode}


async def desktop_terminal(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    command = _args.text(args, "command")
    # The cwd is checked and the roots resolved in a tool thread: user paths (a hung mount) never on the loop.
    cwd, confinement = await _thread.run(lambda stop: (_args.directory(args, "cwd", ctx), ctx.confined()))
    timeout = timeout_seconds(args)
    budget = ctx.deadline - trio.current_time() - DEADLINE_MARGIN
    if budget < timeout:
        timeout = max(budget, 0.05)
    env = _args.base_env(ctx)
    argv, shell = _proc.shell_argv(command, env)
    started = trio.current_time()
    returncode, out, err, timed_out = await run_captured(
        argv, cwd=str(cwd), env=env, timeout=timeout, limit=ctx.max_output, confinement=confinement
    )
    duration_ms = int((trio.current_time() - started) * 1000)
    if timed_out:
        raise ToolError(
            f"timed out after {int(timeout * 1000)}ms; the command and its child processes were killed. "
            "For long work use desktop_job_start, then desktop_job_status and desktop_job_logs"
        )
    return {
        "stdout": out.text(),
        "stderr": err.text(),
        **exit_fields(returncode),
        "duration_ms": duration_ms,
        "shell": shell,
        "cwd": str(cwd),
        "truncated": out.truncated or err.truncated,
        "stdout_bytes": out.total,
        "stderr_bytes": err.total,
        "stdout_truncated": out.truncated,
        "stderr_truncated": err.truncated,
        "limit_bytes_per_stream": ctx.max_output,
    }


def _preview(args: dict[str, Any]) -> str:
    command = args.get("command")
    return command if isinstance(command, str) else ""


TOOLS = [ToolSpec("desktop_terminal", COMMANDS, desktop_terminal, preview=_preview)]
