"""The workspace command sandbox with real processes: what a confined desktop_terminal command can and
cannot reach (Landlock, seccomp, no capabilities), and the trampoline jobs use (``command_argv``)."""

from __future__ import annotations

import math
import os
import shlex
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
import trio
from toolwait import line_of, wait_gone

from hermes_relay.agent.desktop.tools import _sandbox
from hermes_relay.agent.desktop.tools.terminal import desktop_terminal
from hermes_relay.core.confine import SYSTEM_READ_ONLY, Confinement, landlock_abi
from hermes_relay.core.desktop import ToolContext, ToolError

pytestmark = pytest.mark.skipif(landlock_abi() < 1, reason="the kernel has no Landlock (this machine type: ABI 7)")

PYTHON = os.path.realpath(sys.executable)  # the base interpreter, run with -I -S: no venv needed


def py(code: str) -> str:
    """A shell command running ``code`` in Python (stdlib only)."""
    return f"{PYTHON} -I -S -c {code!r}"


@pytest.fixture
def box(tmp_path: Path):
    root, prot, outside = tmp_path / "root", tmp_path / "prot", tmp_path / "outside"
    for d in (root, prot, outside):
        d.mkdir()
    (prot / "secret").write_text("token-123\n")
    (outside / "notes").write_text("outside\n")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(prot / "agent.sock"))
    listener.listen()
    listener.setblocking(False)
    conf = Confinement(
        roots=(root,), read_only=(*map(Path, SYSTEM_READ_ONLY), Path(sys.base_prefix)), protected=(prot,),
        kernel_commands=True, network=False,
    )
    ctx = ToolContext(home=tmp_path, cwd=root, deadline=math.inf, env=dict(os.environ), confinement=conf)
    yield ctx, root, prot, outside, listener
    listener.close()


def accepted(listener: socket.socket) -> bool:
    try:
        listener.accept()[0].close()
        return True
    except BlockingIOError:
        return False


async def run(ctx, command: str) -> dict:
    return await desktop_terminal({"command": command}, ctx)


async def test_a_workspace_command_writes_in_its_root_and_reads_system_paths(box):
    ctx, root, *_ = box
    result = await run(ctx, "echo hi > made; mkdir -p a/b && echo x > a/b/c; cat made; head -c 4 /etc/os-release; ls /usr")
    assert result["exit_code"] == 0, result["stderr"]
    assert (root / "made").read_text() == "hi\n" and (root / "a/b/c").exists()
    assert result["stdout"].startswith("hi\n")


async def test_a_workspace_command_cannot_write_outside_its_roots(box):
    ctx, _, _, outside, _ = box
    result = await run(ctx, f"echo x > {outside}/new; echo y >> {outside}/notes; rm -f {outside}/notes; "
                            f"ln -s /etc {outside}/link; mkdir {outside}/d")
    assert result["exit_code"] != 0
    assert sorted(p.name for p in outside.iterdir()) == ["notes"]
    assert (outside / "notes").read_text() == "outside\n"


async def test_a_workspace_command_cannot_read_or_write_the_protected_directory(box):
    ctx, root, prot, _, _ = box
    command = (f"cat {prot}/secret; cat /proc/self/root{prot}/secret; ls {prot}; ln -s {prot}/secret leak; cat leak; "
               f"ln {prot}/secret hard; echo x > {prot}/new; rm -f {prot}/secret; cp {prot}/secret copied")
    result = await run(ctx, command)
    assert "token-123" not in result["stdout"]
    assert result["stderr"].count("Permission denied") >= 5
    assert sorted(p.name for p in prot.iterdir()) == ["agent.sock", "secret"]
    assert not (root / "hard").exists() and not (root / "copied").exists()


