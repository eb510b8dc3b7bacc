"""Which environment overrides a relay host may set for a command it starts (``env`` of the job tools).

An override that changes what a program loads or runs turns an approved ``echo hello`` into any code:
``BASH_FUNC_echo%%`` defines a shell function, ``BASH_ENV``/``ENV`` source a file, ``LD_PRELOAD`` loads a
library, ``PATH`` picks which ``echo`` runs, ``GIT_SSH_COMMAND`` is a command. ``dangerous_env`` is the one
rule: the job tools refuse such a name, and the approval display can call it to mark one.

The rule is two-layered. Names must be portable (``[A-Za-z_][A-Za-z0-9_]*``): that alone refuses exported
shell functions and every name only a shell trick can use. Then a deny list of exact names, prefixes and
suffixes, compared case-insensitively (Windows names ignore case). A pure allow list was rejected: real
commands need their own variables (``NODE_ENV``, ``RUST_LOG``, ``MY_APP_TOKEN``) that no list can name. A
deny list cannot be complete, so the approval shows every override (item 5 of issue 17).
"""

from __future__ import annotations

import re
from typing import Final

_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

_LOADER: Final = "changes which libraries or code a program loads"
_SHELL: Final = "changes what the shell runs before or around the command"
_FINDS: Final = "changes which programs and files a command finds"
_RUNS: Final = "names a program that tools run for you"
_CONFIG: Final = "changes which configuration or trust store a program reads"

# Exact names (upper case) and why each is refused.
_EXACT: Final[dict[str, str]] = {
    **dict.fromkeys(("BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "PS0", "PS1", "PS2", "PS3", "PS4", "IFS",
                     "PROMPT_COMMAND", "CDPATH", "GLOBIGNORE", "HISTFILE", "ZDOTDIR", "SHELL",
                     "FPATH", "MAIL", "MAILPATH", "TMOUT", "EXECIGNORE", "POSIXLY_CORRECT"), _SHELL),
    **dict.fromkeys(("PATH", "HOME", "TMPDIR", "PATHEXT", "COMSPEC"), _FINDS),
    **dict.fromkeys(("NODE_OPTIONS", "NODE_PATH", "NODE_REPL_EXTERNAL_MODULE", "CLASSPATH", "JAVA_TOOL_OPTIONS",
                     "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "MAVEN_OPTS", "GRADLE_OPTS", "ANT_OPTS", "TCLLIBPATH",
                     "PHPRC", "PHP_INI_SCAN_DIR", "GEM_HOME", "GEM_PATH", "BUNDLE_GEMFILE", "RUBYLIB", "RUBYOPT",
                     "OPENSSL_ENGINES", "OPENSSL_MODULES", "GLIBC_TUNABLES", "LOCPATH", "NLSPATH",
                     "MAKEFLAGS", "MAKEFILES", "MFLAGS", "GNUMAKEFLAGS", "RUSTC_WRAPPER", "RUSTC", "CC", "CXX",
                     "CPP", "LD", "AR", "DOTNET_STARTUP_HOOKS", "LESSOPEN", "LESSCLOSE", "BROWSER"), _LOADER),
    **dict.fromkeys(("OPENSSL_CONF", "INPUTRC", "LESSKEY", "TERMINFO", "TERMINFO_DIRS", "MANOPT", "XAUTHORITY", "KRB5_CONFIG",
                     "CURL_HOME", "WGETRC", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
                     "NODE_EXTRA_CA_CERTS", "PYENV_VERSION"), _CONFIG),
    # A configuration or option that names a program to run: kubeconfig exec plugins, AWS credential_process,
    # go -toolexec, vim's Ex commands, tar's compress program, compilers' -wrapper/-fplugin, hg hooks ...
    **dict.fromkeys(("KUBECONFIG", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "GOFLAGS", "GOTOOLCHAIN",
                     "GOENV", "VIMINIT", "EXINIT", "GVIMINIT", "MYVIMRC", "MYGVIMRC", "TAR_OPTIONS",
                     "RSYNC_CONNECT_PROG", "CCACHE_PREFIX", "HGRCPATH", "GRADLE_USER_HOME", "DOTNET_ROOT",
                     "RUSTUP_TOOLCHAIN", "RUSTUP_HOME", "RUSTFLAGS", "CFLAGS", "CXXFLAGS", "CPPFLAGS", "LDFLAGS",
                     "DOCKER_HOST", "DOCKER_CONFIG", "ANSIBLE_CONFIG", "SSH_CONFIG", "GNUPGHOME"), _RUNS),
}
# Prefixes (upper case); each entry's exceptions are harmless, common names.
_PREFIXES: Final[tuple[tuple[str, str, frozenset[str]], ...]] = (
    ("BASH_FUNC_", "defines a shell function that replaces a command", frozenset()),
    ("BASH", _SHELL, frozenset()),
    ("LD_", _LOADER, frozenset()),
    ("DYLD_", _LOADER, frozenset()),
    ("PYTHON", _LOADER, frozenset({"PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PYTHONIOENCODING", "PYTHONUTF8",
                                   "PYTHONHASHSEED", "PYTHONFAULTHANDLER"})),
    ("PERL", _LOADER, frozenset()),
    ("RUBY", _LOADER, frozenset()),
    ("LUA_", _LOADER, frozenset()),
    ("R_PROFILE", _LOADER, frozenset()),
    ("R_ENVIRON", _LOADER, frozenset()),
    ("NPM_CONFIG_", _LOADER, frozenset()),
    ("YARN_", _LOADER, frozenset()),
    ("PIP_", _LOADER, frozenset()),
    ("CARGO_", _LOADER, frozenset()),
    ("CORECLR_", _LOADER, frozenset()),
    ("COR_", _LOADER, frozenset()),
    ("GCONV_", _LOADER, frozenset()),
    ("XDG_", _FINDS, frozenset()),
    ("SYSTEMD_", _RUNS, frozenset()),
    ("CMAKE_", _RUNS, frozenset()),
    ("ANSIBLE_", _RUNS, frozenset()),
    ("GIT_", "changes what git runs (hooks, ssh, config, helpers) or which repository it touches",
     frozenset({"GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_AUTHOR_DATE", "GIT_COMMITTER_NAME",
                "GIT_COMMITTER_EMAIL", "GIT_COMMITTER_DATE", "GIT_TERMINAL_PROMPT"})),
)
# Suffixes (upper case): a program to run for a pager, an editor, a password prompt, a remote shell.
_SUFFIXES: Final = ("PAGER", "EDITOR", "VISUAL", "ASKPASS", "_COMMAND", "_RSH", "_SSH")


def dangerous_env(name: str) -> str | None:
    """Why overriding the environment variable ``name`` is refused, or None when it is allowed.

    Args:
        name: the variable's name as the caller sent it.

    Returns:
        A short reason naming the variable (``"LD_PRELOAD" changes which libraries ...``), or None.
    """
    if not _NAME.match(name):
        if name.startswith("BASH_FUNC_"):
            return f"{name!r} defines a shell function that replaces a command"
        return f"{name!r} is not a portable variable name (letters, digits and '_', not starting with a digit)"
    upper = name.upper()
    reason = _EXACT.get(upper)
    if reason is None:
        for prefix, why, allowed in _PREFIXES:
            if upper.startswith(prefix) and upper not in allowed:
                reason = why
                break
    if reason is None and upper.endswith(_SUFFIXES):
        reason = _RUNS
    return f'"{name}" {reason}' if reason else None
