"""Headless Chromium (Debian's package) renders a page to PNG and dumps the DOM it built."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# Without the background-networking flags Chromium keeps dialling hosts this machine cannot
# reach; without --no-sandbox it will not start as root.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


@dataclass(frozen=True)
class Rendered:
    """What Chromium made of a page."""

    png: Path
    dom: str


def chromium() -> str:
    """The browser's path; a clear failure where it is not installed."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "Chromium is needed to render the briefing: `make browser` installs it"
    return found


def render(page: Path, png: Path, profile: Path, width: int = 1100, height: int = 2400) -> Rendered:
    """Screenshots the page and returns the DOM after layout."""
    browser = chromium()
    common = [browser, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"]
    shot = subprocess.run(
        [*common, f"--screenshot={png}", page.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    dom = subprocess.run(
        [*common, "--dump-dom", page.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    return Rendered(png=png, dom=dom.stdout)
