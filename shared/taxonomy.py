"""The taxonomy of finding codes, kept as data and validated when a service starts."""

from __future__ import annotations

import difflib
import re
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.contracts import CODE_PATTERN, Category


class TaxonomyError(ValueError):
    """The taxonomy file is not usable; the message says where and why."""


class Code(BaseModel):
    """One finding code."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    category: Category = Field(description="What kind of learning the code is.")
    label: str = Field(min_length=1, description="A short label for people.")
    waits: bool = Field(default=False, description="Snapshots carry the median days waited.")


class Taxonomy(BaseModel):
    """Every known finding code by name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = Field(ge=1, description="Version of the taxonomy file's format.")
    codes: dict[str, Code] = Field(min_length=1, description="Codes by name.")

    def __contains__(self, code: object) -> bool:
        return code in self.codes

    def closest(self, code: str, n: int = 3) -> list[str]:
        """Known codes that read most like an unknown one."""
        return difflib.get_close_matches(code, self.codes, n=n, cutoff=0.5)

    def category(self, code: str) -> Category:
        """The category of a known code."""
        return self.codes[code].category


def _check_names(codes: dict[str, Any]) -> None:
    bad = [name for name in codes if not re.fullmatch(CODE_PATTERN, name)]
    if bad:
        raise TaxonomyError(f"codes not of the form {CODE_PATTERN}: {', '.join(sorted(bad))}")


def load_taxonomy(path: Path | None = None) -> Taxonomy:
    """Reads and validates a taxonomy file; the one shipped with the project by default."""
    text = (
        path.read_text(encoding="utf-8")
        if path is not None
        else resources.files("shared.data").joinpath("taxonomy.yaml").read_text(encoding="utf-8")
    )
    where = str(path) if path is not None else "shared/data/taxonomy.yaml"
    raw = yaml.safe_load(text)
    if not isinstance(raw, dict) or not isinstance(raw.get("codes"), dict):
        raise TaxonomyError(f"{where}: expected a mapping with a 'codes' mapping")
    _check_names(raw["codes"])
    try:
        return Taxonomy.model_validate(raw)
    except ValidationError as error:
        raise TaxonomyError(f"{where}: {error}") from error


@cache
def default_taxonomy() -> Taxonomy:
    """The taxonomy shipped with the project, read once."""
    return load_taxonomy()
