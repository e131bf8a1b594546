"""Rich tables for what the CLI reads: audits, themes, actions, rejected submissions, logs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from rich.console import Group, JustifyMethod
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from services.cli.briefing import REGISTER, ordered
from services.cli.client import ActionView, AuditView
from services.cli.ops import Line, Notice, ServiceSummary, detail
from shared.contracts import ActionV1, Category, FindingRejectedV1, ThemeSnapshotV1

STYLES = {
    Category.RISK_FACTOR: "red",
    Category.PRACTICE_CONCERN: "dark_orange",
    Category.GOOD_PRACTICE: "green",
}


def bar(fraction: float, style: str, width: int = 10) -> Text:
    """A prevalence bar in block characters."""
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return Text("\u2588" * filled, style=style) + Text("\u2591" * (width - filled), style="dim")


def audits_table(audits: Sequence[AuditView]) -> Table:
    """One row per audit."""
    table = Table(title="Audits", title_justify="left")
    for column in ("audit", "title", "cases", "patterns", "agencies", "updated"):
        table.add_column(column, justify="right" if column in ("cases", "patterns") else "left")
    for audit in audits:
        table.add_row(
            audit.audit_id,
            audit.title or "",
            "" if audit.cases is None else str(audit.cases),
            "" if audit.patterns is None else str(audit.patterns),
            ", ".join(audit.agencies),
            audit.updated_at.isoformat(timespec="seconds") if audit.updated_at else "",
        )
    return table


def themes_table(themes: Sequence[ThemeSnapshotV1], title: str = "Themes") -> Table:
    """Patterns first, each with its prevalence bar and how many agencies reported it."""
    legend = " ".join(
        f"[{style}]\u25a0[/] {c.value.replace('_', ' ')}" for c, style in STYLES.items()
    )
    table = Table(title=f"{title}   {legend}", title_justify="left")
    table.add_column("theme", no_wrap=True)
    table.add_column("prevalence", no_wrap=True)
    table.add_column("cases", justify="right", no_wrap=True)
    table.add_column("in the audit's words")
    table.add_column("agencies", justify="right")
    table.add_column("\u25c6", justify="center")
    for theme in ordered(themes):
        style = STYLES[theme.category]
        wait = (
            f", median wait {theme.median_waited_days:g} d"
            if theme.median_waited_days is not None
            else ""
        )
        table.add_row(
            Text(theme.theme, style=style + (" bold" if theme.is_pattern else "")),
            bar(theme.prevalence, style) + Text(f" {round(theme.prevalence * 100):>3}%"),
            f"{theme.cases_with_theme}/{theme.cases_total}",
            REGISTER[theme.descriptor].removeprefix("in ") + wait,
            str(len(theme.agencies)),
            "\u25c6" if theme.is_pattern else "",
        )
    return table


def actions_table(
    actions: Sequence[ActionV1], names: Mapping[str, str], title: str = "Actions", wide: bool = True
) -> Table:
    """One row per action, by sub-group; `wide` adds the audit, owner and version."""
    table = Table(title=title, title_justify="left")
    columns = ["sub-group", "themes", "status", "due by"]
    if wide:
        columns = ["sub-group", "audit", "themes", "status", "due by", "owner", "version"]
    for column in columns:
        table.add_column(column)
    for action in sorted(actions, key=lambda a: (a.sub_group, a.audit_id)):
        status = action.status.value + (
            f" (escalated to {action.escalated_to})" if action.escalated_to else ""
        )
        cells = {
            "sub-group": names.get(action.sub_group, action.sub_group),
            "audit": action.audit_id,
            "themes": "\n".join(action.themes) or "-",
            "status": status,
            "due by": action.due_by.isoformat(),
            "owner": action.owner or "-",
            "version": str(action.version),
        }
        table.add_row(*(cells[c] for c in columns))
    return table


def action_panel(action: ActionView, names: Mapping[str, str]) -> Group:
    """One action: what is asked, its state, and every version with what caused it."""
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    facts.add_row("sub-group", names.get(action.sub_group, action.sub_group))
    facts.add_row("audit", action.audit_id)
    facts.add_row("themes", ", ".join(action.themes) or "-")
    facts.add_row("status", action.status.value)
    facts.add_row("due by", action.due_by.isoformat())
    facts.add_row("owner", action.owner or "-")
    if action.escalated_to:
        facts.add_row("escalated to", names.get(action.escalated_to, action.escalated_to))
    if action.allowed_transitions:
        facts.add_row("may become", ", ".join(action.allowed_transitions))
    history = Table(title="History", title_justify="left")
    for column in ("version", "event", "at", "status", "by", "note"):
        history.add_column(column, overflow="fold")
    for entry in action.history or []:
        history.add_row(
            str(entry.get("version", "")),
            str(entry.get("event", "")),
            str(entry.get("occurred_at", "")),
            str(entry.get("status", "")),
            str(entry.get("by") or "-"),
            str(entry.get("note") or ""),
        )
    return Group(
        Panel(Group(Text(action.recommendation), Text(), facts), title=action.action_id),
        history,
    )


def rejected_table(
    messages: Sequence[FindingRejectedV1], title: str = "Rejected", wide: bool = True
) -> Table:
    """One row per rejection, oldest first; `wide` adds when and the audit."""
    table = Table(title=title, title_justify="left")
    columns = ["rejected at", "reason", "agency", "audit", "event id", "detail"]
    if not wide:
        columns = ["reason", "agency", "event id", "detail"]
    for column in columns:
        table.add_column(column, overflow="fold")
    for message in messages:
        cells = {
            "rejected at": message.rejected_at.isoformat(timespec="seconds"),
            "reason": message.reason.value,
            "agency": message.agency_id or "?",
            "audit": message.audit_id or "?",
            "event id": message.event_id or "?",
            "detail": message.detail,
        }
        table.add_row(*(cells[c] for c in columns))
    return table


def _when(moment: datetime | None, fmt: str = "%Y-%m-%d %H:%M:%SZ") -> str:
    return moment.strftime(fmt) if moment is not None else "-"


def _notice(service: str, notice: Notice) -> Text:
    what = notice.event + (f": {notice.error}" if notice.error else "")
    by = f" ({notice.logger})" if notice.logger else ""
    style = "yellow" if notice.level == "warning" else "red"
    return Text.assemble(
        (f"{service} latest {notice.level} ", style), f"{_when(notice.ts)} {what}{by}"
    )


def ops_view(summaries: Sequence[ServiceSummary], minutes: float) -> Group:
    """One row per service, then each service's latest warning and error; trouble counts
    cover the last `minutes`."""
    table = Table(
        title=f"Services, from their logs (warnings and errors: last {minutes:g} min)",
        title_justify="left",
    )
    columns: list[tuple[str, JustifyMethod]] = [
        ("service", "left"),
        ("up since", "left"),
        ("in", "right"),
        ("out", "right"),
        ("lag", "right"),
        ("warnings", "right"),
        ("errors", "right"),
        ("rejected", "left"),
    ]
    for column, justify in columns:
        table.add_column(column, justify=justify, no_wrap=True)
    notices: list[Text] = []
    short = "%m-%d %H:%M"
    for summary in summaries:
        up = _when(summary.up_since, short) + (
            f"\nstopped {_when(summary.stopped_at, short)}" if summary.stopped_at else ""
        )
        lag = summary.lag
        table.add_row(
            summary.service,
            up,
            str(summary.events_in),
            str(summary.events_out),
            "-" if lag is None else "unknown" if lag.total is None else str(lag.total),
            str(summary.warnings),
            str(summary.errors),
            "\n".join(f"{n} {reason}" for reason, n in summary.rejections.items()) or "-",
        )
        notices.extend(
            _notice(summary.service, n)
            for n in (summary.latest_warning, summary.latest_error)
            if n is not None
        )
    return Group(table, *notices)


def trace_table(trail: Sequence[Line], event_id: str) -> Table:
    """A submission's journey, one row per line, in the order it happened."""
    table = Table(title=f"Journey of {event_id}", title_justify="left")
    for column in ("at", "service", "event", "about"):
        table.add_column(column, overflow="fold")
    for line in trail:
        table.add_row(line.ts.strftime("%H:%M:%S.%f")[:-3], line.service, line.event, detail(line))
    return table
