"""``hermes-relay approvals --watch``: prompt y/n/a for each desktop call as it waits for consent.

Three parties feed one queue, so a prompt never hides what happens meanwhile:

- the watch stream (a thread): the agent's ``approval`` events. When the agent goes away (restart,
  upgrade, crash) the thread says so and connects again with a growing delay, never starting an agent
  itself (the user may have stopped it on purpose); back, it says "agent restarted; watching again".
- stdin (a thread): one line, read only while a prompt is open.
- the main loop: shows one request at a time (the others wait their turn), answers over a second
  connection, and closes a prompt whose request is gone (expired, its call ended, answered elsewhere,
  or lost with the agent): "expired", and on to the next. A line typed for a request that just
  expired is not taken as the answer to the next one when it arrives right after that one is shown.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from ..core import api
from ..core.errors import HermesError, IpcError

if TYPE_CHECKING:
    from ..core.apitypes import ApprovalsDecideParams

RETRY_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0)  # seconds between reconnects; the last one repeats
STALE_ANSWER_WINDOW = 0.5  # seconds: a line arriving this soon after the next prompt was typed for the expired one
PROMPT = "allow? [y]es / [n]o / [a]lways (this capability, for this host): "
ANSWERS = ("y", "yes", "n", "no", "a", "always")
_GONE = {"expired": "expired (nobody answered in time; it did not run)",
         "withdrawn": "withdrawn (its call ended; it did not run)",
         "approved": "approved elsewhere", "denied": "denied elsewhere"}


def watch(ctx: Any, render_request: Any, render_decided: Any) -> int:
    """Run until stdin ends (exit 0) or the first connection fails (its error is raised)."""
    return _Watch(ctx, render_request, render_decided).run()


class _Watch:
    def __init__(self, ctx: Any, render_request: Any, render_decided: Any):
        self.ctx = ctx
        self.render_request = render_request
        self.render_decided = render_decided
        self.inbox: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.stop = threading.Event()
        self.want_line = threading.Event()
        self.waiting: deque[dict[str, Any]] = deque()  # requests not shown yet, oldest first
        self.open: dict[str, Any] | None = None  # the request whose prompt is open
        self.opened_at = 0.0
        self.handled: set[str] = set()  # shown, answered or gone: never prompted again
        self.reading = False  # a stdin line was asked for and has not arrived
        self.stale_read = False  # that line was asked for by a prompt that has closed since
        self.ending = False  # the agent ended the stream: finish the open prompts, then stop
        self.clients: list[Any] = []  # the watch connection (to close on exit)
        self.decider: Any = None

    # -- the main loop -------------------------------------------------------------------------
    def run(self) -> int:
        ctx = self.ctx
        ctx.out(ctx.style.dim("waiting for desktop calls that need your approval (Ctrl-C to stop)"))
        ctx.flush()
        threading.Thread(target=self._stream, name="approvals-watch", daemon=True).start()
        threading.Thread(target=self._stdin, name="approvals-stdin", daemon=True).start()
        try:
            while True:
                kind, *rest = self.inbox.get()
                if kind == "fatal":
                    raise rest[0]
                if kind == "eof":
                    ctx.out("")
                    return 0
                getattr(self, f"_on_{kind}")(*rest)
                if self.ending and self.open is None and not self.waiting:
                    return 0
                ctx.flush()
        finally:
            self.stop.set()
            for client in [*self.clients, self.decider]:
                if client is not None:
                    client.close()

    def _on_event(self, method: str, event: dict[str, Any]) -> None:
        if method != api.APPROVAL or not isinstance(event, dict):
            return
        pid = str(event.get("id"))
        if event.get("event") == "approval.requested":
            if pid not in self.handled and all(str(w.get("id")) != pid for w in self.waiting):
                self.waiting.append(event)
                self._show_next()
        elif event.get("event") == "approval.resolved":
            self._resolved(pid, str(event.get("outcome")))

    def _shown(self, text: Any) -> str:
        from . import render

        return render.printable(str(text))  # from the agent, but never allowed to drive the terminal

    def _resolved(self, pid: str, outcome: str) -> None:
        style = self.ctx.style
        if self.open is not None and str(self.open.get("id")) == pid:
            self.ctx.stdout.write(style.warn(self._shown(_GONE.get(outcome, outcome))) + "\n")
            self._close_prompt()
            self._show_next()
            return
        queued = next((w for w in self.waiting if str(w.get("id")) == pid), None)
        if queued is not None:
            self.waiting.remove(queued)
            self.handled.add(pid)
            self._note(style.dim(f"  {self._shown(pid)}: {self._shown(_GONE.get(outcome, outcome))} before its turn"))
        elif pid not in self.handled:
            self._note(style.dim(f"  {self._shown(pid)}: {self._shown(outcome)}"))

    def _note(self, line: str) -> None:
        """A line about something else; an open prompt is shown again below it."""
        if self.open is None:
            self.ctx.out(line)
            return
        self.ctx.stdout.write("\n" + line + "\n" + PROMPT)

    def _on_line(self, line: str) -> None:
        self.reading = False
        stale, self.stale_read = self.stale_read, False
        if self.open is None:
            return  # typed for a prompt that closed meanwhile
        if stale and time.monotonic() - self.opened_at < STALE_ANSWER_WINDOW:
            self.ctx.out(self.ctx.style.warn("  (that answer was typed for the request that expired; answer this one)"))
            self._ask()
            return
        answer = line.strip().lower()
        if answer not in ANSWERS:
            self._ask()
            return
        request = self.open
        self._close_prompt()
        params: ApprovalsDecideParams = {"id": str(request.get("id")), "approve": answer[0] in "ya"}
        if answer[0] == "a":
            params["always"] = True
        self._decide(params)
        self._show_next()

    def _on_lost(self, error: HermesError) -> None:
        ctx = self.ctx
        if self.open is not None:
            ctx.stdout.write(ctx.style.warn("gone with the agent (it did not run)") + "\n")
            self._close_prompt()
        for request in self.waiting:
            self.handled.add(str(request.get("id")))
            ctx.out(ctx.style.dim(f"  {self._shown(request.get('id'))}: gone with the agent (it did not run)"))
        self.waiting.clear()
        if self.decider is not None:
            self.decider.close()
            self.decider = None
        ctx.err(ctx.style.warn(f"the agent went away ({error.message}); waiting for it to come back (Ctrl-C to stop)"))

    def _on_back(self) -> None:
        self.ctx.err(self.ctx.style.ok("agent restarted; watching again"))

    def _on_ended(self) -> None:
        self.ending = True

    # -- prompts -------------------------------------------------------------------------------
    def _show_next(self) -> None:
        if self.open is not None or not self.waiting:
            return
        request = self.waiting.popleft()
        self.handled.add(str(request.get("id")))
        self.open = request
        for line in self.render_request(request, self.ctx):
            self.ctx.out(line)
        self.opened_at = time.monotonic()
        self._ask()

    def _ask(self) -> None:
        self.ctx.stdout.write(PROMPT)
        self.ctx.flush()
        if not self.reading:
            self.reading = True
            self.want_line.set()

    def _close_prompt(self) -> None:
        self.open = None
        if self.reading:
            self.stale_read = True

    def _decide(self, params: ApprovalsDecideParams) -> None:
        ctx = self.ctx
        try:
            if self.decider is None:
                self.decider = ctx.client(autostart=False)
            result = self.decider.approvals_decide(params)
        except HermesError as exc:  # expired meanwhile, answered elsewhere, the agent went: say so, keep watching
            ctx.err(ctx.style.warn(f"  {exc.message}"))
            return
        ctx.out("  " + self.render_decided(result, ctx))
        if result.get("always"):
            ctx.out(f"  {self._shown(result.get('capability'))} is now allowed for {self._shown(result.get('url'))}")

    # -- the threads ---------------------------------------------------------------------------
    def _stream(self) -> None:
        connected_once = False
        failures = 0
        while not self.stop.is_set():
            try:
                client = self.ctx.client() if not connected_once else self.ctx.client(autostart=False)
            except HermesError as exc:
                if not connected_once:
                    self.inbox.put(("fatal", exc))
                    return
                self.stop.wait(RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)])
                failures += 1
                continue
            self.clients.append(client)
            if connected_once:
                self.inbox.put(("back",))
            connected_once, failures = True, 0
            try:
                client.watch_notifies(lambda m, p: self.inbox.put(("event", m, p)))
            except (HermesError, OSError) as exc:  # OSError: the main loop closed the socket under the read
                if self.stop.is_set():
                    return
                lost = exc if isinstance(exc, HermesError) else IpcError(f"lost the connection to the agent: {exc}")
                self.inbox.put(("lost", lost))
                continue
            finally:
                client.close()
                self.clients.remove(client)
            self.inbox.put(("ended",))  # the agent answered the watch: it has nothing more to send
            return

    def _stdin(self) -> None:
        stdin = self.ctx.stdin
        while not self.stop.is_set():
            self.want_line.wait()
            self.want_line.clear()
            line = stdin.readline() if stdin is not None else ""
            self.inbox.put(("line", line) if line else ("eof",))
            if not line:
                return
