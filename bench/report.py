"""Turn a run's figures into `bench/results/<date>.json`, a markdown summary and a PNG chart.

The targets are those of the performance issue; each is reported met or not met, with the figure it
was judged on. The chart shows convergence over time (calibration client vs operator), the latency
distributions (create, drift repair) and the operator's memory.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from matplotlib.axes import Axes

logger = logging.getLogger("bench.report")

_CURVE_POINTS = 100
_MS = 1000.0

DEFINITIONS = {
    "calibration": "A bare client (Python http.client, 16 threads, keep-alive, no operator running) "
    "server-side-applies exactly the bodies the operator would write for the N namespaces (from the "
    "operator's own builders), as fast as the API server accepts them; from the first request until a "
    "watch has seen every object in place. The objects are then deleted and the Namespace/ServiceAccount "
    "fields released, so the operator converges the very same namespaces.",
    "cold_convergence": "The N namespaces exist, the operator is running and ready; the SecurityBaseline "
    "is created. From the create's answer until (a) a watch has seen every object in place in every "
    "namespace and (b) the status says Ready with compliantNamespaces = matchedNamespaces = N.",
    "create_latency": "From the namespace's creation (its create's answer or its watch event, whichever "
    "came first) until a watch has seen all 7 objects/fields of the namespace in place. Includes the "
    "default ServiceAccount appearing, created by the controller-manager or, when it comes first, by the "
    "operator's apply of its token-mount field (counted from the audit log); the split is shown.",
    "drift_repair": "Per object, from the watch event of its deletion to the watch event of the "
    "re-created object (a new uid). The storm target is judged from the first DELETE sent until the "
    "last object is back, which includes the time the benchmark took to delete.",
    "steady_state": "Requests of the operator's user in the API server's audit log over the period "
    "(watches counted when they start). Backstop passes = reconciles in the period / namespaces.",
    "restart": "SIGTERM, then start at the default --backstop-interval (as in production). Live: /healthz "
    "answers 200. Handling events: the operator has logged that its cache is filled (one list per watched "
    "kind); the watches, and so the event handlers, start right after. Ready: the reconcile counter "
    "(baseline_operator_reconcile_duration_seconds_count) has reached the number of namespaces after "
    "that and then not moved for 3 s; ready_after_s is the time of its last increment, i.e. the first "
    "pass over every namespace from complete caches is done. Writes are counted from the SIGTERM until "
    "a quiet window after ready ends.",
    "memory": "VmRSS (now) and VmHWM (peak) from /proc/<pid>/status of the operator process. "
    "Judged on VmRSS at rest.",
}


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest value with at least `fraction` of the values at or below."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def summarize(seconds: Sequence[float]) -> dict[str, Any]:
    """Count, p50, p99 and max of latencies given in seconds, in milliseconds."""
    if not seconds:
        return {"count": 0}
    return {
        "count": len(seconds),
        "p50_ms": round(_MS * percentile(seconds, 0.5), 1),
        "p99_ms": round(_MS * percentile(seconds, 0.99), 1),
        "max_ms": round(_MS * max(seconds), 1),
    }


def curve(completions: Sequence[float], points: int = _CURVE_POINTS) -> list[list[float]]:
    """[seconds, namespaces done] pairs from sorted completion times, thinned to about `points`."""
    step = max(1, len(completions) // points)
    pairs = [[completions[index], index + 1] for index in range(0, len(completions), step)]
    if completions and pairs[-1][1] != len(completions):
        pairs.append([completions[-1], len(completions)])
    return pairs


@dataclass(frozen=True)
class Target:
    """One target of the issue, what was measured against it, and whether it was met."""

    name: str
    limit: str
    measured: str
    met: bool | None


def _get(results: Mapping[str, Any], *path: str) -> Any:
    found: Any = results
    for part in path:
        if not isinstance(found, dict) or part not in found:
            return None
        found = found[part]
    return found


def _at_most(name: str, limit: float, value: float | None, unit: str, shown: str | None = None) -> Target:
    if value is None:
        return Target(name, f"<= {limit:g} {unit}", "not measured", None)
    return Target(name, f"<= {limit:g} {unit}", shown or f"{value:g} {unit}", value <= limit)


def targets(results: Mapping[str, Any]) -> list[Target]:
    scenarios = results.get("scenarios", {})
    cold = _get(scenarios, "cold_convergence", "seconds")
    calibration = _get(scenarios, "calibration", "seconds")
    ratio = round(cold / calibration, 2) if cold and calibration else None
    ratio_text = f"{ratio}x ({cold} s vs {calibration} s)" if ratio else None
    storm = _get(scenarios, "drift_repair", "storm")
    storm_name = (
        f"Drift storm of {storm['objects']} repaired" if storm and "objects" in storm else "Drift storm"
    )
    burst_rate = _get(scenarios, "create_latency", "burst", "rate_per_second")
    return [
        _at_most("Cold convergence / calibration", 1.5, ratio, "x", ratio_text),
        _at_most("Create p50, idle", 300, _get(scenarios, "create_latency", "idle", "p50_ms"), "ms"),
        _at_most("Create p99, idle", 1000, _get(scenarios, "create_latency", "idle", "p99_ms"), "ms"),
        _at_most(
            f"Create p99, burst {burst_rate or ''}/s",
            3000,
            _get(scenarios, "create_latency", "burst", "p99_ms"),
            "ms",
        ),
        _at_most(
            "Drift repair p99, one at a time", 1000, _get(scenarios, "drift_repair", "single", "p99_ms"), "ms"
        ),
        _at_most(storm_name, 10, _get(scenarios, "drift_repair", "storm", "all_repaired_after_s"), "s"),
        _at_most("Steady state: operator writes", 0, _get(scenarios, "steady_state", "operator_writes"), ""),
        _at_most("Restart: operator writes", 0, _get(scenarios, "restart", "operator_writes"), ""),
        _at_most(
            f"RSS at {_get(scenarios, 'steady_state', 'selected_namespaces') or '?'} namespaces",
            150,
            _get(scenarios, "steady_state", "memory", "rss_mib"),
            "MiB",
        ),
        _at_most(
            f"RSS at {_get(scenarios, 'memory_at_scale', 'selected_namespaces') or '?'} namespaces",
            300,
            _get(scenarios, "memory_at_scale", "rss_mib"),
            "MiB",
        ),
    ]


SCALE_RATIO_SIZES = (1000, 10_000)
"""The sizes the pinned ratio target is judged at."""
RESTART_SIZE = 10_000


def scale_targets(points: Mapping[str, Any]) -> list[Target]:
    """The scale issue's targets, from the scale runs (empty when none ran)."""
    measured = {int(size): point for size, point in points.items() if "error" not in point}
    if not points:
        return []
    found: list[Target] = []
    for size in SCALE_RATIO_SIZES:
        point = measured.get(size)
        ratio = point.get("ratio_pinned") if point else None
        shown = (
            f"{ratio}x ({point['cold_pinned']['seconds']} s vs {point['calibration_pinned']['seconds']} s)"
            if point and ratio is not None
            else None
        )
        found.append(_at_most(f"Cold convergence / Go client, pinned, {size} ns", 1.3, ratio, "x", shown))
    cpu = [(point["cold_pinned"]["operator_cpu_ms_per_write"], size) for size, point in measured.items()]
    worst = max(cpu, default=None)
    found.append(
        _at_most(
            "Operator CPU per write (worst size, pinned)",
            1.0,
            worst[0] if worst else None,
            "ms",
            f"{worst[0]} ms at {worst[1]} ns" if worst else None,
        )
    )
    big = measured.get(RESTART_SIZE) or {}
    found += [
        _at_most(
            f"RSS at {big.get('selected_namespaces_end', RESTART_SIZE)} ns",
            250,
            _get(big, "memory_end", "rss_mib"),
            "MiB",
        ),
        _at_most(
            f"Restart at {RESTART_SIZE} ns: ready", 30, _get(big, "restart_pinned", "ready_after_s"), "s"
        ),
        _at_most(
            f"Restart at {RESTART_SIZE} ns: writes", 0, _get(big, "restart_pinned", "operator_writes"), ""
        ),
    ]
    for label in ("pinned", "unpinned"):
        bursts = [
            (point[f"burst_{label}"]["p99_ms"], size)
            for size, point in measured.items()
            if f"burst_{label}" in point
        ]
        worst_burst = max(bursts, default=None)
        found.append(
            _at_most(
                f"Burst create p99 (worst size, {label})",
                1000,
                worst_burst[0] if worst_burst else None,
                "ms",
                f"{worst_burst[0]} ms at {worst_burst[1]} ns" if worst_burst else None,
            )
        )
    return found


