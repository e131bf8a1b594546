"""`casereview demo`: the reference audit sent as agency systems would, and what came of it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from services.cli.briefing import BriefingData, render_html, render_markdown
from services.cli.client import (
    ActionView,
    AuditView,
    Pipeline,
    Services,
    lag_line,
    producer,
    read_rejected,
    send,
)
from services.cli.dataset import (
    Submission,
    by_agency,
    expected_themes,
    load_dataset,
    reviewed_cases,
)
from services.cli.settings import CliSettings
from services.cli.tokens import Kind, required_token
from services.cli.views import actions_table, rejected_table, themes_table
from shared.contracts import ActionStatus, ActionV1, FindingRejectedV1, ThemeSnapshotV1
from shared.routing import Routing, default_routing
from shared.taxonomy import default_taxonomy


@dataclass(frozen=True)
class Outcome:
    """What the demo found once the pipeline was quiet."""

    audit: AuditView
    themes: list[ThemeSnapshotV1]
    actions: list[ActionView]
    rejected: list[FindingRejectedV1]
    mismatches: list[str]
    briefings: list[Path]


async def submit_as_agencies(
    settings: CliSettings, per_agency: dict[str, list[Submission]], console: Console
) -> None:
    """One producer and one task per agency, each sending its own events in order, at once."""
    with Progress(
        TextColumn("{task.description:<18}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=False,
    ) as progress:

        async def agency_system(agency: str, submissions: Sequence[Submission]) -> None:
            task = progress.add_task(agency, total=len(submissions))
            async with producer(settings) as kafka:
                for submission in submissions:
                    await send(
                        kafka, settings.topic_submitted, submission.key, submission.to_json()
                    )
                    progress.advance(task)

        await asyncio.gather(*(agency_system(a, subs) for a, subs in per_agency.items()))


def check(
    themes: Sequence[ThemeSnapshotV1],
    actions: Sequence[ActionV1],
    submissions: Sequence[Submission],
    routing: Routing,
) -> list[str]:
    """Where the services' answer differs from what the dataset and routing say it should be."""
    wanted = expected_themes(submissions)
    got = {t.theme: t for t in themes}
    problems: list[str] = []
    for code, figure in wanted.items():
        snapshot = got.get(code)
        if snapshot is None:
            problems.append(f"{code}: no snapshot")
        elif (snapshot.cases_with_theme, tuple(snapshot.agencies)) != (
            figure.cases,
            figure.agencies,
        ):
            problems.append(
                f"{code}: {snapshot.cases_with_theme} cases by {len(snapshot.agencies)} agencies, "
                f"expected {figure.cases} by {len(figure.agencies)}"
            )
    problems += [
        f"{t.theme}: {t.cases_total} cases reviewed, expected {reviewed_cases(submissions)}"
        for t in themes
        if t.cases_total != reviewed_cases(submissions)
    ]
    routed = {
        group
        for t in themes
        if t.is_pattern and (group := routing.sub_group_for(t.theme, t.category)) is not None
    }
    held = {a.sub_group for a in actions if a.status != ActionStatus.WITHDRAWN}
    if routed != held:
        problems.append(
            f"actions held by {', '.join(sorted(held)) or 'nobody'}; "
            f"patterns route to {', '.join(sorted(routed)) or 'nobody'}"
        )
    return problems


def check_rejected(
    submissions: Sequence[Submission], answers: dict[str, FindingRejectedV1]
) -> list[str]:
    """Every submission the dataset says intake must refuse was refused, for that reason."""
    problems = []
    for submission in submissions:
        if submission.refused_for is None:
            continue
        answer = answers.get(str(submission.event.event_id))
        if answer is None:
            problems.append(f"event {submission.event.event_id} was not rejected")
        elif answer.reason != submission.refused_for:
            problems.append(
                f"event {submission.event.event_id} was rejected as {answer.reason.value}, "
                f"expected {submission.refused_for.value}"
            )
    return problems


