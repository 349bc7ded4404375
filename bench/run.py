"""`python -m bench`: start a local control plane, run the scenarios in order, write the results.

    .venv/bin/python -m bench                 # the full run (about 15 minutes on 2 cores)
    .venv/bin/python -m bench --quick         # every size and duration shrunk: a smoke run (~3 min)
    .venv/bin/python -m bench --only drift    # setup + cold convergence + the drift scenario

The scenarios share one control plane and run in this order, each leaving the cluster as the next
needs it: memory at 0 namespaces; N namespaces created; calibration (bare client, then undone);
cold convergence (the operator applies the baseline to the same N namespaces); drift repair; steady
state (through at least one backstop pass; memory at N); restart; create latency (idle, then a burst);
memory at scale (namespaces added up to --memory-namespaces). Cold convergence always runs: every
later scenario needs the converged baseline.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from baseline_operator import __version__
from bench import report, scenarios
from bench.harness import BenchError
from bench.scale import QUICK_SCALE, ScaleSettings, run_scale
from bench.scenarios import QUICK, Bench, Settings
from localcluster import LocalCluster

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import FrameType

logger = logging.getLogger("bench")

RESULTS = Path(__file__).resolve().parent / "results"
CHOICES = ("calibration", "drift", "steady", "restart", "create", "memory", "pods", "scale")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    defaults = Settings()
    parser.add_argument("--quick", action="store_true", help="shrink every size and duration (smoke run)")
    parser.add_argument(
        "--namespaces", type=int, help=f"N, the namespaces to converge ({defaults.namespaces})"
    )
    parser.add_argument(
        "--memory-namespaces",
        type=int,
        help=f"selected namespaces for the last memory figure ({defaults.memory_namespaces})",
    )
    parser.add_argument(
        "--steady-seconds", type=float, help=f"the steady-state period ({defaults.steady_seconds:g} s)"
    )
    parser.add_argument(
        "--backstop-interval",
        type=float,
        help=f"the operator's --backstop-interval, below the period ({defaults.backstop_interval:g} s)",
    )
    parser.add_argument(
        "--only",
        default=",".join(CHOICES),
        help=f"comma-separated scenarios besides cold convergence, from: {', '.join(CHOICES)} (default: all)",
    )
    parser.add_argument(
        "--sizes",
        help="comma-separated namespace counts of the scale runs "
        f"({','.join(map(str, ScaleSettings().sizes))}; --quick: {','.join(map(str, QUICK_SCALE.sizes))})",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="where results go (%(default)s)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record the operator with py-spy during each cold convergence (kept in the state folder)",
    )
    parser.add_argument("--keep-state", action="store_true", help="keep the control plane's state and logs")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    settings = QUICK if args.quick else Settings()
    given = {
        "namespaces": args.namespaces,
        "memory_namespaces": args.memory_namespaces,
        "steady_seconds": args.steady_seconds,
        "backstop_interval": args.backstop_interval,
        "profile": args.profile or None,
    }
    return dataclasses.replace(settings, **{key: value for key, value in given.items() if value is not None})


def scale_settings_from(args: argparse.Namespace) -> ScaleSettings:
    settings = dataclasses.replace(QUICK_SCALE if args.quick else ScaleSettings(), profile=args.profile)
    if args.sizes:
        settings = dataclasses.replace(settings, sizes=tuple(int(size) for size in args.sizes.split(",")))
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args = build_parser().parse_args(argv)
    only = frozenset(name.strip() for name in args.only.split(",") if name.strip())
    if only - set(CHOICES):
        logger.error("unknown scenarios: %s", ", ".join(sorted(only - set(CHOICES))))
        return 2
    settings = settings_from(args)
    if settings.steady_seconds <= settings.backstop_interval:
        logger.error("--steady-seconds must be longer than --backstop-interval, so that a pass happens")
        return 2
    state = Path(tempfile.mkdtemp(prefix="baseline-bench-"))
    started = time.monotonic()
    results: dict[str, Any] = {
        "date": dt.date.today().isoformat(),  # noqa: DTZ011 - the local date names the file
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": settings.quick,
        "operator_version": __version__,
        "settings": dataclasses.asdict(settings),
        "scenarios_run": sorted(only if only == {"scale"} else only | {"cold"}),
        "environment": _environment(),
    }
    # Background jobs inherit SIGINT ignored; and SIGTERM should stop the cluster and keep the results too.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        # `--only scale` runs the scale series alone; anything else runs on the shared control plane first.
        failed = run_all(settings, only, state, results) if only != {"scale"} else False
        if "scale" in only:
            results["scale"] = run_scale(scale_settings_from(args), state)
            versions = [point.get("kubernetes") for point in results["scale"].values()]
            results["environment"].setdefault("kubernetes", next(filter(None, versions), None))
            failed = failed or any("error" in point for point in results["scale"].values())
    except KeyboardInterrupt:
        logger.warning("interrupted: writing what was measured so far")
        results["interrupted"] = True
        failed = True
    finally:
        results["wall_time_s"] = round(time.monotonic() - started, 1)
        results["environment"]["load_after"] = _load()
        stem = results["date"] + ("-quick" if settings.quick else "")
        for path in report.write(results, args.output, stem):
            logger.info("wrote %s", path)
    if args.keep_state or failed or args.profile:
        logger.info("state and logs kept in %s", state)
    else:
        shutil.rmtree(state, ignore_errors=True)
    return 1 if failed else 0


def run_all(settings: Settings, only: frozenset[str], state: Path, results: dict[str, Any]) -> bool:
    """Run the scenarios in order into `results["scenarios"]`; whether any failed."""
    found: dict[str, Any] = results.setdefault("scenarios", {})
    cluster = LocalCluster(state / "cluster")
    logger.info("starting the control plane in %s", state)
    cluster.start()
    try:
        results["environment"]["kubernetes"] = cluster.version().get("gitVersion")
        bench = Bench.prepare(settings, state, cluster)
    except BaseException:
        cluster.stop()
        raise
    failed = False

    def step(name: str, scenario: Callable[[Bench], dict[str, Any]], *, required: bool = False) -> None:
        nonlocal failed
        logger.info("%s ...", name)
        began = time.monotonic()
        try:
            found[name] = scenario(bench)
        except BenchError as error:
            failed = True
            tail = bench.operator.tail(15) if bench.operator is not None else ""
            logger.exception("%s failed; operator log ends with:\n%s", name, tail)
            found[name] = {"error": str(error)}
            if required:
                raise
        logger.info("%s done in %.0f s", name, time.monotonic() - began)

    try:
        if "memory" in only:
            step("memory_idle", scenarios.memory_idle)
        began = time.monotonic()
        bench.add_namespaces([f"bench-{index:05d}" for index in range(settings.namespaces)])
        results["setup"] = {"namespaces_created_s": round(time.monotonic() - began, 1)}
        if "calibration" in only:
            step("calibration", scenarios.calibration)
        step("cold_convergence", scenarios.cold_convergence, required=True)
        for name, scenario in (
            ("drift", scenarios.drift_repair),
            ("steady", scenarios.steady_state),
            ("restart", scenarios.restart),
            ("create", scenarios.create_latency),
            ("memory", scenarios.memory_at_scale),
            ("pods", scenarios.pods_memory),
        ):
            if name in only:
                step(scenario.__name__, scenario)
    except BenchError:
        failed = True
    finally:
        results["api_retries"] = _retries(bench)
        bench.close()
        cluster.stop()
    return failed


def _retries(bench: Bench) -> dict[str, Any]:
    if bench.operator is not None:
        bench.operator_throttled += bench.operator.throttled_now()
    throttled = [entry for entry in bench.audit.between(0) if entry.code == 429]  # noqa: PLR2004 - HTTP 429
    return {"audit_log_429": len(throttled), "metrics_429": bench.operator_throttled}


def _interrupt(signum: int, frame: FrameType | None) -> None:
    del signum, frame
    raise KeyboardInterrupt


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _environment() -> dict[str, Any]:
    memory_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(memory_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_before": _load(),
    }


if __name__ == "__main__":
    sys.exit(main())
