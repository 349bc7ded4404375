"""Compute, for one namespace, what must change: the pure middle of read -> compute -> apply.

Input is what the watches observed (namespace, baselines, managed objects, the default
ServiceAccount, existing ClusterRoles); output is a `NamespacePlan`: the writes to make and, per
baseline, what it found. No API call happens here, so every rule is tested in milliseconds.

Rules that keep users' objects safe and the floor closed:
- an object is deleted only if it carries our managed-by label *and* our field manager owns fields
  of it; an object someone merely labelled as ours is reported, never deleted;
- a baseline whose objects in a namespace cannot all be built (a missing label for a placeholder, a
  ClusterRole that is missing or not allowed) writes nothing there and keeps what it wrote before: a
  namespace is never left half-applied, and while any selecting baseline cannot be built nothing of
  the Namespace or its default ServiceAccount is released (a removed team label must not drop
  `restricted`);
- a baseline whose stored spec is invalid (written before a CRD upgrade, say) writes nothing and
  removes nothing: its objects stay as they are until its spec is fixed or it is deleted, and while
  any baseline is invalid no Namespace or ServiceAccount field is released, since nothing tells
  which baseline set it (dropping a default-deny because of a typo would be the worst way to report
  that typo);
- a baseline in Audit mode never writes; what it would write is reported as drift;
- the Namespace and its `default` ServiceAccount are not ours: we only set, and later release, the
  fields named in the baseline, through server-side apply (in Enforce mode that apply creates the
  `default` ServiceAccount if the ServiceAccount controller has not yet: it would create the same).
  What such a field held before we took it over is recorded on the object and given back on release
  (takeover.py), so a release never leaves the namespace weaker than it was before the operator came;
- a namespace that an Enforce baseline selects carries the label `baseline.dev/enforced`, which the
  admission policies of manifests/admission key on;
- every write to an existing object carries its uid: a repair racing a user's delete-and-recreate
  fails instead of taking the user's new object over;
- writes come in stages (`Stage`): the allows before the default deny on the way in, the deny
  removed before the allows on the way out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import TYPE_CHECKING, Any

from baseline_operator.builders import (
    BuildContext,
    BuildError,
    PlaceholderError,
    build_section,
    metadata_cidrs,
)
from baseline_operator.builders.admin_network_policy import ADMIN_TIERS, effective_enforcement
from baseline_operator.builders.common import (
    ENFORCED_LABEL,
    ENFORCED_VALUE,
    METADATA_BLOCK_LABEL,
    PROTECTED_LABELS_ANNOTATION,
    SECTION_LABEL,
)
from baseline_operator.builders.network_policy import BLOCK_METADATA_NAME, DEFAULT_DENY_NAME
from baseline_operator.builders.pod_security import POD_SECURITY_LABEL_PREFIX
from baseline_operator.builders.workload_policy import rule_asks
from baseline_operator.compare import FieldDifference, ManagerEntry, differences, last_writer_other_than
from baseline_operator.controls import METADATA_BLOCK_CONTROLS, RULE_CONTROLS
from baseline_operator.exemptions import DEFAULT_LONGEST, rule_lifted_in, section_lifted
from baseline_operator.identity import FIELD_MANAGER
from baseline_operator.metadata_audit import metadata_openings
from baseline_operator.quantity import parse_quantity
from baseline_operator.selection import (
    SectionAssignment,
    assign_sections,
    precedence,
    protected_label_keys,
    selects,
)
from baseline_operator.spec import BaselineRef, MetadataEnforcement, Mode, Section, WorkloadRule
from baseline_operator.takeover import give_back_body, plan_takeover, tracked_fields, with_record
from baseline_operator.workload_audit import violations

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from baseline_operator.compare import Path
    from baseline_operator.observed import ObservedBaseline, ObservedNamespace, ObservedObject, ObservedPolicy
    from baseline_operator.pods import ObservedPod
    from baseline_operator.spec import NetworkPolicySpec

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
    METADATA_REACHABLE = "MetadataReachable"
    ADMIN_TIER_NOT_SERVED = "AdminTierNotServed"
    WORKLOAD_VIOLATION = "WorkloadViolation"
    FORBIDDEN = "Forbidden"
    INVALID = "Invalid"
    API_ERROR = "ApiError"


# Problems worth reporting that do not stop a baseline from applying its other sections.
NON_BLOCKING = frozenset(
    {
        Reason.CONFLICT,
        Reason.QUOTA_BELOW_USAGE,
        Reason.METADATA_REACHABLE,
        Reason.ADMIN_TIER_NOT_SERVED,
        Reason.WORKLOAD_VIOLATION,
    }
)


@dataclass(frozen=True)
class Policy:
    """Install-time settings that tenants cannot change."""

    protected_namespaces: frozenset[str]
    allowed_cluster_roles: frozenset[str]
    longest_exemption: dt.timedelta = DEFAULT_LONGEST
    """An exemption whose expiry lies further ahead is not applied (exemptions.py)."""


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
    rule: str = ""
    """The workload rule broken (WorkloadViolation only)."""
    controls: tuple[str, ...] = ()
    """The benchmark lines the finding is about (controls.py)."""


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
    field_manager: str = FIELD_MANAGER
    """Another manager's name only to give a taken-over field back to whoever had set it."""

    @property
    def gives_back(self) -> bool:
        return self.field_manager != FIELD_MANAGER


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


