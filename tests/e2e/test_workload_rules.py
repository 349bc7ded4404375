"""The workloads section, judged by the API server itself: the operator's ValidatingAdmissionPolicies admit
or refuse real requests (server-side dry runs: admission runs in full, nothing is stored).

For each rule, a Pod and a Deployment that break only that rule are refused in Enforce, with a message
naming the baseline, the rule and the container, and warned about in Audit; the compliant Pod passes.
Exemptions lift a rule or a whole section for their namespaces and stop by themselves at their expiry.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import time
from typing import TYPE_CHECKING, Any

import pytest
from kubernetes import client
from support import Cluster, eventually
from workload_cases import BREAKS, POD_RULES, REGISTRY, broken, compliant_pod_spec, first_container

if TYPE_CHECKING:
    from collections.abc import Callable

    from support import OperatorProcess


def pod(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe"}, "spec": spec}


def deployment(spec: dict[str, Any]) -> dict[str, Any]:
    labels = {"app": "probe"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "probe"},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    }


def cron_job(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "probe"},
        "spec": {
            "schedule": "0 0 * * *",
            "jobTemplate": {"spec": {"template": {"spec": {**spec, "restartPolicy": "Never"}}}},
        },
    }


class Admission:
    """Server-side dry runs of creates: what admission says, warnings included."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api

    def create(self, namespace: str, body: dict[str, Any]) -> tuple[int, str, list[str]]:
        """(HTTP status, refusal message or "", warnings) of creating `body` in `namespace`, dry run."""
        return self._send("POST", self._path(namespace, body), body, "application/json")

    def patch(
        self, namespace: str, body: dict[str, Any], patch: dict[str, Any]
    ) -> tuple[int, str, list[str]]:
        """The same for a merge patch of the object `body` names."""
        path = f"{self._path(namespace, body)}/{body['metadata']['name']}"
        return self._send("PATCH", path, patch, "application/merge-patch+json")

    @staticmethod
    def _path(namespace: str, body: dict[str, Any]) -> str:
        group_version = body["apiVersion"]
        prefix = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        plural = {"Pod": "pods", "Deployment": "deployments", "CronJob": "cronjobs"}[body["kind"]]
        return f"{prefix}/namespaces/{namespace}/{plural}"

    def _send(
        self, method: str, path: str, body: dict[str, Any], content_type: str
    ) -> tuple[int, str, list[str]]:
        request = self.api.param_serialize(
            method,
            path,
            query_params=[("dryRun", "All")],
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(*request)
        answer = json.loads(response.read() or b"{}")
        if response.status >= 400:
            return response.status, str(answer.get("message", "")), []
        warnings = [value for key, value in response.getheaders().items() if key.lower() == "warning"]
        return response.status, "", warnings


@pytest.fixture
def admission(api: client.ApiClient) -> Admission:
    return Admission(api)


def workloads_baseline(label: str, **overrides: Any) -> dict[str, Any]:
    return {
        "namespaceSelector": {"matchLabels": {"e2e": label}},
        "workloads": {"allowedRegistries": [REGISTRY]},
        **overrides,
    }


def refused(admission: Admission, namespace: str, body: dict[str, Any]) -> str:
    status, message, _ = admission.create(namespace, body)
    return message if status == 403 else ""


def admitted(admission: Admission, namespace: str, body: dict[str, Any]) -> bool:
    return admission.create(namespace, body)[0] == 201


def test_every_rule_refuses_a_pod_and_a_deployment_breaking_it_and_admits_the_compliant_one(
    operator: OperatorProcess,
    admission: Admission,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    namespace = make_namespace("wl", {"e2e": label})
    other = make_namespace("wl-other")
    name = make_baseline(workloads_baseline(label))["metadata"]["name"]
    eventually(
        lambda: refused(admission, namespace, pod(broken("requireDigest"))), what="the policy in force"
    )
    assert admitted(admission, namespace, pod(compliant_pod_spec()))
    assert admitted(admission, namespace, deployment(compliant_pod_spec()))
    for rule in BREAKS:
        for body in (pod(broken(rule)), deployment(broken(rule))):
            message = refused(admission, namespace, body)
            assert f"SecurityBaseline {name}, rule {rule}:" in message, (rule, body["kind"], message)
            if rule not in POD_RULES:
                assert "container app " in message, message
        # The namespace the baseline does not select is not touched.
        assert admitted(admission, other, pod(broken(rule))), rule
    # Init containers and CronJobs' templates too.
    with_init = compliant_pod_spec()
    init = copy.deepcopy(first_container(with_init))
    init.update(name="init", image=f"{REGISTRY}team/init:latest")
    with_init["initContainers"] = [init]
    assert "container init must name its image by digest" in refused(admission, namespace, pod(with_init))
    assert "rule noPrivileged" in refused(admission, namespace, cron_job(broken("noPrivileged")))
    print(policy_check_durations(admission.api, f"baseline-{name}-workloads"))  # noqa: T201 - for the notes


def policy_check_durations(api: client.ApiClient, policy: str) -> str:
    """What the API server measured of the policy's checks (its own metric), as one line."""
    response = api.call_api(*api.param_serialize("GET", "/metrics", auth_settings=["BearerToken"]))
    totals: dict[str, float] = {}
    for line in response.read().decode().splitlines():
        if line.startswith("apiserver_validating_admission_policy_check_duration_seconds_") and (
            f'policy="{policy}"' in line
        ):
            metric = line.split("{")[0].rsplit("_", 1)[1]
            if metric in {"sum", "count"}:
                totals[metric] = totals.get(metric, 0.0) + float(line.rsplit(" ", 1)[1])
    count = totals.get("count", 0.0)
    mean = totals.get("sum", 0.0) / count * 1000 if count else 0.0
    return f"{policy}: {count:.0f} checks, mean {mean:.2f} ms (the API server's check duration histogram)"


def test_what_ran_before_the_baseline_may_scale_but_not_change_its_pod_spec(
    operator: OperatorProcess,
    api: client.ApiClient,
    admission: Admission,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    namespace = make_namespace("wl-before", {"e2e": label})
    legacy = deployment(broken("runAsNonRoot"))
    client.AppsV1Api(api).create_namespaced_deployment(namespace, legacy)
    make_baseline(workloads_baseline(label))
    eventually(
        lambda: refused(admission, namespace, pod(broken("requireDigest"))), what="the policy in force"
    )
    status, message, _ = admission.patch(namespace, legacy, {"spec": {"replicas": 3}})
    assert status == 200, message
    changed = {
        "spec": {
            "template": {"metadata": {"annotations": {"restartedAt": "now"}}, "spec": {"hostIPC": False}}
        }
    }
    assert "rule runAsNonRoot" in admission.patch(namespace, legacy, changed)[1]


def test_audit_mode_warns_and_admits(
    operator: OperatorProcess,
    admission: Admission,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    namespace = make_namespace("wl-audit", {"e2e": label})
    name = make_baseline(workloads_baseline(label, mode="Audit"))["metadata"]["name"]

    def warned(rule: str) -> list[str]:
        status, _, warnings = admission.create(namespace, pod(broken(rule)))
        assert status == 201, status
        return [warning for warning in warnings if f"SecurityBaseline {name}, rule {rule}:" in warning]

    eventually(lambda: warned("requireDigest"), what="the audit policy in force")
    for rule in BREAKS:
        assert warned(rule), rule
    assert admission.create(namespace, pod(compliant_pod_spec()))[2] == []


def test_an_exemption_lifts_a_rule_for_its_namespaces_until_it_expires(
    operator: OperatorProcess,
    admission: Admission,
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    exempt = make_namespace("wl-exempt", {"e2e": label})
    strict = make_namespace("wl-strict", {"e2e": label})
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=12)).replace(microsecond=0)
    exemption = {
        "namespaces": [exempt],
        "rules": ["requireDigest"],
        "reason": "vendor chart pins tags only; ticket SEC-123",
        "expires": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    name = make_baseline(workloads_baseline(label, exemptions=[exemption]))["metadata"]["name"]
    tagged = pod(broken("requireDigest"))
    eventually(lambda: refused(admission, strict, tagged), what="the policy in force")
    assert admitted(admission, exempt, tagged)
    # Only that rule is lifted there.
    assert refused(admission, exempt, pod(broken("noPrivileged")))
    entry = eventually(lambda: (kube.baseline(name).get("status") or {}).get("exemptions"), what="status")[0]
    assert entry["state"] == "Active"
    assert entry["expires"] == exemption["expires"]
    # At the expiry, the rule holds again there, by itself.
    while dt.datetime.now(dt.UTC) < expires:
        assert admitted(admission, exempt, tagged)
        time.sleep(0.05)
    back = eventually(lambda: refused(admission, exempt, tagged), interval=0.05, what="the rule back")
    late = (dt.datetime.now(dt.UTC) - expires).total_seconds()
    assert "rule requireDigest" in back
    print(f"rule back {late:.2f} s after the expiry")  # noqa: T201 - the number for the notes
    assert late < 5, f"the rule came back {late:.2f} s after the expiry"
    eventually(
        lambda: kube.baseline(name)["status"]["exemptions"][0]["state"] == "Expired", what="reported Expired"
    )


def test_an_exemption_of_a_section_releases_it_and_it_comes_back_at_the_expiry(
    operator: OperatorProcess,
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    exempt = make_namespace("lr-exempt", {"e2e": label})
    strict = make_namespace("lr-strict", {"e2e": label})
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=12)).replace(microsecond=0)
    spec = {
        "namespaceSelector": {"matchLabels": {"e2e": label}},
        "limitRange": {"default": {"cpu": "500m"}},
        "exemptions": [
            {
                "namespaces": [exempt],
                "sections": ["limitRange"],
                "reason": "load test needs unbounded pods this week",
                "expires": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        ],
    }
    make_baseline(spec)
    eventually(lambda: kube.managed(strict) == {"LimitRange/baseline-limits"}, what="the strict namespace")
    assert kube.managed(exempt) == set()
    while dt.datetime.now(dt.UTC) < expires:
        assert kube.managed(exempt) == set()
        time.sleep(0.1)
    eventually(lambda: kube.managed(exempt) == {"LimitRange/baseline-limits"}, interval=0.05, what="back")
    late = (dt.datetime.now(dt.UTC) - expires).total_seconds()
    print(f"section back {late:.2f} s after the expiry")  # noqa: T201 - the number for the notes
    assert late < 5, f"the section came back {late:.2f} s after the expiry"


def test_an_exemption_running_too_long_is_reported_and_not_applied(
    operator: OperatorProcess,
    admission: Admission,
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    namespace = make_namespace("wl-long", {"e2e": label})
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=200)
    exemption = {
        "namespaces": [namespace],
        "sections": ["workloads"],
        "reason": "we would rather not be bothered this year",
        "expires": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    name = make_baseline(workloads_baseline(label, exemptions=[exemption]))["metadata"]["name"]
    eventually(
        lambda: (
            (kube.baseline(name).get("status") or {}).get("exemptions", [{}])[0].get("state") == "TooLong"
        ),
        what="reported TooLong",
    )
    eventually(lambda: refused(admission, namespace, pod(broken("requireDigest"))), what="the rule in force")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            {"exemptions": [{"namespaces": ["a"], "rules": ["minUID"], "expires": "2027-01-01T00:00:00Z"}]},
            "reason",
        ),
        (
            {
                "exemptions": [
                    {
                        "namespaces": ["a"],
                        "rules": ["minUID"],
                        "reason": "because",
                        "expires": "2027-01-01T00:00:00Z",
                    }
                ]
            },
            "spec.exemptions[0].reason",
        ),
        (
            {"exemptions": [{"namespaces": ["a"], "rules": ["minUID"], "reason": "because of a vendor"}]},
            "expires",
        ),
        (
            {
                "exemptions": [
                    {"namespaces": ["a"], "reason": "because of a vendor", "expires": "2027-01-01T00:00:00Z"}
                ]
            },
            "spec.exemptions[0]",
        ),
        ({"workloads": {"allowedRegistries": ["Not A Registry"]}}, "spec.workloads.allowedRegistries[0]"),
        ({"workloads": {"minUID": -1}}, "spec.workloads.minUID"),
        ({"workloads": {"noSuchRule": True}}, "noSuchRule"),
    ],
)
def test_the_crd_refuses_bad_workload_rules_and_exemptions_naming_the_field(
    custom: client.CustomObjectsApi, crd: None, change: dict[str, Any], field: str
) -> None:
    body = {
        "apiVersion": "baseline.dev/v1alpha1",
        "kind": "SecurityBaseline",
        "metadata": {"name": "bad-workloads"},
        "spec": {"namespaceSelector": {"matchLabels": {"e2e": "none"}}, **change},
    }
    with pytest.raises(client.ApiException) as refusal:
        custom.create_cluster_custom_object(
            "baseline.dev", "v1alpha1", "securitybaselines", body, field_validation="Strict"
        )
    # Invalid, or (an unknown field, with strict field validation) BadRequest.
    assert refusal.value.status in {400, 422}, refusal.value.body
    assert field in refusal.value.body


def test_the_policy_is_repaired_and_goes_with_its_baseline(
    operator: OperatorProcess,
    api: client.ApiClient,
    admission: Admission,
    custom: client.CustomObjectsApi,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    registration = client.AdmissionregistrationV1Api(api)
    namespace = make_namespace("wl-drift", {"e2e": label})
    name = make_baseline(workloads_baseline(label))["metadata"]["name"]
    policy = f"baseline-{name}-workloads"
    eventually(lambda: refused(admission, namespace, pod(broken("requireDigest"))), what="the policy")
    registration.delete_validating_admission_policy_binding(policy)
    eventually(lambda: _binding_exists(registration, policy), what="the binding re-created")
    registration.patch_validating_admission_policy(
        policy, {"spec": {"validations": [{"expression": "true"}]}}
    )
    eventually(
        lambda: len(registration.read_validating_admission_policy(policy).spec.validations) == len(BREAKS),
        what="the policy repaired",
    )
    eventually(lambda: refused(admission, namespace, pod(broken("requireDigest"))), what="refusing again")
    custom.delete_cluster_custom_object("baseline.dev", "v1alpha1", "securitybaselines", name)
    eventually(lambda: not _binding_exists(registration, policy), what="the binding gone with the baseline")
    eventually(lambda: admitted(admission, namespace, pod(broken("requireDigest"))), what="admitted again")


def _binding_exists(registration: client.AdmissionregistrationV1Api, name: str) -> bool:
    try:
        registration.read_validating_admission_policy_binding(name)
    except client.ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def test_running_pods_that_break_a_rule_are_reported_and_leave_the_report_when_fixed(
    operator: OperatorProcess,
    api: client.ApiClient,
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    namespace = make_namespace("wl-running", {"e2e": label})
    core = client.CoreV1Api(api)
    # Created before the baseline: admitted then, reported now (the API server judges the same Pods in
    # the tests above; the unit tests check the audit reads them alike, rule by rule).
    core.create_namespaced_pod(namespace, {**pod(broken("requireDigest")), "metadata": {"name": "legacy"}})
    core.create_namespaced_pod(namespace, {**pod(compliant_pod_spec()), "metadata": {"name": "fine"}})
    name = make_baseline(workloads_baseline(label))["metadata"]["name"]
    series = f'baseline="{name}",namespace="{namespace}",rule="requireDigest"'
    gauge = f"baseline_operator_workload_violations{{{series}}} 1.0"

    def reported() -> list[dict[str, Any]]:
        problems = kube.problems(name)
        return [p for p in problems if p["reason"] == "WorkloadViolation" and p["namespace"] == namespace]

    [problem] = eventually(reported, what="the running Pod reported")
    assert (problem["kind"], problem["name"], problem["rule"]) == ("Pod", "legacy", "requireDigest")
    assert "container app" in problem["message"]
    assert problem["controls"] == ["CIS-5.5.1", "C-0306"]  # what an auditor traces it to (docs/controls.md)
    eventually(lambda: gauge in operator.metrics(), what="the gauge")
    assert kube.ready(name)  # a finding about workloads, not a failure to apply the baseline
    # Fixed (the image pinned by digest: an update the policy admits), it leaves the report and the gauge.
    pinned = first_container(compliant_pod_spec())["image"]
    core.patch_namespaced_pod(
        "legacy", namespace, {"spec": {"containers": [{"name": "app", "image": pinned}]}}
    )
    eventually(lambda: not reported(), what="the report gone")
    eventually(lambda: gauge.rsplit(" ", 1)[0] not in operator.metrics(), what="the gauge gone")
