"""Recommendations' rules: routing patterns to sub-groups, the action lifecycle, escalation.

Pure: no I/O. An action's current state is its latest `ActionV1` message; every function here
takes one and returns the next version (or says why there is none).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from shared.contracts import (
    ActionEvent,
    ActionStatus,
    ActionV1,
    Category,
    Descriptor,
    Evidence,
    ThemeSnapshotV1,
)
from shared.routing import Routing, SubGroup

OPEN = frozenset({ActionStatus.ROUTED, ActionStatus.ACKNOWLEDGED, ActionStatus.IN_PROGRESS})
"""Statuses in which a sub-group still owes work, so the action can become overdue."""

TRANSITIONS: Mapping[ActionStatus, tuple[ActionStatus, ...]] = {
    ActionStatus.ROUTED: (ActionStatus.ACKNOWLEDGED, ActionStatus.DECLINED),
    ActionStatus.ACKNOWLEDGED: (ActionStatus.IN_PROGRESS, ActionStatus.DECLINED),
    ActionStatus.IN_PROGRESS: (ActionStatus.COMPLETED, ActionStatus.DECLINED),
    ActionStatus.COMPLETED: (),
    ActionStatus.DECLINED: (),
    # Only routing (a pattern routed there again) brings a withdrawn action back.
    ActionStatus.WITHDRAWN: (),
}
"""The status changes a sub-group lead may make."""

_WORDS = {
    Descriptor.ALL: "all",
    Descriptor.ALMOST_ALL: "almost all",
    Descriptor.MOST: "most",
    Descriptor.SOME: "some",
    Descriptor.FEW: "a few",
    Descriptor.NONE: "none",
}


@dataclass(frozen=True)
class ThemeState:
    """The latest applied snapshot of one theme in one audit, as far as routing needs it."""

    audit_id: str
    theme: str
    category: Category
    is_pattern: bool
    cases_with_theme: int
    cases_total: int
    agency_count: int
    descriptor: Descriptor
    small_sample: bool
    version: int
    correlation_id: str | None

    @classmethod
    def of(cls, snapshot: ThemeSnapshotV1, correlation_id: str | None) -> ThemeState:
        """What a snapshot contributes to routing."""
        return cls(
            audit_id=snapshot.audit_id,
            theme=snapshot.theme,
            category=snapshot.category,
            is_pattern=snapshot.is_pattern,
            cases_with_theme=snapshot.cases_with_theme,
            cases_total=snapshot.cases_total,
            agency_count=len(snapshot.agencies),
            descriptor=snapshot.descriptor,
            small_sample=snapshot.small_sample,
            version=snapshot.version,
            correlation_id=correlation_id,
        )

    @property
    def evidence(self) -> Evidence:
        """The figures an action shows for this theme."""
        return Evidence(
            theme=self.theme,
            cases_with_theme=self.cases_with_theme,
            cases_total=self.cases_total,
            agency_count=self.agency_count,
            descriptor=self.descriptor.value,
        )


@dataclass(frozen=True)
class Routed:
    """What one sub-group is to hold for one audit, from the patterns routed to it."""

    themes: tuple[str, ...]
    evidence: tuple[Evidence, ...]
    recommendation: str
    due_days: int


@dataclass(frozen=True)
class Refused:
    """A lead's status change that is not allowed, and what would be."""

    reason: str
    detail: str
    allowed: tuple[ActionStatus, ...]


def action_id(audit_id: str, sub_group: str) -> str:
    """The action's id; sub-group ids hold no hyphen, so the last one splits it back."""
    return f"act-{audit_id}-{sub_group}"


def _phrase(label: str) -> str:
    # Labels are sentence-case; mid-sentence they start lower-case unless they open an acronym.
    return label if label[:2].isupper() else label[:1].lower() + label[1:]


def evidence_text(evidence: Evidence, label: str) -> str:
    """One theme's figures in the audit's own words."""
    try:
        words = _WORDS[Descriptor(evidence.descriptor)]
    except ValueError:
        words = evidence.descriptor
    cases = "case" if evidence.cases_total == 1 else "cases"
    agencies = "1 agency" if evidence.agency_count == 1 else f"{evidence.agency_count} agencies"
    return (
        f"{_phrase(label)} in {evidence.cases_with_theme} of {evidence.cases_total} {cases} "
        f"({words}), reported by {agencies}"
    )


def render(
    sub_group: SubGroup,
    audit_id: str,
    evidence: Sequence[Evidence],
    labels: Mapping[str, str],
    small_sample: bool,
) -> str:
    """The sub-group's recommendation template filled in with the evidence."""
    found = "; ".join(
        evidence_text(e, labels.get(e.theme, e.theme.replace("_", " "))) for e in evidence
    )
    cases_total = max((e.cases_total for e in evidence), default=0)
    sample_note = (
        f"Findings come from a small sample of {cases_total} cases and are presented with "
        "that caveat."
        if small_sample
        else ""
    )
    text = sub_group.recommendation.format(
        evidence=found, sample_note=sample_note, name=sub_group.name, audit_id=audit_id
    )
    return " ".join(text.split())