class Stage(IntEnum):
    """The order of a namespace's writes; the writes of one stage may run at once.

    A default deny applied before the allows would cut DNS for a moment; deleted after them, the same.
    A taken-over field is given back before our own apply lets go of it, so it is never absent between.
    """

    GIVE_BACK = 0
    APPLY = 1
    """Every apply but the default deny and the Namespace: the allows, the metadata block, the rest."""
    DENY = 2
    NAMESPACE = 3
    """After the NetworkPolicies: a Namespace leaving an Admin-tier block has its NetworkPolicy one first."""
    UNDENY = 4
    PRUNE = 5


def stage_of(action: Action) -> Stage:
    if isinstance(action, Delete):
        return Stage.UNDENY if _is_default_deny(action.kind, action.name) else Stage.PRUNE
    if action.gives_back:
        return Stage.GIVE_BACK
    body = action.body
    if body["kind"] == "Namespace":
        return Stage.NAMESPACE
    return Stage.DENY if _is_default_deny(body["kind"], body["metadata"]["name"]) else Stage.APPLY


def _is_default_deny(kind: str, name: str) -> bool:
    return kind == "NetworkPolicy" and name == DEFAULT_DENY_NAME


def restores_isolation(finding: Finding) -> bool:
    """A repair that closes the floor again: never paused as a fight, whoever keeps changing the object.

    The default deny, the metadata block, the Pod Security labels (on the Namespace) and the default
    ServiceAccount's token setting. A tenant deleting or emptying them in a loop gets them back every time.
    """
    if finding.kind == "NetworkPolicy":
        return finding.name == DEFAULT_DENY_NAME or finding.name.startswith(BLOCK_METADATA_NAME)
    return finding.kind in {"Namespace", "ServiceAccount"}


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
    workload_violations: dict[str, int] = field(default_factory=dict)
    """Per workload rule, how many workloads here break it (all of them; `problems` holds a bounded few)."""

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
    policies: Sequence[ObservedPolicy] = ()
    """The namespace's NetworkPolicies that are not ours."""
    pods: Sequence[ObservedPod] = ()
    """The namespace's Pods, as the workload rules read them."""
    admin_tiers: frozenset[MetadataEnforcement] = frozenset()
    """The Admin-tier network policy kinds the cluster serves."""
    admin_blocks: frozenset[tuple[str, str]] = frozenset()
    """(baseline, kind) of each Admin-tier metadata block in force (written by us, held by the cluster)."""
    now: dt.datetime | None = None
    """The time exemptions are judged at; without one, none is in force."""


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
    owners: Mapping[Path, str] = field(default_factory=dict)
    """Other managers of the fields we may take over (Namespace and ServiceAccount only)."""


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
    assignments = assign_sections(selecting, _lifted(view, policy, namespace.name))
    outcomes = {
        baseline.name: BaselineOutcome(baseline.name, baseline.generation, _mode(baseline))
        for baseline in selecting
    }
    _record_conflicts(assignments, outcomes, namespace.name)
    for baseline in selecting:
        _audit_workloads(baseline, view, policy, outcomes[baseline.name])
    desired, failed = _desired_objects(
        selecting=selecting,
        assignments=assignments,
        view=view,
        policy=policy,
        outcomes=outcomes,
    )
    invalid = {baseline.name for baseline in view.baselines if baseline.spec is None}
    # While a baseline cannot be built (or parsed), what it set on the Namespace and the ServiceAccount
    # stays exactly as it is: nothing is released, and no apply of the other baselines lets go of it.
    keep = bool(failed or invalid)
    audited = _mark_enforced(
        desired,
        selecting,
        failed,
        namespace,
        metadata_block=_admin_tier_block(assignments, failed, view),
        protected_keys=protected_label_keys(view.baselines),
    )
    live_by_key = {(live.kind, live.name): live for live in view.objects}
    actions: list[Action] = []
    for want in audited:
        # The Pod Security section of an Audit baseline: compared and reported, never written.
        _actions_for(want, namespace, view, live_by_key, outcomes[want.baseline.name], keep=keep)
    for key in sorted(desired):
        actions += _actions_for(
            desired[key], namespace, view, live_by_key, outcomes[desired[key].baseline.name], keep=keep
        )
    actions += _prunes(view, namespace, desired, failed | invalid, outcomes, release=not keep)
    # Audit baselines write nothing: their findings stay findings.
    allowed = [action for action in actions if _writes_allowed(action, view.baselines)]
    return NamespacePlan(namespace.name, tuple(sorted(allowed, key=stage_of)), outcomes)


