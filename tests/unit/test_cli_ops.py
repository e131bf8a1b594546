"""`casereview ops` and the log lines it reads: the summary and journey from synthetic logs, the
log set-up's JSON and throttles, and the documentation matching the schema."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs
from typer.testing import CliRunner

from services.cli import ops
from services.cli.app import app
from shared.consuming import ConsumerMonitor, Throttle
from shared.log import LOG_FIELDS, bind_causes, causes_of, trace_headers
from tests.support.infra import REPO
from tests.support.logs import SCHEMA_PATH, validator

pytestmark = pytest.mark.unit

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
EVENT = "3d5d5b98-3ec5-5fdc-805d-7d5128a9b414"
OTHER = "fe6ee258-6416-5f93-abcf-c5dfa7dec890"


def line(service: str, event: str, at: float, level: str = "info", **fields: Any) -> str:
    """A log line as a service writes it, `at` seconds after T0."""
    ts = (T0 + timedelta(seconds=at)).isoformat().replace("+00:00", "Z")
    return json.dumps({**fields, "event": event, "level": level, "ts": ts, "service": service})


def journey_logs() -> dict[str, list[str]]:
    """Three services' logs around two submissions; themes stores the first review a moment
    before intake logs that it forwarded it, as happens under load."""
    position: dict[str, Any] = {"topic": "t", "partition": 0}
    return {
        "intake": [
            line("intake", "service started", 0, release="0.1.0", mode="test"),
            line("intake", "using a generated secret; set it in production", 0.1, "warning"),
            line("intake", "submission accepted", 1.2, correlation_id=EVENT, event_id=EVENT,
                 offset=0, **position),
            line("intake", "submission accepted", 1.2, correlation_id=OTHER, event_id=OTHER,
                 offset=1, **position),
            line("intake", "submission rejected", 1.3, correlation_id=None, event_id=None,
                 reason="undecodable", offset=2, **position),
            line("intake", "batch processed", 1.3, records=4, accepted=2, duplicates=1,
                 rejected=1),
            line("intake", "consumer stats", 2, group="g-intake", lag={"t:0": 3}, lag_total=3),
            line("intake", "consumer stats", 4, group="g-intake", lag={"t:0": 0}, lag_total=0),
        ],
        "themes": [
            line("themes", "service started", 0.2),
            line("themes", "review stored", 1.1, correlation_id=EVENT, event_id=EVENT),
            line("themes", "review stored", 1.4, correlation_id=OTHER, event_id=OTHER),
            line("themes", "themes recomputed", 1.5, correlation_id=EVENT,
                 caused_by=[EVENT, OTHER]),
            line("themes", "snapshot published", 1.6, theme="domestic_abuse", version=1,
                 correlation_id=EVENT, caused_by=[EVENT, OTHER]),
            line("themes", "batch processed", 1.7, records=2),
            line("themes", "Unable connect to node with id 1", 3, "error", logger="aiokafka",
                 suppressed=120),
            line("themes", "dependency unreachable", 3.1, "warning", unreachable=["kafka"]),
            line("themes", "consumer stats", 3.2, group="g-themes", lag=None, lag_total=None),
        ],
        "recommendations": [
            line("recommendations", "service started", 0.3),
            line("recommendations", "batch processed", 1.8, records=1),
            line("recommendations", "action routed", 1.9, action_event="routed",
                 sub_group="safeguarding_in_education", version=1, correlation_id=EVENT,
                 caused_by=[EVENT, OTHER]),
            line("recommendations", "service stopped", 5),
        ],
    }  # fmt: skip


def all_lines() -> list[str]:
    return [text for texts in journey_logs().values() for text in texts]


def test_the_synthetic_lines_are_valid_lines() -> None:
    # So the tests below read what the services really write.
    for text in all_lines():
        assert list(validator().iter_errors(json.loads(text))) == []


def test_each_service_is_summarised_from_its_lines() -> None:
    parsed = ops.parse([*all_lines(), "", "Traceback (most recent call last):", "{}"])
    assert parsed.unreadable == 2
    summaries = ops.summarise(parsed.lines, now=T0 + timedelta(seconds=10), window=timedelta(1))
    assert [s.service for s in summaries] == ["intake", "themes", "recommendations"]
    intake, themes, recommendations = summaries

    assert intake.up_since == T0
    assert intake.stopped_at is None
    assert (intake.events_in, intake.events_out) == (4, 3)
    assert intake.rejections == {"undecodable": 1}
    assert intake.lag is not None
    assert (intake.lag.total, intake.lag.group) == (0, "g-intake")
    assert (intake.warnings, intake.errors) == (1, 0)
    assert intake.latest_warning is not None
    assert intake.latest_warning.event == "using a generated secret; set it in production"

    assert (themes.events_in, themes.events_out) == (2, 1)
    assert themes.lag is not None
    assert themes.lag.total is None
    assert (themes.warnings, themes.errors) == (1, 1)
    assert themes.latest_error is not None
    assert themes.latest_error.logger == "aiokafka"

    assert (recommendations.events_in, recommendations.events_out) == (1, 1)
    assert recommendations.stopped_at == T0 + timedelta(seconds=5)
    assert recommendations.lag is None


def test_trouble_counts_only_within_the_window() -> None:
    parsed = ops.parse(journey_logs()["themes"])
    # From 3.05 s: the warning at 3.1 s counts, the error at 3 s does not.
    [themes] = ops.summarise(
        parsed.lines, now=T0 + timedelta(seconds=10), window=timedelta(seconds=6.95)
    )
    assert (themes.warnings, themes.errors) == (1, 0)
    assert themes.latest_error is None


def test_a_journey_follows_the_work_through_caused_by_in_pipeline_order() -> None:
    parsed = ops.parse(all_lines())
    trail = ops.trace(parsed.lines, OTHER)
    assert [(t.service, t.event) for t in trail] == [
        ("intake", "submission accepted"),
        ("themes", "review stored"),
        ("themes", "themes recomputed"),
        ("themes", "snapshot published"),
        ("recommendations", "action routed"),
    ]
    # Intake's line comes first though themes wrote its first line about EVENT earlier.
    first = ops.trace(parsed.lines, EVENT)
    assert [t.event for t in first[:2]] == ["submission accepted", "review stored"]
    assert first[0].ts > first[1].ts
    assert ops.journey(first) == [
        "submission accepted",
        "review stored",
        "themes recomputed",
        "snapshot published",
        "action routed",
    ]
    assert ops.trace(parsed.lines, "nothing-like-it") == []


def write_logs(folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for service, texts in journey_logs().items():
        path = folder / f"{service}.log"
        path.write_text("\n".join(texts) + "\n")
        paths.append(str(path))
    return paths


def test_ops_reads_the_default_logs_and_prints_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_logs(tmp_path / "logs")
    monkeypatch.setenv("CASEREVIEW_LOCAL_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["ops", "--json", "--minutes", "0"])
    assert result.exit_code == 0, result.output
    summaries = json.loads(result.stdout)
    assert [s["service"] for s in summaries] == ["intake", "themes", "recommendations"]
    assert summaries[0]["rejections"] == {"undecodable": 1}
    assert summaries[0]["lag"]["total"] == 0
    # Nothing is recent with a zero-minute window.
    assert all(s["warnings"] == s["errors"] == 0 for s in summaries)

    table = CliRunner().invoke(app, ["ops"])
    assert table.exit_code == 0, table.output
    assert "Services, from their logs (warnings and errors: last 15 min)" in table.stdout
    assert "1 undecodable" in table.stdout


def test_ops_trace_prints_the_journey_from_given_logs(tmp_path: Path) -> None:
    paths = write_logs(tmp_path)
    args = [arg for path in paths for arg in ("--log", path)]
    shown = CliRunner().invoke(app, ["ops", "trace", OTHER, *args])
    assert shown.exit_code == 0, shown.output
    assert f"Journey of {OTHER}" in shown.stdout
    assert (
        "journey: submission accepted \u2192 review stored \u2192 themes recomputed \u2192 "
        "snapshot published \u2192 action routed"
    ) in shown.stdout
    as_json = CliRunner().invoke(app, ["ops", "trace", OTHER, "--json", *args])
    assert [doc["event"] for doc in json.loads(as_json.stdout)] == [
        "submission accepted",
        "review stored",
        "themes recomputed",
        "snapshot published",
        "action routed",
    ]

    unknown = CliRunner().invoke(app, ["ops", "trace", "no-such-event", *args])
    assert unknown.exit_code == 1
    assert unknown.stderr == "casereview: no log line mentions no-such-event\n"


def test_ops_reads_stdin_and_says_when_there_is_nothing_to_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    piped = CliRunner().invoke(app, ["ops", "--log", "-", "--json"], input="\n".join(all_lines()))
    assert piped.exit_code == 0, piped.output
    assert len(json.loads(piped.stdout)) == 3

    monkeypatch.setenv("CASEREVIEW_LOCAL_DIR", str(tmp_path))
    empty = CliRunner().invoke(app, ["ops"])
    assert empty.exit_code == 1
    assert empty.stderr.startswith(f"casereview: no service logs under {tmp_path / 'logs'}")
    missing = CliRunner().invoke(app, ["ops", "--log", str(tmp_path / "nope.log")])
    assert missing.exit_code == 1
    assert missing.stderr.startswith("casereview: cannot read ")


LOGGING_PROBE = """
import logging, sys, warnings
import structlog
from shared.log import configure_logging, get_logger
configure_logging("themes", "INFO", "json", throttle_s=60)
get_logger().info("review stored", event_id="e1", correlation_id="e1", topic="t", offset=3)
for n in range(500):
    logging.getLogger("aiokafka.conn").error("Unable connect to node with id %s: %s", 1, "refused")
