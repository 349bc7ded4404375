"""The RoleBindings of the rbac section, with their subjects' placeholders filled in per namespace.

`${namespace}` becomes the target namespace's name and `${label:<key>}` the value of that label on
the namespace. A namespace without the label cannot get the binding: binding a half-rendered name
(`team-`) could grant the role to an unrelated group, so that is a `PlaceholderError`, reported
for the namespace, never a guess.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from baseline_operator.builders.common import NAME_PREFIX, BuildError, managed_metadata
from baseline_operator.spec import (
    LABEL_PLACEHOLDER_PREFIX,
    NAMESPACE_PLACEHOLDER,
    PLACEHOLDER_PATTERN,
    Section,
    SpecError,
    SubjectKind,
    check_namespace_name,
    check_service_account_name,
)

if TYPE_CHECKING:
    import re

    from baseline_operator.builders.common import BuildContext
    from baseline_operator.spec import NamespaceInfo, RbacSpec, RoleBindingSpec, Subject

RBAC_API_GROUP: Final = "rbac.authorization.k8s.io"


class PlaceholderError(BuildError):
    """A subject whose placeholders cannot be filled in for this namespace.

    `binding` is the roleBindings entry's name, `subject` the subject's name as written in the spec,
    and `label` the namespace label that is missing or unusable (None for other reasons).
    """

    def __init__(self, binding: str, subject: str, label: str | None, reason: str) -> None:
        super().__init__(f"roleBinding {binding!r}, subject {subject!r}: {reason}")
        self.binding = binding
        self.subject = subject
        self.label = label
        self.reason = reason


def role_binding_name(binding: RoleBindingSpec) -> str:
    return f"{NAME_PREFIX}{binding.name}"


def build_role_bindings(spec: RbacSpec, context: BuildContext) -> list[dict[str, Any]]:
    """One RoleBinding per entry, sorted by name; PlaceholderError if a subject cannot be rendered."""
    bindings = [_role_binding(binding, context) for binding in spec.role_bindings]
    return sorted(bindings, key=lambda body: str(body["metadata"]["name"]))


def _role_binding(binding: RoleBindingSpec, context: BuildContext) -> dict[str, Any]:
    return {
        "apiVersion": f"{RBAC_API_GROUP}/v1",
        "kind": "RoleBinding",
        "metadata": managed_metadata(role_binding_name(binding), Section.RBAC, context),
        "roleRef": {"apiGroup": RBAC_API_GROUP, "kind": "ClusterRole", "name": binding.cluster_role},
        "subjects": [_subject(binding, subject, context.namespace) for subject in binding.subjects],
    }


def _subject(binding: RoleBindingSpec, subject: Subject, namespace: NamespaceInfo) -> dict[str, Any]:
    name = render_placeholders(subject.name, namespace, binding=binding.name, subject=subject.name)
    if subject.kind is not SubjectKind.SERVICE_ACCOUNT:
        # The API server would default apiGroup for User and Group; setting it ourselves keeps the
        # live object equal to the desired one.
        return {"kind": subject.kind.value, "apiGroup": RBAC_API_GROUP, "name": name}
    subject_namespace = namespace.name
    if subject.namespace is not None:
        subject_namespace = render_placeholders(
            subject.namespace, namespace, binding=binding.name, subject=subject.name
        )
    try:
        check_service_account_name(name, "name")
        check_namespace_name(subject_namespace, "namespace")
    except SpecError as error:
        raise PlaceholderError(binding.name, subject.name, None, f"renders to an invalid {error}") from None
    return {"kind": subject.kind.value, "name": name, "namespace": subject_namespace}


def render_placeholders(template: str, namespace: NamespaceInfo, *, binding: str, subject: str) -> str:
    """`template` with `${namespace}` and `${label:<key>}` filled in from `namespace`."""

    def value(match: re.Match[str]) -> str:
        body = match["body"]
        if body == NAMESPACE_PLACEHOLDER:
            return namespace.name
        # parse_spec admits no other placeholder than these two.
        key = body.removeprefix(LABEL_PLACEHOLDER_PREFIX)
        if key not in namespace.labels:
            raise PlaceholderError(
                binding, subject, key, f"namespace {namespace.name!r} has no label {key!r} for {match[0]}"
            )
        if not namespace.labels[key]:
            raise PlaceholderError(
                binding, subject, key, f"label {key!r} of namespace {namespace.name!r} is empty"
            )
        return namespace.labels[key]

    # One pass: a substituted value is never scanned again for placeholders.
    return PLACEHOLDER_PATTERN.sub(value, template)