def route(
    audit_id: str,
    states: Iterable[ThemeState],
    routing: Routing,
    labels: Mapping[str, str],
) -> dict[str, Routed]:
    """What each sub-group is to hold for the audit, from the current snapshot of every theme."""
    by_group: dict[str, list[ThemeState]] = {}
    for state in states:
        if state.audit_id != audit_id or not state.is_pattern:
            continue
        group = routing.sub_group_for(state.theme, state.category)
        if group is not None:
            by_group.setdefault(group, []).append(state)
    routed: dict[str, Routed] = {}
    for group, members in by_group.items():
        members.sort(key=lambda s: routing.rank(s.theme))
        evidence = tuple(s.evidence for s in members)
        routed[group] = Routed(
            themes=tuple(sorted(s.theme for s in members)),
            evidence=evidence,
            recommendation=render(
                routing.sub_groups[group],
                audit_id,
                evidence,
                labels,
                small_sample=any(s.small_sample for s in members),
            ),
            due_days=routing.sub_groups[group].due_days,
        )
    return routed


def _next(current: ActionV1, event: ActionEvent, now: datetime, **changes: object) -> ActionV1:
    return current.model_copy(
        update={**changes, "event": event, "version": current.version + 1, "occurred_at": now}
    )


def reconcile(
    current: ActionV1 | None,
    routed: Routed | None,
    *,
    audit_id: str,
    sub_group: str,
    now: datetime,
) -> ActionV1 | None:
    """The next version of a sub-group's action for an audit, or None when nothing changed.

    A first routing sets the due date; updates keep it. Routing a withdrawn action again
    starts afresh: status routed, a new due date, no owner, not escalated.
    """
    if routed is None:
        if current is None or current.status == ActionStatus.WITHDRAWN:
            return None
        return _next(
            current,
            ActionEvent.WITHDRAWN,
            now,
            themes=[],
            evidence=[],
            status=ActionStatus.WITHDRAWN,
        )
    themes = list(routed.themes)
    evidence = list(routed.evidence)
    due_by = now.date() + timedelta(days=routed.due_days)
    if current is None:
        return ActionV1(
            event=ActionEvent.ROUTED,
            action_id=action_id(audit_id, sub_group),
            audit_id=audit_id,
            sub_group=sub_group,
            themes=themes,
            recommendation=routed.recommendation,
            evidence=evidence,
            status=ActionStatus.ROUTED,
            owner=None,
            due_by=due_by,
            escalated_to=None,
            version=1,
            occurred_at=now,
        )
    if current.status == ActionStatus.WITHDRAWN:
        return _next(
            current,
            ActionEvent.ROUTED,
            now,
            themes=themes,
            evidence=evidence,
            recommendation=routed.recommendation,
            status=ActionStatus.ROUTED,
            owner=None,
            due_by=due_by,
            escalated_to=None,
        )
    if (
        current.themes == themes
        and current.evidence == evidence
        and current.recommendation == routed.recommendation
    ):
        return None
    return _next(
        current,
        ActionEvent.UPDATED,
        now,
        themes=themes,
        evidence=evidence,
        recommendation=routed.recommendation,
    )


def touched_themes(before: ActionV1 | None, after: ActionV1) -> list[str]:
    """The themes whose evidence a change added, removed or altered: what caused it."""
    old = {e.theme: e for e in before.evidence} if before is not None else {}
    new = {e.theme: e for e in after.evidence}
    return sorted(t for t in old.keys() | new.keys() if old.get(t) != new.get(t))


def change_status(
    current: ActionV1,
    status: ActionStatus,
    *,
    owner: str | None,
    note: str | None,
    now: datetime,
) -> ActionV1 | Refused:
    """A lead's status change, if the transition table allows it; declining needs a reason."""
    allowed = TRANSITIONS[current.status]
    if status not in allowed:
        options = ", ".join(allowed) if allowed else "nothing: no further change is possible"
        return Refused(
            "transition_not_allowed",
            f"an action that is {current.status.value} cannot become {status.value}; "
            f"it may become {options}",
            allowed,
        )
    if status == ActionStatus.DECLINED and not (note and note.strip()):
        return Refused(
            "reason_required", "declining an action needs a note giving the reason", allowed
        )
    return _next(
        current,
        ActionEvent.STATUS_CHANGED,
        now,
        status=status,
        owner=owner if owner is not None else current.owner,
    )


def is_overdue(action: ActionV1, today: date) -> bool:
    """Open, past its due date, and not escalated yet."""
    return action.status in OPEN and action.escalated_to is None and action.due_by < today


def escalate(action: ActionV1, to: str, now: datetime) -> ActionV1:
    """The overdue action, escalated; its status is the lead's and stays as it is."""
    return _next(action, ActionEvent.ESCALATED, now, escalated_to=to)


def may_read(principal: str, sub_group: str, oversight: str) -> bool:
    """A lead reads their own sub-group's actions; the oversight sub-group reads every one."""
    return principal in (sub_group, oversight)


def may_change(principal: str, sub_group: str) -> bool:
    """Only the sub-group an action is routed to changes its status, oversight included."""
    return principal == sub_group
