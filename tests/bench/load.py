"""The benchmark's offered load: realistic submissions, a little poison, and latency markers."""

from __future__ import annotations

import json
import random
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from shared.taxonomy import default_taxonomy
from tests.support.workload import AGENCIES, LEGAL, findings_of, generate

# A valid NHS number (modulus-11 check digit holds): intake must refuse it as a case reference.
NHS_NUMBER = "9434765919"
POISON_KINDS = ("invalid_json", "schema_version", "unknown_code", "nhs_number", "resend")


@dataclass(frozen=True)
class Load:
    """Records to put on the submitted topic, in order, and the valid events behind them."""

    records: list[tuple[bytes, bytes]]
    valid: list[dict[str, Any]]
    poison: dict[str, int]

    @property
    def events(self) -> int:
        """Records submitted, poison and re-sends included."""
        return len(self.records)


def key_of(event: dict[str, Any]) -> bytes:
    """The partition key agency systems use: audit and case, as intake's HTTP endpoint does."""
    return f"{event['audit_id']}/{event['case']['ref']}".encode()


def encode(event: dict[str, Any]) -> bytes:
    """An event as an agency system sends it."""
    return json.dumps(event, separators=(",", ":")).encode()


def arrival_order(
    events: list[dict[str, Any]], active_audits: int, rng: random.Random
) -> list[dict[str, Any]]:
    """The events as they would arrive when about `active_audits` audits run at once.

    Audits start one after another and each lasts as long as `active_audits` starts take,
    so that many overlap at any time; within an audit, reviews come in at random moments,
    but an agency's revisions of a case keep their order.
    """
    streams: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    audits: list[str] = []
    for event in events:
        if event["audit_id"] not in audits:
            audits.append(event["audit_id"])
        streams[(event["audit_id"], event["agency"]["id"], event["case"]["ref"])].append(event)
    start = {audit: index / max(1, active_audits) for index, audit in enumerate(audits)}
    timed: list[tuple[float, int, dict[str, Any]]] = []
    for (audit, _, _), revisions in streams.items():
        moments = sorted(rng.random() for _ in revisions)
        for moment, event in zip(
            moments, sorted(revisions, key=lambda e: e["revision"]), strict=True
        ):
            timed.append((start[audit] + moment, len(timed), event))
    timed.sort(key=lambda item: (item[0], item[1]))
    return [event for _, _, event in timed]


def _poisoned(kind: str, event: dict[str, Any], rng: random.Random) -> bytes:
    bad = json.loads(json.dumps(event))
    bad["event_id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    if kind == "invalid_json":
        return encode(bad)[:-7]
    if kind == "schema_version":
        bad["schema_version"] = 2
    elif kind == "unknown_code":
        bad["findings"] = [*bad["findings"], {"code": "not_a_known_code"}]
    elif kind == "nhs_number":
        bad["case"]["ref"] = NHS_NUMBER
    return encode(bad)


def with_poison(events: list[dict[str, Any]], share: float, rng: random.Random) -> Load:
    """The events with about `share` of extra records that intake must refuse or ignore:
    broken JSON, an unsupported version, an unknown code, an NHS number as the case
    reference, and exact re-sends of earlier events."""
    records: list[tuple[bytes, bytes]] = []
    poison: dict[str, int] = dict.fromkeys(POISON_KINDS, 0)
    for index, event in enumerate(events):
        records.append((key_of(event), encode(event)))
        if rng.random() < share:
            kind = rng.choice(POISON_KINDS)
            poison[kind] += 1
            if kind == "resend":
                earlier = events[rng.randrange(index + 1)]
                records.append((key_of(earlier), encode(earlier)))
            else:
                records.append((key_of(event), _poisoned(kind, event, rng)))
    return Load(records=records, valid=events, poison=poison)


def throughput_load(
    *,
    audits: int,
    cases_per_audit: int,
    active_audits: int,
    poison_share: float,
    seed: int,
) -> Load:
    """Every agency reviews every case of every audit, revisions 1-3, three to eight findings
    a review (about five), arriving with `active_audits` audits under way at once."""
    rng = random.Random(seed)
    events = generate(
        audits=audits,
        cases_per_audit=cases_per_audit,
        seed=seed,
        max_revision=3,
        findings_per_review=8,
        min_findings=3,
    )
    return with_poison(arrival_order(events, active_audits, rng), poison_share, rng)


def latency_load(*, events: int, audits: int, seed: int) -> Load:
    """Markers: each event is the first review of a new case, round robin over fresh audits,
    so each one raises its audit's `cases_total` by one and every snapshot says how many of
    the audit's markers it reflects."""
    rng = random.Random(seed)
    codes = sorted(default_taxonomy().codes)
    favoured = {f"latency-{seed}-{a:03d}": rng.sample(codes, 6) for a in range(audits)}
    names = sorted(favoured)
    out: list[dict[str, Any]] = []
    for n in range(events):
        audit_id = names[n % audits]
        agency_id, agency_type = rng.choice(AGENCIES)
        pool = favoured[audit_id] if rng.random() < 0.7 else codes
        findings = findings_of(rng, sorted(rng.sample(pool, rng.randint(3, 6))))
        out.append(
            {
                "schema_version": 1,
                "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "submitted_at": "2026-01-05T09:00:00Z",
                "audit_id": audit_id,
                "audit_title": f"Latency audit {audit_id}",
                "agency": {"id": agency_id, "type": agency_type},
                "case": {
                    "ref": f"L{n:06d}",
                    "age_band": "10-15",
                    "legal_status": rng.choice(LEGAL),
                },
                "revision": 1,
                "findings": findings,
            }
        )
    return Load(
        records=[(key_of(e), encode(e)) for e in out],
        valid=out,
        poison=dict.fromkeys(POISON_KINDS, 0),
    )