async def test_a_workspace_command_cannot_connect_to_a_unix_socket(box):
    ctx, _, prot, _, listener = box
    for path in (f"{prot}/agent.sock", f"/proc/self/root{prot}/agent.sock"):
        code = f"import socket; s = socket.socket(socket.AF_UNIX); s.connect({path!r}); print('connected')"
        result = await run(ctx, py(code))
        assert result["exit_code"] == 1 and "PermissionError" in result["stderr"], result
    # a connected pair is fine; a datagram pair (sendto any socket path) and io_uring are not
    pair = py("import socket; a, b = socket.socketpair(); a.send(b'x'); print(b.recv(1))")
    dgram = py("import socket; socket.socketpair(type=socket.SOCK_DGRAM)")
    assert (await run(ctx, pair))["stdout"] == "b'x'\n"
    assert "PermissionError" in (await run(ctx, dgram))["stderr"]
    assert not accepted(listener)
    unconfined = replace(ctx, confinement=Confinement(unconfined=True))
    code = f"import socket; s = socket.socket(socket.AF_UNIX); s.connect({str(prot / 'agent.sock')!r})"
    assert (await run(unconfined, py(code)))["exit_code"] == 0  # the same command reaches it unconfined
    assert accepted(listener)


async def test_no_network_means_no_loopback_tcp_or_udp(box):
    ctx, *_ = box
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    port = server.getsockname()[1]
    udp = py("import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', 9))")
    with server:
        blocked = await run(ctx, f"exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected")
        assert blocked["exit_code"] != 0 and "connected" not in blocked["stdout"]
        assert (await run(ctx, udp))["exit_code"] == 1
        assert not accepted(server)
        allowed = replace(ctx, confinement=replace(ctx.confinement, network=True))
        opened = await run(allowed, f"exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected")
        assert opened["stdout"] == "connected\n"
        assert accepted(server)


async def test_git_and_write_protected_paths_in_a_root_are_read_only(box):
    ctx, root, *_ = box
    (root / ".git").mkdir()
    (root / ".git/config").write_text("[core]\n")
    (root / "sub").mkdir()
    (root / "sub/.git").mkdir()
    (root / ".bashrc").write_text("# rc\n")
    ctx = replace(ctx, confinement=replace(ctx.confinement, write_protected=(root / ".bashrc",)))
    command = ("cat .git/config .bashrc; echo evil >> .git/config; echo hook > .git/hooks-post; echo x > sub/.git/h; "
               "echo evil >> .bashrc; echo ok > sub/file; echo new > top")
    result = await run(ctx, command)
    assert result["stdout"] == "[core]\n# rc\n"
    assert (root / ".git/config").read_text() == "[core]\n" and (root / ".bashrc").read_text() == "# rc\n"
    assert not (root / ".git/hooks-post").exists() and not (root / "sub/.git/h").exists()
    assert (root / "sub/file").read_text() == "ok\n"
    assert (root / "top").read_text() == "new\n"  # the root itself stays writable


@pytest.mark.skipif(landlock_abi() < 6, reason="signal scoping needs Landlock ABI 6 (this machine type: ABI 7)")
async def test_a_workspace_command_has_no_capabilities_and_cannot_signal_the_agent(box):
    ctx, root, *_ = box
    (root / "f").write_text("x")
    chown = py("import os; os.chown('f', 1, 1)")
    result = await run(ctx, f"{chown}; kill -0 {os.getpid()} && echo signalled")
    assert "PermissionError" in result["stderr"] and "signalled" not in result["stdout"]
    assert (root / "f").stat().st_uid == os.getuid()


async def test_a_kernel_without_landlock_refuses_workspace_commands(box, monkeypatch):
    ctx, root, *_ = box
    monkeypatch.setattr(_sandbox, "abi", lambda: 0)  # a kernel this machine does not run
    with pytest.raises(ToolError, match="refused: this kernel has no Landlock"):
        await run(ctx, "echo ran > marker")
    with pytest.raises(ToolError, match="refused"):
        _sandbox.command_argv(["true"], ctx.confinement, str(root))
    assert not (root / "marker").exists()


