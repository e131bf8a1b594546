"""The `casereview` command: submit findings, read themes and actions, brief, run the demo, and
read the services' logs."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from services.cli import demo as demo_run
from services.cli import ops as ops_logs
from services.cli.briefing import BriefingData, render_html, render_markdown
from services.cli.client import ActionView, CliError, Services, producer, read_rejected, send
from services.cli.dataset import DatasetError, by_agency, interleaved, load_dataset
from services.cli.settings import CliSettings
from services.cli.submission import Line, LineError, parse_lines
from services.cli.tokens import (
    Kind,
    TokenError,
    TokenFiles,
    ensure_tokens,
    required_token,
    token_for,
)
from services.cli.views import (
    action_panel,
    actions_table,
    audits_table,
    ops_view,
    rejected_table,
    themes_table,
    trace_table,
)
from shared.routing import default_routing
from shared.taxonomy import default_taxonomy

T = TypeVar("T")

app = typer.Typer(
    name="casereview",
    help="Multi-agency case audits: submit findings, read themes and actions, write briefings.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Piped or logged output (make demo, CI) has no terminal width; 80 columns would fold the tables.
out = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, soft_wrap=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
TokenOption = Annotated[
    str | None,
    typer.Option(help="Bearer token; by default the one under <local_dir>/secrets/."),
]


class Format(StrEnum):
    """Briefing formats."""

    MD = "md"
    HTML = "html"


@contextmanager
def _answers() -> Iterator[None]:
    # Every expected failure is one line on stderr and exit status 1; tracebacks are for bugs.
    try:
        yield
    except (CliError, LineError, TokenError, DatasetError) as error:
        err.print(f"casereview: {error}", markup=False, highlight=False)
        raise typer.Exit(1) from None


def _run(work: Coroutine[Any, Any, T]) -> T:
    with _answers():
        return asyncio.run(work)


def _json(items: list[BaseModel]) -> None:
    out.print_json(json.dumps([i.model_dump(mode="json") for i in items]))


def _labels() -> dict[str, str]:
    return {code: c.label for code, c in default_taxonomy().codes.items()}


def _names(actions: Sequence[ActionView] = ()) -> dict[str, str]:
    # The service's own names win: its routing file may have been edited by the partnership.
    names = {g.id: g.name for g in default_routing().sub_groups.values()}
    names.update({a.sub_group: a.sub_group_name for a in actions if a.sub_group_name})
    return names


def _lead_token(settings: CliSettings, given: str | None, sub_group: str | None) -> str:
    if given:
        return given
    # A lead reads their own sub-group's actions; the oversight lead reads every one.
    principal = sub_group or default_routing().escalate_to
    return required_token(settings.secrets_dir, Kind.LEAD, principal)


@app.command()
def submit(
    file: Annotated[str, typer.Argument(help="JSON lines of agency-finding v1 events, or -.")],
    http: Annotated[
        bool, typer.Option("--http", help="POST each event to intake instead of Kafka.")
    ] = False,
    token: TokenOption = None,
) -> None:
    """Submits agency-finding events: to Kafka keyed by audit and case, or to intake over HTTP."""
    settings = CliSettings()
    name = "stdin" if file == "-" else file
    with _answers():
        try:
            text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise CliError(f"cannot read {name}: {error}") from None
        try:
            lines = parse_lines(text)
        except LineError as error:
            raise CliError(f"{name} {error}") from None
    if not lines:
        err.print(f"{name} holds no events; nothing sent.")
        return
    if http:
        _run(_submit_http(settings, lines, token))
    else:
        _run(_submit_kafka(settings, lines))


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err
    )


async def _submit_kafka(settings: CliSettings, lines: list[Line]) -> None:
    async with producer(settings) as kafka:
        with _progress() as progress:
            task = progress.add_task("sending", total=len(lines))

            async def one(line: Line) -> None:
                await send(kafka, settings.topic_submitted, line.key, line.value)
                progress.advance(task)

            # The idempotent producer keeps each partition's records in the order sent.
            await asyncio.gather(*(one(line) for line in lines))
    err.print(f"{len(lines)} events sent to {settings.topic_submitted}; acknowledged by Kafka.")


async def _submit_http(settings: CliSettings, lines: list[Line], token: str | None) -> None:
    refused: list[str] = []
    async with Services(settings) as services:
        with _progress() as progress:
            task = progress.add_task("posting", total=len(lines))
            for line in lines:
                credential = token or token_for(settings.secrets_dir, Kind.AGENCY, line.agency_id)
                if credential is None:
                    raise CliError(
                        f"line {line.number}: no token for agency {line.agency_id}; pass --token "
                        "or run `casereview init-secrets`"
                    )
                answer = await services.submit(line.value, credential)
                if not answer.accepted:
                    refused.append(
                        f"line {line.number}: refused by intake ({answer.status} "
                        f"{answer.reason}): {answer.detail}"
                    )
                progress.advance(task)
    for message in refused:
        err.print(message, markup=False, highlight=False)
    err.print(f"{len(lines) - len(refused)} of {len(lines)} events taken by intake.")
    if refused:
        raise CliError(f"{len(refused)} of {len(lines)} events refused by intake")


@app.command()
def audits(as_json: JsonFlag = False) -> None:
    """Lists the audits the themes service knows."""

    async def work() -> None:
        async with Services(CliSettings()) as services:
            found = await services.audits()
        if as_json:
            _json(list(found))
        else:
            out.print(audits_table(found))

    _run(work())


@app.command()
def themes(
    audit: Annotated[str, typer.Argument(help="The audit id.")], as_json: JsonFlag = False
) -> None:
    """Shows an audit's themes, patterns first, with prevalence and the agencies that saw them."""

    async def work() -> None:
        async with Services(CliSettings()) as services:
            found = await services.themes(audit)
        if as_json:
            out.print_json(found.model_dump_json())
        else:
            out.print(themes_table(found.themes, title=f"Themes of {audit}"))

    _run(work())


