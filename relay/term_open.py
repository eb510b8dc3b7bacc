"""``terminal.attach``: resume an attachment, or open a new one within the limits.

- With ``resume: {v: 1, stream, out_seq, in_seq?, in_shift?}`` (docs/shell-protocol.md): the device's attachment of
  that name and stream is resumed from any socket (the socket it had is told ``attached elsewhere``);
  output continues at ``out_seq`` when the ring still holds it, else from the ring's end with ``gap: true``
  and a redraw. Another stream of that name closes the old attachment (its tmux session lives on) and
  opens a new one. A new attachment's offsets continue the stream's: output from ``out_seq``, input from
  ``in_seq`` (default 0), and its ``in_shift`` (the bytes the agent typed itself, ``own`` input) from the
  attach's, so a relay restart renumbers nothing.
- Without it (a reference client): per-socket sessions; re-attaching a name the socket has only answers
  ``attached`` with ``reattach: true``.
- Limits: ``max_per_socket`` live attachments per socket, ``max_per_device`` per device orphans
  included (the oldest orphan is evicted to make room), ``max_ptys`` in all.
"""

from __future__ import annotations

import sys

assert sys.platform != "win32", "PTYs are POSIX only: relay/main.py refuses --terminal on Windows"

import logging  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any, Protocol  # noqa: E402

from ..core.envelope import Envelope  # noqa: E402
from . import term_config as tc  # noqa: E402
from .term_attach import Attachment  # noqa: E402
from .term_pty import PtyProcess  # noqa: E402
from .term_tmux import Tmux  # noqa: E402

log = logging.getLogger(__name__)


class TerminalService(Protocol):
    """What opening an attachment needs of the terminal service (relay/terminal.py)."""

    settings: tc.TerminalSettings
    tmux: Tmux | None
    atts: dict[tuple[int, str], Attachment]

    async def send(self, ws: Any, env: Envelope) -> None: ...
    async def error(self, ws: Any, env: Envelope, message: str, name: str | None = None, **extra: Any) -> None: ...
    def end(self, att: Attachment, reason: str, *, quiet: bool = False, **extra: Any) -> None: ...
    def spawn(self, fn: Callable[..., Any], *args: Any) -> None: ...
    def add(self, att: Attachment) -> None: ...
    def spawn_pty(self, argv: list[str], cols: int, rows: int, *, tmux: bool) -> PtyProcess: ...
    def bare_shell(self, requested: object) -> str: ...
    async def redraw(self, att: Attachment) -> None: ...