logging.getLogger("uvicorn.error").info("Uvicorn running on %s", "http://127.0.0.1:1")
warnings.warn("something deprecated", DeprecationWarning, stacklevel=1)
raise RuntimeError("boom")
"""


def test_every_line_the_log_set_up_writes_is_json_with_the_base_fields() -> None:
    # A process of its own: the set-up changes process-wide logging and exception hooks.
    ran = subprocess.run(
        [sys.executable, "-W", "always", "-c", LOGGING_PROBE],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 1
    written = [json.loads(text) for text in ran.stderr.splitlines()]
    for doc in written:
        assert list(validator().iter_errors(doc)) == [], doc
    events = [(d["event"], d.get("logger")) for d in written]
    assert events == [
        ("review stored", None),
        ("Unable connect to node with id 1: refused", "aiokafka.conn"),
        ("Uvicorn running on http://127.0.0.1:1", "uvicorn.error"),
        (events[3][0], "py.warnings"),
        ("service crashed", None),
    ]
    assert "something deprecated" in events[3][0]
    crashed = written[-1]
    assert crashed["level"] == "critical"
    assert "RuntimeError: boom" in crashed["exception"]
    # 500 identical library errors within the interval are one line.
    assert "suppressed" not in written[1]


def test_a_throttle_lets_one_through_per_interval_and_counts_the_rest() -> None:
    throttle = Throttle(interval_s=3600)
    assert throttle.allow("x") == 0
    assert throttle.allow("x") is None
    assert throttle.allow("x") is None
    assert throttle.allow("y") == 0
    expired = Throttle(interval_s=0)
    assert expired.allow("x") == 0
    assert expired.allow("x") == 0


async def test_the_monitor_warns_once_per_interval_and_says_when_the_dependency_is_back() -> None:
    answers = {"kafka": False}

    async def kafka() -> bool:
        return answers["kafka"]

    async def mongodb() -> bool:
        return True

    monitor = ConsumerMonitor("g", 3600, {"kafka": kafka, "mongodb": mongodb})
    with capture_logs() as logs:
        await monitor.report()
        monitor.warn("batch failed; it will be retried", group="g", error="E: x")
        await monitor.report()
        answers["kafka"] = True
        await monitor.report()
    events = [(entry["event"], entry["log_level"]) for entry in logs]
    assert events == [
        ("dependency unreachable", "warning"),
        ("consumer stats", "info"),
        ("consumer stats", "info"),
        ("dependency reachable again", "info"),
        ("consumer stats", "info"),
    ]
    assert logs[0]["unreachable"] == ["kafka"]
    assert logs[0]["suppressed"] == 0
    assert logs[1]["lag"] is None
    # With the broker back, the lag is asked again (no consumer yet: no partitions).
    assert logs[4]["lag"] == {}
    assert logs[3]["recovered"] == ["kafka"]
    assert await monitor.readiness() == {"kafka": True, "mongodb": True, "consumer_assigned": False}


def test_causes_travel_as_a_bounded_header() -> None:
    assert trace_headers() == {}
    with bind_causes(["e1", "e2", "e1"]):
        assert trace_headers() == {"caused_by": "e1,e2"}
    assert trace_headers() == {}
    many = [f"e{n}" for n in range(30)]
    assert causes_of(",".join(many).encode()) == tuple(many[:20])
    assert causes_of(b"e1,e1,,e2") == ("e1", "e2")
    assert causes_of(None) == ()


def test_the_documented_fields_are_the_schema_fields() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    documented = re.findall(
        r"^\| `([a-z_]+)` \|", (REPO / "docs" / "operations.md").read_text(), re.MULTILINE
    )
    assert sorted(documented) == sorted(schema["properties"])
    assert set(LOG_FIELDS) <= set(schema["properties"])
    assert set(schema["required"]) == {"ts", "level", "service", "event"}
