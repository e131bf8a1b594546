"""Poison of every rejection reason: answered exactly once, consumption never stops."""

from __future__ import annotations

import copy
import hashlib
import json
import random
import time
import uuid
from collections import Counter
from typing import Any

import pytest

from shared.contracts import RejectionReason
from tests.faults.checks import compare_themes, open_actions
from tests.faults.conftest import Figures
from tests.support.pipeline import Pipeline, Record, record
from tests.support.workload import expected, generate

pytestmark = pytest.mark.faults

SHARE = 0.01


def poison(reason: RejectionReason, victim: dict[str, Any], rng: random.Random) -> Record:
    """A message intake must refuse for `reason`; `victim` is a good event it is based on
    (for a revision conflict: the one it conflicts with, already sent)."""
    nonce = uuid.UUID(int=rng.getrandbits(128), version=4)
    doc = copy.deepcopy(victim)
    doc["event_id"] = str(nonce)
    key = f"{doc['audit_id']}/{doc['case']['ref']}".encode()
    if reason == RejectionReason.UNDECODABLE:
        return key, b"\xff\xfe\xfa" + nonce.bytes
    if reason == RejectionReason.INVALID_JSON:
        return key, f'{{"schema_version": 1, "event_id": "{nonce}", '.encode()
    if reason == RejectionReason.SCHEMA_VIOLATION:
        doc["case"]["age_band"] = "eleven"
    elif reason == RejectionReason.UNSUPPORTED_SCHEMA_VERSION:
        doc["schema_version"] = 2
    elif reason == RejectionReason.UNKNOWN_FINDING_CODE:
        doc["findings"] = [{"code": "domestic_abuses"}]
    elif reason == RejectionReason.PERSONAL_DATA_IN_IDENTIFIER:
        doc["case"]["ref"] = rng.choice(["9434765919", "jo.bloggs@example.com", "2009-04-13"])
    elif reason == RejectionReason.REVISION_CONFLICT:
        # Same audit, agency, case and revision as an event already sent; other content.
        taken = {f["code"] for f in doc["findings"]}
        doc["findings"] = [{"code": "young_carer" if "young_carer" not in taken else "neglect"}]
    elif reason == RejectionReason.OVERSIZE:
        doc["findings"] = [{"code": "neglect", "note": "n" * 1900}] * 40
    return key, json.dumps(doc).encode()


async def test_poison_is_answered_once_and_never_stops_the_pipeline(
    pipeline: Pipeline, figures: Figures
) -> None:
    started = time.monotonic()
    rng = random.Random(53)
    events = generate(audits=4, cases_per_audit=10, max_revision=4, seed=53, favoured_only=True)
    reference = expected(events)
    per_reason = max(3, round(len(events) * SHARE))
    stream: list[Record] = [record(e) for e in events]
    wanted: dict[str, RejectionReason] = {}
    for reason in RejectionReason:
        for _ in range(per_reason):
            index = rng.randrange(len(events))
            bad = poison(reason, events[index], rng)
            wanted[hashlib.sha256(bad[1]).hexdigest()] = reason
            # A conflict only counts as one after the event it conflicts with: same key, so
            # same partition, and later in it.
            at = (
                stream.index(record(events[index])) + 1
                if reason == RejectionReason.REVISION_CONFLICT
                else 0
            )
            stream.insert(rng.randrange(at, len(stream) + 1), bad)
    assert len(wanted) == per_reason * len(RejectionReason)

    await pipeline.start()
    await pipeline.submit(stream)
    await pipeline.quiet()

    answers = [json.loads(value) for _, value in await pipeline.read("rejected", idle_ms=500)]
    by_payload = Counter(a["payload_sha256"] for a in answers)
    assert {sha: n for sha, n in by_payload.items() if n != 1} == {}, "answered more than once"
    assert {a["payload_sha256"]: a["reason"] for a in answers} == wanted
    outcome = compare_themes(await pipeline.themes(), reference)
    assert outcome.differences == []
    assert open_actions(await pipeline.actions()) == reference.actions

    figures.record(
        "poison",
        events=len(stream),
        distinct_events=len(events) + len(wanted),
        poison_injected=len(wanted),
        poison_per_reason=per_reason,
        reasons=sorted(reason.value for reason in RejectionReason),
        rejections=len(answers),
        lost=outcome.lost,
        double_counted=outcome.double_counted,
        duration_s=round(time.monotonic() - started, 1),
    )
