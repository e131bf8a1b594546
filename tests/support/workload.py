"""Large realistic workloads, and what a careful person would compute from them.

The reference here is written from the contract's words alone, apart from the services' code:
the latest revision of every (audit, agency, case) wins; a theme's figures count the cases and
agencies whose latest reviews carry it; routing follows the shipped rules file.
"""

from __future__ import annotations

import random
import statistics
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shared.routing import load_routing
from shared.taxonomy import default_taxonomy

AGENCIES = [
    ("county-csc", "childrens_social_care"),
    ("county-camhs", "camhs"),
    ("thames-police", "police"),
    ("county-education", "education"),
    ("county-health", "community_health"),
]
LEGAL = ["child_in_need", "child_protection_plan", "child_in_care"]


def findings_of(rng: random.Random, codes: Sequence[str]) -> list[dict[str, Any]]:
    """A review's findings for these codes, with a wait in days where the code records one."""
    findings: list[dict[str, Any]] = []
    for code in codes:
        item: dict[str, Any] = {"code": code}
        if default_taxonomy().codes[code].waits:
            item["waited_days"] = rng.randint(0, 120)
        findings.append(item)
    return findings


def generate(
    *,
    audits: int,
    cases_per_audit: int,
    seed: int = 7,
    max_revision: int = 3,
    findings_per_review: int = 5,
    min_findings: int = 0,
    favoured: int = 6,
    favoured_only: bool = False,
) -> list[dict[str, Any]]:
    """Agency-finding events: every agency reviews every case, with later revisions that add
    and withdraw findings; each review carries `min_findings` to `findings_per_review` codes
    (fewer when the audit's favoured codes run out). Each audit favours `favoured` codes, and
    with `favoured_only` draws from nothing else (fewer themes, so a slow store keeps up).
    Event ids are fixed by the seed."""
    rng = random.Random(seed)
    codes = sorted(default_taxonomy().codes)
    events: list[dict[str, Any]] = []
    for a in range(audits):
        audit_id = f"audit-{seed}-{a:03d}"
        # Each audit leans on a few themes, so that some become patterns and some do not.
        leaning = rng.sample(codes, favoured)
        for c in range(cases_per_audit):
            ref = f"C{c:03d}"
            legal = rng.choice(LEGAL)
            for agency_id, agency_type in AGENCIES:
                for revision in range(1, rng.randint(1, max_revision) + 1):
                    pool = leaning if favoured_only or rng.random() < 0.7 else codes
                    chosen = sorted(set(rng.sample(pool, min(len(pool), findings_per_review))))
                    findings = findings_of(
                        rng, chosen[: rng.randint(min_findings, findings_per_review)]
                    )
                    events.append(
                        {
                            "schema_version": 1,
                            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                            "submitted_at": "2026-01-05T09:00:00Z",
                            "audit_id": audit_id,
                            "audit_title": f"Audit {a}",
                            "agency": {"id": agency_id, "type": agency_type},
                            "case": {"ref": ref, "age_band": "10-15", "legal_status": legal},
                            "revision": revision,
                            "findings": findings,
                        }
                    )
    return events


@dataclass(frozen=True)
class Expected:
    """What every theme and action must come to."""

    themes: dict[tuple[str, str], dict[str, Any]]
    actions: dict[tuple[str, str], list[str]]


def _descriptor(share: float) -> str:
    if share >= 1:
        return "all"
    if share >= 0.8:
        return "almost_all"
    if share >= 0.5:
        return "most"
    if share >= 0.25:
        return "some"
    return "few" if share > 0 else "none"


def expected(
    events: list[dict[str, Any]], *, min_cases: int = 2, min_agencies: int = 2
) -> Expected:
    """The reference result for a set of events (order and repeats do not matter)."""
    taxonomy = default_taxonomy()
    routing = load_routing()
    latest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for event in events:
        key = (event["audit_id"], event["agency"]["id"], event["case"]["ref"])
        if key not in latest or latest[key]["revision"] < event["revision"]:
            latest[key] = event
    seen_codes: dict[str, set[str]] = defaultdict(set)
    for event in events:
        seen_codes[event["audit_id"]].update(f["code"] for f in event["findings"])

    themes: dict[tuple[str, str], dict[str, Any]] = {}
    for audit_id, codes in seen_codes.items():
        reviews = [e for (a, _, _), e in latest.items() if a == audit_id]
        total = len({e["case"]["ref"] for e in reviews})
        for code in codes:
            carrying = [e for e in reviews if any(f["code"] == code for f in e["findings"])]
            cases = len({e["case"]["ref"] for e in carrying})
            agencies = sorted({e["agency"]["id"] for e in carrying})
            waits = [
                f["waited_days"]
                for e in carrying
                for f in e["findings"]
                if f["code"] == code and f.get("waited_days") is not None
            ]
            share = cases / total if total else 0.0
            themes[(audit_id, code)] = {
                "cases_total": total,
                "cases_with_theme": cases,
                "agencies": agencies,
                "agency_types": sorted({e["agency"]["type"] for e in carrying}),
                "prevalence": round(share, 4),
                "descriptor": _descriptor(share),
                "is_pattern": cases >= min_cases and len(agencies) >= min_agencies,
                "small_sample": total < 10,
                "median_waited_days": (
                    float(statistics.median(waits))
                    if waits and taxonomy.codes[code].waits
                    else None
                ),
            }
    for (audit_id, code), theme in themes.items():
        theme["recurring_in"] = sorted(
            other
            for (other, other_code), t in themes.items()
            if other_code == code and other != audit_id and t["is_pattern"]
        )
    actions: dict[tuple[str, str], list[str]] = defaultdict(list)
    for (audit_id, code), theme in themes.items():
        if theme["is_pattern"]:
            group = routing.sub_group_for(code, taxonomy.category(code))
            if group is not None:
                actions[(audit_id, group)].append(code)
    return Expected(themes=themes, actions={k: sorted(v) for k, v in actions.items()})
