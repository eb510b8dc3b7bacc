"""The sandbox's pure parts: honest labels per kernel, the seccomp program (run through a small BPF
interpreter), the Landlock plan for split folders, and the macOS sandbox-exec profile."""

from __future__ import annotations

import ast
import errno
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from hermes_relay.agent.desktop.sandbox import landlock, seatbelt, seccomp
from hermes_relay.core.confine import TRUSTED_COMMANDS, UNCONFINED, Confinement, commands_label

WORKSPACE = Confinement(roots=(Path("/w"),), kernel_commands=True, network=False)


@pytest.mark.parametrize(
    "abi, expected",
    [
        (7, "kernel-enforced"),
        (6, "kernel-enforced"),
        (5, "partially enforced: the kernel (Landlock ABI 5) does not stop signalling your other processes"),
        (2, "partially enforced: the kernel (Landlock ABI 2) does not stop truncating files it may only read; "
            "signalling"),
        (0, "refused: this kernel has no Landlock"),
    ],
)
def test_labels_say_what_the_kernel_enforces(abi, expected):
    assert commands_label(WORKSPACE, abi=abi, platform="linux").startswith(expected)


def test_labels_for_trusted_commands_and_other_platforms():
    assert commands_label(UNCONFINED) == TRUSTED_COMMANDS
    assert "full rights" in commands_label(Confinement(roots=(Path("/w"),)), abi=7, platform="linux")
    assert commands_label(WORKSPACE, platform="darwin") == "enforced by macOS sandbox-exec"
    assert commands_label(WORKSPACE, platform="win32").startswith("refused:")


def _run_bpf(code: bytes, nr: int, arch: int, args: tuple[int, ...] = ()) -> int:
    """Interpret the filter over one seccomp_data (the instructions the builder uses)."""
    data = struct.pack("=iIQ6Q", nr, arch, 0, *(list(args) + [0] * (6 - len(args))))
    prog = [struct.unpack_from("=HBBI", code, i) for i in range(0, len(code), 8)]
    pc, acc = 0, 0
    while True:
        op, jt, jf, k = prog[pc]
        pc += 1
        if op == 0x20:
            acc = struct.unpack_from("=I", data, k)[0]
        elif op == 0x54:
            acc &= k
        elif op == 0x15:
            pc += jt if acc == k else jf
        elif op == 0x35:
            pc += jt if acc >= k else jf
        elif op == 0x06:
            return k
        else:
            raise AssertionError(f"unexpected BPF op {op:#x}")


EPERM = seccomp.RET_ERRNO | errno.EPERM
X86 = seccomp.ARCHES["x86_64"][0]


@pytest.mark.parametrize(
    "network, nr, args, verdict",
    [
        (True, 41, (seccomp.AF_UNIX, 1), EPERM),  # socket(AF_UNIX)
        (True, 41, (seccomp.AF_INET, 1), seccomp.RET_ALLOW),
        (False, 41, (seccomp.AF_INET, 1), EPERM),
        (False, 41, (seccomp.AF_INET6, 2), EPERM),
        (False, 41, (seccomp.AF_NETLINK, 3, 0), seccomp.RET_ALLOW),  # NETLINK_ROUTE
        (False, 41, (seccomp.AF_NETLINK, 3, 9), EPERM),  # NETLINK_AUDIT
        (False, 41, (17, 3), EPERM),  # AF_PACKET
        (False, 53, (seccomp.AF_UNIX, 1 | 0o2000000), seccomp.RET_ALLOW),  # stream pair, SOCK_CLOEXEC
        (False, 53, (seccomp.AF_UNIX, 2), EPERM),  # datagram pair: sendto() any socket path
        (False, 425, (), EPERM),  # io_uring_setup
        (False, 41 | 0x40000000, (seccomp.AF_UNIX, 1), EPERM),  # x32 socket()
        (False, 0, (), seccomp.RET_ALLOW),  # read
    ],
)
def test_the_seccomp_filter_decides(network, nr, args, verdict):
    assert _run_bpf(seccomp.program(network, "x86_64"), nr, X86, args) == verdict


def test_a_syscall_for_another_architecture_kills_and_unknown_machines_are_refused():
    code = seccomp.program(True, "x86_64")
    assert _run_bpf(code, 359, 0x40000003) == seccomp.RET_KILL_PROCESS  # i386 socket() via int 0x80
    arm = seccomp.program(False, "aarch64")
    assert _run_bpf(arm, 198, seccomp.ARCHES["aarch64"][0], (seccomp.AF_UNIX, 1)) == EPERM
    assert _run_bpf(arm, 198, X86, (seccomp.AF_UNIX, 1)) == seccomp.RET_KILL_PROCESS
    with pytest.raises(ValueError, match="riscv64"):
        seccomp.program(True, "riscv64")


