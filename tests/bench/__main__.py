"""`python -m tests.bench`: the benchmark; `--help` lists its options."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.settings import CommonSettings
from tests.bench import phases, report
from tests.bench.load import latency_load, throughput_load
from tests.bench.pipeline import SERVICES, Pipeline, settings_values
from tests.bench.procstat import Sample, machine, pid_from_file, sample, sample_tree
from tests.support.infra import REPO

PHASES = ("baseline", "throughput", "latency")
# Every agency (five) reviews every case, with one to three revisions: ten events a case.
EVENTS_PER_CASE = 10


def _env(name: str, default: str) -> str:
    return os.environ.get(f"BENCH_{name}", default)


# The numeric options: flag, type, default, help. Each also reads BENCH_<FLAG> (upper case,
# dashes as underscores), e.g. BENCH_LATENCY_RATE.
NUMBERS: tuple[tuple[str, type[int] | type[float], str, str], ...] = (
    ("--duration", float, "60", "seconds each measured phase should last (default 60)"),
    ("--target-rate", float, "5000", "size the throughput load to last --duration at this rate"),
    ("--latency-rate", float, "1000", "offered load of the latency phase, events/s (default 1000)"),
    ("--audits", int, "50", "audits in the throughput load (default 50)"),
    ("--cases", int, "0", "cases per audit; 0 sizes them from --duration and --target-rate"),
    ("--active-audits", int, "8", "audits under way at once in the throughput load (default 8)"),
    ("--latency-audits", int, "10", "audits the latency markers go round (default 10)"),
    ("--poison", float, "0.01", "share of extra bad records and re-sends (default 0.01)"),
    ("--partitions", int, "4", "partitions of each topic (default 4)"),
    ("--seed", int, "7", "seed of the generated load (default 7)"),
    ("--timeout", float, "0", "seconds a phase may take to drain; 0: max(300, 6 x duration)"),
)


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line; each option also reads a `BENCH_<NAME>` environment variable."""
    p = argparse.ArgumentParser(
        prog="python -m tests.bench",
        description="Throughput, latency and cost of the three services against a raw-Kafka "
        "baseline, on the broker and store the CASEREVIEW_ settings name.",
    )
    for flag, kind, default, text in NUMBERS:
        env = flag.removeprefix("--").upper().replace("-", "_")
        p.add_argument(flag, type=kind, default=kind(_env(env, default)), help=text)
    p.add_argument(
        "--phases",
        default=_env("PHASES", ",".join(PHASES)),
        help=f"comma-separated, from {', '.join(PHASES)}",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a service setting for this run, e.g. themes_batch_max=2000",
    )
    p.add_argument(
        "--replicas",
        action="append",
        default=[],
        metavar="SERVICE=N",
        help="run N processes of a service in its consumer group, e.g. themes=2",
    )
    p.add_argument(
        "--store-timing",
        action="store_true",
        default=_env("STORE_TIMING", "") == "1",
        help="time every store command the services send (PyMongo monitoring)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        default=_env("PROFILE", "") == "1",
        help="sample the services with py-spy during the throughput phase",
    )
    p.add_argument("--keep", action="store_true", help="keep the run's topics and database")
    p.add_argument("--out", type=Path, default=REPO / ".local" / "bench")
    return p.parse_args(argv)


POSTGRESQL = "postgresql"


def replicas(items: list[str]) -> dict[str, int]:
    """`--replicas` as processes per service; a service named twice takes the last count."""
    out: dict[str, int] = {}
    for item in items:
        name, _, count = item.partition("=")
        if name not in SERVICES or not count.isdigit() or int(count) < 1:
            raise SystemExit(f"--replicas {item}: want SERVICE=N, N ≥ 1, SERVICE one of {SERVICES}")
        out[name] = int(count)
    return out


@dataclass(frozen=True)
class Servers:
    """The broker and store under test, and their processes where they run here."""

    bootstrap: str
    mongo_url: str
    pids: dict[str, int]


def servers() -> Servers:
    """From the CASEREVIEW_ settings; the native servers' pids when they are the local ones."""
    settings = CommonSettings()
    run_dir = Path(os.environ.get("CASEREVIEW_LOCAL", REPO / ".local")) / "run"
    pids: dict[str, int] = {}
    if "CASEREVIEW_KAFKA_BOOTSTRAP" not in os.environ or os.environ.get("CASEREVIEW_LOCAL"):
        for name in ("kafka", "ferretdb"):
            pid = pid_from_file(run_dir / f"{name}.pid")
            if pid is not None:
                pids[name] = pid
        # FerretDB's own PostgreSQL cluster (deploy/ferretdb/ferretdb.sh), whose postmaster's
        # pid file starts with its pid. The script notes where the cluster is: run as root
        # from a checkout its user cannot reach, that is under /tmp.
        noted = run_dir / "postgresql.data"
        data = (
            Path(noted.read_text().strip())
            if noted.exists()
            else run_dir.parent / "ferretdb-pg" / "data"
        )
        pid = pid_from_file(data / "postmaster.pid")
        if pid is not None:
            pids[POSTGRESQL] = pid
    return Servers(settings.kafka_bootstrap, settings.mongo_url, pids)


def sample_server(name: str, pid: int) -> Sample | None:
    """A server process now; PostgreSQL with its backends."""
    return sample_tree(pid) if name == POSTGRESQL else sample(pid)


def server_sampler(where: Servers) -> phases.Sampler:
    """Samples every broker and store process that runs here, and the bench's own."""
    return lambda: (
        {k: sample_server(k, pid) for k, pid in where.pids.items()}
        | {phases.BENCH: sample(os.getpid())}
    )


