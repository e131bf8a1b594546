"""The CLI's I/O: the services' HTTP APIs through httpx, and Kafka through aiokafka."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from services.cli.settings import CliSettings
from shared.contracts import ActionV1, FindingRejectedV1, ThemeSnapshotV1
from shared.kafka import kafka_client_options
from shared.settings import CommonSettings

T = TypeVar("T")


class CliError(Exception):
    """Something the user must fix or know; the CLI prints it as one line and exits non-zero."""


class AuditView(BaseModel):
    """An audit as the themes service lists it: its cohort as counts, never case tokens."""

    # The services may add fields; the CLI reads what it knows.
    model_config = ConfigDict(frozen=True, extra="ignore")

    audit_id: str = Field(description="The audit.")
    title: str | None = Field(default=None, description="The audit's title.")
    cases: int | None = Field(default=None, description="Distinct cases reviewed.")
    agencies: tuple[str, ...] = Field(default=(), description="Agencies that reviewed a case.")
    patterns: int | None = Field(default=None, description="Themes that are patterns.")
    legal_status: dict[str, int] = Field(default_factory=dict, description="Cases by status.")
    age_band: dict[str, int] = Field(default_factory=dict, description="Cases by age band.")
    updated_at: datetime | None = Field(default=None, description="When it last changed.")


class ActionView(ActionV1):
    """An action as the leads' API shows it: the contract's fields and a few for people."""

    # The API adds fields for people and leaves out the schema version; read what is known.
    model_config = ConfigDict(extra="ignore")

    sub_group_name: str | None = Field(default=None, description="The sub-group's name.")
    allowed_transitions: list[str] = Field(
        default_factory=list, description="Statuses the lead may move it to."
    )
    history: list[dict[str, Any]] | None = Field(
        default=None, description="Every version with its cause, for a single action."
    )


class AuditThemes(BaseModel):
    """`GET /v1/audits/{audit_id}/themes`: the audit's summary and every theme snapshot."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    audit: AuditView = Field(description="The audit's summary.")
    themes: list[ThemeSnapshotV1] = Field(description="Patterns first, then most widespread.")


_AUDITS = TypeAdapter(list[AuditView])
_AUDIT_THEMES = TypeAdapter(AuditThemes)
_ACTIONS = TypeAdapter(list[ActionView])
_ACTION = TypeAdapter(ActionView)


def _items(body: Any, key: str) -> Any:
    # A list may come bare or wrapped in an object under its plural name.
    return body[key] if isinstance(body, dict) and key in body else body


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return str(body["detail"])
    return response.reason_phrase


@dataclass(frozen=True)
class SubmitAnswer:
    """Intake's answer to one submission over HTTP."""

    accepted: bool
    status: int
    reason: str
    detail: str


