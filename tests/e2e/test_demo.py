"""The demo path end to end: the three services as processes, then `casereview` as users run it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from shared.mongo import Document
from tests.support.browser import render
from tests.support.infra import REPO, Servers
from tests.support.services import ServiceProcess, environment, free_port, process_values

pytestmark = pytest.mark.e2e

AUDIT = "paqa-2020-05-mental-health"
SUB_GROUPS = {
    "safeguarding_in_education",
    "domestic_abuse_operational_group",
    "business_group",
    "neglect_strategy_group",
}


def casereview(
    values: dict[str, Any], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {**environment(values), "COLUMNS": "140"}
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def values(servers: Servers, namespace: str, tmp_path: Path) -> dict[str, Any]:
    ports = {name: free_port() for name in ("intake", "themes", "recommendations")}
    return process_values(servers, namespace, tmp_path, ports, stats_interval_s=1)


@pytest.fixture
def running(
    values: dict[str, Any], tmp_path: Path, mongo: AsyncMongoClient[Document]
) -> Iterator[list[ServiceProcess]]:
    made = casereview(values, "init-secrets")
    assert made.returncode == 0, made.stderr
    processes = [
        ServiceProcess(name, values, tmp_path / f"{name}.log")
        for name in ("intake", "themes", "recommendations")
    ]
    try:
        for process in processes:
            process.start()
        yield processes
    finally:
        for process in reversed(processes):
            process.stop()


def test_the_demo_reproduces_the_reference_audit(
    values: dict[str, Any], running: list[ServiceProcess], tmp_path: Path
) -> None:
    started = time.monotonic()
    demo = casereview(values, "demo")
    took = time.monotonic() - started
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert took < 60
    assert "The pipeline reproduced the reference audit's figures and routing" in demo.stdout
    assert "personal_data_in_identifier" in demo.stdout
    # No case reference as sent appears in what the demo prints.
    for ref in ("C01", "C06", "9434765919"):
        assert ref not in demo.stdout + demo.stderr

    themes = json.loads(casereview(values, "themes", AUDIT, "--json").stdout)
    figures = {
        t["theme"]: (t["cases_with_theme"], t["descriptor"], t["is_pattern"])
        for t in themes["themes"]
    }
    assert figures["poor_school_attendance"] == (5, "almost_all", True)
    assert figures["domestic_abuse"] == (4, "most", True)
    assert figures["mh_intervention_delayed"] == (2, "some", False)
    assert figures["young_carer"] == (1, "few", False)
    assert themes["audit"]["cases"] == 6

    actions = json.loads(casereview(values, "actions", "--json").stdout)
    assert {a["sub_group"] for a in actions} == SUB_GROUPS
    versions = {a["action_id"]: a["version"] for a in actions}

    out = tmp_path / "out"
    html = (out / "briefing.html").read_text()
    assert html.count('class="bar') == len(themes["themes"])
    # Chromium lays the page out and draws it; the PNG is kept for a person to look at.
    rendered = render(out / "briefing.html", out / "briefing.png", tmp_path / "chromium")
    assert rendered.png.stat().st_size > 50_000
    assert rendered.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    drawn = set(re.findall(r'data-theme="([a-z_]+)"', rendered.dom))
    assert drawn == {t["theme"] for t in themes["themes"]}
    assert rendered.dom.count('class="bar') == len(themes["themes"])
    for heading in (
        "About the audit",
        "Key messages and findings",
        "Examples of good practice",
        "Identified areas for improvement",
        "Recommendations",
    ):
        assert heading in rendered.dom
    assert "in almost all cases" in (out / "briefing.md").read_text()

    public = tmp_path / "public.md"
    written = casereview(
        values, "briefing", AUDIT, "--format", "md", "--public", "--out", str(public)
    )
    assert written.returncode == 0, written.stderr
    assert "fewer than 3 of 6 cases" in public.read_text()

    # Again: every submission is a duplicate, so nothing changes but one more rejection.
    again = casereview(values, "demo")
    assert again.returncode == 0, again.stdout + again.stderr
    after = json.loads(casereview(values, "actions", "--json").stdout)
    assert {a["action_id"]: a["version"] for a in after} == versions
    rejected = json.loads(casereview(values, "rejected", "--json").stdout)
    assert [r["reason"] for r in rejected] == ["personal_data_in_identifier"] * 2


def test_a_stopped_service_is_named(values: dict[str, Any]) -> None:
    result = casereview(values, "audits")
    assert result.returncode == 1
    assert result.stderr == f"casereview: themes service not reachable at {values['themes_url']}\n"