@app.command()
def actions(
    sub_group: Annotated[str | None, typer.Option(help="Only this sub-group's actions.")] = None,
    status: Annotated[str | None, typer.Option(help="Only actions with this status.")] = None,
    audit: Annotated[str | None, typer.Option(help="Only this audit's actions.")] = None,
    token: TokenOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Lists routed actions a lead may read: their sub-group's, or every one for oversight."""
    settings = CliSettings()

    async def work() -> None:
        credential = _lead_token(settings, token, sub_group)
        async with Services(settings) as services:
            found = await services.actions(credential, status=status, audit_id=audit)
        chosen = [a for a in found if sub_group is None or a.sub_group == sub_group]
        if as_json:
            _json(list(chosen))
        else:
            out.print(actions_table(chosen, _names(chosen)))

    _run(work())


@app.command()
def action(
    action_id: Annotated[str, typer.Argument(help="The action id.")],
    token: TokenOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Shows one action with its history of versions."""
    settings = CliSettings()

    async def work() -> None:
        credential = _lead_token(settings, token, None)
        async with Services(settings) as services:
            found = await services.action(credential, action_id)
        if as_json:
            out.print_json(found.model_dump_json())
        else:
            out.print(action_panel(found, _names([found])))

    _run(work())


def _instant(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"--since {text!r} is not an ISO 8601 date or time") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@app.command()
def rejected(
    since: Annotated[
        str | None, typer.Option(help="Only rejections at or after this ISO 8601 time.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Lists what intake refused, and why, from the public rejected topic."""
    settings = CliSettings()

    async def work() -> None:
        floor = _instant(since) if since else None
        messages, unreadable = await read_rejected(settings, settings.topic_rejected)
        chosen = [m for m in messages if floor is None or m.rejected_at >= floor]
        if unreadable:
            err.print(f"{len(unreadable)} records on {settings.topic_rejected} were unreadable.")
        if as_json:
            _json(list(chosen))
        else:
            out.print(rejected_table(chosen))

    _run(work())


@app.command()
def briefing(
    audit: Annotated[str, typer.Argument(help="The audit id.")],
    out_file: Annotated[Path, typer.Option("--out", help="Where to write the briefing.")],
    fmt: Annotated[Format, typer.Option("--format", help="md or html.")] = Format.MD,
    public: Annotated[
        bool, typer.Option("--public", help="Show every count below 3 as 'fewer than 3'.")
    ] = False,
    token: TokenOption = None,
) -> None:
    """Writes the audit's briefing from the live data: findings, good practice, recommendations."""
    settings = CliSettings()

    async def work() -> None:
        credential = _lead_token(settings, token, None)
        async with Services(settings) as services:
            found = await services.themes(audit)
            routed = await services.actions(credential, audit_id=audit)
        data = BriefingData(
            audit=found.audit,
            themes=found.themes,
            actions=[a for a in routed if a.audit_id == audit],
            generated_at=datetime.now(UTC),
            labels=_labels(),
            sub_group_names=_names(routed),
        )
        text = render_html(data, public) if fmt == Format.HTML else render_markdown(data, public)
        try:
            out_file.parent.mkdir(parents=True, exist_ok=True)
            out_file.write_text(text, encoding="utf-8")
        except OSError as error:
            raise CliError(f"cannot write {out_file}: {error}") from None
        err.print(f"Briefing written: {out_file}")

    _run(work())


@app.command()
def demo() -> None:
    """Runs the reference audit end to end against the running services and writes a briefing."""
    outcome = _run(demo_run.run(CliSettings(), out, err))
    if outcome.mismatches:
        raise typer.Exit(1)


@app.command()
def dataset() -> None:
    """Prints the reference audit's events as JSON lines, ready for `casereview submit -`."""
    with _answers():
        for submission in interleaved(by_agency(load_dataset())):
            sys.stdout.write(submission.to_json().decode() + "\n")


ops_app = typer.Typer(
    help="What the services' JSON logs say: a summary per service, or one submission's journey.",
    no_args_is_help=False,
)
app.add_typer(ops_app, name="ops")

LogsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--log",
        help="A service's JSON log, or - for stdin (repeatable); by default "
        "<local_dir>/logs/{intake,themes,recommendations}.log.",
    ),
]


