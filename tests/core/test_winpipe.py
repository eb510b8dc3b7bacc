"""The named-pipe endpoint's pure parts: names, the security descriptor, flags and the server check."""

from __future__ import annotations

import pytest

from hermes_relay.core import winpipe
from hermes_relay.core.errors import UnsafeRuntimeError, UsageError

SID = "S-1-5-21-1004336348-1177238915-682003330-1001"
OTHER = "S-1-5-21-1004336348-1177238915-682003330-1002"


def test_the_pipe_is_named_by_the_user_and_the_hermes_home() -> None:
    name = winpipe.pipe_name(SID, "/home/ada/.hermes")
    assert name.startswith("\\\\.\\pipe\\hermes-relay." + SID + ".")
    assert winpipe.is_pipe_path(name) and not winpipe.is_pipe_path("/run/user/1000/hermes-relay/agent.sock")
    assert name == winpipe.pipe_name(SID, "/home/ada/.hermes/")  # one home, one name
    assert name != winpipe.pipe_name(OTHER, "/home/ada/.hermes")  # another user
    assert name != winpipe.pipe_name(SID, "/home/ada/other-hermes")  # another home of the same user
    assert len(name) < 256  # the Win32 limit for pipe names


@pytest.mark.parametrize("bad", ["", "S-1", "S-1-5-", "s-1-5-21", "S-1-5-21-1;(A;;GA;;;WD)", "S-1-5\x00-1", "../x"])
def test_a_malformed_sid_is_refused_before_it_reaches_a_name_or_a_descriptor(bad: str) -> None:
    with pytest.raises(UsageError):
        winpipe.pipe_name(bad, "/home/ada/.hermes")
    with pytest.raises(UsageError):
        winpipe.pipe_sddl(bad)


def test_the_descriptor_admits_only_the_user_and_inherits_nothing() -> None:
    assert winpipe.pipe_sddl(SID) == f"O:{SID}G:{SID}D:P(A;;GA;;;{SID})"


def test_only_the_first_instance_claims_the_name_and_remote_clients_are_rejected() -> None:
    assert winpipe.open_mode(True) & winpipe.FILE_FLAG_FIRST_PIPE_INSTANCE
    assert not winpipe.open_mode(False) & winpipe.FILE_FLAG_FIRST_PIPE_INSTANCE
    for first in (True, False):
        assert winpipe.open_mode(first) & winpipe.FILE_FLAG_OVERLAPPED
        assert winpipe.open_mode(first) & winpipe.PIPE_ACCESS_DUPLEX == winpipe.PIPE_ACCESS_DUPLEX
    assert winpipe.PIPE_MODE & winpipe.PIPE_REJECT_REMOTE_CLIENTS
    # The client lets the server identify it, never impersonate it.
    assert winpipe.CLIENT_FLAGS & winpipe.SECURITY_SQOS_PRESENT and winpipe.CLIENT_FLAGS & winpipe.SECURITY_IDENTIFICATION


def test_the_client_talks_only_to_a_pipe_its_own_user_serves() -> None:
    name = winpipe.pipe_name(SID, "C:/Users/ada/.hermes")
    winpipe.check_server(name, SID, 4242, SID)
    with pytest.raises(UnsafeRuntimeError, match="process 4242 of " + OTHER):
        winpipe.check_server(name, SID, 4242, OTHER)
    with pytest.raises(UnsafeRuntimeError, match="cannot be read"):
        winpipe.check_server(name, SID, 4242, None)  # another user's process: its token is not readable
    with pytest.raises(UnsafeRuntimeError, match="cannot tell which process"):
        winpipe.check_server(name, SID, None, None)


def test_the_cli_recognises_pipe_paths_without_importing_this_module() -> None:
    from hermes_relay.cli import client

    assert client._PIPE_PREFIX == winpipe.PREFIX
