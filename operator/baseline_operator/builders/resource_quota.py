"""The ResourceQuota of the resourceQuota section.

Quantities are written as the user spelled them; the API server's normalised spelling is compared by
value elsewhere (compare.py), so `20Gi` against a stored `20Gi` or `1000m` against `1` is no drift.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from baseline_operator.builders.common import managed_metadata
from baseline_operator.spec import Section

if TYPE_CHECKING:
    from baseline_operator.builders.common import BuildContext
    from baseline_operator.spec import ResourceQuotaSpec

RESOURCE_QUOTA_NAME: Final = "baseline-quota"


def build_resource_quota(spec: ResourceQuotaSpec, context: BuildContext) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": managed_metadata(RESOURCE_QUOTA_NAME, Section.RESOURCE_QUOTA, context),
        "spec": {"hard": {resource: spec.hard[resource] for resource in sorted(spec.hard)}},
    }
