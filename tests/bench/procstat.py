"""CPU time and memory of processes, from /proc (Linux)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds_of(stat: str, ticks_per_second: int = CLOCK_TICKS) -> float:
    """utime + stime from the text of /proc/<pid>/stat, in seconds.

    The command name (field 2) may hold spaces and parentheses, so fields are counted
    from the last closing parenthesis: utime and stime are fields 14 and 15.
    """
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / ticks_per_second


def tree_cpu_seconds_of(
    stat: str, children: list[str], ticks_per_second: int = CLOCK_TICKS
) -> float:
    """The CPU of a process and of its children, from its /proc/<pid>/stat and its live
    children's: its own utime + stime, what its children that ended and it reaped spent
    (cutime + cstime, fields 16 and 17), and each live child's utime + stime."""
    fields = stat.rsplit(")", 1)[1].split()
    own = sum(int(f) for f in fields[11:15]) / ticks_per_second
    return own + sum(cpu_seconds_of(child, ticks_per_second) for child in children)


def memory_kib_of(status: str) -> dict[str, int]:
    """VmRSS and VmHWM (peak resident set) from the text of /proc/<pid>/status, in KiB."""
    out: dict[str, int] = {}
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = int(value.split()[0])
    return out


@dataclass(frozen=True)
class Sample:
    """One process at one moment."""

    cpu_s: float
    rss_kib: int
    peak_rss_kib: int


def sample(pid: int) -> Sample | None:
    """The process's CPU time and memory now; None once it has gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    memory = memory_kib_of(status)
    return Sample(cpu_seconds_of(stat), memory.get("VmRSS", 0), memory.get("VmHWM", 0))


def sample_tree(pid: int) -> Sample | None:
    """`sample`, with the CPU of the process's children counted in (a PostgreSQL server's
    backends, which come and go); memory is the parent's own."""
    own = sample(pid)
    if own is None:
        return None
    children = []
    for path in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = path.read_text()
        except OSError:
            continue
        if int(text.rsplit(")", 1)[1].split()[1]) == pid:
            children.append(text)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return Sample(tree_cpu_seconds_of(stat, children), own.rss_kib, own.peak_rss_kib)


def pid_from_file(path: Path) -> int | None:
    """The pid a server's pid file names (on its first line), if that process is alive."""
    try:
        pid = int(path.read_text().split("\n", 1)[0].strip())
    except (OSError, ValueError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


def machine() -> dict[str, object]:
    """Cores, memory and load: the conditions a measurement was taken under."""
    meminfo = memory_total_kib(Path("/proc/meminfo").read_text())
    load = Path("/proc/loadavg").read_text().split()[:3]
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(meminfo / 1024 / 1024, 1),
        "load_average": [float(x) for x in load],
    }


def memory_total_kib(meminfo: str) -> int:
    """MemTotal from the text of /proc/meminfo, in KiB."""
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    return 0
