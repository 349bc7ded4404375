"""Faults of the API server itself, for real: API Priority and Fairness rejecting the operator's requests
with 429, and the operator's RBAC taken away at runtime for one kind.

Under throttling the operator must slow down and still converge, and never retry in a tight loop: the
audit log shows every attempt and when it arrived. With a permission gone it must say what is forbidden,
keep doing what it still may, and heal by itself once the permission is back: no crash, no restart.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import os
import time
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

import pytest
from kubernetes import client, config
from prometheus_client.parser import text_string_to_metric_families
from support import (
    FULL_SET,
    MANAGED,
    OPERATOR_USER,
    PSA,
    WRITE_VERBS,
    Cluster,
    OperatorProcess,
    UserObjects,
    _epoch,
    audit_events,
    eventually,
    full_spec,
    new_operator,
    remove_lease,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from localcluster import LocalCluster

THROTTLE = "e2e-baseline-operator-throttle"
KOPF_AGENT = "kopf/"
"""kopf's own requests (lists and watches) carry this User-Agent; the operator's API layer does not."""
NETWORK_POLICIES = "networkpolicies"
NETWORK_POLICY_OBJECTS = {o for o in FULL_SET if o.startswith("NetworkPolicy/")}


def _apf(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }


@contextlib.contextmanager
def throttled_operator(api: client.ApiClient, operator_kubeconfig: Path) -> Iterator[None]:
    """Put the operator's ServiceAccount alone on a priority level of a few seats that rejects the rest.

    The smallest share (1 against the ~245 of the built-in levels: 3 of the API server's 600 seats),
    nothing lent or borrowed, and Reject instead of queueing: a request beyond those seats is answered
    429 at once. The FlowSchema comes before `service-accounts` (9000), where the operator's requests
    land otherwise. The tests' admin is in system:masters, which the built-in `exempt` schema
    (precedence 1) keeps out of all this, and so is the controller-manager, which uses the same identity.
    """
    flowcontrol = client.FlowcontrolApiserverV1Api(api)
    service_account = OPERATOR_USER.removeprefix("system:serviceaccount:")
    namespace, _, name = service_account.partition(":")
    flowcontrol.create_priority_level_configuration(
        _apf(
            "PriorityLevelConfiguration",
            THROTTLE,
            {
                "type": "Limited",
                "limited": {
                    "nominalConcurrencyShares": 1,
                    "lendablePercent": 0,
                    "borrowingLimitPercent": 0,
                    "limitResponse": {"type": "Reject"},
                },
            },
        )
    )
    try:
        everything = {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"], "namespaces": ["*"]}
        schema = flowcontrol.create_flow_schema(
            _apf(
                "FlowSchema",
                THROTTLE,
                {
                    "priorityLevelConfiguration": {"name": THROTTLE},
                    "matchingPrecedence": 500,
                    "distinguisherMethod": {"type": "ByUser"},
                    "rules": [
                        {
                            "subjects": [
                                {
                                    "kind": "ServiceAccount",
                                    "serviceAccount": {"name": name, "namespace": namespace},
                                }
                            ],
                            "resourceRules": [{**everything, "clusterScope": True}],
                            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                        }
                    ],
                },
            )
        )
        try:
            # The API server reads its flow-control objects through an informer: wait until a request of
            # the operator's is classified by the new schema (every response names its schema in a header).
            as_operator = client.CoreV1Api(
                config.new_client_from_config(config_file=str(operator_kubeconfig))
            )

            def classified() -> bool:
                response = as_operator.list_namespace(limit=1, _preload_content=False)
                return bool(response.headers.get("X-Kubernetes-PF-FlowSchema-UID") == schema.metadata.uid)

            eventually(
                classified, timeout=30, interval=0.5, what="the operator's requests meet the new schema"
            )
            yield
        finally:
            flowcontrol.delete_flow_schema(THROTTLE)
    finally:
        flowcontrol.delete_priority_level_configuration(THROTTLE)


def unfinished(kube: Cluster, label: str) -> set[str]:
    """The namespaces labelled `e2e=label` that do not hold the whole baseline yet (one list per kind)."""
    namespaces = kube.core.list_namespace(label_selector=f"e2e={label}").items
    held: dict[str, set[str]] = defaultdict(set)
    for kind, listing in (
        ("NetworkPolicy", kube.networking.list_network_policy_for_all_namespaces),
        ("LimitRange", kube.core.list_limit_range_for_all_namespaces),
        ("ResourceQuota", kube.core.list_resource_quota_for_all_namespaces),
        ("RoleBinding", kube.rbac.list_role_binding_for_all_namespaces),
    ):
        for found in listing(label_selector=MANAGED).items:
            held[found.metadata.namespace].add(f"{kind}/{found.metadata.name}")
    tokens_off = {
        account.metadata.namespace
        for account in kube.core.list_service_account_for_all_namespaces(
            field_selector="metadata.name=default"
        ).items
        if account.automount_service_account_token is False
    }
    return {
        namespace.metadata.name
        for namespace in namespaces
        if held[namespace.metadata.name] != FULL_SET
        or (namespace.metadata.labels or {}).get(PSA) != "restricted"
        or namespace.metadata.name not in tokens_off
    }


def roll_out(
    kube: Cluster, make_baseline: Callable[..., dict[str, Any]], label: str, count: int, timeout: float
) -> float:
    """Create a baseline over the `count` namespaces labelled `label`; seconds until all are compliant."""
    started = time.monotonic()
    name = make_baseline(full_spec(label))["metadata"]["name"]

    def done() -> bool:
        compliant = kube.baseline(name).get("status", {}).get("compliantNamespaces")
        return kube.ready(name) and compliant == count and not unfinished(kube, label)

    eventually(done, timeout=timeout, interval=0.5, what=f"{count} namespaces compliant")
    return time.monotonic() - started


def throttled_by_metrics(operator: OperatorProcess) -> float:
    """What the operator's /metrics say about its requests answered 429."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(operator.metrics())
        for sample in family.samples
        if sample.name == "baseline_operator_api_requests_total" and sample.labels.get("code") == "429"
    )


