"""Demo tokens: plain for the CLI, hashed for the services, created once, never overwritten."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli.app import app
from services.cli.tokens import Kind, TokenError, TokenFiles, ensure_tokens, read_plain, token_for
from shared.secrets import load_token_hashes

pytestmark = pytest.mark.unit


def test_tokens_are_created_with_their_hashes_owner_only(tmp_path: Path) -> None:
    files = TokenFiles.of(tmp_path / "secrets", Kind.AGENCY)
    assert ensure_tokens(files, ["county-csc", "county-camhs"])
    plain = read_plain(files.plain)
    assert set(plain) == {"county-csc", "county-camhs"}
    assert plain["county-csc"] != plain["county-camhs"]
    assert load_token_hashes(files.hashed) == {
        name: hashlib.sha256(token.encode()).hexdigest() for name, token in plain.items()
    }
    for path in (files.plain, files.hashed):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # The service's file holds no token, only digests.
    hashed = files.hashed.read_text()
    assert all(token not in hashed for token in plain.values())


def test_existing_tokens_are_kept_and_new_principals_added(tmp_path: Path) -> None:
    files = TokenFiles.of(tmp_path, Kind.LEAD)
    ensure_tokens(files, ["business_group"])
    before = read_plain(files.plain)
    assert not ensure_tokens(files, ["business_group"])
    assert ensure_tokens(files, ["business_group", "neglect_strategy_group"])
    after = read_plain(files.plain)
    assert after["business_group"] == before["business_group"]
    assert set(load_token_hashes(files.hashed)) == {"business_group", "neglect_strategy_group"}


def test_a_stale_hash_file_is_rewritten_from_the_plain_one(tmp_path: Path) -> None:
    files = TokenFiles.of(tmp_path, Kind.LEAD)
    ensure_tokens(files, ["business_group"])
    for stale in ("business_group: " + "f" * 64 + "\n", "business_group: [not a digest\n"):
        files.hashed.write_text(stale)
        assert ensure_tokens(files, ["business_group"])
    token = read_plain(files.plain)["business_group"]
    assert (
        load_token_hashes(files.hashed)["business_group"]
        == hashlib.sha256(token.encode()).hexdigest()
    )


def test_a_bad_plain_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "lead-tokens.txt"
    path.write_text("# comment\n\nbusiness_group: abc\nno separator here\n")
    with pytest.raises(TokenError, match=r"lead-tokens.txt, line 4: expected 'name: token'"):
        read_plain(path)


def test_init_secrets_creates_all_four_files_for_the_demo(tmp_path: Path) -> None:
    env = {"CASEREVIEW_LOCAL_DIR": str(tmp_path)}
    first = CliRunner().invoke(app, ["init-secrets", "--agency", "county-health"], env=env)
    assert first.exit_code == 0, first.output
    secrets = tmp_path / "secrets"
    assert sorted(p.name for p in secrets.iterdir()) == [
        "agency-tokens.txt",
        "agency-tokens.yaml",
        "lead-tokens.txt",
        "lead-tokens.yaml",
    ]
    assert set(load_token_hashes(secrets / "agency-tokens.yaml")) == {
        "county-csc",
        "county-camhs",
        "thames-police",
        "county-education",
        "county-health",
    }
    assert set(load_token_hashes(secrets / "lead-tokens.yaml")) == {
        "safeguarding_in_education",
        "domestic_abuse_operational_group",
        "business_group",
        "neglect_strategy_group",
    }
    token = token_for(secrets, Kind.LEAD, "business_group")
    assert token is not None
    # Paths are printed; tokens never are.
    assert token not in first.output and "written" in first.stderr
    again = CliRunner().invoke(app, ["init-secrets"], env=env)
    assert again.exit_code == 0 and "kept" in again.stderr
    assert token_for(secrets, Kind.LEAD, "business_group") == token
