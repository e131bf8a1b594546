"""The routing rules file: the shipped defaults, and start-up errors that name the line."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from shared.contracts import Category
from shared.routing import RoutingError, default_routing, load_routing
from shared.taxonomy import default_taxonomy

pytestmark = pytest.mark.unit

SHIPPED = resources.files("shared.data").joinpath("routing.yaml").read_text(encoding="utf-8")

# The contracts README's "Sub-groups and default routing" table.
README_TABLE = {
    "safeguarding_in_education": {"poor_school_attendance", "no_school_engagement_plan"},
    "domestic_abuse_operational_group": {"domestic_abuse"},
    "business_group": {
        "parental_mental_health",
        "parental_mh_management_unclear",
        "health_absent_from_strategy_discussion",
    },
    "neglect_strategy_group": {
        "neglect",
        "child_needs_overshadowed",
        "large_sibling_group",
        "not_signposted_to_support",
        "young_carer",
        "child_of_offender",
    },
}
NAMES = {
    "safeguarding_in_education": "Safeguarding in Education",
    "domestic_abuse_operational_group": "Domestic Abuse Operational Group",
    "business_group": "OSCB Business Group",
    "neglect_strategy_group": "OSCB Neglect Strategy Group",
}


def test_shipped_routing_is_the_contract_default() -> None:
    routing = default_routing()
    by_group: dict[str, set[str]] = {}
    for theme, group in routing.routes.items():
        by_group.setdefault(group, set()).add(theme)
    assert by_group == README_TABLE
    assert {g: s.name for g, s in routing.sub_groups.items()} == NAMES
    assert routing.catch_all == "business_group"
    assert routing.escalate_to == "business_group"
    assert {s.due_days for s in routing.sub_groups.values()} == {56}


def test_catch_all_takes_every_unrouted_pattern_but_never_good_practice() -> None:
    routing = default_routing()
    taxonomy = default_taxonomy()
    for code, entry in taxonomy.codes.items():
        group = routing.sub_group_for(code, entry.category)
        if entry.category == Category.GOOD_PRACTICE:
            assert group is None, code
        elif code in routing.routes:
            assert group == routing.routes[code]
        else:
            assert group == "business_group", code
    assert routing.sub_group_for("mh_intervention_delayed", Category.PRACTICE_CONCERN) == (
        "business_group"
    )
    assert routing.sub_group_for("parental_substance_misuse", Category.RISK_FACTOR) == (
        "business_group"
    )
    # A code newer than this taxonomy still routes by the category its snapshot carries.
    assert routing.sub_group_for("new_code", Category.RISK_FACTOR) == "business_group"
    assert routing.sub_group_for("new_code", Category.GOOD_PRACTICE) is None


def _edited(tmp_path: Path, old: str, new: str) -> tuple[Path, int]:
    """The shipped file with one line replaced, and that line's number."""
    lines = SHIPPED.splitlines()
    index = next(i for i, line in enumerate(lines) if line == old)
    lines[index] = new
    path = tmp_path / "routing.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, index + 1


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "  domestic_abuse: domestic_abuse_operational_group",
            "  domestic_abus: domestic_abuse_operational_group",
            "unknown theme 'domestic_abus' (not in the taxonomy); closest known: domestic_abuse",
        ),
        (
            "  neglect: neglect_strategy_group",
            "  neglect: neglect_group",
            "unknown sub-group 'neglect_group' in the route of 'neglect'",
        ),
        (
            "  young_carer: neglect_strategy_group",
            "  think_family_approach: neglect_strategy_group",
            "theme 'think_family_approach' is good practice, which is never routed",
        ),
        (
            "catch_all: business_group",
            "catch_all: partnership_board",
            "unknown sub-group 'partnership_board' in catch_all",
        ),
        (
            "escalate_to: business_group",
            "escalate_to: board",
            "unknown sub-group 'board' in escalate_to",
        ),
        (
            "  neglect: neglect_strategy_group",
            "  domestic_abuse: neglect_strategy_group",
            "'domestic_abuse' appears twice in routes",
        ),
        ("due_days: 56", "due_days: 0", "due_days must be a whole number of at least 1"),
        ("due_days: 56", "due_days: soon", "due_days must be a whole number of at least 1"),
        ("due_days: 56", "due_date: 56", "unknown key 'due_date' in the routing file"),
        ("    name: Safeguarding in Education", "    title: x", "unknown key 'title'"),
        (
            "  business_group:",
            "  Business-Group:",
            "sub-group id 'Business-Group' is not of the form",
        ),
    ],
)
def test_a_bad_rule_is_a_start_up_error_naming_its_line(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    path, line = _edited(tmp_path, old, new)
    with pytest.raises(RoutingError) as raised:
        load_routing(path)
    assert str(raised.value).startswith(f"{path}, line {line}: ")
    assert expected in str(raised.value)


def test_unknown_template_placeholder_names_the_line(tmp_path: Path) -> None:
    text = SHIPPED.replace(
        "living in a home where domestic abuse is a feature.",
        "living in a home where domestic abuse is a feature in {cases}.",
    )
    path = tmp_path / "routing.yaml"
    path.write_text(text, encoding="utf-8")
    template_line = SHIPPED.splitlines().index("  domestic_abuse_operational_group:") + 3
    with pytest.raises(RoutingError, match=rf", line {template_line}: .*unknown placeholder"):
        load_routing(path)


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text("version: 1\nroutes:\n  neglect: [unclosed\n", encoding="utf-8")
    with pytest.raises(RoutingError, match=r"line \d+: not valid YAML"):
        load_routing(path)


def test_a_missing_section_is_named(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(SHIPPED.replace("catch_all: business_group\n", ""), encoding="utf-8")
    # The file's mapping starts at its first key.
    first_key = SHIPPED.splitlines().index("version: 1") + 1
    with pytest.raises(
        RoutingError, match=rf"line {first_key}: the routing file has no 'catch_all'"
    ):
        load_routing(path)


def test_a_sub_group_may_set_its_own_due_period(tmp_path: Path) -> None:
    path, _ = _edited(
        tmp_path, "    name: Safeguarding in Education", "    name: SiE\n    due_days: 28"
    )
    routing = load_routing(path)
    assert routing.sub_groups["safeguarding_in_education"].due_days == 28
    assert routing.sub_groups["business_group"].due_days == 56