async def test_the_job_trampoline_confines_a_detached_command(box):
    ctx, root, prot, outside, _ = box
    plain = ["/bin/sh", "-c", "echo hi"]
    assert _sandbox.command_argv(plain, Confinement(), str(root)) == plain
    argv = _sandbox.command_argv(
        ["/bin/sh", "-c", f"echo ok > inside; cat {prot}/secret; echo x > {outside}/new; echo $$ > pid"],
        ctx.confinement, str(root),
    )
    proc = subprocess.Popen(argv, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=30)
    assert (root / "inside").read_text() == "ok\n"
    assert "token-123" not in out and not (outside / "new").exists()
    assert err.count("Permission denied") == 2
    assert int(await line_of(root / "pid")) == proc.pid  # confined, then executed in place


async def test_a_command_that_cannot_start_is_a_clear_error(box):
    ctx, root, *_ = box
    for conf in (ctx.confinement, Confinement()):
        with pytest.raises(ToolError, match="could not start /nonexistent/sh: No such file"):
            await _sandbox.start(["/nonexistent/sh", "-c", "true"], cwd=str(root), env={}, confinement=conf)


@pytest.mark.parametrize("mounts", [True, False], ids=["mount-view", "landlock-split"])
async def test_a_home_root_keeps_the_agent_state_inside_it_out_of_reach(tmp_path, monkeypatch, mounts):
    monkeypatch.setattr(_sandbox, "MOUNTS", mounts)
    home = tmp_path / "home"
    state = home / ".hermes"
    (home / "project").mkdir(parents=True)
    state.mkdir()
    (state / "credentials.json").write_text('{"token": "token-123"}\n')
    (home / "notes.txt").write_text("notes\n")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(state / "agent.sock"))
    listener.listen()
    listener.setblocking(False)
    conf = Confinement(roots=(home,), read_only=(*map(Path, SYSTEM_READ_ONLY), Path(sys.base_prefix)),
                       protected=(state,), kernel_commands=True, network=False)
    ctx = ToolContext(home=home, cwd=home, deadline=math.inf, env=dict(os.environ), confinement=conf)
    connect = py(f"import socket; socket.socket(socket.AF_UNIX).connect({str(state / 'agent.sock')!r})")
    command = (f"cat .hermes/credentials.json; ls .hermes; echo '{{}}' > .hermes/credentials.json; "
               f"echo x > .hermes/policy.json; mv .hermes gone; {connect}; "
               "echo ok > project/file; echo more >> notes.txt; cat notes.txt; echo new > top")
    with listener:
        result = await run(ctx, command)
        assert not accepted(listener)
    assert "token-123" not in result["stdout"]
    assert (state / "credentials.json").read_text() == '{"token": "token-123"}\n'
    assert sorted(p.name for p in state.iterdir()) == ["agent.sock", "credentials.json"]
    assert (home / "project/file").read_text() == "ok\n"
    assert (home / "notes.txt").read_text() == "notes\nmore\n"
    # without the mount view, nothing can be created directly in a split folder (the price of Landlock alone)
    assert (home / "top").exists() is mounts


async def test_nothing_outlives_a_workspace_call(box):
    ctx, root, *_ = box
    marker = f"300.{os.getpid()}{id(ctx) % 10**6:06d}"
    command = f"nohup sleep {marker} >/dev/null 2>&1 & setsid sleep {marker} >/dev/null 2>&1 & echo started"
    assert (await run(ctx, command))["stdout"] == "started\n"
    assert not [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or ())]