def write(results: dict[str, Any], directory: Path, stem: str) -> list[Path]:
    """Write `<stem>.json`, `<stem>.md` and (with matplotlib) `<stem>.png`; the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    judged = (targets(results) if results.get("scenarios") else []) + scale_targets(results.get("scale", {}))
    results["targets"] = [asdict(target) for target in judged]
    results["definitions"] = DEFINITIONS
    written = [directory / f"{stem}.json", directory / f"{stem}.md"]
    written[0].write_text(json.dumps(results, indent=1) + "\n")
    chart = directory / f"{stem}.png"
    if results.get("scenarios") and _chart(results, chart):
        written.append(chart)
    scale_chart = directory / f"{stem}-scale.png"
    if results.get("scale") and _scale_chart(results, scale_chart):
        written.append(scale_chart)
    written[1].write_text(
        markdown(
            results,
            chart.name if chart in written else None,
            scale_chart.name if scale_chart in written else None,
        )
    )
    return written


# -- markdown ------------------------------------------------------------------------------------------


def markdown(results: Mapping[str, Any], chart: str | None, scale_chart: str | None = None) -> str:
    scenarios = results.get("scenarios", {})
    environment = results.get("environment", {})
    title = f"# baseline-operator benchmark, {results.get('date')}"
    lines = [
        title + (" (quick smoke run)" if results.get("quick") else ""),
        "",
        (
            f"{environment.get('cpus')} CPUs, {environment.get('memory_gib')} GiB, Kubernetes "
            f"{environment.get('kubernetes')}, Python {environment.get('python')}; load average "
            f"{environment.get('load_before')} before, {environment.get('load_after')} after (other work "
            "shares this machine, so figures are noisy: compare the ratios measured in one run). "
            f"Wall time {results.get('wall_time_s')} s. Produced by `make bench`."
        ),
        "",
        "## Targets",
        "",
        "| Target | Limit | Measured | Met |",
        "|---|---|---|---|",
    ]
    for target in results.get("targets", []):
        met = {True: "yes", False: "**no**", None: "n/a"}[target["met"]]
        lines.append(f"| {target['name']} | {target['limit']} | {target['measured']} | {met} |")
    if scenarios:
        lines += ["", "## Figures", "", *_figures(scenarios)]
    if results.get("scale"):
        lines += ["", "## Scale", "", *scale_table(results["scale"])]
        if scale_chart:
            lines += ["", f"![scale: convergence, CPU per write, memory, restart]({scale_chart})"]
    retries = results.get("api_retries", {})
    series = 'baseline_operator_api_requests_total{code="429"}'
    lines += (
        []
        if not retries
        else [
            "",
            (
                f"API retries (HTTP 429) of the operator: {retries.get('audit_log_429')} in the audit log, "
                f"{retries.get('metrics_429')} counted by `{series}`. Both the operator and the calibration "
                "client run in `system:masters`, which API Priority and Fairness exempts from queuing, so "
                "429s are not expected here."
            ),
        ]
    )
    errors = {
        name: found["error"]
        for name, found in scenarios.items()
        if isinstance(found, dict) and "error" in found
    }
    if results.get("interrupted"):
        errors["run"] = "interrupted (SIGINT/SIGTERM): later scenarios did not run"
    errors.update(
        {
            f"scale {size}": point["error"]
            for size, point in results.get("scale", {}).items()
            if "error" in point
        }
    )
    if errors:
        lines += ["", "## Errors", "", *(f"- {name}: {error}" for name, error in errors.items())]
    if chart:
        lines += ["", f"![convergence, latencies and memory]({chart})"]
    lines += ["", "## Definitions", "", *(f"- **{name}**: {text}" for name, text in DEFINITIONS.items())]
    return "\n".join(lines) + "\n"


def scale_table(points: Mapping[str, Any]) -> list[str]:
    """A row per size: the Go client and the operator, pinned and unpinned; the pinned operator's figures."""
    header = (
        "| Namespaces | Go client pinned | Operator pinned | Ratio | Go client unpinned | Operator unpinned "
        "| Ratio | Operator CPU/write pinned (unpinned) | Go client CPU/write | Burst p99 pinned (unpinned) "
        "| Drift p99 "
        "| Restart: ready, writes | RSS at the end |"
    )
    lines = [header, "|---" * 13 + "|"]
    for size, point in sorted(points.items(), key=lambda item: int(item[0])):
        if "error" in point:
            lines.append(f"| {size} | error: {point['error'][:80]} |" + " |" * 11)
            continue
        go_pinned, go_free = point["calibration_pinned"], point["calibration_unpinned"]
        pinned, free = point["cold_pinned"], point["cold_unpinned"]
        restart = point["restart_pinned"]
        lines.append(
            f"| {size} | {go_pinned['seconds']} s ({go_pinned['requests_per_second']}/s) "
            f"| {pinned['seconds']} s | {point['ratio_pinned']}x "
            f"| {go_free['seconds']} s ({go_free['requests_per_second']}/s) | {free['seconds']} s "
            f"| {point['ratio_unpinned']}x "
            f"| {pinned['operator_cpu_ms_per_write']} ({free['operator_cpu_ms_per_write']}) ms "
            f"| {go_pinned['client_cpu_ms_per_write']} ms "
            f"| {point['burst_pinned']['p99_ms']} ({_get(point, 'burst_unpinned', 'p99_ms')}) ms "
            f"| {point['drift_pinned']['p99_ms']} ms "
            f"| {restart['ready_after_s']} s, {restart['operator_writes']} "
            f"| {point['memory_end']['rss_mib']} MiB at {point['selected_namespaces_end']} |"
        )
    note = (
        "Each size on a control plane of its own. Pinned: kube-apiserver, etcd, kube-controller-manager and "
        "the benchmark on CPU 0, the operator or the Go client alone on CPU 1. Seconds: from the first "
        "request (Go client) or the baseline's creation (operator) until a watch saw every object; the "
        "operator's also until its status said all compliant. CPU/write: the process's CPU seconds over "
        "the writes in the audit log; the operator runs at its default backstop interval. "
        "Burst: 20 new namespaces/s for 15 s, creation -> all 7 objects seen; "
        "pinned, then again with nothing pinned after a restart of the operator. "
        "Restart: SIGTERM and start with nothing changed, until the first pass over every namespace is "
        "done."
    )
    return [*lines, "", note]


