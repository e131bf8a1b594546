"""`casereview submit`: JSON lines are checked first, and a bad line is named by its number."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli.app import app
from services.cli.submission import LineError, parse_lines
from tests.support.findings import finding

pytestmark = pytest.mark.unit


def lines(*docs: object) -> str:
    return "\n".join(d if isinstance(d, str) else json.dumps(d) for d in docs) + "\n"


def test_good_lines_are_sent_as_written_keyed_by_audit_and_case() -> None:
    text = lines(finding(ref="C01"), "", finding(ref="C02", agency_id="county-camhs"))
    parsed = parse_lines(text)
    assert [p.number for p in parsed] == [1, 3]
    assert parsed[0].key == b"paqa-2020-05-mental-health/C01"
    assert parsed[1].agency_id == "county-camhs"
    assert json.loads(parsed[0].value) == finding(ref="C01", event_id=parsed[0].event_id)


def test_invalid_json_names_the_line() -> None:
    text = lines(finding(), finding(), "{not json")
    with pytest.raises(LineError, match=r"^line 3: not JSON \(.+ at column \d+\)$"):
        parse_lines(text)


def test_a_schema_violation_names_the_line_and_field_but_not_the_value() -> None:
    bad = finding()
    bad["case"]["age_band"] = "943 476 5919"
    with pytest.raises(LineError) as caught:
        parse_lines(lines(finding(), "", bad))
    message = str(caught.value)
    assert message.startswith("line 3: not an agency-finding v1 event: case.age_band:")
    assert "943 476 5919" not in message


def test_blank_input_is_no_events() -> None:
    assert parse_lines("\n  \n") == []


def test_the_command_stops_before_sending_with_one_line_on_stderr(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(lines(finding(), {"schema_version": 1}))
    # Nothing listens here: had the command tried to send, it would say Kafka is unreachable.
    env = {"CASEREVIEW_KAFKA_BOOTSTRAP": "127.0.0.1:1"}
    result = CliRunner().invoke(app, ["submit", str(path)], env=env)
    assert result.exit_code == 1
    assert result.stdout == ""
    (only,) = result.stderr.strip().splitlines()
    assert only.startswith(
        f"casereview: {path} line 2: not an agency-finding v1 event: event_id: Field required"
    )


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["submit", str(tmp_path / "nope.jsonl")])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"casereview: cannot read {tmp_path / 'nope.jsonl'}")
    assert len(result.stderr.strip().splitlines()) == 1


def test_kafka_down_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(lines(finding()))
    env = {"CASEREVIEW_KAFKA_BOOTSTRAP": "127.0.0.1:1"}
    result = CliRunner().invoke(app, ["submit", str(path)], env=env)
    assert result.exit_code == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("casereview: kafka at 127.0.0.1:1 did not accept a connection")
    )


def test_a_settings_error_is_one_line_without_the_values() -> None:
    # The console script's entry point, as a user runs it: settings come from the environment.
    env = {
        **os.environ,
        "CASEREVIEW_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "CASEREVIEW_KAFKA_SASL_PASSWORD": "s3cret-value",
    }
    env.pop("CASEREVIEW_KAFKA_SASL_USERNAME", None)
    result = subprocess.run(
        [sys.executable, "-c", "from services.cli.app import main; main()", "audits"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("casereview: settings: ")
    assert "CASEREVIEW_KAFKA_SASL_USERNAME" in result.stderr
    assert "s3cret-value" not in result.stderr
    assert "Traceback" not in result.stderr
