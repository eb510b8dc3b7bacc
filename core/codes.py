"""Pairing codes: 6 characters from A-Z and 0-9 (pure helpers shared by the CLI, agent and relay)."""

from __future__ import annotations

import re
import secrets

from .errors import PayloadError
from .wire import MIN_PREFIX_LEN

CODE_LENGTH = 6
CODE_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"  # what a code may contain (typed or registered)
# What minted codes use: no O/0 or I/1, which read alike on screens and paper (32 characters).
MINT_ALPHABET = "".join(ch for ch in CODE_ALPHABET if ch not in "O0I1")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-_]")
_VALID = re.compile(rf"^[A-Z0-9]{{{CODE_LENGTH}}}$")


def clean_code(raw: str) -> str:
    """Strip ANSI sequences (bracketed-paste markers included) and keep only A-Z and 0-9, upper-cased.

    The result is not cut to length: a caller that gets 7 characters should say so, not guess.
    """
    text = _ANSI.sub("", raw or "")
    return "".join(ch for ch in text.upper() if ch in CODE_ALPHABET)


def is_valid_code(code: str) -> bool:
    return bool(_VALID.fullmatch(code or ""))  # fullmatch: "$" alone lets a trailing "\n" through


def validate_code(raw: str) -> str:
    """Return the cleaned code or raise PayloadError naming what was wrong with it."""
    cleaned = clean_code(raw)
    if is_valid_code(cleaned):
        return cleaned
    raise PayloadError(
        f'invalid code format: need {CODE_LENGTH} characters of A-Z or 0-9, got "{raw}" '
        f"({len(cleaned)} valid characters)",
        hint="run `hermes-pair` on the relay host and copy the Code it prints",
    )


def generate_code() -> str:
    return "".join(secrets.choice(MINT_ALPHABET) for _ in range(CODE_LENGTH))


_TOKEN_PREFIX = re.compile(r"[A-Za-z0-9_-]{1,64}")


def validate_token_prefix(raw: str) -> str:
    """A session-token prefix as ``devices`` shows it (URL-safe base64 characters, at least
    MIN_PREFIX_LEN of them), or UsageError.

    Checked on both sides of the IPC socket: the prefix becomes part of an HTTP path on the relay.
    """
    from .errors import UsageError

    prefix = (raw or "").strip()
    if not _TOKEN_PREFIX.fullmatch(prefix):
        raise UsageError(
            f"invalid token prefix {raw!r}: copy it from the PREFIX column of `hermes-relay devices` "
            "(letters, digits, - and _)"
        )
    if len(prefix) < MIN_PREFIX_LEN:  # so short it could match someone else's device
        raise UsageError(f'token prefix "{prefix}" is too short: give at least {MIN_PREFIX_LEN} characters',
                         hint="copy the whole PREFIX column of `hermes-relay devices`")
    return prefix
