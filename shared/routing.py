"""Routing rules from patterns to partnership sub-groups, kept as data and validated at start."""

from __future__ import annotations

import re
import string
from functools import cache
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from shared.contracts import CODE_PATTERN, Category
from shared.taxonomy import Taxonomy, default_taxonomy

PLACEHOLDERS = frozenset({"evidence", "sample_note", "name", "audit_id"})
"""What a recommendation template may refer to."""

_TOP_KEYS = frozenset({"version", "due_days", "catch_all", "escalate_to", "sub_groups", "routes"})
_SUB_GROUP_KEYS = frozenset({"name", "recommendation", "due_days"})
_INT_TAG = "tag:yaml.org,2002:int"
_STR_TAG = "tag:yaml.org,2002:str"


class RoutingError(ValueError):
    """The routing file is not usable; the message names the file, the line and why."""


class SubGroup(BaseModel):
    """A partnership sub-group that receives actions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=CODE_PATTERN, description="The sub-group's id, as actions carry it.")
    name: str = Field(min_length=1, description="Its name, for people.")
    recommendation: str = Field(min_length=1, description="The recommendation template.")
    due_days: int = Field(ge=1, description="Days from routing to the action's due date.")


class Routing(BaseModel):
    """Which sub-group each pattern theme goes to, and what each sub-group is asked to do."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sub_groups: dict[str, SubGroup] = Field(description="Sub-groups by id.")
    routes: dict[str, str] = Field(description="Theme to sub-group id, in evidence order.")
    catch_all: str = Field(description="Receives any pattern no rule routes.")
    escalate_to: str = Field(description="Receives overdue actions; reads every action.")

    def sub_group_for(self, theme: str, category: Category) -> str | None:
        """Where a pattern of this theme goes; None for good practice, which is never routed."""
        if category == Category.GOOD_PRACTICE:
            return None
        return self.routes.get(theme, self.catch_all)

    def rank(self, theme: str) -> tuple[int, str]:
        """Sort key putting a sub-group's evidence in the order of the rules."""
        order = list(self.routes)
        return (order.index(theme), "") if theme in self.routes else (len(order), theme)


class _Reader:
    """Turns composed YAML nodes into values, naming the line of anything wrong."""

    def __init__(self, where: str) -> None:
        self.where = where

    def error(self, node: yaml.Node, message: str) -> RoutingError:
        return RoutingError(f"{self.where}, line {node.start_mark.line + 1}: {message}")

    def mapping(self, node: yaml.Node, what: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, f"{what} must be a mapping")
        seen: set[str] = set()
        items: list[tuple[str, yaml.Node, yaml.Node]] = []
        for key, value in node.value:
            name = self.text(key, f"a key of {what}")
            if name in seen:
                raise self.error(key, f"'{name}' appears twice in {what}")
            seen.add(name)
            items.append((name, key, value))
        return items

    def text(self, node: yaml.Node, what: str) -> str:
        if not isinstance(node, yaml.ScalarNode) or node.tag != _STR_TAG or not node.value:
            raise self.error(node, f"{what} must be non-empty text")
        return str(node.value)

    def positive(self, node: yaml.Node, what: str) -> int:
        if (
            not isinstance(node, yaml.ScalarNode)
            or node.tag != _INT_TAG
            or not re.fullmatch(r"[0-9]+", node.value)
            or int(node.value) < 1
        ):
            raise self.error(node, f"{what} must be a whole number of at least 1")
        return int(node.value)

    def unknown_keys(
        self, items: list[tuple[str, yaml.Node, yaml.Node]], known: frozenset[str], what: str
    ) -> None:
        for name, key, _ in items:
            if name not in known:
                raise self.error(
                    key,
                    f"unknown key '{name}' in {what}; expected one of {', '.join(sorted(known))}",
                )

    def template(self, node: yaml.Node, what: str) -> str:
        text = self.text(node, what)
        try:
            fields = [
                field for _, field, _, _ in string.Formatter().parse(text) if field is not None
            ]
        except ValueError as error:
            raise self.error(node, f"{what} is not a valid template: {error}") from error
        unknown = sorted({f for f in fields if f not in PLACEHOLDERS})
        if unknown:
            raise self.error(
                node,
                f"{what} refers to unknown placeholder(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(PLACEHOLDERS))}",
            )
        return text