def test_a_folder_holding_an_excluded_path_is_split_into_its_children():
    tree = {"/h": ["/h/.hermes", "/h/a", "/h/b"], "/h/a": ["/h/a/.git", "/h/a/src"], "/h/.hermes": ["/h/.hermes/x"]}
    lay = landlock.Layout(["/h"], ["/usr"], ["/h/.hermes"], ["/h/a/.git"])
    rules = landlock.plan(lay, children=lambda p: tree.get(p, []))
    granted = {r.path: r.rights for r in rules if not r.path.startswith("/dev/")}
    assert granted == {"/h/a/src": landlock.WRITE, "/h/b": landlock.WRITE, "/usr": landlock.READ}
    # with the mount view covering what lies inside the roots, the root is granted whole
    isolated = {r.path: r.rights for r in landlock.plan(lay, isolated=True, coverable=lambda p: True)
                if not r.path.startswith("/dev/")}
    assert isolated == {"/h": landlock.WRITE, "/usr": landlock.READ}
    # what the view cannot cover (a path that does not exist yet, a link) is still split around
    missing = landlock.Layout(["/h"], ["/usr"], ["/h/.hermes"], ["/h/a/.git", "/h/.ssh"])
    partly = {r.path: r.rights for r in landlock.plan(missing, isolated=True, children=lambda p: tree.get(p, []),
                                                      coverable=lambda p: p != "/h/.ssh")
              if not r.path.startswith("/dev/")}
    assert partly == {"/h/.hermes": landlock.WRITE, "/h/a": landlock.WRITE, "/h/b": landlock.WRITE,
                      "/usr": landlock.READ}


def test_a_root_inside_a_protected_path_gets_nothing_and_inside_a_frozen_one_is_read_only():
    lay = landlock.Layout(["/h/.hermes/w", "/opt/venv/x"], [], ["/h/.hermes"], ["/opt/venv"])
    granted = {r.path: r.rights for r in landlock.plan(lay, children=lambda p: []) if not r.path.startswith("/dev/")}
    assert granted == {"/opt/venv/x": landlock.READ}


def test_rights_a_kernel_does_not_know_are_not_handled():
    assert landlock.handled_rights(1) == (1 << 13) - 1
    assert landlock.handled_rights(3) & landlock.TRUNCATE and not landlock.handled_rights(3) & landlock.IOCTL_DEV
    assert landlock.handled_rights(7) == (1 << 16) - 1


def test_the_seatbelt_profile_denies_by_default_and_confines_writes():
    spec = {"roots": ["/Users/u/proj"], "read_only": ["/usr"], "protected": ["/Users/u/.hermes"],
            "write_protected": ["/Users/u/.zshrc"], "network": False}
    text = seatbelt.profile(spec)
    assert text.startswith("(version 1)\n(deny default)\n")
    assert ('(allow file-write* (require-all (subpath "/Users/u/proj") (require-not (subpath "/Users/u/.hermes"))'
            ' (require-not (subpath "/Users/u/.zshrc")) (require-not (regex #"^/Users/u/proj/(.*/)?\\.git(/|$)"))))'
            in text)
    assert '(allow file-read* (require-all (subpath "/usr") (require-not (subpath "/Users/u/.hermes"))))' in text
    assert "network" not in text
    assert "(allow network-outbound (remote ip" in seatbelt.profile({**spec, "network": True})
    assert "unix" not in seatbelt.profile({**spec, "network": True})
    assert seatbelt.argv(spec, ["/bin/sh", "-c", "x"])[:2] == ["/usr/bin/sandbox-exec", "-p"]


def test_seatbelt_quotes_paths_and_refuses_control_characters():
    assert seatbelt.quote('/a "b"\\c') == '"/a \\"b\\"\\\\c"'
    with pytest.raises(ValueError, match="control characters"):
        seatbelt.profile({"roots": ["/a\nb"], "read_only": [], "protected": [], "write_protected": []})


@pytest.mark.skipif(sys.platform != "linux", reason="the spawner is Linux only (it refuses to import elsewhere)")
def test_the_spawner_loads_no_trio_and_nothing_of_the_agent_beyond_the_sandbox():
    code = ("import sys, hermes_relay.agent.desktop.sandbox.spawner; "
            "print(sorted(m for m in sys.modules if m == 'trio' or m.startswith('hermes_relay.')))")
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = ast.literal_eval(out)
    assert "trio" not in loaded
    assert all(m.startswith("hermes_relay.agent.desktop.sandbox") or m in ("hermes_relay.agent",
               "hermes_relay.agent.desktop") for m in loaded), loaded


@pytest.mark.skipif(sys.platform == "linux", reason="checks the refusal other platforms get")
def test_the_spawner_refuses_to_import_off_linux():  # pragma: no cover - macOS and Windows runners
    code = "import hermes_relay.agent.desktop.sandbox.spawner"
    proc = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0 and "is Linux only" in proc.stderr