def _lifted(
    view: NamespaceView, policy: Policy, namespace: str
) -> Callable[[ObservedBaseline, Section], bool]:
    """Whether an exemption in force lifts a baseline's section here: the section is then not applied."""
    now = view.now

    def lifted(baseline: ObservedBaseline, section: Section) -> bool:
        spec = baseline.spec
        return (
            now is not None
            and spec is not None
            and section_lifted(spec.exemptions, namespace, section, now, policy.longest_exemption)
        )

    return lifted


def _admin_tier_block(
    assignments: Mapping[Section, SectionAssignment], failed: set[str], view: NamespaceView
) -> str | None:
    """The baseline whose Admin-tier policy blocks the metadata APIs here, if one does (its label's value)."""
    assignment = assignments.get(Section.NETWORK_POLICY)
    if assignment is None:
        return None
    winner = assignment.winner
    settings = winner.spec.network_policy if winner.spec is not None else None
    if (
        settings is None
        or not settings.metadata_api.block
        or winner.name in failed
        or _mode(winner) is Mode.AUDIT
    ):
        return None
    tier = effective_enforcement(settings.metadata_api.enforcement, view.admin_tiers)
    return winner.name if tier in ADMIN_TIERS else None


def _mark_enforced(
    desired: dict[tuple[str, str], _Desired],
    selecting: Sequence[ObservedBaseline],
    failed: set[str],
    namespace: ObservedNamespace,
    *,
    metadata_block: str | None,
    protected_keys: Sequence[str],
) -> list[_Desired]:
    """Mark the Namespace's desired body `enforced` if an Enforce baseline selects it.

    And label it for the Admin-tier metadata block of `metadata_block`, if any; and write on it the label
    keys Enforce baselines read, which admission protection then keeps (selection-labels.yaml reads them
    from the namespace itself: no parameter object for the API server to lose track of).

    Returns the Namespace body of an Audit baseline it replaced (to be compared, not written).
    """
    enforcing = sorted(
        (b for b in selecting if _mode(b) is Mode.ENFORCE and b.name not in failed), key=precedence
    )
    if not enforcing:
        return []
    key = ("Namespace", namespace.name)
    current = desired.get(key)
    marks = {ENFORCED_LABEL: ENFORCED_VALUE}
    if metadata_block is not None:
        marks[METADATA_BLOCK_LABEL] = metadata_block
    annotations = {PROTECTED_LABELS_ANNOTATION: ",".join(protected_keys)} if protected_keys else {}
    if current is not None and _mode(current.baseline) is Mode.ENFORCE:
        current.body["metadata"].setdefault("labels", {}).update(marks)
        if annotations:
            current.body["metadata"].setdefault("annotations", {}).update(annotations)
        return []
    labels = dict(marks)
    audited: list[_Desired] = []
    if current is not None:
        # Pod Security here comes from an Audit baseline, which writes nothing: the labels we set before
        # stay as they are.
        labels.update(
            (label, value)
            for label, value in namespace.labels.items()
            if label.startswith(POD_SECURITY_LABEL_PREFIX)
            and ("metadata", "labels", label) in namespace.owned
        )
        audited.append(current)
    metadata: dict[str, Any] = {"name": namespace.name, "labels": labels}
    if annotations:
        metadata["annotations"] = annotations
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata}
    desired[key] = _Desired(body, enforcing[0], Section.POD_SECURITY)
    return audited


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
    view: NamespaceView,
    policy: Policy,
    outcomes: Mapping[str, BaselineOutcome],
) -> tuple[dict[tuple[str, str], _Desired], set[str]]:
    """Every object the winning baselines want here, by (kind, name); the baselines that failed to build."""
    desired: dict[tuple[str, str], _Desired] = {}
    failed: set[str] = set()
    for baseline in selecting:
        won = [section for section, assignment in assignments.items() if assignment.winner is baseline]
        outcomes[baseline.name].sections = tuple(won)
        built = _build(baseline, sections=won, view=view, policy=policy, outcome=outcomes[baseline.name])
        if built is None:
            failed.add(baseline.name)
            continue
        for section, body in built:
            desired[(body["kind"], body["metadata"]["name"])] = _Desired(body, baseline, section)
    return desired, failed


