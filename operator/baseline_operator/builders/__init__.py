"""The desired objects of a SecurityBaseline in one namespace: pure functions, no API calls.

Each section has its builder module; `build_section` renders one section and `build_all` several.
Given the same spec and namespace they return equal lists of plain JSON-able dicts, ready for
server-side apply with `FIELD_MANAGER`, in a fixed order that is also a safe order to apply in.
Nothing here reads the cluster or mutates its inputs, and no two returned objects share a part.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from baseline_operator.builders.common import BuildContext, BuildError
from baseline_operator.builders.limit_range import build_limit_range
from baseline_operator.builders.network_policy import build_network_policies, metadata_cidrs
from baseline_operator.builders.pod_security import build_pod_security_namespace
from baseline_operator.builders.resource_quota import build_resource_quota
from baseline_operator.builders.role_bindings import PlaceholderError, build_role_bindings
from baseline_operator.builders.service_account import build_default_service_account
from baseline_operator.identity import FIELD_MANAGER
from baseline_operator.spec import (
    LimitRangeSpec,
    NetworkPolicySpec,
    PodSecuritySpec,
    RbacSpec,
    ResourceQuotaSpec,
    Section,
    WorkloadsSpec,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from baseline_operator.spec import BaselineSpec, SectionSpec

__all__ = [
    "FIELD_MANAGER",
    "BuildContext",
    "BuildError",
    "PlaceholderError",
    "build_all",
    "build_section",
    "metadata_cidrs",
]


def build_section(section: Section, spec: BaselineSpec, context: BuildContext) -> list[dict[str, Any]]:
    """The objects of one section, sorted by kind and name; empty if the spec does not manage it.

    Raises BuildError (PlaceholderError for a RoleBinding subject) when the section cannot be
    rendered for this namespace.
    """
    settings = spec.section(section)
    objects = [] if settings is None else _render(settings, context)
    # Within a section, by name is the safe apply order (allows before the default deny).
    return sorted(objects, key=lambda body: (str(body["kind"]), str(body["metadata"]["name"])))


def _render(settings: SectionSpec, context: BuildContext) -> list[dict[str, Any]]:
    match settings:
        case NetworkPolicySpec():
            return build_network_policies(settings, context)
        case LimitRangeSpec():
            return [build_limit_range(settings, context)]
        case ResourceQuotaSpec():
            return [build_resource_quota(settings, context)]
        case RbacSpec():
            objects = build_role_bindings(settings, context)
            if settings.default_service_account is not None:
                objects.append(build_default_service_account(settings.default_service_account, context))
            return objects
        case PodSecuritySpec():
            return [build_pod_security_namespace(settings, context)]
        case WorkloadsSpec():
            # Nothing in the namespace: the rules are a cluster-scoped admission policy per baseline
            # (workload_policy.py), written by the cluster-objects reconciler.
            return []


def build_all(spec: BaselineSpec, context: BuildContext, sections: Iterable[Section]) -> list[dict[str, Any]]:
    """The objects of `sections`, in `Section` order whatever order they are given in.

    `sections` are those this baseline wins in the namespace; `spec.sections` are all it manages.
    """
    wanted = set(sections)
    return [
        body for section in Section if section in wanted for body in build_section(section, spec, context)
    ]
