"""Compute, for one namespace, what must change: the pure middle of read -> compute -> apply.

Input is what the watches observed (namespace, baselines, managed objects, the default
ServiceAccount, existing ClusterRoles); output is a `NamespacePlan`: the writes to make and, per
baseline, what it found. No API call happens here, so every rule is tested in milliseconds.

Rules that keep users' objects safe:
- an object is deleted only if it carries our managed-by label *and* our field manager owns fields
  of it; an object someone merely labelled as ours is reported, never deleted;
- a baseline whose objects in a namespace cannot all be built (a missing label for a placeholder, a
  ClusterRole that is missing or not allowed) writes nothing there and keeps what it wrote before: a
  namespace is never left half-applied;
- a baseline whose stored spec is invalid (written before a CRD upgrade, say) writes nothing and
  removes nothing: its objects stay as they are until its spec is fixed or it is deleted, and while
  any baseline is invalid no Namespace or ServiceAccount field is released, since nothing tells
  which baseline set it (dropping a default-deny because of a typo would be the worst way to report
  that typo);
- a baseline in Audit mode never writes; what it would write is reported as drift;
- the Namespace and its `default` ServiceAccount are not ours: we only set, and later release, the
  fields named in the baseline, through server-side apply (in Enforce mode that apply creates the
  `default` ServiceAccount if the ServiceAccount controller has not yet: it would create the same).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from baseline_operator.builders import BuildContext, BuildError, PlaceholderError, build_section
from baseline_operator.builders.common import FIELD_MANAGER, SECTION_LABEL
from baseline_operator.compare import FieldDifference, ManagerEntry, differences, last_writer_other_than
from baseline_operator.quantity import parse_quantity
from baseline_operator.selection import SectionAssignment, assign_sections, selects
from baseline_operator.spec import BaselineRef, Mode, Section

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from baseline_operator.observed import ObservedBaseline, ObservedNamespace, ObservedObject

_MAX_FIELDS_PER_FINDING = 10


class Reason(StrEnum):
    """Why an object is not as desired (the `reason` of a problem and of drift metrics)."""

    MISSING = "Missing"
    MODIFIED = "Modified"
    UNEXPECTED = "Unexpected"
    FIGHTING = "Fighting"
    CONFLICT = "SectionConflict"
    ROLE_NOT_ALLOWED = "ClusterRoleNotAllowed"
    ROLE_MISSING = "ClusterRoleMissing"
    PLACEHOLDER = "PlaceholderUnresolved"
    NAME_TAKEN = "NameTaken"
    QUOTA_BELOW_USAGE = "QuotaBelowUsage"
    FORBIDDEN = "Forbidden"
    INVALID = "Invalid"
    API_ERROR = "ApiError"


# Problems worth reporting that do not stop a baseline from applying its other sections.
NON_BLOCKING = frozenset({Reason.CONFLICT, Reason.QUOTA_BELOW_USAGE})


@dataclass(frozen=True)
class Policy:
    """Install-time settings that tenants cannot change."""

    protected_namespaces: frozenset[str]
    allowed_cluster_roles: frozenset[str]


@dataclass(frozen=True)
class Finding:
    """One object that is not as its baseline wants it."""

    kind: str
    namespace: str
    name: str
    section: str
    reason: Reason
    differences: tuple[FieldDifference, ...] = ()
    changed_by: str | None = None
    since: str | None = None

    def fields(self) -> tuple[str, ...]:
        return tuple(difference.describe() for difference in self.differences[:_MAX_FIELDS_PER_FINDING])


@dataclass(frozen=True)
class Problem:
    """Something a baseline cannot do in a namespace (not drift: a configuration issue)."""

    namespace: str
    section: str
    reason: Reason
    message: str
    kind: str = ""
    name: str = ""


@dataclass(frozen=True)
class Apply:
    """Server-side apply `body`; with `recreate`, delete the live object first (immutable roleRef)."""

    body: Mapping[str, Any]
    baseline: str
    finding: Finding
    live_uid: str | None = None
    recreate: bool = False
    create_only_if_absent: bool = False
    """Our watch has no such object: make sure no object of someone else's holds the name."""


@dataclass(frozen=True)
class Delete:
    """Delete an object we wrote that no baseline wants here any more, only if it still has `uid`."""

    kind: str
    namespace: str
    name: str
    uid: str
    baseline: str
    finding: Finding


Action = Apply | Delete


