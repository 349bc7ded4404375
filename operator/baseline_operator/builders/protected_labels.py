"""The ConfigMap that admission protection reads: which namespace label keys the baselines depend on.

manifests/admission/selection-labels.yaml binds its ValidatingAdmissionPolicy to this ConfigMap as its
parameter. The operator writes it from the baselines (see `selection.protected_label_keys`), so that a new
baseline protects its keys without anyone changing the installation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from baseline_operator.builders.common import MANAGED_BY_LABEL, MANAGED_BY_VALUE

if TYPE_CHECKING:
    from collections.abc import Iterable

PROTECTED_LABELS_NAME: Final = "baseline-operator-protected-labels"
LABEL_KEYS_FIELD: Final = "labelKeys"
_SEPARATOR: Final = ","


def build_protected_labels(keys: Iterable[str], namespace: str) -> dict[str, Any]:
    """Label keys never hold a comma (a key is a DNS subdomain prefix and a name), so one joined string."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": PROTECTED_LABELS_NAME,
            "namespace": namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE},
        },
        "data": {LABEL_KEYS_FIELD: _SEPARATOR.join(sorted(keys))},
    }


def published_keys(body: dict[str, Any] | None) -> tuple[str, ...] | None:
    """The keys a stored ConfigMap holds; None if there is none (or it is not ours to read)."""
    if body is None:
        return None
    text = (body.get("data") or {}).get(LABEL_KEYS_FIELD)
    if not isinstance(text, str):
        return None
    return tuple(sorted(key for key in text.split(_SEPARATOR) if key))
