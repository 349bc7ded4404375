"""After a watch gap, kopf's caches can still hold objects deleted meanwhile: find them with fresh lists.

kopf lists again when a watch cannot resume (the API server restarted, the resource version expired), and a
list says what exists, not what went away: an object deleted during the gap stays in the cache. The operator
would go on believing in it, never repairing a NetworkPolicy deleted during an API outage, and enforcing a
SecurityBaseline deleted meanwhile. One list per kind tells the truth; a cached uid it lacks is stale.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from baseline_operator import kube

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping


async def stale_uids(api: kube.KubeApi, cached: Mapping[kube.Kind, Collection[str]]) -> set[str]:
    """The uids in `cached` (taken before calling) that the API no longer has."""
    listed: set[str] = set()
    for kind in cached:
        # Only the default ServiceAccounts are cached; there are several others in every namespace.
        selector = "metadata.name=default" if kind == kube.SERVICE_ACCOUNT else None
        items = await api.list_objects(kind, field_selector=selector)
        listed.update(item["metadata"]["uid"] for item in items)
    return {uid for uids in cached.values() for uid in uids} - listed