async def pipeline_phase(
    name: str,
    args: argparse.Namespace,
    where: Servers,
    workdir: Path,
    overrides: dict[str, str],
    timeout_s: float,
) -> dict[str, Any]:
    """One pipeline phase on a namespace, services and database of its own."""
    ns = phases.namespace()
    values = settings_values(
        ns,
        bootstrap=where.bootstrap,
        mongo_url=where.mongo_url,
        local_dir=workdir,
        overrides={"topic_partitions": str(args.partitions), **overrides},
    )
    pipeline = Pipeline(
        values,
        workdir / name,
        args.partitions,
        store_timing=args.store_timing,
        replicas=replicas(args.replicas),
    )
    pipeline.workdir.mkdir(parents=True, exist_ok=True)
    warm = throughput_load(
        audits=1, cases_per_audit=3, active_audits=1, poison_share=0, seed=args.seed + 1000
    )
    if name == "throughput":
        cases = args.cases or max(
            1, round(args.duration * args.target_rate / (args.audits * EVENTS_PER_CASE))
        )
        load = throughput_load(
            audits=args.audits,
            cases_per_audit=cases,
            active_audits=args.active_audits,
            poison_share=args.poison,
            seed=args.seed,
        )
        shape = {
            "audits": args.audits,
            "cases_per_audit": cases,
            "active_audits": args.active_audits,
        }
    else:
        load = latency_load(
            events=round(args.duration * args.latency_rate),
            audits=args.latency_audits,
            seed=args.seed,
        )
        shape = {"audits": args.latency_audits, "markers": load.events}
    reference = phases.reference_of(warm, load)
    phases.console.print(f"[bold]{name}[/]: {load.events:,} records ({shape}), namespace {ns}")
    forwarded = phases.Forwarded() if name == "latency" else None
    run = await phases.open_run(
        pipeline, phases.reference_themes(reference), forwarded, server_sampler(where)
    )
    result: dict[str, Any] = {"namespace": ns, "load": shape}
    try:
        await phases.warm_up(pipeline, warm, run.snapshots, 120)
        if name == "throughput":
            result |= await phases.throughput(
                run, load, reference, timeout_s, pipeline.workdir if args.profile else None
            )
        else:
            assert forwarded is not None
            result |= await phases.latency(run, load, args.latency_rate, timeout_s, forwarded)
        phases.console.print("  settling before the correctness check…")
        # A phase that ran out of time would only run out of time again here.
        result["settled"] = result["completed"] and await phases.settle(
            pipeline, run.lag, timeout_s
        )
        # Only a drained pipeline can be held to the reference.
        result["correctness"] = (
            await phases.check(pipeline, reference, run.snapshots, run.actions)
            if result["settled"]
            else None
        )
    finally:
        result |= await phases.close_run(run, args.keep)
    return result


# A full-size run logs a line per submission in two services: keep each log's end only.
LOG_TAIL_BYTES = 5 * 1024 * 1024


def keep_artifacts(workdir: Path, keep: Path) -> None:
    """Copies the services' logs (their last 5 MiB), store timings and profiles out of the
    temporary folder."""
    keep.mkdir(parents=True, exist_ok=True)
    for path in workdir.rglob("*"):
        if path.is_file() and path.suffix in (".txt", ".log", ".json"):
            with path.open("rb") as source:
                if path.suffix == ".log":
                    source.seek(max(0, path.stat().st_size - LOG_TAIL_BYTES))
                (keep / f"{path.parent.name}-{path.name}").write_bytes(source.read())


async def main(args: argparse.Namespace) -> dict[str, Any]:
    """Runs the chosen phases in order and returns everything measured."""
    where = servers()
    chosen = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = sorted(set(chosen) - set(PHASES))
    if unknown:
        raise SystemExit(f"unknown phase(s) {', '.join(unknown)}; choose from {', '.join(PHASES)}")
    overrides = dict(item.split("=", 1) for item in args.set)
    timeout_s = args.timeout or max(300.0, 6 * args.duration)
    results: dict[str, Any] = {
        "run": phases.namespace(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.executable).name, "-m", "tests.bench", *sys.argv[1:]]),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine(),
        "python": platform.python_version(),
        "servers": {
            "kafka_bootstrap": where.bootstrap,
            "mongo": CommonSettings(mongo_url=where.mongo_url).mongo_host(),
            "measured_server_pids": where.pids,
        },
        "phases": {},
    }
    with tempfile.TemporaryDirectory(prefix="casereview-bench-") as tmp:
        workdir = Path(tmp)
        for name in chosen:
            if name == "baseline":
                cases = args.cases or max(
                    1, round(args.duration * args.target_rate / (args.audits * EVENTS_PER_CASE))
                )
                load = throughput_load(
                    audits=args.audits,
                    cases_per_audit=cases,
                    active_audits=args.active_audits,
                    poison_share=args.poison,
                    seed=args.seed,
                )
                phases.console.print(f"[bold]baseline[/]: {load.events:,} records")
                results["phases"]["baseline"] = await phases.baseline(
                    bootstrap=where.bootstrap,
                    namespace=phases.namespace(),
                    partitions=args.partitions,
                    load=load,
                    workdir=workdir,
                    timeout_s=timeout_s,
                    servers=server_sampler(where),
                )
            else:
                results["phases"][name] = await pipeline_phase(
                    name, args, where, workdir, overrides, timeout_s
                )
            keep_artifacts(workdir, args.out / results["run"])
    results["load_average_after"] = machine()["load_average"]
    results["summary"] = report.summary(results)
    return results


def run(argv: list[str]) -> int:
    """Runs the benchmark, writes the JSON, prints the table; non-zero when a check failed."""
    args = parse(argv)
    results = asyncio.run(main(args))
    path = report.write(results, args.out)
    report.show(results)
    phases.console.print(f"results: {path}")
    return 0 if results["summary"]["correct"] is not False else 1


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
