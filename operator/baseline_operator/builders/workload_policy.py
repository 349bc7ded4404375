"""The workloads section as a built-in admission policy: the API server itself checks every container.

One ValidatingAdmissionPolicy and one binding per baseline, both named `baseline-<baseline>-workloads`,
cluster-scoped, owned by the baseline. The binding selects the namespaces the baseline selects (its label
selector, minus the protected namespaces and the names it excludes; glob patterns are matched in the
policy's own conditions) and refuses (Enforce: `Deny`) or warns and records (Audit: `Warn`, `Audit`).

Checked: Pods, and the Pod templates of Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs,
so that a Deployment that would create refused Pods is refused itself, not its ReplicaSet later. Templates
are checked as written: defaults a LimitRange would add to Pods are not there yet.

Each rule is one validation over every container and init container; its message names the baseline, the
rule and the containers that break it. An exemption in force of a rule (or of the whole section) for some
namespaces makes that rule's validation hold there (`exempt`); the operator renders the policy again when
the exemption expires (CEL knows no clock).
"""

from __future__ import annotations

import fnmatch
import json
from typing import TYPE_CHECKING, Any, Final

from baseline_operator.builders.common import managed_labels, owner_reference
from baseline_operator.spec import Section, WorkloadRule

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from baseline_operator.spec import BaselineRef, LabelSelector, WorkloadsSpec

NAMESPACE_NAME_LABEL: Final = "kubernetes.io/metadata.name"
_POD_SPEC: Final = (
    "object.kind == 'Pod' ? object.spec : "
    "(object.kind == 'CronJob' ? object.spec.jobTemplate.spec.template.spec : object.spec.template.spec)"
)
# An update is checked only when it changes the Pod spec (or the Pod template, which makes new Pods, as a
# rollout restart does): scaling a Deployment, a controller relabelling a Pod, or removing a finalizer never
# fails because of what was admitted before the baseline.
_SPEC_WRITTEN: Final = (
    "request.operation == 'CREATE' || "
    "(object.kind == 'Pod' ? object.spec != oldObject.spec : "
    "(object.kind == 'CronJob' ? "
    "object.spec.jobTemplate.spec.template != oldObject.spec.jobTemplate.spec.template : "
    "object.spec.template != oldObject.spec.template))"
)
_CONTAINER_SECURITY = "c.?securityContext"
_POD_SECURITY = "variables.pod.?securityContext"


def workload_policy_name(baseline: str) -> str:
    return f"baseline-{baseline}-workloads"


def _list(values: Iterable[str]) -> str:
    return json.dumps(list(values)).replace('"', "'")


def _container_rules(spec: WorkloadsSpec) -> dict[WorkloadRule, tuple[str, str]]:
    """Per container rule: (CEL that holds for a container `c` keeping it, what the rule asks)."""
    context, pod = _CONTAINER_SECURITY, _POD_SECURITY
    return {
        WorkloadRule.RUN_AS_NON_ROOT: (
            f"{context}.?runAsNonRoot.orValue({pod}.?runAsNonRoot.orValue(false)) == true",
            "must set runAsNonRoot: true (on the container or the Pod)",
        ),
        WorkloadRule.MIN_UID: (
            f"{context}.?runAsUser.orValue({pod}.?runAsUser.orValue(-1)) >= {spec.min_uid}",
            f"must set runAsUser to {spec.min_uid} or more (on the container or the Pod)",
        ),
        WorkloadRule.NO_PRIVILEGED: (f"!{context}.?privileged.orValue(false)", "must not be privileged"),
        WorkloadRule.NO_PRIVILEGE_ESCALATION: (
            f"{context}.?allowPrivilegeEscalation.orValue(true) == false",
            "must set allowPrivilegeEscalation: false",
        ),
        WorkloadRule.DROP_ALL_CAPABILITIES: (
            f"{context}.?capabilities.?drop.orValue([]).exists(d, d == 'ALL')",
            "must drop ALL capabilities",
        ),
        WorkloadRule.READ_ONLY_ROOT_FILESYSTEM: (
            f"{context}.?readOnlyRootFilesystem.orValue(false) == true",
            "must set readOnlyRootFilesystem: true",
        ),
        WorkloadRule.REQUIRE_REQUESTS: (
            f"{_list(spec.require_requests)}.all(r, r in c.?resources.?requests.orValue({{}}))",
            f"must request {', '.join(spec.require_requests)}",
        ),
        WorkloadRule.REQUIRE_LIMITS: (
            f"{_list(spec.require_limits)}.all(r, r in c.?resources.?limits.orValue({{}}))",
            f"must set limits for {', '.join(spec.require_limits)}",
        ),
        WorkloadRule.IMAGE_PULL_POLICY_ALWAYS: (
            "c.?imagePullPolicy.orValue('') == 'Always'",
            "must set imagePullPolicy: Always",
        ),
        WorkloadRule.REQUIRE_DIGEST: (
            "c.image.contains('@sha256:')",
            "must name its image by digest (image@sha256:...)",
        ),
        WorkloadRule.ALLOWED_REGISTRIES: (
            f"{_list(spec.allowed_registries)}.exists(p, c.image.startsWith(p))",
            f"must take its image from {', '.join(spec.allowed_registries)}",
        ),
    }


