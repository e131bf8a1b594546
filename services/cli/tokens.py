"""Demo bearer tokens: plain for the CLI's own calls (local only), hashed for the services."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import yaml

from shared.secrets import load_token_hashes


class TokenError(ValueError):
    """A token file cannot be read; the message names the file and line."""


class Kind(StrEnum):
    """Whose tokens a pair of files holds."""

    AGENCY = "agency-tokens"
    LEAD = "lead-tokens"


@dataclass(frozen=True)
class TokenFiles:
    """The plain file the CLI reads and the hashed file a service reads, side by side."""

    plain: Path
    hashed: Path

    @classmethod
    def of(cls, secrets_dir: Path, kind: Kind) -> TokenFiles:
        """The pair of one kind under the secrets folder."""
        return cls(secrets_dir / f"{kind.value}.txt", secrets_dir / f"{kind.value}.yaml")


def digest(token: str) -> str:
    """What a service keeps of a token: its SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def read_plain(path: Path) -> dict[str, str]:
    """`name: token` lines; blank lines and `#` comments are skipped."""
    tokens: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        name, sep, token = text.partition(":")
        if not sep or not name.strip() or not token.strip():
            raise TokenError(f"{path}, line {number}: expected 'name: token'")
        tokens[name.strip()] = token.strip()
    return tokens


def _write_private(path: Path, text: str) -> None:
    # Created owner-only from the start, so the plain tokens are never readable by others.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    path.chmod(0o600)


def _held(path: Path) -> dict[str, str] | None:
    # A missing or unreadable hash file is rewritten, like a stale one.
    try:
        return load_token_hashes(path)
    except (OSError, ValueError, yaml.YAMLError):
        return None


def ensure_tokens(
    files: TokenFiles,
    principals: Iterable[str],
    generate: Callable[[], str] = lambda: secrets.token_urlsafe(32),
) -> bool:
    """Gives every principal a token, keeping existing ones; True when a file was written.

    The hashed file is rewritten from the plain one whenever they disagree, so a service always
    accepts exactly the tokens the CLI holds.
    """
    files.plain.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tokens = read_plain(files.plain) if files.plain.exists() else {}
    missing = [p for p in principals if p not in tokens]
    written = False
    if missing or not files.plain.exists():
        tokens.update({p: generate() for p in missing})
        body = "".join(f"{name}: {token}\n" for name, token in tokens.items())
        _write_private(files.plain, "# Local demo tokens; never commit this file.\n" + body)
        written = True
    hashes = {name: digest(token) for name, token in tokens.items()}
    if _held(files.hashed) != hashes:
        _write_private(
            files.hashed,
            "# name: SHA-256 of its bearer token (written by `casereview init-secrets`).\n"
            + yaml.safe_dump(hashes, sort_keys=True),
        )
        written = True
    return written


def token_for(secrets_dir: Path, kind: Kind, principal: str) -> str | None:
    """The principal's plain token from the local file, if there is one."""
    path = TokenFiles.of(secrets_dir, kind).plain
    if not path.exists():
        return None
    return read_plain(path).get(principal)


def required_token(secrets_dir: Path, kind: Kind, principal: str) -> str:
    """The principal's plain token; a `TokenError` saying how to get one when there is none."""
    token = token_for(secrets_dir, kind, principal)
    if token is None:
        raise TokenError(
            f"no token for {principal} in {TokenFiles.of(secrets_dir, kind).plain}: pass "
            "--token, or run `casereview init-secrets` and start the services with its files"
        )
    return token
