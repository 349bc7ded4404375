"""The LimitRange of the limitRange section: one limit of type Container.

Quantities are written as the user spelled them. The API server may store another spelling (`1000m`
becomes `1`); comparison by value (compare.py) keeps that from looking like drift.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from baseline_operator.builders.common import managed_metadata
from baseline_operator.spec import Section

if TYPE_CHECKING:
    from collections.abc import Mapping

    from baseline_operator.builders.common import BuildContext
    from baseline_operator.spec import LimitRangeSpec

LIMIT_RANGE_NAME: Final = "baseline-limits"


def build_limit_range(spec: LimitRangeSpec, context: BuildContext) -> dict[str, Any]:
    limit: dict[str, Any] = {"type": "Container"}
    for field, quantities in (
        ("default", spec.default),
        ("defaultRequest", spec.default_request),
        ("max", spec.max),
        ("min", spec.min),
        ("maxLimitRequestRatio", spec.max_limit_request_ratio),
    ):
        # An empty map is left out rather than sent as `{}`: the API server drops it anyway, and
        # then a field we "set" would never be found on the live object.
        if quantities:
            limit[field] = _sorted(quantities)
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": managed_metadata(LIMIT_RANGE_NAME, Section.LIMIT_RANGE, context),
        "spec": {"limits": [limit]},
    }


def _sorted(quantities: Mapping[str, str]) -> dict[str, str]:
    return {resource: quantities[resource] for resource in sorted(quantities)}