def parse_resume(raw: Any) -> tuple[str, int, int, int] | str | None:
    """(stream, out_seq, in_seq, in_shift) from an attach's ``resume``, None without one, or what is wrong."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or raw.get("v") != 1:
        return "resume must be {v: 1, stream, out_seq}"
    stream, out_seq, in_seq = raw.get("stream"), raw.get("out_seq", 0), raw.get("in_seq", 0)
    if not isinstance(stream, str) or not tc.STREAM_RE.fullmatch(stream):
        return "resume.stream must be 8-64 characters of base64url"
    for key, value in (("out_seq", out_seq), ("in_seq", in_seq)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 62:
            return f"resume.{key} must be a non-negative integer"
    in_shift = raw.get("in_shift", 0)
    if not isinstance(in_shift, int) or isinstance(in_shift, bool) or not -(1 << 62) < in_shift < 1 << 62:
        return "resume.in_shift must be an integer"
    return stream, out_seq, in_seq, in_shift


async def attach(svc: TerminalService, ws: Any, sess: Any, env: Envelope, name: str) -> None:
    size = tc.size_of(env.payload)
    resume = parse_resume(env.payload.get("resume"))
    if size is None or isinstance(resume, str):
        await svc.error(ws, env, resume if isinstance(resume, str) else "cols and rows must be integers from 1 to "
                         f"{tc.MAX_DIMENSION}", name, reason="bad_request")
        return
    cols, rows = size
    scope_key = id(sess) if resume is not None else id(ws)
    old = svc.atts.get((scope_key, name))
    if old is not None and resume is None and old.socket is ws:
        await svc.send(ws, _attached(svc, old, env, reattach=True, resumed=True))  # the reference: an ack, no replay
        return
    if old is not None and resume is not None and old.stream == resume[0] and old.owner is sess:
        await _resume(svc, ws, old, env, resume[1], cols, rows)
        return
    if old is not None:  # another stream (or a stale key): the old attachment ends here
        svc.end(old, "attached elsewhere")
    refused = _room(svc, ws, sess)
    if refused:
        await svc.error(ws, env, refused, name, reason="limit")
        return
    existed = svc.tmux is not None and await svc.tmux.exists(name)  # as the reference: then reattach is true
    try:
        if svc.tmux is not None:
            argv, shell = svc.tmux.attach_argv(name), "tmux"
        else:
            shell = svc.bare_shell(env.payload.get("shell"))
            argv = [shell, "-l"] if shell.endswith(("bash", "zsh")) else [shell]
        proc = svc.spawn_pty(argv, cols, rows, tmux=svc.tmux is not None)
    except OSError as exc:
        log.warning("terminal_spawn_failed name=%s error=%s", name, exc)
        await svc.error(ws, env, f"cannot start a shell: {exc.strerror or exc}", name, reason="spawn failed")
        return
    tmux = svc.tmux is not None
    ring = svc.settings.ring_tmux if tmux else svc.settings.ring_bare
    out_seq, in_seq, in_shift = resume[1:] if resume else (0, 0, 0)
    att = Attachment(scope_key=scope_key, owner=sess, name=name, stream=resume[0] if resume else None, proc=proc,
                     tmux=tmux, shell=shell, cols=cols, rows=rows, ring_size=ring, send=svc.send, in_seq=in_seq,
                     out_seq=out_seq)
    att.in_shift = in_shift
    att.attach_socket(ws, out_seq)
    svc.add(att)
    log.info("terminal_opened name=%s pid=%d tmux=%s resume=%s", name, proc.pid, tmux, resume is not None)
    await svc.send(ws, _attached(svc, att, env, reattach=existed, resumed=False))
    att.ready = True
    att.poke()


async def _resume(svc: TerminalService, ws: Any, att: Attachment, env: Envelope, out_seq: int, cols: int,
                  rows: int) -> None:
    previous = att.socket
    if previous is not None and previous is not ws:
        svc.spawn(svc.send, previous, tc.detached(att.name, "attached elsewhere"))
    gap = att.attach_socket(ws, out_seq)
    if (cols, rows) != (att.cols, att.rows):
        att.cols, att.rows = cols, rows
        att.proc.resize(cols, rows)
    await svc.send(ws, _attached(svc, att, env, reattach=True, resumed=True, gap=gap))
    att.ready = True
    att.poke()
    if gap:
        await svc.redraw(att)
    log.info("terminal_resumed name=%s gap=%s in_seq=%d out_seq=%d", att.name, gap, att.ledger.written, att.sent)


def _room(svc: TerminalService, ws: Any, sess: Any) -> str | None:
    """Why no attachment may open now (after evicting this device's oldest orphan if that makes room)."""
    s = svc.settings
    if sum(1 for a in svc.atts.values() if a.socket is ws) >= s.max_per_socket:
        return f"at most {s.max_per_socket} terminal sessions per connection: detach one first"
    mine = sorted((a for a in svc.atts.values() if a.owner is sess), key=lambda a: a.created_at)
    if len(mine) >= s.max_per_device:
        orphans = [a for a in mine if a.socket is None]
        if not orphans:
            return f"at most {s.max_per_device} terminal sessions per device"
        svc.end(orphans[0], "evicted")
    if len(svc.atts) >= s.max_ptys:
        return f"the relay runs {s.max_ptys} terminal sessions already: try again later"
    return None


def _attached(svc: TerminalService, att: Attachment, env: Envelope, *, reattach: bool, gap: bool = False,
              resumed: bool | None = None) -> Envelope:
    payload: dict[str, Any] = {"session_name": att.name, "pid": att.proc.pid, "shell": att.shell, "cols": att.cols,
                               "rows": att.rows, "tmux_available": svc.tmux is not None, "reattach": reattach}
    if att.resume:
        payload["resume"] = {"v": 1, "stream": att.stream, "in_seq": att.ledger.written, "out_seq": att.sent,
                             "in_shift": att.in_shift, "resumed": reattach if resumed is None else resumed,
                             "gap": gap}
    return Envelope(tc.CHANNEL, "terminal.attached", payload, env.id) if env.id else \
        Envelope(tc.CHANNEL, "terminal.attached", payload)