class Services:
    """The three services' HTTP APIs, with errors turned into one sentence each."""

    def __init__(
        self, settings: CliSettings, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._urls = {
            "intake": settings.intake_url.rstrip("/"),
            "themes": settings.themes_url.rstrip("/"),
            "recommendations": settings.recommendations_url.rstrip("/"),
        }
        self._http = httpx.AsyncClient(timeout=settings.http_timeout_s, transport=transport)

    async def __aenter__(self) -> Services:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self._http.aclose()

    async def _call(
        self,
        service: str,
        method: str,
        path: str,
        *,
        token: str | None = None,
        params: dict[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        base = self._urls[service]
        headers = {"authorization": f"Bearer {token}"} if token else {}
        if content is not None:
            headers["content-type"] = "application/json"
        try:
            response = await self._http.request(
                method, base + path, headers=headers, params=params, content=content
            )
        except httpx.TransportError:
            raise CliError(f"{service} service not reachable at {base}") from None
        if response.status_code in (401, 403):
            raise CliError(
                f"{service} service refused the request ({response.status_code}): "
                f"{_reason(response)}"
            )
        return response

    @staticmethod
    def _ok(service: str, response: httpx.Response) -> Any:
        if response.status_code != 200:
            raise CliError(
                f"{service} service answered {response.status_code} for "
                f"{response.request.url.path}: {_reason(response)}"
            )
        try:
            return response.json()
        except ValueError:
            raise CliError(f"{service} service answered with something other than JSON") from None

    async def ready(self, service: str) -> None:
        """Raises unless the service answers /readyz with 200."""
        response = await self._call(service, "GET", "/readyz")
        if response.status_code != 200:
            raise CliError(f"{service} service at {self._urls[service]} is not ready")

    async def audits(self) -> list[AuditView]:
        """Every audit the themes service knows."""
        body = self._ok("themes", await self._call("themes", "GET", "/v1/audits"))
        return _parse(_AUDITS, _items(body, "audits"), "themes", "audits")

    async def themes(self, audit_id: str) -> AuditThemes:
        """An audit's summary and the current snapshot of every theme; unknown is an error."""
        path = f"/v1/audits/{quote(audit_id, safe='')}/themes"
        response = await self._call("themes", "GET", path)
        if response.status_code == 404:
            raise CliError(f"unknown audit {audit_id}")
        return _parse(_AUDIT_THEMES, self._ok("themes", response), "themes", "themes")

    async def actions(
        self, token: str, *, status: str | None = None, audit_id: str | None = None
    ) -> list[ActionView]:
        """The actions the token's holder may read, optionally filtered."""
        params = {
            name: value
            for name, value in (("status", status), ("audit_id", audit_id))
            if value is not None
        }
        response = await self._call(
            "recommendations", "GET", "/v1/actions", token=token, params=params
        )
        body = self._ok("recommendations", response)
        return _parse(_ACTIONS, _items(body, "actions"), "recommendations", "actions")

    async def action(self, token: str, action_id: str) -> ActionView:
        """One action with its history; unknown, or not the lead's to read, is an error."""
        path = f"/v1/actions/{quote(action_id, safe='')}"
        response = await self._call("recommendations", "GET", path, token=token)
        if response.status_code == 404:
            raise CliError(f"unknown action {action_id} (or not yours to read)")
        return _parse(_ACTION, self._ok("recommendations", response), "recommendations", "action")

    async def submit(self, value: bytes, token: str) -> SubmitAnswer:
        """POSTs one submission to intake; a refusal is an answer, not an error."""
        response = await self._call("intake", "POST", "/v1/findings", token=token, content=value)
        if response.status_code in (200, 201, 202):
            return SubmitAnswer(True, response.status_code, "submitted", "")
        body: Any = {}
        with contextlib.suppress(ValueError):
            body = response.json()
        if not isinstance(body, dict):
            body = {}
        return SubmitAnswer(
            False,
            response.status_code,
            str(body.get("reason", response.reason_phrase)),
            str(body.get("detail", "")),
        )


def _parse(adapter: TypeAdapter[T], body: Any, service: str, what: str) -> T:
    try:
        return adapter.validate_json(TypeAdapter(Any).dump_json(body))
    except ValidationError as error:
        first = error.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise CliError(
            f"{service} service sent {what} the CLI cannot read ({where}: {first['msg']})"
        ) from None


# --- Kafka ------------------------------------------------------------------------------


def _unreachable(bootstrap: str) -> str:
    # aiokafka reports a refused login as a failed connection; its own log line says which.
    return (
        f"kafka at {bootstrap} did not accept a connection: is it running, and does it want "
        "other security settings (CASEREVIEW_KAFKA_SECURITY_PROTOCOL, CASEREVIEW_KAFKA_SASL_*)?"
    )


@contextlib.asynccontextmanager
async def producer(settings: CommonSettings) -> AsyncIterator[AIOKafkaProducer]:
    """An idempotent producer that waits for every in-sync replica."""
    bootstrap = settings.kafka_bootstrap
    kafka = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id="casereview-cli",
        enable_idempotence=True,
        acks="all",
        **kafka_client_options(settings),
    )
    try:
        await kafka.start()
    except KafkaError:
        await kafka.stop()
        raise CliError(_unreachable(bootstrap)) from None
    try:
        yield kafka
    finally:
        await kafka.stop()


async def send(kafka: AIOKafkaProducer, topic: str, key: bytes, value: bytes) -> None:
    """Sends one record and returns once the broker acknowledged it."""
    ack = await kafka.send(topic, value, key=key)
    await ack


@contextlib.asynccontextmanager
async def _kafka(
    settings: CommonSettings,
) -> AsyncIterator[tuple[AIOKafkaAdminClient, AIOKafkaConsumer]]:
    bootstrap = settings.kafka_bootstrap
    options = kafka_client_options(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="casereview-cli", **options)
    # No group: reading commits nothing and disturbs no service's offsets.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        client_id="casereview-cli",
        **options,
    )
    try:
        await admin.start()
        await consumer.start()
    except KafkaError:
        await consumer.stop()
        await admin.close()
        raise CliError(_unreachable(bootstrap)) from None
    try:
        yield admin, consumer
    finally:
        await consumer.stop()
        await admin.close()


async def _partitions(
    admin: AIOKafkaAdminClient, topics: Sequence[str]
) -> dict[str, list[TopicPartition]]:
    # Only existing topics are described: asking the broker about a missing one may create it.
    existing = set(await admin.list_topics())
    found: dict[str, list[TopicPartition]] = {t: [] for t in topics}
    described = await admin.describe_topics([t for t in topics if t in existing])
    for meta in described:
        found[meta["topic"]] = sorted(
            TopicPartition(meta["topic"], p["partition"]) for p in meta["partitions"]
        )
    return found


@dataclass(frozen=True)
class Unreadable:
    """A record on the rejected topic that is not a finding-rejected v1 message."""

    partition: int
    offset: int


async def read_rejected(
    settings: CommonSettings, topic: str
) -> tuple[list[FindingRejectedV1], list[Unreadable]]:
    """Every message on the rejected topic, from the start to its end as of now."""
    async with _kafka(settings) as (admin, consumer):
        partitions = (await _partitions(admin, [topic]))[topic]
        if not partitions:
            return [], []
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        messages: list[FindingRejectedV1] = []
        unreadable: list[Unreadable] = []
        pending = {tp for tp in partitions if ends[tp] > 0}
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=1000)
            for tp, records in batch.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        continue
                    try:
                        messages.append(FindingRejectedV1.model_validate_json(record.value or b""))
                    except ValidationError:
                        unreadable.append(Unreadable(record.partition, record.offset))
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        messages.sort(key=lambda m: m.rejected_at)
        return messages, unreadable