def write_briefings(data: BriefingData, folder: Path) -> list[Path]:
    """briefing.md and briefing.html in the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    md, html = folder / "briefing.md", folder / "briefing.html"
    md.write_text(render_markdown(data), encoding="utf-8")
    html.write_text(render_html(data), encoding="utf-8")
    return [md, html]


async def run(settings: CliSettings, console: Console, err: Console) -> Outcome:
    """Submits the reference audit, waits for quiet, reads and checks the result."""
    spec = load_dataset()
    per_agency = by_agency(spec)
    submissions = [s for subs in per_agency.values() for s in subs]
    routing = default_routing()
    taxonomy = default_taxonomy()
    labels = {code: c.label for code, c in taxonomy.codes.items()}
    names = {g.id: g.name for g in routing.sub_groups.values()}
    # The oversight lead reads every sub-group's actions.
    token = required_token(settings.secrets_dir, Kind.LEAD, routing.escalate_to)
    async with Services(settings) as services:
        for service in ("intake", "themes", "recommendations"):
            await services.ready(service)
        err.print(
            f"Submitting {len(submissions)} events for [bold]{spec.audit.id}[/] from "
            f"{len(per_agency)} agency systems at once (one re-sent, one revised, one bad):"
        )
        started = time.monotonic()
        await submit_as_agencies(settings, per_agency, err)
        with err.status("waiting for the pipeline to settle") as status:
            await Pipeline(settings).wait_quiet(
                settings.quiet_s,
                settings.settle_timeout_s,
                on_state=lambda s: status.update(
                    f"waiting for the pipeline to settle (unconsumed: {lag_line(s.lag)})"
                ),
            )
        err.print(f"Pipeline quiet {time.monotonic() - started:.1f} s after the first event.")
        found = await services.themes(spec.audit.id)
        actions = await services.actions(token, audit_id=spec.audit.id)
    audit, themes = found.audit, found.themes
    names.update({a.sub_group: a.sub_group_name for a in actions if a.sub_group_name})
    refused = {str(s.event.event_id) for s in submissions if s.refused_for is not None}
    every, _ = await read_rejected(settings, settings.topic_rejected)
    # The latest answer to each refused event: re-runs add one each, this run's comes last.
    latest = {m.event_id: m for m in every if m.event_id in refused}
    data = BriefingData(
        audit=audit,
        themes=themes,
        actions=actions,
        generated_at=datetime.now(UTC),
        labels=labels,
        sub_group_names=names,
    )
    outcome = Outcome(
        audit=audit,
        themes=themes,
        actions=actions,
        rejected=list(latest.values()),
        mismatches=check(themes, actions, submissions, routing)
        + check_rejected(submissions, latest),
        briefings=write_briefings(data, settings.out_dir),
    )
    show(outcome, names, console)
    return outcome


def show(outcome: Outcome, names: dict[str, str], console: Console) -> None:
    """The summary a person reads at the end of the demo."""
    audit = outcome.audit
    cohort = "; ".join(
        f"{k.replace('_', ' ')} {v}" for k, v in {**audit.legal_status, **audit.age_band}.items()
    )
    console.print(
        Panel(
            f"[bold]{audit.title or audit.audit_id}[/]\n{audit.cases} cases reviewed by "
            f"{len(audit.agencies)} agencies: {', '.join(audit.agencies)}"
            + (f"\nCohort: {cohort}" if cohort else ""),
            title=audit.audit_id,
            title_align="left",
        )
    )
    console.print(themes_table(outcome.themes, title="Themes, patterns first"))
    console.print(
        actions_table(outcome.actions, names, title="Actions routed to sub-groups", wide=False)
    )
    if outcome.rejected:
        console.print(rejected_table(outcome.rejected, title="Rejected by intake", wide=False))
    if outcome.mismatches:
        console.print("[red]The pipeline's answer differs from the reference audit:[/]")
        for problem in outcome.mismatches:
            console.print(f"  [red]- {problem}[/]")
    else:
        console.print(
            "[green]\u2713 The pipeline reproduced the reference audit's figures and routing.[/]"
        )
    for path in outcome.briefings:
        console.print(f"Briefing written: {path.resolve()}")
