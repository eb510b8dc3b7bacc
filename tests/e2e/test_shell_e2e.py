"""`hermes-relay shell` through real relay, agent and CLI processes on a pty (tests/e2e/shellrig.py)."""

from __future__ import annotations

import pytest
from shellrig import ShellRig, Typist, diff_stream

pytestmark = pytest.mark.integration


@pytest.fixture
def rig(tmp_path):  # type: ignore[no-untyped-def]
    r = ShellRig(tmp_path).start()
    yield r
    r.close()


def test_echo_and_the_remote_exit_status(rig: ShellRig) -> None:
    sh = rig.shell()
    rig.wait_prompt_works(sh)
    sh.type(b"exit 3\r")
    assert sh.wait_exit(15) == 3
    assert sh.termios_now() == sh.before


def test_the_recorder_holds_exactly_what_was_typed(rig: ShellRig) -> None:
    sh = rig.shell()
    rec = rig.start_recorder(sh)
    typist = Typist(sh, pace=0.002).start()
    typist.wait_keys(200)
    typed = typist.stop()
    assert rig.stop_recorder(sh) == len(typed)
    assert diff_stream(typed, rec.read_bytes()) == ""
    rig.wait_prompt_works(sh, "after")