@pytest.mark.parametrize("abi", range(1, 8))
async def test_every_landlock_abi_confines_writes_and_reads(box, monkeypatch, abi):
    if abi > landlock_abi():
        pytest.skip(f"the kernel offers Landlock ABI {landlock_abi()}")
    monkeypatch.setattr(_sandbox, "abi", lambda: abi)  # the rule set an older kernel would get
    ctx, root, prot, outside, _ = box
    result = await run(ctx, f"echo in > inside; cat {prot}/secret; echo out > {outside}/new")
    assert (root / "inside").read_text() == "in\n"
    assert "token-123" not in result["stdout"] and not (outside / "new").exists()


async def test_the_reaper_ends_the_command_when_the_agent_goes_away(box):
    ctx, root, *_ = box
    marker = f"300.{os.getpid()}777"
    for conf in (ctx.confinement, Confinement()):
        command = await _sandbox.start(["/bin/sh", "-c", f"setsid sleep {marker} & echo $! > pid; wait"],
                                       cwd=str(root), env={}, confinement=conf)
        pid = int(await line_of(root / "pid"))
        command.ctl.close()  # as when the agent dies: the reaper reads EOF
        assert await wait_gone(pid)
        (root / "pid").unlink()
        for stream in (command.stdout, command.stderr):
            await stream.aclose()


async def test_a_dead_spawn_server_is_started_again(box):
    ctx, *_ = box
    assert (await run(ctx, "echo one"))["stdout"] == "one\n"
    spawner = _sandbox._SPAWNER.proc
    assert spawner is not None
    spawner.kill()
    spawner.wait()
    assert (await run(ctx, "echo two"))["stdout"] == "two\n"
    assert _sandbox._SPAWNER.proc is not spawner


async def test_reapers_serve_concurrent_calls_and_one_call_never_confines_the_next(box):
    ctx, root, prot, outside, _ = box
    trusted = replace(ctx, confinement=Confinement())
    results: dict[int, dict] = {}

    async def one(i: int) -> None:
        which = ctx if i % 2 else trusted
        results[i] = await run(which, f"sleep 0.2; echo {i} > {outside}/{i} && echo wrote")

    async with trio.open_nursery() as nursery:
        for i in range(6):
            nursery.start_soon(one, i)
    assert sorted(p.name for p in outside.iterdir()) == ["0", "2", "4", "notes"]
    assert [results[i]["stdout"] for i in range(6)] == ["wrote\n", "", "wrote\n", "", "wrote\n", ""]
    after = await run(trusted, f"cat {prot}/secret")  # reapers reused after confined calls stay unconfined
    assert after["stdout"] == "token-123\n"


async def test_without_a_spawner_trusted_commands_still_run_and_workspace_ones_do_not(box, monkeypatch):
    ctx, root, *_ = box
    monkeypatch.setattr(_sandbox, "_MODULE", "hermes_relay.no_such_module")  # a spawner that cannot start
    monkeypatch.setattr(_sandbox, "_SPAWNER", _sandbox._Spawner())
    assert (await run(replace(ctx, confinement=Confinement()), "echo ok"))["stdout"] == "ok\n"
    with pytest.raises(ToolError, match="could not start the command sandbox, so the command did not run"):
        await run(ctx, "echo ran > marker")
    assert not (root / "marker").exists()


async def test_the_mount_view_cannot_be_undone_from_inside(tmp_path):
    home = tmp_path / "home"
    state = home / ".hermes"
    state.mkdir(parents=True)
    (state / "credentials.json").write_text("token-123\n")
    conf = Confinement(roots=(home,), read_only=(*map(Path, SYSTEM_READ_ONLY), Path(sys.base_prefix)),
                       protected=(state,), kernel_commands=True, network=False)
    ctx = ToolContext(home=home, cwd=home, deadline=math.inf, env=dict(os.environ), confinement=conf)
    code = (  # a new user + mount namespace of its own, where it holds every capability, then umount
        "import ctypes\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "print('unshare', libc.unshare(0x10000000 | 0x20000))\n"
        f"print('umount', libc.umount2({bytes(state)!r}, 2))\n"
        f"print(open({str(state / 'credentials.json')!r}).read())\n"
    )
    result = await run(ctx, f"{PYTHON} -I -S -c {shlex.quote(code)}")
    assert result["stdout"].startswith("unshare 0\numount -1\n")
    assert "token-123" not in result["stdout"] and "PermissionError" in result["stderr"]


