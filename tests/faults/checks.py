"""What each fault test asks of the outcome: the reference, nothing lost, nothing counted twice."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.themes.store import stored_review
from shared.mongo import make_client
from tests.support.pipeline import Pipeline
from tests.support.workload import Expected


@dataclass(frozen=True)
class Outcome:
    """How the served state compares with the reference."""

    differences: list[str]
    lost: int
    double_counted: int


def compare_themes(served: dict[tuple[str, str], dict[str, Any]], reference: Expected) -> Outcome:
    """Every (audit, theme) the reference has, served with the same figures, and no other.

    `lost` sums the cases a theme is short of the reference (all of them for a missing
    snapshot); `double_counted` the cases it has too many, and the extra cases in an audit's
    total: what a lost or a twice-applied review would show.
    """
    differences: list[str] = []
    lost = double = 0
    for key, want in sorted(reference.themes.items()):
        got = served.get(key)
        if got is None:
            differences.append(f"{key}: missing")
            lost += want["cases_with_theme"]
            continue
        seen = {name: got.get(name) for name in want}
        if seen != want:
            changed = sorted(n for n in want if seen[n] != want[n])
            differences.append(f"{key}: {changed} {[(seen[n], want[n]) for n in changed]}")
        lost += max(0, want["cases_with_theme"] - got["cases_with_theme"])
        double += max(0, got["cases_with_theme"] - want["cases_with_theme"])
        double += max(0, got["cases_total"] - want["cases_total"])
    differences.extend(
        f"{key}: not in the reference" for key in sorted(served.keys() - reference.themes.keys())
    )
    return Outcome(differences, lost, double)


def open_actions(actions: Sequence[dict[str, Any]]) -> dict[tuple[str, str], list[str]]:
    """The themes of every action not withdrawn, keyed (audit, sub-group)."""
    return {
        (a["audit_id"], a["sub_group"]): sorted(a["themes"])
        for a in actions
        if a["status"] != "withdrawn"
    }


async def stored_reviews(pipeline: Pipeline) -> dict[tuple[str, str, str], int]:
    """The revision of every current review themes holds, keyed (audit, agency, case token)."""
    client = make_client(pipeline.servers.mongo_url)
    try:
        docs = client[pipeline.database]["themes_reviews"].find({})
        # A revision superseded but not yet deleted is no longer the current one.
        held: dict[tuple[str, str, str], int] = {}
        async for doc in docs:
            review = stored_review(doc)
            key = (review.audit_id, review.agency_id, review.case_token)
            held[key] = max(held.get(key, 0), review.revision)
        return held
    finally:
        await client.close()


def reviews_lost(
    pipeline: Pipeline, events: Sequence[dict[str, Any]], stored: dict[tuple[str, str, str], int]
) -> list[str]:
    """The (audit, agency, case) reviews the store does not hold at their highest revision."""
    highest: dict[tuple[str, str, str], int] = {}
    for e in events:
        key = (
            e["audit_id"],
            e["agency"]["id"],
            pipeline.case_token(e["audit_id"], e["case"]["ref"]),
        )
        highest[key] = max(highest.get(key, 0), e["revision"])
    missing = [
        f"{k[:2]} r{v}: stored {stored.get(k)}" for k, v in highest.items() if stored.get(k) != v
    ]
    extra = [f"{k[:2]}: not submitted" for k in stored.keys() - highest.keys()]
    return sorted(missing + extra)


@dataclass(frozen=True)
class History:
    """What a versioned topic carried per key."""

    keys: int
    messages: int
    resent: int


def check_history(
    records: Sequence[tuple[bytes | None, bytes]], identity: str, served: dict[str, dict[str, Any]]
) -> History:
    """Per key (the message's `identity` field(s), joined by '/'), in topic order: versions
    rise; a version seen again is the same message sent again (a crash between the broker's
    acknowledgement and the store's record of it), never different content; and the last
    version is the one served, with the same content."""
    by_key: dict[str, list[dict[str, Any]]] = {}
    for _, value in records:
        message = json.loads(value)
        key = "/".join(str(message[f]) for f in identity.split("+"))
        by_key.setdefault(key, []).append(message)
    resent = 0
    for key, messages in by_key.items():
        seen: dict[int, dict[str, Any]] = {}
        last = 0
        for message in messages:
            version = message["version"]
            if version in seen:
                assert seen[version] == message, (
                    f"{key}: version {version} published twice, differently"
                )
                assert version == last, f"{key}: version {version} again after {last}"
                resent += 1
                continue
            assert version > last, f"{key}: version {version} after {last}"
            seen[version] = message
            last = version
        assert key in served, f"{key}: published but not served"
        final = messages[-1]
        current = served[key]
        assert final["version"] == current["version"], (
            f"{key}: served v{current['version']}, topic v{final['version']}"
        )
        shared = {k: v for k, v in final.items() if k in current}
        assert shared == {k: current[k] for k in shared}, f"{key}: topic and API differ"
    assert served.keys() <= by_key.keys(), (
        f"served, never published: {sorted(served.keys() - by_key.keys())[:5]}"
    )
    return History(keys=len(by_key), messages=len(records), resent=resent)