@dataclass
class BaselineOutcome:
    """One baseline's result in one namespace, before the engine executes the actions."""

    baseline: str
    generation: int
    mode: Mode
    sections: tuple[Section, ...] = ()
    findings: list[Finding] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    lost_sections: list[Section] = field(default_factory=list)
    unrepairable: list[Finding] = field(default_factory=list)
    """Drift the operator must not repair: objects labelled as its own that it never wrote."""
    waiting: bool = False
    """Something wanted cannot be written yet (in Audit mode, the default ServiceAccount not created yet)."""

    @property
    def failed(self) -> bool:
        return any(problem.reason not in NON_BLOCKING for problem in self.problems)


@dataclass(frozen=True)
class NamespaceView:
    """Everything observed that matters for one namespace."""

    name: str
    namespace: ObservedNamespace | None
    baselines: Sequence[ObservedBaseline]
    objects: Sequence[ObservedObject]
    default_service_account: ObservedObject | None
    cluster_roles: frozenset[str]


@dataclass(frozen=True)
class NamespacePlan:
    """The writes for one namespace and what each selecting baseline found there."""

    namespace: str
    actions: tuple[Action, ...]
    outcomes: Mapping[str, BaselineOutcome]
    """Per selecting baseline; a baseline absent here does not select the namespace (any more)."""


@dataclass(frozen=True)
class _Desired:
    body: dict[str, Any]
    baseline: ObservedBaseline
    section: Section


@dataclass(frozen=True)
class _Live:
    body: Mapping[str, Any]
    uid: str
    owned: frozenset[tuple[str, ...]]
    writers: tuple[ManagerEntry, ...]


def plan_namespace(view: NamespaceView, policy: Policy) -> NamespacePlan:
    namespace = view.namespace
    if namespace is None or namespace.terminating:
        # A namespace on its way out is left to the namespace controller: writing into it would fail,
        # and re-creating anything could only delay its deletion.
        return NamespacePlan(view.name, (), {})
    selecting = [
        baseline
        for baseline in view.baselines
        if baseline.spec is not None
        and selects(baseline.spec, namespace.name, namespace.labels, policy.protected_namespaces)
    ]
    assignments = assign_sections(selecting)
    outcomes = {
        baseline.name: BaselineOutcome(baseline.name, baseline.generation, _mode(baseline))
        for baseline in selecting
    }
    _record_conflicts(assignments, outcomes, namespace.name)
    desired, kept_baselines = _desired_objects(
        selecting=selecting,
        assignments=assignments,
        namespace=namespace,
        view=view,
        policy=policy,
        outcomes=outcomes,
    )
    live_by_key = {(live.kind, live.name): live for live in view.objects}
    actions: list[Action] = []
    for key in sorted(desired):
        action = _action_for(desired[key], namespace, view, live_by_key, outcomes[desired[key].baseline.name])
        if action is not None:
            actions.append(action)
    invalid = {baseline.name for baseline in view.baselines if baseline.spec is None}
    actions += _prunes(view, namespace, desired, kept_baselines | invalid, outcomes, release=not invalid)
    # Audit baselines write nothing: their findings stay findings.
    return NamespacePlan(
        namespace.name,
        tuple(action for action in actions if _writes_allowed(action, view.baselines)),
        outcomes,
    )


def _record_conflicts(
    assignments: Mapping[Section, SectionAssignment], outcomes: Mapping[str, BaselineOutcome], namespace: str
) -> None:
    for assignment in assignments.values():
        for loser in assignment.losers:
            outcome = outcomes[loser.name]
            outcome.lost_sections.append(assignment.section)
            outcome.problems.append(
                Problem(
                    namespace=namespace,
                    section=assignment.section.value,
                    reason=Reason.CONFLICT,
                    message=f"section {assignment.section.value} is set by baseline "
                    f"{assignment.winner.name}, which takes precedence (higher priority, or same priority "
                    "and a name sorting first)",
                )
            )


def _desired_objects(
    *,
    selecting: Sequence[ObservedBaseline],
    assignments: Mapping[Section, SectionAssignment],
    namespace: ObservedNamespace,
    view: NamespaceView,
    policy: Policy,
    outcomes: Mapping[str, BaselineOutcome],
) -> tuple[dict[tuple[str, str], _Desired], set[str]]:
    """Every object the winning baselines want here, by (kind, name); and the baselines that failed."""
    desired: dict[tuple[str, str], _Desired] = {}
    failed: set[str] = set()
    for baseline in selecting:
        won = [section for section, assignment in assignments.items() if assignment.winner is baseline]
        outcomes[baseline.name].sections = tuple(won)
        built = _build(
            baseline,
            sections=won,
            namespace=namespace,
            cluster_roles=view.cluster_roles,
            policy=policy,
            outcome=outcomes[baseline.name],
        )
        if built is None:
            failed.add(baseline.name)
            continue
        for section, body in built:
            desired[(body["kind"], body["metadata"]["name"])] = _Desired(body, baseline, section)
    return desired, failed