_POD_RULES: Final = {
    WorkloadRule.NO_HOST_NAMESPACES: (
        (
            "!(variables.pod.?hostNetwork.orValue(false) || variables.pod.?hostPID.orValue(false) || "
            "variables.pod.?hostIPC.orValue(false))"
        ),
        "must not share the network, PID or IPC namespace of the node",
    ),
    WorkloadRule.NO_HOST_PATH: (
        "!variables.pod.?volumes.orValue([]).exists(v, has(v.hostPath))",
        "must not mount a hostPath volume",
    ),
}
"""Per Pod rule: (CEL over `variables.pod` that holds when it is kept, what the rule asks)."""


def rule_asks(spec: WorkloadsSpec) -> dict[WorkloadRule, str]:
    """What each rule asks, as the messages say it (the audit of running Pods says it alike)."""
    asks = {rule: ask for rule, (_, ask) in _container_rules(spec).items()}
    asks.update({rule: ask for rule, (_, ask) in _POD_RULES.items()})
    return asks


def _validation(
    rule: WorkloadRule, spec: WorkloadsSpec, baseline: str, exempt: Sequence[str]
) -> dict[str, Any]:
    prefix = f"'SecurityBaseline {baseline}, rule {rule.value}: "
    container = _container_rules(spec).get(rule)
    if container is not None:
        predicate, asks = container
        expression = f"variables.containers.all(c, {predicate})"
        failing = f"variables.containers.filter(c, !({predicate})).map(c, c.name).join(', ')"
        message = f"{prefix}container ' + {failing} + ' {asks}'"
    else:
        expression, asks = _POD_RULES[rule]
        message = f"{prefix}the Pod {asks}'"
    if exempt:
        expression = f"request.namespace in {_list(exempt)} || ({expression})"
    return {"expression": expression, "messageExpression": message, "reason": "Forbidden"}


def _glob_regex(patterns: Iterable[str]) -> str:
    # fnmatch's translation, as the operator selects with fnmatch; CEL's matches() takes RE2 and searches,
    # so the whole is anchored, and fnmatch's end anchor `\\Z` is RE2's `$`.
    return "^(?:" + "|".join(fnmatch.translate(pattern).replace("\\Z", "$") for pattern in patterns) + ")"


def build_workload_policy(
    spec: WorkloadsSpec,
    baseline: BaselineRef,
    *,
    selector: LabelSelector,
    exclude_namespaces: Iterable[str],
    protected_namespaces: Iterable[str],
    audit: bool,
    exempt: Mapping[WorkloadRule, Sequence[str]],
) -> list[dict[str, Any]]:
    """The policy and its binding, or none when no rule is on; `exempt`: where each rule is lifted."""
    rules = spec.rules()
    if not rules:
        return []
    name = workload_policy_name(baseline.name)
    excluded = list(exclude_namespaces)
    globbed = [pattern for pattern in excluded if any(char in pattern for char in "*?[]")]
    literal = sorted({*protected_namespaces, *(pattern for pattern in excluded if pattern not in globbed)})
    metadata = {
        "name": name,
        "labels": managed_labels(baseline, Section.WORKLOADS),
        "ownerReferences": [owner_reference(baseline)],
    }
    policy_spec: dict[str, Any] = {
        "failurePolicy": "Fail",
        "matchConstraints": {
            "resourceRules": [
                {
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "resources": ["pods"],
                    "operations": ["CREATE", "UPDATE"],
                },
                {
                    "apiGroups": ["apps"],
                    "apiVersions": ["v1"],
                    "resources": ["deployments", "statefulsets", "daemonsets", "replicasets"],
                    "operations": ["CREATE", "UPDATE"],
                },
                {
                    "apiGroups": ["batch"],
                    "apiVersions": ["v1"],
                    "resources": ["jobs", "cronjobs"],
                    "operations": ["CREATE", "UPDATE"],
                },
            ]
        },
        "variables": [
            {"name": "pod", "expression": _POD_SPEC},
            {
                "name": "containers",
                "expression": "variables.pod.containers + variables.pod.?initContainers.orValue([])",
            },
        ],
        "validations": [_validation(rule, spec, baseline.name, exempt.get(rule, ())) for rule in rules],
    }
    policy_spec["matchConditions"] = [{"name": "the-pod-spec-is-written", "expression": _SPEC_WRITTEN}]
    if globbed:
        policy_spec["matchConditions"].append(
            {
                "name": "not-an-excluded-namespace",
                "expression": f"!request.namespace.matches(r'{_glob_regex(globbed)}')",
            }
        )
    expressions = [
        {
            "key": requirement.key,
            "operator": requirement.operator.value,
            **({"values": list(requirement.values)} if requirement.values else {}),
        }
        for requirement in selector.match_expressions
    ]
    expressions.append({"key": NAMESPACE_NAME_LABEL, "operator": "NotIn", "values": literal})
    namespace_selector: dict[str, Any] = {"matchExpressions": expressions}
    if selector.match_labels:
        namespace_selector["matchLabels"] = {key: selector.match_labels[key] for key in selector.match_labels}
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {
            "name": name,
            "labels": managed_labels(baseline, Section.WORKLOADS),
            "ownerReferences": [owner_reference(baseline)],
        },
        "spec": {
            "policyName": name,
            "validationActions": ["Warn", "Audit"] if audit else ["Deny"],
            "matchResources": {"namespaceSelector": namespace_selector},
        },
    }
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": metadata,
        "spec": policy_spec,
    }
    return [policy, binding]