def _sub_groups(reader: _Reader, node: yaml.Node, due_days: int) -> dict[str, SubGroup]:
    groups: dict[str, SubGroup] = {}
    for name, key, value in reader.mapping(node, "sub_groups"):
        if not re.fullmatch(CODE_PATTERN, name):
            raise reader.error(key, f"sub-group id '{name}' is not of the form {CODE_PATTERN}")
        fields = reader.mapping(value, f"sub-group '{name}'")
        reader.unknown_keys(fields, _SUB_GROUP_KEYS, f"sub-group '{name}'")
        by_name = {field: v for field, _, v in fields}
        for required in ("name", "recommendation"):
            if required not in by_name:
                raise reader.error(value, f"sub-group '{name}' has no '{required}'")
        groups[name] = SubGroup(
            id=name,
            name=reader.text(by_name["name"], f"the name of '{name}'"),
            recommendation=reader.template(
                by_name["recommendation"], f"the recommendation of '{name}'"
            ),
            due_days=(
                reader.positive(by_name["due_days"], f"due_days of '{name}'")
                if "due_days" in by_name
                else due_days
            ),
        )
    if not groups:
        raise reader.error(node, "sub_groups must name at least one sub-group")
    return groups


def _routes(
    reader: _Reader, node: yaml.Node, groups: dict[str, SubGroup], taxonomy: Taxonomy
) -> dict[str, str]:
    routes: dict[str, str] = {}
    for theme, key, value in reader.mapping(node, "routes"):
        if theme not in taxonomy:
            closest = taxonomy.closest(theme)
            hint = f"; closest known: {', '.join(closest)}" if closest else ""
            raise reader.error(key, f"unknown theme '{theme}' (not in the taxonomy){hint}")
        if taxonomy.category(theme) == Category.GOOD_PRACTICE:
            raise reader.error(
                key, f"theme '{theme}' is good practice, which is never routed as an action"
            )
        routes[theme] = _known_group(reader, value, groups, f"the route of '{theme}'")
    return routes


def _known_group(reader: _Reader, node: yaml.Node, groups: dict[str, SubGroup], what: str) -> str:
    name = reader.text(node, what)
    if name not in groups:
        raise reader.error(
            node, f"unknown sub-group '{name}' in {what}; known: {', '.join(sorted(groups))}"
        )
    return name


def load_routing(path: Path | None = None, taxonomy: Taxonomy | None = None) -> Routing:
    """Reads and validates a routing file against a taxonomy; the shipped ones by default."""
    taxonomy = taxonomy or default_taxonomy()
    text = (
        path.read_text(encoding="utf-8")
        if path is not None
        else resources.files("shared.data").joinpath("routing.yaml").read_text(encoding="utf-8")
    )
    reader = _Reader(str(path) if path is not None else "shared/data/routing.yaml")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = f", line {mark.line + 1}" if mark is not None else ""
        raise RoutingError(f"{reader.where}{line}: not valid YAML: {error.problem}") from error
    if root is None:
        raise RoutingError(f"{reader.where}: the file is empty")
    top = reader.mapping(root, "the routing file")
    reader.unknown_keys(top, _TOP_KEYS, "the routing file")
    nodes = {name: value for name, _, value in top}
    for required in sorted(_TOP_KEYS):
        if required not in nodes:
            raise reader.error(root, f"the routing file has no '{required}'")
    if reader.positive(nodes["version"], "version") != 1:
        raise reader.error(nodes["version"], "only version 1 of the routing format is known")
    groups = _sub_groups(
        reader, nodes["sub_groups"], reader.positive(nodes["due_days"], "due_days")
    )
    return Routing(
        sub_groups=groups,
        routes=_routes(reader, nodes["routes"], groups, taxonomy),
        catch_all=_known_group(reader, nodes["catch_all"], groups, "catch_all"),
        escalate_to=_known_group(reader, nodes["escalate_to"], groups, "escalate_to"),
    )


@cache
def default_routing() -> Routing:
    """The routing shipped with the project, checked against the shipped taxonomy, read once."""
    return load_routing()
