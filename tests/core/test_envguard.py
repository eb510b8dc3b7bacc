"""core.envguard.dangerous_env: the one rule for environment overrides a relay host may set."""

from __future__ import annotations

import pytest

from hermes_relay.core.envguard import dangerous_env


@pytest.mark.parametrize("name, why", [
    ("BASH_FUNC_echo%%", "defines a shell function"),
    ("BASH_FUNC_ls()", "defines a shell function"),
    ("BASH_ENV", "what the shell runs"),
    ("ENV", "what the shell runs"),
    ("SHELLOPTS", "what the shell runs"),
    ("BASHOPTS", "what the shell runs"),
    ("IFS", "what the shell runs"),
    ("PS4", "what the shell runs"),
    ("PROMPT_COMMAND", "what the shell runs"),
    ("ZDOTDIR", "what the shell runs"),
    ("LD_PRELOAD", "libraries or code"),
    ("LD_LIBRARY_PATH", "libraries or code"),
    ("ld_audit", "libraries or code"),
    ("DYLD_INSERT_LIBRARIES", "libraries or code"),
    ("PYTHONSTARTUP", "libraries or code"),
    ("PYTHONPATH", "libraries or code"),
    ("PYTHONHOME", "libraries or code"),
    ("PYTHONWARNINGS", "libraries or code"),
    ("PERL5OPT", "libraries or code"),
    ("PERL5LIB", "libraries or code"),
    ("RUBYOPT", "libraries or code"),
    ("NODE_OPTIONS", "libraries or code"),
    ("JAVA_TOOL_OPTIONS", "libraries or code"),
    ("GLIBC_TUNABLES", "libraries or code"),
    ("PATH", "which programs"),
    ("HOME", "which programs"),
    ("XDG_CONFIG_HOME", "which programs"),
    ("GIT_SSH_COMMAND", "what git runs"),
    ("GIT_EXEC_PATH", "what git runs"),
    ("GIT_CONFIG_COUNT", "what git runs"),
    ("GIT_CONFIG_KEY_0", "what git runs"),
    ("GIT_DIR", "what git runs"),
    ("PAGER", "a program"),
    ("GIT_PAGER", "what git runs"),
    ("SYSTEMD_EDITOR", "a program"),
    ("SUDO_ASKPASS", "a program"),
    ("RSYNC_RSH", "a program"),
    ("OPENSSL_CONF", "configuration"),
    ("1ABC", "not a portable variable name"),
    ("A-B", "not a portable variable name"),
    ("\udcff", "not a portable variable name"),
])
def test_refused_names_say_why_and_name_the_variable(name: str, why: str) -> None:
    reason = dangerous_env(name)
    assert reason is not None and why in reason
    assert repr(name) in reason or f'"{name}"' in reason


@pytest.mark.parametrize("name", [
    "KUBECONFIG",  # users[].exec.command: `kubectl get pods` runs it
    "AWS_CONFIG_FILE",  # credential_process: `aws s3 ls` runs it
    "GOFLAGS",  # -toolexec=PROGRAM: `go build` runs it
    "VIMINIT", "EXINIT", "GVIMINIT", "MYVIMRC",  # Ex commands (`:!...`) at vim's start
    "TAR_OPTIONS",  # --use-compress-program / --to-command
    "RSYNC_CONNECT_PROG", "CCACHE_PREFIX", "HGRCPATH", "GRADLE_USER_HOME", "DOTNET_ROOT", "RUSTUP_TOOLCHAIN",
    "CFLAGS", "CXXFLAGS", "LDFLAGS",  # -wrapper PROGRAM, -fplugin=, -B: what the compiler runs
    "CMAKE_C_COMPILER_LAUNCHER", "GOTOOLCHAIN", "BUNDLE_GEMFILE", "ANSIBLE_CONFIG", "WGETRC",
])
def test_overrides_that_name_a_program_or_a_config_that_runs_one_are_refused(name: str) -> None:
    assert dangerous_env(name) is not None


@pytest.mark.parametrize("name", ["NODE_ENV", "RUST_LOG", "DEBUG", "PORT", "MY_APP_TOKEN", "LANG", "LC_ALL", "TZ",
                                  "CI", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "GIT_AUTHOR_NAME",
                                  "GIT_COMMITTER_EMAIL", "_private", "GREETING"])
def test_ordinary_names_are_allowed(name: str) -> None:
    assert dangerous_env(name) is None