def _actions_for(
    want: _Desired,
    namespace: ObservedNamespace,
    view: NamespaceView,
    live_by_key: Mapping[tuple[str, str], ObservedObject],
    outcome: BaselineOutcome,
    *,
    keep: bool,
) -> list[Action]:
    """The writes that bring one desired object about (none if it is as desired); findings into `outcome`."""
    kind, name = want.body["kind"], want.body["metadata"]["name"]
    if kind == "Namespace":
        live = _live(namespace)
    elif kind == "ServiceAccount":
        account = view.default_service_account
        if account is None:
            if outcome.mode is Mode.AUDIT:
                # The ServiceAccount controller creates it in a moment and its event brings us back;
                # reporting it missing meanwhile would be noise.
                outcome.waiting = True
                return []
            # Create it with our field rather than wait for the ServiceAccount controller, which lags
            # seconds behind under load: that controller then finds it there and only skips it, and the
            # apply without force merges into one it created meanwhile.
            finding = Finding(kind, namespace.name, name, want.section.value, Reason.MISSING)
            outcome.findings.append(finding)
            created = with_record(want.body, dict.fromkeys(tracked_fields(kind, want.body)))
            return [Apply(created, want.baseline.name, finding, create_only_if_absent=True)]
        live = _live(account)
    else:
        found = live_by_key.get((kind, name))
        if found is None:
            finding = Finding(kind, namespace.name, name, want.section.value, Reason.MISSING)
            outcome.findings.append(finding)
            return [Apply(want.body, want.baseline.name, finding, create_only_if_absent=True)]
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
            return []
        live = _live(found)
        if kind == "ResourceQuota":
            _check_usage(want.body, live.body, want.section, outcome, namespace.name)
    body, give_back = _taking_over(kind, want.body, live, keep=keep)
    changed = differences(body, live.body, live.owned)
    if not changed:
        return []
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
    returned: list[Action] = [
        Apply(
            give_back_body(kind, name, _namespace_of(want.body), live.uid, fields),
            want.baseline.name,
            finding,
            live_uid=live.uid,
            field_manager=manager,
        )
        for manager, fields in sorted(give_back.items())
    ]
    returned.append(
        Apply(
            _with_uid(body, live.uid),
            want.baseline.name,
            finding,
            live_uid=live.uid,
            recreate=recreate,
        )
    )
    return returned


def _live(observed: ObservedNamespace | ObservedObject) -> _Live:
    return _Live(observed.body, observed.uid, observed.owned, observed.writers, observed.field_owners)