def _read_logs(given: list[str] | None) -> ops_logs.Parsed:
    settings = CliSettings()
    if given:
        paths = given
    else:
        folder = Path(settings.local_dir) / "logs"
        paths = [str(p) for s in ops_logs.SERVICES if (p := folder / f"{s}.log").exists()]
        if not paths:
            raise CliError(f"no service logs under {folder}; pass --log FILE (or --log -)")
    texts: list[str] = []
    for path in paths:
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise CliError(f"cannot read {path}: {error}") from None
        texts.extend(text.splitlines())
    parsed = ops_logs.parse(texts)
    if parsed.unreadable:
        err.print(f"{parsed.unreadable} lines were not JSON log lines; skipped.")
    return parsed


@ops_app.callback(invoke_without_command=True)
def ops(
    ctx: typer.Context,
    logs: LogsOption = None,
    minutes: Annotated[
        float, typer.Option(min=0, help="Count warnings and errors this far back.")
    ] = 15,
    as_json: JsonFlag = False,
) -> None:
    """Per service: up since, events in and out, rejections, current lag, recent trouble."""
    if ctx.invoked_subcommand is not None:
        return
    with _answers():
        parsed = _read_logs(logs)
    summaries = ops_logs.summarise(
        parsed.lines, now=datetime.now(UTC), window=timedelta(minutes=minutes)
    )
    if as_json:
        _json(list(summaries))
    else:
        out.print(ops_view(summaries, minutes))


@ops_app.command("trace")
def ops_trace(
    event_id: Annotated[str, typer.Argument(help="The submission's event id.")],
    logs: LogsOption = None,
    as_json: JsonFlag = False,
) -> None:
    """One submission's journey through the three services, in the order the work flowed."""
    with _answers():
        trail = ops_logs.trace(_read_logs(logs).lines, event_id)
        if not trail:
            raise CliError(f"no log line mentions {event_id}")
    if as_json:
        out.print_json(json.dumps([dict(line.fields) for line in trail]))
    else:
        out.print(trace_table(trail, event_id))
        out.print("journey: " + " → ".join(ops_logs.journey(trail)), highlight=False)


@app.command("init-secrets")
def init_secrets(
    agency: Annotated[
        list[str] | None, typer.Option(help="Another agency to give a token (repeatable).")
    ] = None,
) -> None:
    """Creates the demo's bearer tokens under <local_dir>/secrets/ where they are missing."""
    settings = CliSettings()
    with _answers():
        agencies = [*load_dataset().agencies, *(agency or [])]
        wanted = {Kind.AGENCY: agencies, Kind.LEAD: list(default_routing().sub_groups)}
        for kind, principals in wanted.items():
            files = TokenFiles.of(settings.secrets_dir, kind)
            changed = ensure_tokens(files, principals)
            verb = "written" if changed else "kept"
            err.print(f"{verb}: {files.plain} and {files.hashed} ({len(principals)} tokens)")


def main() -> None:
    """The console script's entry point."""
    try:
        app()
    except ValidationError as error:
        if error.title != CliSettings.__name__:
            raise
        # The environment's settings are wrong: say which and why, never their values (one
        # may be a password).
        for item in error.errors(include_url=False, include_input=False):
            where = "".join(f"{p}: " for p in item["loc"])
            line = f"casereview: settings: {where}{item['msg'].removeprefix('Value error, ')}"
            err.print(line, markup=False, highlight=False)
        raise SystemExit(1) from None
