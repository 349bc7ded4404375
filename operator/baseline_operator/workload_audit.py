"""Which running Pods break a baseline's workload rules (pure): the audit of what admission did not see.

Pods created before the baseline, or while it was in Audit mode, or before an exemption ended, are not
refused retroactively; this reports them instead. Each rule reads a Pod as the ValidatingAdmissionPolicy's
CEL does (builders/workload_policy.py): a container setting wins over the Pod's, a field left out means
the Kubernetes default. The e2e tests check both on the same Pods: what the API server refuses, the audit
reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from baseline_operator.spec import WorkloadRule

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from baseline_operator.pods import ObservedContainer, ObservedPod
    from baseline_operator.spec import WorkloadsSpec


@dataclass(frozen=True)
class Violation:
    """One rule one container (or, for Pod rules, the Pod: container "") of a workload breaks."""

    workload: str
    container: str
    rule: WorkloadRule


def _container_checks(
    spec: WorkloadsSpec, pod: ObservedPod
) -> dict[WorkloadRule, Callable[[ObservedContainer], bool]]:
    """Per container rule: whether the container keeps it."""

    def non_root(c: ObservedContainer) -> bool:
        return (c.run_as_non_root if c.run_as_non_root is not None else pod.run_as_non_root) is True

    def uid(c: ObservedContainer) -> bool:
        user = c.run_as_user if c.run_as_user is not None else pod.run_as_user
        return spec.min_uid is not None and user is not None and user >= spec.min_uid

    return {
        WorkloadRule.RUN_AS_NON_ROOT: non_root,
        WorkloadRule.MIN_UID: uid,
        WorkloadRule.NO_PRIVILEGED: lambda c: not c.privileged,
        WorkloadRule.NO_PRIVILEGE_ESCALATION: lambda c: c.allow_privilege_escalation is False,
        WorkloadRule.DROP_ALL_CAPABILITIES: lambda c: c.drops_all,
        WorkloadRule.READ_ONLY_ROOT_FILESYSTEM: lambda c: c.read_only_root,
        WorkloadRule.REQUIRE_REQUESTS: lambda c: set(spec.require_requests) <= c.requests,
        WorkloadRule.REQUIRE_LIMITS: lambda c: set(spec.require_limits) <= c.limits,
        WorkloadRule.IMAGE_PULL_POLICY_ALWAYS: lambda c: c.pull_policy == "Always",
        WorkloadRule.REQUIRE_DIGEST: lambda c: "@sha256:" in c.image,
        WorkloadRule.ALLOWED_REGISTRIES: lambda c: any(
            c.image.startswith(p) for p in spec.allowed_registries
        ),
    }


def violations(
    pods: Iterable[ObservedPod], spec: WorkloadsSpec, lifted: Callable[[WorkloadRule], bool]
) -> list[Violation]:
    """Each (workload, container, rule) broken by some Pod, once however many replicas break it, sorted.

    `lifted(rule)`: an exemption in force lifts the rule here; it is not reported.
    """
    rules = [rule for rule in spec.rules() if not lifted(rule)]
    found: set[Violation] = set()
    for pod in pods:
        checks = _container_checks(spec, pod)
        for rule in rules:
            if rule is WorkloadRule.NO_HOST_NAMESPACES:
                if pod.host_namespaces:
                    found.add(Violation(pod.workload, "", rule))
            elif rule is WorkloadRule.NO_HOST_PATH:
                if pod.host_path:
                    found.add(Violation(pod.workload, "", rule))
            else:
                keeps = checks[rule]
                found.update(
                    Violation(pod.workload, container.name, rule)
                    for container in pod.containers
                    if not keeps(container)
                )
    return sorted(found, key=lambda v: (v.workload, v.container, list(WorkloadRule).index(v.rule)))