def _taking_over(
    kind: str, body: Mapping[str, Any], live: _Live, *, keep: bool
) -> tuple[Mapping[str, Any], dict[str, dict[str, Any]]]:
    """The body with its takeover record, and what to give back (Namespace and ServiceAccount only).

    With `keep`, what we own and the body does not set is carried over unchanged: nothing let go of.
    """
    if kind not in {"Namespace", "ServiceAccount"}:
        return body, {}
    if keep:
        body = _carry_over(body, live.body, live.owned)
    takeover = plan_takeover(kind, tracked_fields(kind, body), live.body, live.owned, live.owners)
    return with_record(body, takeover.record), takeover.give_back


def _carry_over(
    body: Mapping[str, Any], live: Mapping[str, Any], owned: frozenset[Path]
) -> Mapping[str, Any]:
    """`body` plus the labels, annotations and top-level fields we own on `live` and `body` leaves out."""
    result = {**body, "metadata": dict(body["metadata"])}
    metadata = result["metadata"]
    for path in owned:
        if len(path) == 3 and path[0] == "metadata" and path[1] in {"labels", "annotations"}:  # noqa: PLR2004
            values = (live.get("metadata") or {}).get(path[1]) or {}
            if path[2] in values:
                metadata[path[1]] = {path[2]: values[path[2]], **(metadata.get(path[1]) or {})}
        elif len(path) == 1 and path[0] not in result and path[0] in live:
            result[path[0]] = live[path[0]]
    return result


def _namespace_of(body: Mapping[str, Any]) -> str | None:
    namespace = body["metadata"].get("namespace")
    return str(namespace) if namespace else None


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


def _with_uid(body: Mapping[str, Any], uid: str) -> dict[str, Any]:
    # The uid makes the apply a precondition: if the object was deleted and re-created meanwhile (by a
    # user, under the same name), the apply is refused instead of taking the new object over.
    return {**body, "metadata": {**body["metadata"], "uid": uid}}


def _build(
    baseline: ObservedBaseline,
    *,
    sections: Sequence[Section],
    view: NamespaceView,
    policy: Policy,
    outcome: BaselineOutcome,
) -> list[tuple[Section, dict[str, Any]]] | None:
    """Every object the baseline wants here, or None (and problems) if any of them cannot be built."""
    assert baseline.spec is not None  # noqa: S101 - only selecting baselines, which have a spec, come here
    assert view.namespace is not None  # noqa: S101 - only existing namespaces are planned
    namespace = view.namespace
    tier = _metadata_tier(baseline, view, outcome)
    context = BuildContext(
        baseline=BaselineRef(baseline.name, baseline.uid),
        namespace=namespace.info,
        other_egress_selectors=tuple(p.pod_selector for p in view.policies if p.egress is not None),
        # Until an Admin-tier policy of this baseline is in force (either kind: they select the namespace by
        # the same label), the NetworkPolicy block stays: switching leaves no gap.
        metadata_blocked_above=tier in ADMIN_TIERS
        and any(owner == baseline.name for owner, _ in view.admin_blocks),
    )
    built: list[tuple[Section, dict[str, Any]]] = []
    for section in sections:
        try:
            bodies = build_section(section, baseline.spec, context)
        except BuildError as error:
            reason = Reason.PLACEHOLDER if isinstance(error, PlaceholderError) else Reason.INVALID
            outcome.problems.append(Problem(namespace.name, section.value, reason, str(error)))
            continue
        for body in bodies:
            problem = _role_problem(body, namespace.name, section, view.cluster_roles, policy)
            if problem is not None:
                outcome.problems.append(problem)
        built += [(section, body) for body in bodies]
        if section is Section.NETWORK_POLICY and baseline.spec.network_policy is not None:
            outcome.problems += _metadata_reachable(baseline.spec.network_policy, view)
    return None if outcome.failed else built


def _metadata_tier(
    baseline: ObservedBaseline, view: NamespaceView, outcome: BaselineOutcome
) -> MetadataEnforcement:
    """The API that enforces this baseline's metadata block here; a tier asked for but not served is said."""
    settings = baseline.spec.network_policy if baseline.spec is not None else None
    if settings is None or not settings.metadata_api.block:
        return MetadataEnforcement.NETWORK_POLICY
    requested = settings.metadata_api.enforcement
    tier = effective_enforcement(requested, view.admin_tiers)
    if requested in ADMIN_TIERS and tier is not requested:
        outcome.problems.append(
            Problem(
                view.name,
                Section.NETWORK_POLICY.value,
                Reason.ADMIN_TIER_NOT_SERVED,
                f"metadataAPI.enforcement is {requested.value}, which this cluster does not serve: the "
                "metadata APIs are blocked with NetworkPolicies instead, which a namespace's own egress "
                "policy can open again for its pods",
            )
        )
    return tier


