"""What the operator keeps of each Pod: the few fields the workload rules read, and its workload's name.

Pods are the most numerous objects a cluster holds, so the projection is lean: per container, its name,
image and the settings the rules check; per Pod, its host namespaces and whether it mounts a hostPath.
Replicas share their container records (interned while some Pod holds them), and strings that repeat
(images, names of workloads) are interned: `make bench` measures 0.7 MB per 1000 Pods. A Pod whose
projection did not change (a status update, which is most of a Pod's events) is no news: equality leaves
out the resource version.
"""

from __future__ import annotations

import sys
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

_TEMPLATE_HASH_LABEL = "pod-template-hash"


@dataclass(frozen=True, slots=True, weakref_slot=True)
class ObservedContainer:
    """A container's fields the rules read; None where the container leaves it to the Pod or the default."""

    name: str
    image: str
    pull_policy: str
    run_as_non_root: bool | None
    run_as_user: int | None
    privileged: bool
    allow_privilege_escalation: bool | None
    drops_all: bool
    read_only_root: bool
    requests: frozenset[str]
    limits: frozenset[str]


@dataclass(frozen=True, slots=True)
class ObservedPod:
    """A Pod as the workload rules read it."""

    namespace: str
    name: str
    uid: str
    workload: str
    """`Kind/name` of what made the Pod (a Deployment's ReplicaSet counts as the Deployment), or the Pod."""
    containers: tuple[ObservedContainer, ...]
    run_as_non_root: bool | None
    run_as_user: int | None
    host_namespaces: bool
    host_path: bool
    resource_version: str = field(default="", compare=False)


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _names(value: Any) -> frozenset[str]:
    return frozenset(map(str, value)) if isinstance(value, dict) else frozenset()


# One record per distinct container, for as long as a Pod holds it: replicas are alike.
_SHARED: weakref.WeakValueDictionary[ObservedContainer, ObservedContainer] = weakref.WeakValueDictionary()


def _container(raw: Mapping[str, Any]) -> ObservedContainer:
    context = raw.get("securityContext") or {}
    resources = raw.get("resources") or {}
    drop = (context.get("capabilities") or {}).get("drop") or ()
    container = ObservedContainer(
        name=sys.intern(str(raw.get("name", ""))),
        image=sys.intern(str(raw.get("image", ""))),
        pull_policy=sys.intern(str(raw.get("imagePullPolicy", ""))),
        run_as_non_root=_bool(context.get("runAsNonRoot")),
        run_as_user=_int(context.get("runAsUser")),
        privileged=context.get("privileged") is True,
        allow_privilege_escalation=_bool(context.get("allowPrivilegeEscalation")),
        drops_all="ALL" in drop,
        read_only_root=context.get("readOnlyRootFilesystem") is True,
        requests=_names(resources.get("requests")),
        limits=_names(resources.get("limits")),
    )
    return _SHARED.setdefault(container, container)


def workload_of(metadata: Mapping[str, Any]) -> str:
    """`Kind/name` of the Pod's controller; a Deployment's ReplicaSet is reported as the Deployment."""
    name = str(metadata.get("name", ""))
    controller = next(
        (owner for owner in metadata.get("ownerReferences") or () if owner.get("controller")), None
    )
    if controller is None:
        return f"Pod/{name}"
    kind, owner = str(controller.get("kind", "")), str(controller.get("name", ""))
    template_hash = (metadata.get("labels") or {}).get(_TEMPLATE_HASH_LABEL)
    if kind == "ReplicaSet" and template_hash and owner.endswith(f"-{template_hash}"):
        return sys.intern(f"Deployment/{owner.removesuffix(f'-{template_hash}')}")
    return sys.intern(f"{kind}/{owner}")


def observe_pod(body: Mapping[str, Any]) -> ObservedPod:
    metadata = body.get("metadata") or {}
    spec = body.get("spec") or {}
    context = spec.get("securityContext") or {}
    containers = [*(spec.get("initContainers") or ()), *(spec.get("containers") or ())]
    return ObservedPod(
        namespace=sys.intern(str(metadata.get("namespace", ""))),
        name=str(metadata.get("name", "")),
        uid=str(metadata.get("uid", "")),
        workload=workload_of(metadata),
        containers=tuple(_container(container or {}) for container in containers),
        run_as_non_root=_bool(context.get("runAsNonRoot")),
        run_as_user=_int(context.get("runAsUser")),
        host_namespaces=any(spec.get(key) is True for key in ("hostNetwork", "hostPID", "hostIPC")),
        host_path=any("hostPath" in (volume or {}) for volume in spec.get("volumes") or ()),
        resource_version=str(metadata.get("resourceVersion", "")),
    )
