"""Holding the services' logs to docs/log-schema.json, and what must never be in them."""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from services.cli.dataset import by_agency, load_dataset
from tests.support.infra import REPO

SCHEMA_PATH = REPO / "docs" / "log-schema.json"


@cache
def validator() -> Draft202012Validator:
    """The documented log-line schema, checked itself first."""
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def problems(path: Path) -> list[str]:
    """Every way a log file departs from the schema: non-JSON lines and invalid fields."""
    found: list[str] = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            doc = json.loads(text)
        except ValueError:
            found.append(f"{path.name}:{number}: not JSON: {text[:200]}")
            continue
        found.extend(
            f"{path.name}:{number}: {'/'.join(map(str, e.absolute_path)) or '(line)'}: {e.message}"
            for e in validator().iter_errors(doc)
        )
    return found


def lines(path: Path) -> list[dict[str, Any]]:
    """A JSON log's lines, as written."""
    return [json.loads(t) for t in path.read_text(encoding="utf-8").splitlines() if t.strip()]


@cache
def personal_data() -> tuple[str, ...]:
    """What the reference audit sends that no log may repeat: each case reference as a JSON
    string (a bare "C01" would also match inside ids), and every note."""
    refs: set[str] = set()
    notes: set[str] = set()
    for submissions in by_agency(load_dataset()).values():
        for submission in submissions:
            refs.add(submission.event.case.ref)
            notes.update(f.note for f in submission.event.findings if f.note)
    return (*sorted(json.dumps(ref) for ref in refs), *sorted(notes))


def leaks(paths: Iterable[Path]) -> list[str]:
    """Every place a log repeats personal data from the reference audit."""
    found: list[str] = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        found.extend(f"{path.name}: {needle!r}" for needle in personal_data() if needle in text)
    return found
