"""Validators for the public contracts: the reference schemas where they are beside the clone,
else the project's own published ones (kept equal to the models by a unit test)."""

from __future__ import annotations

import json

from jsonschema import Draft202012Validator

from tests.support.infra import REPO

REFERENCE = REPO.parent / "shared" / "contracts"
PUBLISHED = REPO / "docs" / "contracts"


def validator(name: str) -> Draft202012Validator:
    """A validator for `name` (e.g. "action"), format checks on."""
    path = REFERENCE / f"{name}.v1.schema.json"
    if not path.is_file():
        path = PUBLISHED / f"{name}.v1.schema.json"
    return Draft202012Validator(
        json.loads(path.read_text()), format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def errors(name: str, payload: bytes | str) -> list[str]:
    """Every way the payload breaks the contract; empty when it keeps it."""
    return [e.message for e in validator(name).iter_errors(json.loads(payload))]
