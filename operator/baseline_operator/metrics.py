"""Every Prometheus metric the operator exposes, in one recorder (and nowhere else).

Alerts need *state*, not only counters, so the gauges say what is true now: namespaces per baseline
and state, drifted objects per baseline, namespace and kind, whether each baseline is Ready. Counters
and histograms say what happened: drift found and repaired, fights, reconcile and API errors, and the
latencies users feel (namespace created -> baseline applied, drift seen -> repaired).

Cardinality is bounded by what the cluster holds: `baseline` by SecurityBaselines, `namespace` by
selected namespaces that currently drift (a compliant namespace has no drifted-objects series), `kind`
by the six managed kinds, `state`/`reason`/`verb`/`code` by small fixed sets. For very large clusters,
`--metrics-without-namespace` drops the namespace label (series are then summed per baseline and kind).
Series of a deleted baseline or namespace are removed, not left at their last value.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from baseline_operator.status import State

if TYPE_CHECKING:
    from collections.abc import Mapping

PREFIX = "baseline_operator"
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class MetricsRecorder:
    """Owns the registry and every collector; the engine and the API layer report to it."""

    def __init__(self, *, with_namespace: bool = True) -> None:
        self.registry = CollectorRegistry()
        self.with_namespace = with_namespace
        registry = self.registry
        self.namespaces = Gauge(
            f"{PREFIX}_namespaces",
            "Namespaces selected by a baseline, by state (compliant, drifted, conflict, error).",
            ["baseline", "state"],
            registry=registry,
        )
        self.baseline_ready = Gauge(
            f"{PREFIX}_baseline_ready",
            "1 when the baseline's Ready condition is True, else 0.",
            ["baseline"],
            registry=registry,
        )
        self.leader = Gauge(
            f"{PREFIX}_leader",
            "1 when this replica works (it holds the Lease, or runs without election), 0 on a standby.",
            registry=registry,
        )
        self.leader.set(1)
        drifted_labels = ["baseline", "namespace", "kind"] if with_namespace else ["baseline", "kind"]
        self.drifted_objects = Gauge(
            f"{PREFIX}_drifted_objects",
            "Managed objects that differ from their baseline now and are not (yet) repaired.",
            drifted_labels,
            registry=registry,
        )
        self.loop_restarts = Counter(
            f"{PREFIX}_loop_restarts",
            "Long-running loops (watches, reconcile workers, the status writer, ...) restarted after they "
            "crashed (supervision.py).",
            ["loop"],
            registry=registry,
        )
        self.metadata_reachable = Gauge(
            f"{PREFIX}_metadata_reachable",
            "NetworkPolicies of a namespace's own that let the pods they select reach a cloud metadata API "
            "the baseline blocks (NetworkPolicies only add: the baseline cannot take that away).",
            ["baseline", "namespace"],
            registry=registry,
        )
        self._reachable: dict[tuple[str, str], int] = {}
        self.workload_violation_count = Gauge(
            f"{PREFIX}_workload_violations",
            "Running workloads of a namespace that break a workload rule of the baseline (admitted before "
            "the rule held there: created earlier, in Audit mode, or while exempted).",
            ["baseline", "namespace", "rule"],
            registry=registry,
        )
        self._violations: dict[tuple[str, str], set[str]] = {}
        self.exemption_expiry = Gauge(
            f"{PREFIX}_exemption_expiry_timestamp_seconds",
            "When each exemption of a baseline ends (Unix time; `index` in spec.exemptions, `state` Active, "
            "Expired or TooLong): the alert fires 7 days before.",
            ["baseline", "index", "state"],
            registry=registry,
        )
        self._exemptions: dict[str, set[tuple[str, str]]] = {}
        self.drift_detected = Counter(
            f"{PREFIX}_drift_detected",
            "Drift found on managed objects (reason: Missing, Modified, Unexpected).",
            ["baseline", "kind", "reason"],
            registry=registry,
        )
        self.drift_repairs = Counter(
            f"{PREFIX}_drift_repairs",
            "Drifted objects restored to their baseline.",
            ["baseline", "kind"],
            registry=registry,
        )
        self.drift_fights = Counter(
            f"{PREFIX}_drift_fights",
            "Times repairs of an object were paused because another writer keeps changing it.",
            ["baseline", "kind"],
            registry=registry,
        )
        self.reconcile_errors = Counter(
            f"{PREFIX}_reconcile_errors",
            "Namespace reconciles that left a problem (reason: Forbidden, Invalid, ApiError, ...).",
            ["reason"],
            registry=registry,
        )
        self.api_requests = Counter(
            f"{PREFIX}_api_requests",
            "Requests to the Kubernetes API by verb and HTTP status code.",
            ["verb", "code"],
            registry=registry,
        )
        self.api_errors = Counter(
            f"{PREFIX}_api_errors",
            "Requests to the Kubernetes API that failed (status >= 400; no answer at all counts as 503).",
            ["verb", "code"],
            registry=registry,
        )
        self.reconcile_duration = Histogram(
            f"{PREFIX}_reconcile_duration_seconds",
            "Time to reconcile one namespace (compute and writes).",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.namespace_ready_latency = Histogram(
            f"{PREFIX}_namespace_ready_latency_seconds",
            "From a new namespace's watch event to every object of its baselines applied.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.drift_repair_latency = Histogram(
            f"{PREFIX}_drift_repair_latency_seconds",
            "From the watch event that showed a drift to the repair written.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.events_suppressed = Counter(
            f"{PREFIX}_events_suppressed",
            "Drift Events not posted because of the rate limit.",
            registry=registry,
        )
        # Per (baseline, namespace): drifted objects by kind, so that series can be set, summed
        # without the namespace label, and removed when the namespace or baseline goes away.
        self._drifted: dict[tuple[str, str], dict[str, int]] = {}
        self._kinds_seen: dict[str, set[str]] = {}

    def leading(self, *, leading: bool) -> None:
        """Whether this replica holds the Lease and works (1) or waits as a standby (0)."""
        self.leader.set(1 if leading else 0)

    def serve(self, address: str) -> None:
        """Expose `/metrics` on `host:port` from a background thread."""
        host, _, port = address.rpartition(":")
        start_http_server(int(port), addr=host or "0.0.0.0", registry=self.registry)  # noqa: S104

    # -- state -------------------------------------------------------------------------------------

    def baseline_state(self, baseline: str, counts: Mapping[State, int], *, ready: bool) -> None:
        for state in State:
            self.namespaces.labels(baseline, state.value).set(counts.get(state, 0))
        self.baseline_ready.labels(baseline).set(1 if ready else 0)

    def workload_violations(self, baseline: str, namespace: str, by_rule: Mapping[str, int]) -> None:
        """The workloads breaking each rule of one baseline in one namespace now (empty: none)."""
        for rule in self._violations.get((baseline, namespace), set()) - set(by_rule):
            self._remove(self.workload_violation_count, baseline, namespace, rule)
        for rule, count in by_rule.items():
            self.workload_violation_count.labels(baseline, namespace, rule).set(count)
        if by_rule:
            self._violations[(baseline, namespace)] = set(by_rule)
        else:
            self._violations.pop((baseline, namespace), None)

    def exemptions(self, baseline: str, expiries: Mapping[tuple[str, str], float]) -> None:
        """The baseline's exemptions now: (index, state) -> expiry; series no longer there go."""
        for gone in self._exemptions.get(baseline, set()) - set(expiries):
            self._remove(self.exemption_expiry, baseline, *gone)
        for (index, state), expiry in expiries.items():
            self.exemption_expiry.labels(baseline, index, state).set(expiry)
        self._exemptions[baseline] = set(expiries)

    def drifted(self, baseline: str, namespace: str, by_kind: Mapping[str, int]) -> None:
        """The drifted objects of one baseline in one namespace now (empty: none)."""
        key = (baseline, namespace)
        before = self._drifted.get(key, {})
        if dict(by_kind) == before:
            return
        if by_kind:
            self._drifted[key] = dict(by_kind)
        else:
            self._drifted.pop(key, None)
        self._kinds_seen.setdefault(baseline, set()).update(by_kind)
        if self.with_namespace:
            for kind in set(before) - set(by_kind):
                self._remove(self.drifted_objects, baseline, namespace, kind)
            for kind, count in by_kind.items():
                self.drifted_objects.labels(baseline, namespace, kind).set(count)
        else:
            for kind in set(before) | set(by_kind):
                total = sum(
                    counts.get(kind, 0) for (name, _), counts in self._drifted.items() if name == baseline
                )
                self.drifted_objects.labels(baseline, kind).set(total)

    def metadata_openings(self, baseline: str, namespace: str, count: int) -> None:
        """How many of a namespace's own egress policies open a metadata API now."""
        key = (baseline, namespace)
        if self._reachable.get(key, 0) == count:
            return
        if count:
            self._reachable[key] = count
            self.metadata_reachable.labels(baseline, namespace).set(count)
        else:
            self._reachable.pop(key, None)
            self._remove(self.metadata_reachable, baseline, namespace)

    def loop_restarted(self, loop: str) -> None:
        self.loop_restarts.labels(loop).inc()

    def forget_namespace(self, namespace: str) -> None:
        for baseline, name in [key for key in self._drifted if key[1] == namespace]:
            self.drifted(baseline, name, {})
        for baseline, name in [key for key in self._reachable if key[1] == namespace]:
            self.metadata_openings(baseline, name, 0)
        for baseline, name in [key for key in self._violations if key[1] == namespace]:
            self.workload_violations(baseline, name, {})

    def forget_baseline(self, baseline: str) -> None:
        """Remove every series of a deleted baseline."""
        for name, namespace in [key for key in self._drifted if key[0] == baseline]:
            self.drifted(name, namespace, {})
        for name, namespace in [key for key in self._reachable if key[0] == baseline]:
            self.metadata_openings(name, namespace, 0)
        self.exemptions(baseline, {})
        self._exemptions.pop(baseline, None)
        for name, namespace in [key for key in self._violations if key[0] == baseline]:
            self.workload_violations(name, namespace, {})
        for state in State:
            self._remove(self.namespaces, baseline, state.value)
        self._remove(self.baseline_ready, baseline)
        for collector, names in (
            (self.drift_detected, ("baseline", "kind", "reason")),
            (self.drift_repairs, ("baseline", "kind")),
            (self.drift_fights, ("baseline", "kind")),
        ):
            for labels in _series_of(collector, names, baseline):
                self._remove(collector, *labels)
        if not self.with_namespace:
            for kind in self._kinds_seen.get(baseline, set()):
                self._remove(self.drifted_objects, baseline, kind)
        self._kinds_seen.pop(baseline, None)

    # -- events ------------------------------------------------------------------------------------

    def drift_found(self, baseline: str, kind: str, reason: str) -> None:
        self.drift_detected.labels(baseline, kind, reason).inc()

    def repaired(self, baseline: str, kind: str, latency: float | None) -> None:
        self.drift_repairs.labels(baseline, kind).inc()
        if latency is not None:
            self.drift_repair_latency.observe(latency)

    def fight(self, baseline: str, kind: str) -> None:
        self.drift_fights.labels(baseline, kind).inc()

    def reconcile_error(self, reason: str) -> None:
        self.reconcile_errors.labels(reason).inc()

    def api_request(self, verb: str, status: int, seconds: float) -> None:
        """The API layer's request observer (see `kube.RequestObserver`)."""
        del seconds
        code = str(status)
        self.api_requests.labels(verb, code).inc()
        if status >= 400:  # noqa: PLR2004 - HTTP's own boundary
            self.api_errors.labels(verb, code).inc()

    @staticmethod
    def _remove(collector: Gauge | Counter, *labels: str) -> None:
        with contextlib.suppress(KeyError):
            collector.remove(*labels)


def _series_of(collector: Counter, names: tuple[str, ...], baseline: str) -> list[tuple[str, ...]]:
    # prometheus_client keeps no public index of a collector's children; `collect` lists them.
    return [
        tuple(sample.labels[name] for name in names)
        for family in collector.collect()
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels.get("baseline") == baseline
    ]