MAX_VIOLATIONS_LISTED = 10
"""Per baseline and namespace, the workload violations listed in the status (the gauge counts all)."""


def _audit_workloads(
    baseline: ObservedBaseline, view: NamespaceView, policy: Policy, outcome: BaselineOutcome
) -> None:
    """The running workloads that break the baseline's workload rules here (those not exempted)."""
    spec = baseline.spec
    if spec is None or spec.workloads is None or not view.pods:
        return
    now = view.now
    exempt = set[WorkloadRule]()
    if now is not None:
        exempt = {
            rule
            for rule in WorkloadRule
            if view.name in rule_lifted_in(spec.exemptions, rule, now, policy.longest_exemption)
        }
    found = violations(view.pods, spec.workloads, lambda rule: rule in exempt)
    asks = rule_asks(spec.workloads)
    # A workload breaking a rule in two containers counts once for that rule.
    for rule, _workload in {(violation.rule.value, violation.workload) for violation in found}:
        outcome.workload_violations[rule] = outcome.workload_violations.get(rule, 0) + 1
    for violation in found[:MAX_VIOLATIONS_LISTED]:
        kind, _, name = violation.workload.partition("/")
        who = f"container {violation.container}" if violation.container else "the Pod"
        outcome.problems.append(
            Problem(
                view.name,
                Section.WORKLOADS.value,
                Reason.WORKLOAD_VIOLATION,
                f"{who} of running {kind} {name} breaks rule {violation.rule.value}: it "
                f"{asks[violation.rule]}; admitted before the rule held here, it is refused at its next "
                "create or rollout",
                kind,
                name,
                rule=violation.rule.value,
                controls=RULE_CONTROLS[violation.rule],
            )
        )


def _metadata_reachable(spec: NetworkPolicySpec, view: NamespaceView) -> list[Problem]:
    """The namespace's own egress policies that open a metadata address the baseline blocks."""
    metadata = spec.metadata_api
    if not metadata.block:
        return []
    blocked = metadata_cidrs(metadata.providers, metadata.extra_cidrs)
    return [
        Problem(
            view.name,
            Section.NETWORK_POLICY.value,
            Reason.METADATA_REACHABLE,
            f"{opening.describe()}: cloud metadata APIs, which the baseline blocks; NetworkPolicies only "
            "add, so the baseline cannot take that away: list them in the rule's `except`",
            "NetworkPolicy",
            opening.policy,
            controls=METADATA_BLOCK_CONTROLS,
        )
        for opening in metadata_openings(view.policies, [*blocked.ipv4, *blocked.ipv6])
    ]


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
        actions += _released("Namespace", namespace.name, None, _live(namespace), finding)
    account = view.default_service_account
    if "ServiceAccount" not in desired_kinds and account is not None and account.owns_content:
        finding = Finding(
            "ServiceAccount", namespace.name, account.name, Section.RBAC.value, Reason.UNEXPECTED
        )
        actions += _released("ServiceAccount", account.name, namespace.name, _live(account), finding)
    return actions


def _released(kind: str, name: str, namespace: str | None, live: _Live, finding: Finding) -> list[Action]:
    """Let go of every field we set on an object that is not ours, giving back what we took over first."""
    takeover = plan_takeover(kind, {}, live.body, live.owned, live.owners)
    actions: list[Action] = [
        Apply(give_back_body(kind, name, namespace, live.uid, fields), "", finding, field_manager=manager)
        for manager, fields in sorted(takeover.give_back.items())
    ]
    actions.append(Apply(_release("v1", kind, name, namespace, live.uid), "", finding))
    return actions


def _release(api_version: str, kind: str, name: str, namespace: str | None, uid: str) -> dict[str, Any]:
    """An apply that sets nothing: server-side apply then drops every field we owned."""
    metadata: dict[str, Any] = {"name": name, "uid": uid}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata}
