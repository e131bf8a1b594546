"""Secrets from settings, or generated under the local folder in demo and test modes."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import yaml
from pydantic import SecretStr

from shared.log import get_logger
from shared.settings import CommonSettings


class SecretMissingError(RuntimeError):
    """A secret production must be given was not."""


def secret_key(value: SecretStr | None, settings: CommonSettings, name: str) -> bytes:
    """The configured secret; in demo and test modes one generated once under `local_dir`."""
    if value is not None and value.get_secret_value():
        return value.get_secret_value().encode()
    if settings.mode == "production":
        raise SecretMissingError(
            f"CASEREVIEW_{name.upper()} is not set; production refuses to start without it"
        )
    path = Path(settings.local_dir) / "secrets" / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    get_logger().warning(
        "using a generated secret; set it in production",
        secret=name,
        mode=settings.mode,
        path=str(path),
    )
    return path.read_text().strip().encode()


def load_token_hashes(path: Path | None) -> dict[str, str]:
    """A YAML mapping of principal (agency or sub-group) to the SHA-256 of its bearer token."""
    if path is None:
        return {}
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of name to token SHA-256")
    hashes = {str(k): str(v).lower() for k, v in raw.items()}
    bad = [k for k, v in hashes.items() if not re.fullmatch(r"[0-9a-f]{64}", v)]
    if bad:
        raise ValueError(f"{path}: not a SHA-256 hex digest for {', '.join(sorted(bad))}")
    return hashes
