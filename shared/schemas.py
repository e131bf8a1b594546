"""JSON Schemas generated from the contract models, published under docs/contracts/.

`python -m shared.schemas` rewrites them; a test keeps them current.
"""

from __future__ import annotations

import json
from pathlib import Path

from shared.contracts import (
    ActionV1,
    AgencyFindingV1,
    Contract,
    FindingRejectedV1,
    ReviewAcceptedV1,
    ThemeSnapshotV1,
)

PUBLISHED: dict[str, type[Contract]] = {
    "agency-finding.v1": AgencyFindingV1,
    "finding-rejected.v1": FindingRejectedV1,
    "theme-snapshot.v1": ThemeSnapshotV1,
    "action.v1": ActionV1,
    "review-accepted.v1": ReviewAcceptedV1,
}


def render(model: type[Contract]) -> str:
    """One model's schema as the file holds it."""
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **model.model_json_schema(mode="validation"),
    }
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write(folder: Path) -> list[Path]:
    """Writes every schema into the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in PUBLISHED.items():
        path = folder / f"{name}.schema.json"
        path.write_text(render(model), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write(Path(__file__).resolve().parents[1] / "docs" / "contracts"):
        print(path)