@pytest.mark.parametrize("mounts", [True, False], ids=["mount-view", "landlock-split"])
async def test_a_login_path_that_does_not_exist_yet_cannot_be_created_inside_a_root(tmp_path, monkeypatch, mounts):
    # The mount view can only freeze what exists: ~/.ssh or ~/.config/autostart missing from a home root were
    # left to a whole-root Landlock grant, so a workspace command could create them (code at next login).
    monkeypatch.setattr(_sandbox, "MOUNTS", mounts)
    home = tmp_path / "home"
    (home / "project").mkdir(parents=True)
    (home / ".config").mkdir()
    (home / ".bashrc").write_text("# rc\n")
    frozen = (home / ".ssh", home / ".config" / "autostart", home / ".bashrc", home / ".profile")
    conf = Confinement(roots=(home,), read_only=(*map(Path, SYSTEM_READ_ONLY), Path(sys.base_prefix)),
                       protected=(home / ".hermes",), write_protected=frozen, kernel_commands=True, network=False)
    ctx = ToolContext(home=home, cwd=home, deadline=math.inf, env=dict(os.environ), confinement=conf)
    await run(ctx, "mkdir .ssh; echo k > .ssh/authorized_keys; mkdir .config/autostart; "
                   "echo x > .config/autostart/evil.desktop; echo x > .profile; echo x >> .bashrc; "
                   "echo ok > project/file")
    assert not (home / ".ssh").exists() and not (home / ".config" / "autostart").exists()
    assert not (home / ".profile").exists() and (home / ".bashrc").read_text() == "# rc\n"
    assert (home / "project" / "file").read_text() == "ok\n"  # the rest of the root stays writable


async def test_a_workspace_command_does_not_get_the_users_secrets_from_the_agents_environment(box):
    # The agent started from a login shell carries what the user exported there; a workspace host may read
    # only its roots and system paths, and the command's output goes back to the host.
    ctx, *_ = box
    ctx = replace(ctx, env={**ctx.env, "OPENAI_API_KEY": "sk-secret-1", "DATABASE_URL": "postgres://u:pw-2@db/x",
                            "GITHUB_TOKEN": "ghp-secret-3", "LANG": "C.UTF-8", "JAVA_HOME": "/usr/lib/jvm/x"})
    shown = (await run(ctx, "env"))["stdout"]
    for secret in ("sk-secret-1", "pw-2", "ghp-secret-3"):
        assert secret not in shown
    assert "LANG=C.UTF-8" in shown and "JAVA_HOME=/usr/lib/jvm/x" in shown and "PATH=" in shown
    trusted = replace(ctx, confinement=replace(ctx.confinement, kernel_commands=False))
    assert "sk-secret-1" in (await run(trusted, "env"))["stdout"]  # trusted commands have the user's rights


async def test_a_commands_environment_follows_the_confinement_the_call_resolved(box):
    # The channel hands tools a context whose confinement is resolved in the tool's thread (PENDING until
    # then): the environment must follow what was resolved, not the placeholder (which is a workspace's).
    from hermes_relay.core.confine import PENDING

    ctx, *_ = box
    secret = {**ctx.env, "OPENAI_API_KEY": "sk-secret-4"}
    trusted = replace(ctx.confinement, kernel_commands=False)
    as_channel = replace(ctx, env=secret, confinement=PENDING, resolve=lambda: trusted)
    assert "sk-secret-4" in (await run(as_channel, "env"))["stdout"]
    workspace = replace(ctx, env=secret, confinement=PENDING, resolve=lambda: ctx.confinement)
    assert "sk-secret-4" not in (await run(workspace, "env"))["stdout"]