def retries(events: list[dict[str, Any]], code: int) -> list[tuple[str, float]]:
    """For each answer `code`, the request and the seconds until it was sent again (same verb and URI)."""
    by_request: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        by_request[(event["verb"], event["requestURI"])].append(event)
    found = []
    for (verb, uri), attempts in by_request.items():
        arrivals = sorted((_received(e), e["responseStatus"]["code"]) for e in attempts)
        found += [
            (f"{verb} {uri}", after - before)
            for (before, answer), (after, _) in itertools.pairwise(arrivals)
            if answer == code
        ]
    return found


def ours(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The requests of the operator's own API layer (kube.py), not kopf's lists and watches."""
    return [e for e in events if not e.get("userAgent", "").startswith(KOPF_AGENT)]


def answered(events: list[dict[str, Any]], code: int) -> list[dict[str, Any]]:
    return [e for e in events if e["responseStatus"]["code"] == code]


def _received(event: dict[str, Any]) -> float:
    return _epoch(event["requestReceivedTimestamp"])


def rejected_in_a_row(events: list[dict[str, Any]]) -> int:
    """The longest run of 429s one request got before an answer of another kind (or the end)."""
    longest: dict[tuple[str, str], int] = defaultdict(int)
    run: dict[tuple[str, str], int] = defaultdict(int)
    for event in sorted(events, key=_received):
        key = (event["verb"], event["requestURI"])
        run[key] = run[key] + 1 if event["responseStatus"]["code"] == 429 else 0
        longest[key] = max(longest[key], run[key])
    return max(longest.values(), default=0)


@pytest.mark.timeout(420)
def test_throttled_by_priority_and_fairness_the_operator_slows_down_and_converges(
    api: client.ApiClient,
    cluster: LocalCluster,
    operator: OperatorProcess,
    operator_kubeconfig: Path,
    tmp_path: Path,
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    # 10 in `make test`: under a throttle this slow, and on a busy machine, 30 can take minutes.
    count = 30 if os.environ.get("BASELINE_FAULTS") == "all" else 10
    throttled_namespaces = []
    for index in range(count):
        make_namespace(f"free{index}", {"e2e": f"{label}-free"})
        throttled_namespaces.append(make_namespace(f"apf{index}", {"e2e": label}))
    user = UserObjects(kube, api, throttled_namespaces[0])
    # The same roll-out without throttling first, as the yardstick.
    unthrottled = roll_out(kube, make_baseline, f"{label}-free", count, timeout=120)

    operator.stop()
    try:
        with throttled_operator(api, operator_kubeconfig):
            since = time.time()
            # Restarted under the new schema, so that kopf's lists and watches are throttled too (a watch
            # holds a seat only while it starts; the session operator's watches were started long ago),
            # and with leader election, so that GETs and PUTs (of the Lease) are throttled as well as the
            # applies.
            remove_lease(api)
            own = new_operator(tmp_path, operator_kubeconfig, "--leader-election-id", "throttled")
            own.start(timeout=120)
            try:
                throttled = roll_out(kube, make_baseline, label, count, timeout=300)

                # The audit log is written as requests complete: give it a moment to hold the last ones.
                for _ in range(20):
                    events = list(audit_events(cluster.audit_log, user=OPERATOR_USER, since=since))
                    metered = throttled_by_metrics(own)
                    if len(answered(ours(events), 429)) == metered:
                        break
                    time.sleep(0.5)
                assert own.popen is not None
                assert own.popen.poll() is None, "the operator must not exit under throttling"
            finally:
                own.stop()
    finally:
        operator.start()

    rejected = answered(ours(events), 429)
    kopf_rejected = answered([e for e in events if e.get("userAgent", "").startswith(KOPF_AGENT)], 429)
    written = [e for e in ours(events) if e["verb"] in WRITE_VERBS and e["responseStatus"]["code"] < 400]
    gaps = retries(events, 429)
    print(  # noqa: T201 - the numbers behind the assertions, for the record (-s shows them)
        f"\n{count} namespaces: {unthrottled:.1f} s unthrottled, {throttled:.1f} s throttled; "
        f"operator requests {len(ours(events))}, answered 429: {len(rejected)} ({metered:.0f} in /metrics), "
        f"writes {len(written)}; kopf requests {len(events) - len(ours(events))}, answered 429: "
        f"{len(kopf_rejected)}; shortest wait after a 429: {min(gap for _, gap in gaps):.2f} s, "
        f"most 429s in a row for one request: {rejected_in_a_row(ours(events))}"
    )
    assert rejected, "the priority level never pushed back: this test would prove nothing"
    # Every 429 the API server sent reached the operator's API layer and its metrics: none was retried
    # out of sight (urllib3 would, for GET, PUT and DELETE, e.g. the Lease's).
    assert metered == len(rejected), (
        f"/metrics count {metered:.0f} 429s, the audit log {len(rejected)}: "
        f"{Counter((e['verb'], e['objectRef'].get('resource')) for e in rejected)}"
    )
    # Never a tight loop: after a 429 the same request waits at least the Retry-After of APF (>= 1 s),
    # and one request is given up after a bounded number of attempts.
    too_soon = [(request, gap) for request, gap in gaps if gap < 0.95]
    assert not too_soon, f"retried sooner than Retry-After: {too_soon[:5]}"
    assert rejected_in_a_row(ours(events)) <= 8  # kube._MAX_THROTTLED_RETRIES, then the engine's back-off
    assert len(rejected) < 4 * len(written), "429s out of proportion to the work done"
    assert throttled > unthrottled, "throttling that costs nothing was no throttling"
    assert user.unchanged() == [], "a user's objects changed under throttling"


@contextlib.contextmanager
def operator_rules_changed(
    api: client.ApiClient, change: Callable[[client.V1PolicyRule], client.V1PolicyRule | None]
) -> Iterator[Callable[[], None]]:
    """The operator's ClusterRole with each rule passed through `change` (None drops the rule).

    Yields `restore`, to give the permissions back before the block ends; they are restored in any case.
    """
    rbac = client.RbacAuthorizationV1Api(api)
    original = rbac.read_cluster_role("baseline-operator")
    reduced = copy.deepcopy(original)
    reduced.rules = [rule for rule in map(change, copy.deepcopy(original.rules)) if rule is not None]
    rbac.replace_cluster_role("baseline-operator", reduced)
    restored = False

    def restore() -> None:
        nonlocal restored
        if not restored:
            current = rbac.read_cluster_role("baseline-operator")
            original.metadata.resource_version = current.metadata.resource_version
            rbac.replace_cluster_role("baseline-operator", original)
            restored = True

    try:
        yield restore
    finally:
        restore()


def network_policy_verbs(*verbs: str) -> Callable[[client.V1PolicyRule], client.V1PolicyRule | None]:
    """A rule change: network policies with only `verbs` left (none: the rule goes)."""

    def change(rule: client.V1PolicyRule) -> client.V1PolicyRule | None:
        if NETWORK_POLICIES not in rule.resources:
            return rule
        if not verbs:
            return None
        rule.verbs = [verb for verb in rule.verbs if verb in verbs]
        return rule

    return change


def operator_may(api: client.ApiClient, verb: str, resource: str, namespace: str, group: str) -> bool:
    """What the API server's authorizer answers for the operator now (it follows RBAC through a cache)."""
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=OPERATOR_USER,
            resource_attributes=client.V1ResourceAttributes(
                verb=verb, resource=resource, namespace=namespace, group=group
            ),
        )
    )
    return bool(client.AuthorizationV1Api(api).create_subject_access_review(review).status.allowed)