def _cpu(found: Mapping[str, Any]) -> str:
    used = found.get("cpu_seconds") or {}
    return ", ".join(f"{name} {seconds}" for name, seconds in used.items())


def _latencies(found: Mapping[str, Any]) -> str:
    return f"n={found['count']}, p50 {found['p50_ms']} ms, p99 {found['p99_ms']} ms, max {found['max_ms']} ms"


def _figures(scenarios: Mapping[str, Any]) -> list[str]:
    return [*_speed(scenarios), *_latency(scenarios), *_cost(scenarios)]


def _speed(scenarios: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    calibration = scenarios.get("calibration") or {}
    if "seconds" in calibration:
        lines.append(
            f"- Calibration: {calibration['requests']} applies for {calibration['namespaces']} namespaces "
            f"in {calibration['seconds']} s ({calibration['requests_per_second']} applies/s). "
            f"CPU seconds: {_cpu(calibration)}."
        )
    cold = scenarios.get("cold_convergence") or {}
    if "seconds" in cold:
        lines.append(
            f"- Cold convergence: {cold['namespaces']} namespaces in {cold['seconds']} s (every object seen "
            f"after {cold['objects_seen_after_s']} s, status compliant after "
            f"{cold['status_compliant_after_s']} s); {cold['operator_writes']} operator writes. "
            f"CPU seconds: {_cpu(cold)}."
        )
    return lines


def _latency(scenarios: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    for mode in ("idle", "burst"):
        found = _get(scenarios, "create_latency", mode) or {}
        if "p50_ms" in found:
            account, operator = found["default_service_account"], found["after_default_service_account"]
            by_operator = found.get("default_service_accounts_created_by_operator")
            creators = (
                f" ({by_operator} of {found.get('count')} created by the operator, the rest by the "
                "controller-manager)"
                if by_operator is not None
                else ""
            )
            lines.append(
                f"- Create latency, {mode}: {_latencies(found)}. Of which the default ServiceAccount "
                f"appearing{creators}: p50 {account.get('p50_ms')} ms, "
                f"p99 {account.get('p99_ms')} ms; "
                f"the operator after that: p50 {operator.get('p50_ms')} ms, p99 {operator.get('p99_ms')} ms."
            )
    burst = _get(scenarios, "create_latency", "burst") or {}
    capacity = _get(scenarios, "calibration", "requests_per_second")
    if "applies_per_second_asked" in burst and capacity:
        lines.append(
            f"  The burst asks for {burst['applies_per_second_asked']:g} applies/s (plus the "
            "controller-manager's ServiceAccounts and ConfigMaps) against the "
            f"{capacity} applies/s the calibration client reached: "
            + ("within" if burst["applies_per_second_asked"] < capacity else "**beyond**")
            + " what the API server sustained on this machine."
        )
    for mode in ("single", "storm"):
        found = _get(scenarios, "drift_repair", mode) or {}
        if "p50_ms" in found:
            storm = (
                f"; all repaired {found['all_repaired_after_s']} s after the first DELETE, "
                f"{found.get('all_repaired_after_last_deletion_s')} s after the last "
                f"(deleting took {found['deleting_took_s']} s)"
                if mode == "storm"
                else ""
            )
            lines.append(
                f"- Drift repair, {mode}: {_latencies(found)}; {found['writes_per_repair']} writes per "
                f"repair{storm}."
            )
    return lines


def _cost(scenarios: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    steady = scenarios.get("steady_state") or {}
    if "seconds" in steady:
        lines.append(
            f"- Steady state: {steady['seconds']} s, {steady['backstop_passes']} backstop passes, "
            f"{steady['operator_writes']} writes, {steady['reads_per_minute']} reads/min. "
            f"CPU seconds: {_cpu(steady)}."
        )
    starts = [
        (_get(scenarios, "memory_idle", "readiness"), "idle"),
        (_get(scenarios, "cold_convergence", "operator_ready_before"), "before cold convergence"),
    ]
    shown = [
        f"{found['events_s']} s at {found['watched_objects']} watched objects ({name})"
        for found, name in starts
        if found and "events_s" in found
    ]
    if shown:
        lines.append("- Start-up until the operator handles events: " + "; ".join(shown) + ".")
    again = scenarios.get("restart") or {}
    if "ready_after_s" in again:
        lines.append(
            f"- Restart ({again['watched_objects']} watched objects): live after {again['live_after_s']} s, "
            f"handling events after {again['handling_events_after_s']} s, ready after "
            f"{again['ready_after_s']} s; {again['operator_writes']} writes, {again['reads']} reads."
        )
    scale = scenarios.get("memory_at_scale") or {}
    if "converged_after_s" in scale:
        quiet = scale["quiet_after_compliant"]
        quiet_text = f"quiet after {quiet} s" if isinstance(quiet, int | float) else quiet
        lines.append(
            f"- Memory at scale: {scale['added']} namespaces added up to {scale['selected_namespaces']} "
            f"selected; every object seen after {scale['converged_after_s']} s, status compliant after "
            f"{scale['status_compliant_after_s']} s. CPU seconds: {_cpu(scale)}. Then "
            f"{scale['operator_writes_after_compliant']} operator writes ({quiet_text}): "
            f"{scale['writes_after_compliant']}."
        )
    memory = [
        ("idle", _get(scenarios, "memory_idle")),
        ("steady", _get(scenarios, "steady_state", "memory")),
        ("scale", _get(scenarios, "memory_at_scale")),
    ]
    shown = [
        f"{name} {found['rss_mib']} MiB (peak {found['peak_mib']})"
        for name, found in memory
        if found and "rss_mib" in found
    ]
    if shown:
        lines.append("- Operator memory (RSS): " + ", ".join(shown) + ".")
    return lines


# -- the chart -----------------------------------------------------------------------------------------


def _pyplot() -> Any:
    """The pyplot module on matplotlib's file-only backend; None (said) without the `bench` extra."""
    try:
        import matplotlib as mpl  # noqa: PLC0415 - optional: the `bench` extra

        mpl.use("Agg")
        from matplotlib import pyplot as plt  # noqa: PLC0415
    except ImportError:
        logger.warning("matplotlib is not installed (pip install -e '.[bench]'): no chart")
        return None
    return plt


def _save(plt: Any, figure: Any, title: str, path: Path) -> None:
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def _chart(results: Mapping[str, Any], path: Path) -> bool:
    plt = _pyplot()
    if plt is None:
        return False
    scenarios = results.get("scenarios", {})
    figure, (converge, latency, memory) = plt.subplots(1, 3, figsize=(16, 4.8))
    _convergence_panel(converge, scenarios)
    _latency_panel(latency, scenarios)
    _memory_panel(memory, scenarios)
    _save(plt, figure, f"baseline-operator benchmark {results.get('date')}", path)
    return True


def _scale_chart(results: Mapping[str, Any], path: Path) -> bool:
    plt = _pyplot()
    if plt is None:
        return False
    points = sorted(
        ((int(size), point) for size, point in results["scale"].items() if "error" not in point),
        key=lambda item: item[0],
    )
    if not points:
        return False
    sizes = [size for size, _ in points]
    figure, (converge, cpu, memory, restart) = plt.subplots(1, 4, figsize=(20, 4.8))
    for key, label, style in (
        ("calibration_pinned", "Go client, pinned", "o--"),
        ("cold_pinned", "operator, pinned", "o-"),
        ("calibration_unpinned", "Go client, unpinned", "s--"),
        ("cold_unpinned", "operator, unpinned", "s-"),
    ):
        converge.plot(sizes, [point[key]["seconds"] for _, point in points], style, label=label)
    converge.set(title="Cold convergence", xlabel="namespaces", ylabel="seconds")
    converge.legend()
    cpu.plot(
        sizes, [p["cold_pinned"]["operator_cpu_ms_per_write"] for _, p in points], "o-", label="operator"
    )
    cpu.plot(
        sizes,
        [p["calibration_pinned"]["client_cpu_ms_per_write"] for _, p in points],
        "o--",
        label="Go client",
    )
    cpu.axhline(1.0, color="red", linestyle="dashed")
    cpu.set(title="CPU per write, pinned (red: target)", xlabel="namespaces", ylabel="ms")
    cpu.legend()
    memory.plot(sizes, [p["memory_end"]["rss_mib"] for _, p in points], "o-", label="RSS")
    memory.plot(sizes, [p["memory_end"]["peak_mib"] for _, p in points], "o--", label="peak")
    memory.axhline(250, color="red", linestyle="dashed")
    memory.set(title="Operator memory (red: target at 10 000)", xlabel="namespaces", ylabel="MiB")
    memory.legend()
    restart.plot(sizes, [p["restart_pinned"]["ready_after_s"] for _, p in points], "o-")
    restart.axhline(30, color="red", linestyle="dashed")
    restart.set(title="Restart until the first pass is done", xlabel="namespaces", ylabel="seconds")
    _save(plt, figure, f"baseline-operator at scale {results.get('date')}", path)
    return True


def _convergence_panel(axes: Axes, scenarios: Mapping[str, Any]) -> None:
    for name, label in (("calibration", "calibration client"), ("cold_convergence", "operator")):
        points = _get(scenarios, name, "completion_s") or []
        if points:
            axes.plot([p[0] for p in points], [p[1] for p in points], label=label)
    axes.set(title="Cold convergence", xlabel="seconds", ylabel="namespaces compliant")
    if axes.lines:
        axes.legend()


def _latency_panel(axes: Axes, scenarios: Mapping[str, Any]) -> None:
    for path, label in (
        (("create_latency", "idle"), "create, idle"),
        (("create_latency", "burst"), "create, burst"),
        (("drift_repair", "single"), "drift repair, single"),
        (("drift_repair", "storm"), "drift repair, storm"),
    ):
        values = sorted(_get(scenarios, *path, "latencies_ms") or [])
        fractions = [(index + 1) / len(values) for index in range(len(values))]
        if values:
            axes.step(values, fractions, where="post", label=label)
    axes.set(title="Latency (CDF)", xlabel="milliseconds", ylabel="fraction", xscale="log")
    if axes.lines:
        axes.legend()


def _memory_panel(axes: Axes, scenarios: Mapping[str, Any]) -> None:
    bars = [
        ("0", _get(scenarios, "memory_idle"), None),
        (
            str(_get(scenarios, "steady_state", "selected_namespaces")),
            _get(scenarios, "steady_state", "memory"),
            150,
        ),
        (
            str(_get(scenarios, "memory_at_scale", "selected_namespaces")),
            _get(scenarios, "memory_at_scale"),
            300,
        ),
    ]
    shown = [(label, found, limit) for label, found, limit in bars if found and "rss_mib" in found]
    positions = range(len(shown))
    axes.bar([p - 0.2 for p in positions], [found["rss_mib"] for _, found, _ in shown], 0.4, label="RSS")
    axes.bar([p + 0.2 for p in positions], [found["peak_mib"] for _, found, _ in shown], 0.4, label="peak")
    for position, (_, _, limit) in zip(positions, shown, strict=True):
        if limit:
            axes.hlines(limit, position - 0.4, position + 0.4, colors="red", linestyles="dashed")
    axes.set_xticks(list(positions), [label for label, _, _ in shown])
    axes.set(title="Operator memory (red: target)", xlabel="selected namespaces", ylabel="MiB")
    if shown:
        axes.legend()
