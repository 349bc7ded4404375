"""Observed records for planner and drift tests: baselines, namespaces and what a converged cluster holds."""

from __future__ import annotations

from typing import Any

from baseline_operator.builders import BuildContext, build_all
from baseline_operator.compare import leaf_paths
from baseline_operator.observed import ObservedBaseline, ObservedNamespace, ObservedObject, observe_object
from baseline_operator.planner import NamespaceView, Policy
from baseline_operator.spec import BaselineRef, parse_spec

POLICY = Policy(
    protected_namespaces=frozenset({"kube-system", "baseline-system"}),
    allowed_cluster_roles=frozenset({"view", "edit"}),
)
ROLES = frozenset({"view", "edit", "admin"})

FULL = {
    "networkPolicy": {},
    "limitRange": {"default": {"cpu": "500m"}},
    "resourceQuota": {"hard": {"pods": "10"}},
    "rbac": {
        "roleBindings": [
            {"name": "team", "clusterRole": "view", "subjects": [{"kind": "Group", "name": "g-${namespace}"}]}
        ]
    },
    "podSecurity": {"enforce": "restricted"},
}


def baseline(name: str, spec: dict[str, Any], *, generation: int = 1) -> ObservedBaseline:
    return ObservedBaseline(name=name, uid=f"uid-{name}", generation=generation, spec=parse_spec(spec))


def namespace(
    name: str = "team-a",
    labels: dict[str, str] | None = None,
    *,
    owned: frozenset = frozenset(),
    terminating: bool = False,
) -> ObservedNamespace:
    return ObservedNamespace(
        name=name,
        uid=f"uid-{name}",
        labels={"kubernetes.io/metadata.name": name, **(labels or {})},
        terminating=terminating,
        owned=owned,
    )


def account(ns: str, *, automount: bool | None = None, owned: frozenset = frozenset()) -> ObservedObject:
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "default", "namespace": ns, "uid": f"sa-{ns}"},
    }
    if automount is not None:
        body["automountServiceAccountToken"] = automount
    return ObservedObject.from_body("ServiceAccount", ns, "default", f"sa-{ns}", body, owned=owned)


def applied(body: dict[str, Any], **server_additions: Any) -> ObservedObject:
    """`body` as the API server stores it after our apply: with a uid, defaults, and owned by us."""
    stored = {
        **body,
        "metadata": {**body["metadata"], "uid": f"uid-{body['metadata']['name']}", "resourceVersion": "7"},
    }
    stored.update(server_additions)
    observed = observe_object(stored)
    return ObservedObject.from_body(
        observed.kind,
        observed.namespace,
        observed.name,
        observed.uid,
        observed.body,
        owned=frozenset(leaf_paths(body)),
    )


def view(
    ns: ObservedNamespace,
    baselines: list[ObservedBaseline],
    objects: list[ObservedObject] = (),
    sa: ObservedObject | None = None,
) -> NamespaceView:
    return NamespaceView(ns.name, ns, baselines, list(objects), sa or account(ns.name), ROLES)


def converged(
    ns: ObservedNamespace, base: ObservedBaseline
) -> tuple[list[ObservedObject], ObservedNamespace, ObservedObject]:
    """What the cluster holds once `base` was fully applied to `ns`."""
    assert base.spec is not None
    bodies = build_all(base.spec, BuildContext(BaselineRef(base.name, base.uid), ns.info), base.spec.sections)
    objects = [applied(body) for body in bodies if body["kind"] not in {"Namespace", "ServiceAccount"}]
    namespace_body = next(
        (body for body in bodies if body["kind"] == "Namespace"), {"metadata": {"labels": {}}}
    )
    labels = namespace_body["metadata"]["labels"]
    ns_after = namespace(
        ns.name, {**ns.labels, **labels}, owned=frozenset(("metadata", "labels", key) for key in labels)
    )
    manages_account = any(body["kind"] == "ServiceAccount" for body in bodies)
    sa = (
        account(ns.name, automount=False, owned=frozenset({("automountServiceAccountToken",)}))
        if manages_account
        else account(ns.name)
    )
    return objects, ns_after, sa