def _action_for(
    want: _Desired,
    namespace: ObservedNamespace,
    view: NamespaceView,
    live_by_key: Mapping[tuple[str, str], ObservedObject],
    outcome: BaselineOutcome,
) -> Action | None:
    kind, name = want.body["kind"], want.body["metadata"]["name"]
    if kind == "Namespace":
        live = _Live(namespace.body, namespace.uid, namespace.owned, namespace.writers)
    elif kind == "ServiceAccount":
        account = view.default_service_account
        if account is None:
            if outcome.mode is Mode.AUDIT:
                # The ServiceAccount controller creates it in a moment and its event brings us back;
                # reporting it missing meanwhile would be noise.
                outcome.waiting = True
                return None
            # Create it with our field rather than wait for the ServiceAccount controller, which lags
            # seconds behind under load: that controller then finds it there and only skips it, and the
            # apply without force merges into one it created meanwhile.
            finding = Finding(kind, namespace.name, name, want.section.value, Reason.MISSING)
            outcome.findings.append(finding)
            return Apply(want.body, want.baseline.name, finding, create_only_if_absent=True)
        live = _Live(account.body, account.uid, account.owned, account.writers)
    else:
        found = live_by_key.get((kind, name))
        if found is None:
            finding = Finding(kind, namespace.name, name, want.section.value, Reason.MISSING)
            outcome.findings.append(finding)
            return Apply(want.body, want.baseline.name, finding, create_only_if_absent=True)
        if not found.labelled_ours:
            outcome.problems.append(
                Problem(
                    namespace.name,
                    want.section.value,
                    Reason.NAME_TAKEN,
                    f"a {kind} named {name} exists and is not managed by the operator; it is left untouched",
                    kind,
                    name,
                )
            )
            return None
        live = _Live(found.body, found.uid, found.owned, found.writers)
        if kind == "ResourceQuota":
            _check_usage(want.body, live.body, want.section, outcome, namespace.name)
    changed = differences(want.body, live.body, live.owned)
    if not changed:
        return None
    writer = last_writer_other_than(live.writers, FIELD_MANAGER)
    finding = Finding(
        kind,
        namespace.name,
        name,
        want.section.value,
        Reason.MODIFIED,
        tuple(changed),
        changed_by=writer.manager if writer else None,
        since=writer.time if writer else None,
    )
    outcome.findings.append(finding)
    # roleRef is immutable: a binding to another role must be deleted and created again.
    recreate = kind == "RoleBinding" and any(difference.path.startswith("roleRef") for difference in changed)
    return Apply(
        _with_uid(want.body, live.uid, kind),
        want.baseline.name,
        finding,
        live_uid=live.uid,
        recreate=recreate,
    )


def _check_usage(
    quota: Mapping[str, Any],
    live: Mapping[str, Any],
    section: Section,
    outcome: BaselineOutcome,
    namespace: str,
) -> None:
    # The API accepts a quota below current usage; it only refuses new pods then. Say so.
    used = live.get("status", {}).get("used") or {}
    over = []
    for resource, hard in quota["spec"].get("hard", {}).items():
        try:
            if resource in used and parse_quantity(str(used[resource])) > parse_quantity(hard):
                over.append(f"{resource} (used {used[resource]}, hard {hard})")
        except ValueError:
            continue
    if over:
        outcome.problems.append(
            Problem(
                namespace,
                section.value,
                Reason.QUOTA_BELOW_USAGE,
                f"the quota is below what {namespace} already uses: {', '.join(over)}; "
                "new objects of those kinds will be refused",
                "ResourceQuota",
                quota["metadata"]["name"],
            )
        )


def _mode(baseline: ObservedBaseline) -> Mode:
    return baseline.spec.mode if baseline.spec is not None else Mode.ENFORCE


def _writes_allowed(action: Action, baselines: Iterable[ObservedBaseline]) -> bool:
    owner = next((baseline for baseline in baselines if baseline.name == action.baseline), None)
    return owner is None or _mode(owner) is Mode.ENFORCE


def _with_uid(body: Mapping[str, Any], uid: str, kind: str) -> dict[str, Any]:
    # For objects that are not ours, the uid makes the apply a precondition: if the Namespace or the
    # ServiceAccount was deleted and re-created meanwhile, the apply fails instead of re-creating it.
    result = dict(body)
    if kind in {"Namespace", "ServiceAccount"}:
        result["metadata"] = {**body["metadata"], "uid": uid}
    return result


