"""Which exemptions are in force, when that changes next, and how the status reports them (pure).

An exemption lifts sections, or single workload rules, of one baseline in some namespaces, for a stated
reason, until it expires. It is in force from now until `expires`, and only while its expiry lies at most
`longest` ahead (`--max-exemption-days`, default 90): the CRD cannot check that (CEL has no clock), so one
that runs longer is reported (TooLong) and not applied — the floor stays, the platform team shortens it.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

from baseline_operator.spec import MAX_EXEMPTION_DAYS, Section

if TYPE_CHECKING:
    from collections.abc import Iterable

    from baseline_operator.spec import Exemption, WorkloadRule

DEFAULT_LONGEST: Final = dt.timedelta(days=MAX_EXEMPTION_DAYS)


class ExemptionState(StrEnum):
    """What `status.exemptions` says of each."""

    ACTIVE = "Active"
    EXPIRED = "Expired"
    TOO_LONG = "TooLong"
    """Its expiry lies further ahead than the operator allows: not applied."""


def state(exemption: Exemption, now: dt.datetime, longest: dt.timedelta) -> ExemptionState:
    if exemption.expires <= now:
        return ExemptionState.EXPIRED
    if exemption.expires - now > longest:
        return ExemptionState.TOO_LONG
    return ExemptionState.ACTIVE


def in_force(exemption: Exemption, now: dt.datetime, longest: dt.timedelta) -> bool:
    return state(exemption, now, longest) is ExemptionState.ACTIVE


def section_lifted(
    exemptions: Iterable[Exemption],
    namespace: str,
    section: Section,
    now: dt.datetime,
    longest: dt.timedelta,
) -> bool:
    """Whether an exemption in force lifts the whole `section` in `namespace`."""
    return any(
        namespace in exemption.namespaces
        and section in exemption.sections
        and in_force(exemption, now, longest)
        for exemption in exemptions
    )


def rule_lifted_in(
    exemptions: Iterable[Exemption], rule: WorkloadRule, now: dt.datetime, longest: dt.timedelta
) -> list[str]:
    """The namespaces where an exemption in force lifts `rule` (by name, or with the workloads section)."""
    found: set[str] = set()
    for exemption in exemptions:
        if (rule in exemption.rules or Section.WORKLOADS in exemption.sections) and in_force(
            exemption, now, longest
        ):
            found.update(exemption.namespaces)
    return sorted(found)


def next_change(
    exemptions: Iterable[Exemption], now: dt.datetime, longest: dt.timedelta
) -> dt.datetime | None:
    """When an exemption next starts to apply (its expiry comes within `longest`) or stops (it expires)."""
    moments = [
        moment
        for exemption in exemptions
        for moment in (exemption.expires, exemption.expires - longest)
        if moment > now
    ]
    return min(moments, default=None)


def status_entries(
    exemptions: Iterable[Exemption], now: dt.datetime, longest: dt.timedelta
) -> list[dict[str, Any]]:
    """`status.exemptions`: each exemption as written, with its state (the expiry says the time left)."""
    entries = []
    for exemption in exemptions:
        entry: dict[str, Any] = {
            "namespaces": list(exemption.namespaces),
            "state": state(exemption, now, longest).value,
            "expires": exemption.expires.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "reason": exemption.reason,
        }
        if exemption.sections:
            entry["sections"] = [section.value for section in exemption.sections]
        if exemption.rules:
            entry["rules"] = [rule.value for rule in exemption.rules]
        entries.append(entry)
    return entries
