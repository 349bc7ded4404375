"""The benchmark lines each workload rule and section implements, for `status.problems[].controls`.

The same mapping, with titles and sources, is docs/controls.md (a unit test keeps the two in step): CIS
Kubernetes Benchmark v1.9.0 section numbers (`CIS-5.2.7`) and Kubescape control IDs (`C-0013`), so that an
auditor can trace a finding to a benchmark line.
"""

from __future__ import annotations

from typing import Final

from baseline_operator.spec import Section, WorkloadRule

RULE_CONTROLS: Final[dict[WorkloadRule, tuple[str, ...]]] = {
    WorkloadRule.RUN_AS_NON_ROOT: ("CIS-5.2.7", "CIS-5.7.3", "C-0013"),
    WorkloadRule.MIN_UID: ("CIS-5.2.7", "CIS-5.7.3", "C-0013"),
    WorkloadRule.NO_PRIVILEGED: ("CIS-5.2.2", "C-0057"),
    WorkloadRule.NO_PRIVILEGE_ESCALATION: ("CIS-5.2.6", "C-0016"),
    WorkloadRule.DROP_ALL_CAPABILITIES: ("CIS-5.2.8", "CIS-5.2.9", "CIS-5.2.10", "C-0046", "C-0055"),
    WorkloadRule.READ_ONLY_ROOT_FILESYSTEM: ("CIS-5.7.3", "C-0017"),
    WorkloadRule.REQUIRE_REQUESTS: ("C-0268", "C-0269"),
    WorkloadRule.REQUIRE_LIMITS: ("C-0270", "C-0271", "C-0009"),
    WorkloadRule.IMAGE_PULL_POLICY_ALWAYS: ("C-0075",),
    WorkloadRule.REQUIRE_DIGEST: ("CIS-5.5.1", "C-0306"),
    WorkloadRule.ALLOWED_REGISTRIES: ("CIS-5.5.1", "C-0078", "C-0001"),
    WorkloadRule.NO_HOST_NAMESPACES: ("CIS-5.2.3", "CIS-5.2.4", "CIS-5.2.5", "C-0038", "C-0041"),
    WorkloadRule.NO_HOST_PATH: ("CIS-5.2.12", "C-0048", "C-0045"),
}

METADATA_BLOCK_CONTROLS: Final = ("C-0052",)
"""The metadata block (networkPolicy.metadataAPI): Kubescape's Instance Metadata API."""

SECTION_CONTROLS: Final[dict[Section, tuple[str, ...]]] = {
    Section.NETWORK_POLICY: ("CIS-5.3.2", "C-0260", "C-0030", "C-0206"),
    Section.LIMIT_RANGE: ("C-0009",),
    Section.RESOURCE_QUOTA: (),
    Section.RBAC: ("CIS-5.1.1", "CIS-5.1.5", "CIS-5.1.6", "CIS-5.1.8", "C-0034", "C-0035"),
    Section.POD_SECURITY: ("CIS-5.2.1", "C-0192"),
}