def _build(
    baseline: ObservedBaseline,
    *,
    sections: Sequence[Section],
    namespace: ObservedNamespace,
    cluster_roles: frozenset[str],
    policy: Policy,
    outcome: BaselineOutcome,
) -> list[tuple[Section, dict[str, Any]]] | None:
    """Every object the baseline wants here, or None (and problems) if any of them cannot be built."""
    assert baseline.spec is not None  # noqa: S101 - only selecting baselines, which have a spec, come here
    context = BuildContext(baseline=BaselineRef(baseline.name, baseline.uid), namespace=namespace.info)
    built: list[tuple[Section, dict[str, Any]]] = []
    for section in sections:
        try:
            bodies = build_section(section, baseline.spec, context)
        except BuildError as error:
            reason = Reason.PLACEHOLDER if isinstance(error, PlaceholderError) else Reason.INVALID
            outcome.problems.append(Problem(namespace.name, section.value, reason, str(error)))
            continue
        for body in bodies:
            problem = _role_problem(body, namespace.name, section, cluster_roles, policy)
            if problem is not None:
                outcome.problems.append(problem)
        built += [(section, body) for body in bodies]
    return None if outcome.failed else built


def _role_problem(
    body: Mapping[str, Any], namespace: str, section: Section, cluster_roles: frozenset[str], policy: Policy
) -> Problem | None:
    if body["kind"] != "RoleBinding":
        return None
    role = body["roleRef"]["name"]
    name = body["metadata"]["name"]
    if role not in policy.allowed_cluster_roles:
        allowed = ", ".join(sorted(policy.allowed_cluster_roles)) or "none"
        return Problem(
            namespace,
            section.value,
            Reason.ROLE_NOT_ALLOWED,
            f"ClusterRole {role} is not on the operator's allow-list ({allowed}); "
            f"nothing is bound in {namespace}",
            "RoleBinding",
            name,
        )
    if role not in cluster_roles:
        # A binding to a missing role would silently come alive when someone creates a role of that name.
        return Problem(
            namespace,
            section.value,
            Reason.ROLE_MISSING,
            f"ClusterRole {role} does not exist; nothing is bound in {namespace}",
            "RoleBinding",
            name,
        )
    return None


def _prunes(
    view: NamespaceView,
    namespace: ObservedNamespace,
    desired: Mapping[tuple[str, str], _Desired],
    kept_baselines: set[str],
    outcomes: dict[str, BaselineOutcome],
    *,
    release: bool,
) -> list[Action]:
    """Objects and fields we wrote that no baseline wants here any more.

    Objects of `kept_baselines` stay; with `release` False, so do our fields of the Namespace and
    of its default ServiceAccount.
    """
    actions: list[Action] = []
    for live in view.objects:
        if (live.kind, live.name) in desired or live.baseline in kept_baselines:
            continue
        section = live.labels.get(SECTION_LABEL, "")
        finding = Finding(live.kind, namespace.name, live.name, section, Reason.UNEXPECTED)
        owner = live.baseline or ""
        if not live.managed_by_us:
            # Labelled as ours by someone else: drift to report, but never deleted.
            if live.labelled_ours and owner in outcomes:
                outcomes[owner].unrepairable.append(finding)
            continue
        if owner in outcomes:
            outcomes[owner].findings.append(finding)
        actions.append(Delete(live.kind, namespace.name, live.name, live.uid, owner, finding))
    if not release:
        return actions
    desired_kinds = {kind for kind, _ in desired}
    if "Namespace" not in desired_kinds and namespace.owns_content:
        finding = Finding(
            "Namespace", namespace.name, namespace.name, Section.POD_SECURITY.value, Reason.UNEXPECTED
        )
        actions.append(Apply(_release("v1", "Namespace", namespace.name, None, namespace.uid), "", finding))
    account = view.default_service_account
    if "ServiceAccount" not in desired_kinds and account is not None and account.owns_content:
        finding = Finding(
            "ServiceAccount", namespace.name, account.name, Section.RBAC.value, Reason.UNEXPECTED
        )
        actions.append(
            Apply(_release("v1", "ServiceAccount", account.name, namespace.name, account.uid), "", finding)
        )
    return actions


def _release(api_version: str, kind: str, name: str, namespace: str | None, uid: str) -> dict[str, Any]:
    """An apply that sets nothing: server-side apply then drops every field we owned."""
    metadata: dict[str, Any] = {"name": name, "uid": uid}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata}
