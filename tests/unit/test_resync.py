"""The resync after a watch gap: cached uids the API no longer lists are stale."""

from __future__ import annotations

import asyncio
from typing import Any

from baseline_operator import kube
from baseline_operator.resync import stale_uids


class Lists:
    """An API that lists fixed objects per kind and remembers the field selectors it was asked for."""

    def __init__(self, uids: dict[kube.Kind, list[str]]) -> None:
        self.uids = uids
        self.selectors: dict[str, str | None] = {}

    async def list_objects(
        self, kind: kube.Kind, *, field_selector: str | None = None
    ) -> list[dict[str, Any]]:
        self.selectors[kind.kind] = field_selector
        return [{"metadata": {"uid": uid}} for uid in self.uids.get(kind, [])]


def test_cached_objects_missing_from_the_lists_are_stale_and_nothing_else() -> None:
    api = Lists({kube.NETWORK_POLICY: ["np-1", "np-new"], kube.SERVICE_ACCOUNT: ["sa-1"]})
    cached = {
        kube.NETWORK_POLICY: {"np-1", "np-deleted"},
        kube.SERVICE_ACCOUNT: {"sa-1"},
        kube.NAMESPACE: {"ns"},
    }
    gone = asyncio.run(stale_uids(api, cached))  # type: ignore[arg-type]
    # np-new appeared after the caches were read: not cached, so not stale either.
    assert gone == {"np-deleted", "ns"}


def test_only_the_default_service_accounts_are_listed() -> None:
    api = Lists({})
    asyncio.run(stale_uids(api, {kube.SERVICE_ACCOUNT: set(), kube.LIMIT_RANGE: set()}))  # type: ignore[arg-type]
    assert api.selectors == {"ServiceAccount": "metadata.name=default", "LimitRange": None}