def no_network_policies_for_operator(api: client.ApiClient, namespace: str, verb: str) -> None:
    eventually(
        lambda: not operator_may(api, verb, NETWORK_POLICIES, namespace, "networking.k8s.io"),
        timeout=10,
        what=f"the operator may no longer {verb} network policies",
    )


def everything_but_network_policies(kube: Cluster, namespace: str) -> bool:
    return (
        kube.managed(namespace) == FULL_SET - NETWORK_POLICY_OBJECTS
        and kube.labels(namespace).get(PSA) == "restricted"
        and kube.automount(namespace) is False
    )


def forbidden_network_policies(kube: Cluster, name: str, namespace: str) -> list[dict[str, Any]]:
    return [
        problem
        for problem in kube.problems(name)
        if problem["kind"] == "NetworkPolicy"
        and problem["reason"] == "Forbidden"
        and problem["namespace"] == namespace
    ]


@pytest.mark.timeout(240)
def test_without_write_access_to_one_kind_it_reports_it_keeps_working_and_heals_without_restart(
    api: client.ApiClient,
    cluster: LocalCluster,
    operator: OperatorProcess,
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    # A baseline already compliant before the outage: it must still be repaired during it.
    steady_namespace = make_namespace("steady", {"e2e": f"{label}-steady"})
    user = UserObjects(kube, api, steady_namespace)
    steady = make_baseline(full_spec(f"{label}-steady"))["metadata"]["name"]
    eventually(lambda: kube.managed(steady_namespace) == FULL_SET and kube.ready(steady))
    assert operator.popen is not None
    pid = operator.popen.pid

    # The watch stays (list, watch): only writing network policies is refused.
    outage = time.time()
    with operator_rules_changed(api, network_policy_verbs("list", "watch")) as restore:
        namespace = make_namespace("nonp", {"e2e": label})
        no_network_policies_for_operator(api, namespace, "patch")
        name = make_baseline(full_spec(label))["metadata"]["name"]
        problems = eventually(
            lambda: forbidden_network_policies(kube, name, namespace),
            what="a Forbidden NetworkPolicy problem",
        )
        assert {p["name"] for p in problems} == {o.partition("/")[2] for o in NETWORK_POLICY_OBJECTS}
        ready = kube.condition(name, "Ready")
        assert ready is not None
        assert (ready["status"], ready["reason"]) == ("False", "ReconcileError")
        eventually(lambda: everything_but_network_policies(kube, namespace), what="the other kinds applied")

        kube.core.delete_namespaced_limit_range("baseline-limits", steady_namespace)
        eventually(
            lambda: kube.managed(steady_namespace) == FULL_SET and kube.ready(steady),
            what="the compliant baseline repaired during the outage",
        )
        assert everything_but_network_policies(kube, namespace)
        # Half a minute of outage, to see the retries of the refused writes thin out.
        time.sleep(max(0.0, outage + 30 - time.time()))
        refused = [
            (_received(e), e["requestURI"])
            for e in audit_events(cluster.audit_log, user=OPERATOR_USER, since=outage)
            if e["responseStatus"]["code"] == 403
        ]
        restore()
        restored = time.monotonic()
        # Forbidden is retried with back-off, up to 60 s apart: nothing tells the operator RBAC is back.
        eventually(
            lambda: kube.managed(namespace) == FULL_SET and kube.ready(name),
            timeout=90,
            interval=0.5,
            what="healed once the permission is back",
        )
        healed = time.monotonic() - restored
    print(  # noqa: T201
        f"\n{len(refused)} writes refused in 30 s of outage, at "
        f"{sorted({round(at - outage, 1) for at, _ in refused})} s; "
        f"healed {healed:.1f} s after write access to network policies came back"
    )
    attempts: dict[str, list[float]] = defaultdict(list)
    for at, uri in sorted(refused):
        attempts[uri.partition("?")[0]].append(at)
    assert set(attempts) == {
        f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies/{o.partition('/')[2]}"
        for o in NETWORK_POLICY_OBJECTS
    }
    for times in attempts.values():
        # A few right away (each of the namespace's own writes comes back as a watch event), then back-off.
        assert len(times) <= 12, times
        assert times[-1] - times[-2] >= 4, times
    assert not kube.problems(name)
    assert operator.popen is not None
    assert operator.popen.pid == pid, "the operator must heal without a restart"
    assert operator.popen.poll() is None
    assert user.unchanged() == [], "a user's objects changed while RBAC was revoked"


@pytest.mark.timeout(240)
def test_without_any_access_to_one_kind_a_restarted_operator_waits_and_heals(
    api: client.ApiClient,
    cluster: LocalCluster,
    operator: OperatorProcess,
    operator_kubeconfig: Path,
    tmp_path: Path,
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    """No list or watch either: kopf cannot even fill the network-policy cache of an operator that starts.

    A running operator keeps its open watch until it expires, so the hard case is a restart during the
    outage (a rescheduled Pod). kopf keeps retrying that list, spaced out, and reconciles nothing until
    its caches are all filled; the operator must neither exit (a crash loop) nor spin, and must catch up
    once the permission is back.
    """
    operator.stop()
    try:
        with operator_rules_changed(api, network_policy_verbs()) as restore:
            namespace = make_namespace("nolist", {"e2e": label})
            name = make_baseline(full_spec(label))["metadata"]["name"]
            no_network_policies_for_operator(api, namespace, "list")
            since = time.time()
            own = new_operator(tmp_path, operator_kubeconfig)
            own.start()
            try:
                assert own.popen is not None
                pid = own.popen.pid
                time.sleep(15)
                assert own.popen.poll() is None, f"the operator exited:\n{own.tail()}"
                refused = [
                    e
                    for e in audit_events(cluster.audit_log, user=OPERATOR_USER, since=since)
                    if e["responseStatus"]["code"] == 403
                ]
                held = sorted(kube.managed(namespace))
                reported = kube.condition(name, "Ready") or "no status at all"
                restore()
                restored = time.monotonic()
                eventually(
                    lambda: kube.managed(namespace) == FULL_SET and kube.ready(name),
                    timeout=90,
                    interval=0.5,
                    what="caught up once the permission is back",
                )
                healed = time.monotonic() - restored
                assert own.popen.pid == pid
                assert own.popen.poll() is None
            finally:
                own.stop()
    finally:
        operator.start()
    gaps = retries(refused, 403)
    print(  # noqa: T201
        f"\n{len(refused)} requests refused in 15 s, shortest wait after a 403: "
        f"{min((gap for _, gap in gaps), default=float('nan')):.2f} s; during the outage the namespace held "
        f"{held or 'nothing'}, the baseline showed {reported}; caught up {healed:.1f} s after the permission "
        "came back"
    )
    assert refused, "kopf never asked for network policies: the test proves nothing"
    assert {e["objectRef"]["resource"] for e in refused} == {NETWORK_POLICIES}
    assert all(gap >= 0.45 for _, gap in gaps), f"retried in a tight loop: {gaps}"