@dataclass(frozen=True)
class PipelineState:
    """How far each service's consumer group has got, and how long every topic is."""

    lag: dict[str, int]
    ends: dict[str, int]

    @property
    def caught_up(self) -> bool:
        """Every group has committed past everything on its input topic."""
        return all(v == 0 for v in self.lag.values())


class Pipeline:
    """Watches the three services' consumer groups against their input topics."""

    def __init__(self, settings: CliSettings) -> None:
        self._settings = settings
        self._inputs = {
            settings.intake_group: settings.topic_submitted,
            settings.themes_group: settings.topic_accepted,
            settings.recommendations_group: settings.topic_themes,
        }
        self._topics = sorted(
            {*self._inputs.values(), settings.topic_rejected, settings.topic_actions}
        )

    async def _state(self, admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer) -> PipelineState:
        partitions = await _partitions(admin, self._topics)
        every = [tp for tps in partitions.values() for tp in tps]
        ends: dict[TopicPartition, int] = await consumer.end_offsets(every) if every else {}
        lag: dict[str, int] = {}
        for group, topic in self._inputs.items():
            committed = await admin.list_consumer_group_offsets(group)
            lag[group] = sum(ends[tp] - _committed(committed.get(tp)) for tp in partitions[topic])
        totals = {t: sum(ends[tp] for tp in partitions[t]) for t in self._topics}
        return PipelineState(lag=lag, ends=totals)

    async def wait_quiet(
        self,
        quiet_s: float,
        timeout_s: float,
        on_state: Callable[[PipelineState], None] = lambda _: None,
        every_s: float = 0.25,
    ) -> PipelineState:
        """Returns once every group is caught up and nothing has moved for `quiet_s`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        last: PipelineState | None = None
        since = loop.time()
        async with _kafka(self._settings) as (admin, consumer):
            while True:
                state = await self._state(admin, consumer)
                on_state(state)
                now = loop.time()
                if state != last:
                    last, since = state, now
                elif state.caught_up and now - since >= quiet_s:
                    return state
                if now > deadline:
                    behind = ", ".join(f"{g} {n}" for g, n in state.lag.items() if n) or "none"
                    raise CliError(
                        f"the pipeline did not become quiet within {timeout_s:.0f} s "
                        f"(records not yet consumed: {behind}); are all three services running?"
                    )
                await asyncio.sleep(every_s)


def _committed(meta: Any) -> int:
    # A group that never committed on a partition has consumed nothing of it.
    offset = getattr(meta, "offset", -1)
    return int(offset) if offset is not None and offset >= 0 else 0


def lag_line(lag: dict[str, int]) -> str:
    """Each group's lag, for a progress line."""
    return ", ".join(f"{group.removeprefix('casereview-')} {n}" for group, n in lag.items())
