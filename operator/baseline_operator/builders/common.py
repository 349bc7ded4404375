"""What every object the operator creates carries: its labels, its owner and its field manager.

The labels let the operator find its objects again by selector (for pruning and drift reports); the
ownerReference lets the garbage collector remove them when the SecurityBaseline goes. Only the
baseline's name and uid are ever used: its own labels and annotations (Argo CD's tracking label
among them) are never copied, or a GitOps tool would prune what we create and a delete/re-create
war would start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from baseline_operator.spec import BaselineRef, LabelSelector, NamespaceInfo, Section

MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE: Final = "baseline-operator"
BASELINE_LABEL: Final = "baseline.dev/baseline"
SECTION_LABEL: Final = "baseline.dev/section"
# On a Namespace: an Enforce baseline selects it. Admission protection (manifests/admission) keys on it:
# the Pod Security labels and the labels the baselines select by may then change only through the
# operator.
ENFORCED_LABEL: Final = "baseline.dev/enforced"
ENFORCED_VALUE: Final = "true"
# On an enforced Namespace: the label keys Enforce baselines read, comma-separated, which admission
# protection (manifests/admission/selection-labels.yaml) keeps from anyone but the operator.
PROTECTED_LABELS_ANNOTATION: Final = "baseline.dev/protected-labels"
# On a Namespace: the baseline whose cluster-scoped Admin-tier policy blocks the metadata APIs there (that
# policy selects the namespaces by this label; see admin_network_policy.py).
METADATA_BLOCK_LABEL: Final = "baseline.dev/metadata-block"
# Every object the operator names itself starts with this.
NAME_PREFIX: Final = "baseline-"
OWNER_API_VERSION: Final = "baseline.dev/v1alpha1"
OWNER_KIND: Final = "SecurityBaseline"

_MAX_LABEL_VALUE_LENGTH = 63
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")


class BuildError(ValueError):
    """A valid spec that cannot be rendered for this particular namespace or baseline."""


@dataclass(frozen=True)
class BuildContext:
    """Everything a builder needs besides the spec: who owns the result, and where it goes."""

    baseline: BaselineRef
    namespace: NamespaceInfo
    other_egress_selectors: tuple[LabelSelector, ...] = ()
    """Pod selectors of the namespace's egress policies that are not ours: the metadata block must never
    select those pods (see network_policy.py)."""
    metadata_blocked_above: bool = False
    """An Admin-tier policy of this baseline blocks the metadata APIs here: no NetworkPolicy block needed."""


def managed_labels(baseline: BaselineRef, section: Section) -> dict[str, str]:
    # A SecurityBaseline name may be up to 253 characters but a label value only 63: such a name
    # would make every apply fail, so say so plainly instead of letting the API server refuse it.
    if len(baseline.name) > _MAX_LABEL_VALUE_LENGTH or not _LABEL_VALUE.fullmatch(baseline.name):
        raise BuildError(
            f"SecurityBaseline name {baseline.name!r} cannot be a label value "
            f"(at most {_MAX_LABEL_VALUE_LENGTH} characters); rename the baseline"
        )
    return {
        MANAGED_BY_LABEL: MANAGED_BY_VALUE,
        BASELINE_LABEL: baseline.name,
        SECTION_LABEL: section.value,
    }


def owner_reference(baseline: BaselineRef) -> dict[str, Any]:
    # The baseline is cluster-scoped, so it may own namespaced objects. No blockOwnerDeletion: it
    # would need `update` on securitybaselines/finalizers for nothing the operator relies on.
    return {
        "apiVersion": OWNER_API_VERSION,
        "kind": OWNER_KIND,
        "name": baseline.name,
        "uid": baseline.uid,
        "controller": True,
    }


def managed_metadata(name: str, section: Section, context: BuildContext) -> dict[str, Any]:
    """Metadata of an object the operator creates and owns in the target namespace."""
    return {
        "name": name,
        "namespace": context.namespace.name,
        "labels": managed_labels(context.baseline, section),
        "ownerReferences": [owner_reference(context.baseline)],
    }
