"""A stand-in for `kube.KubeApi` at the one boundary the engine talks through: it records every write and
answers as the API server would (the stored object, with a uid and a resourceVersion)."""

from __future__ import annotations

import itertools
from typing import Any

from baseline_operator import kube


class FakeApi:
    def __init__(self) -> None:
        self.writes: list[tuple[str, str, str]] = []
        self.statuses: dict[str, dict[str, Any]] = {}
        self.fail_status: int = 0
        self.last_written: dict[tuple[str, str, str], tuple[str, str]] = {}
        self._versions = itertools.count(100)

    async def apply(
        self, body: dict[str, Any], *, force: bool = True, field_manager: str = "baseline-operator"
    ) -> dict[str, Any]:
        del force, field_manager
        metadata = body["metadata"]
        self.writes.append(("apply", body["kind"], metadata["name"]))
        uid, version = metadata.get("uid", f"uid-{metadata['name']}"), str(next(self._versions))
        self.last_written[(body["kind"], metadata.get("namespace", ""), metadata["name"])] = (uid, version)
        return {**body, "metadata": {**metadata, "uid": uid, "resourceVersion": version}}

    async def delete(
        self, kind: kube.Kind, namespace: str | None, name: str, *, uid: str | None = None
    ) -> bool:
        del namespace, uid
        self.writes.append(("delete", kind.kind, name))
        return True

    async def patch_status(self, kind: kube.Kind, name: str, status: dict[str, Any]) -> dict[str, Any]:
        del kind
        if self.fail_status:
            self.fail_status -= 1
            raise kube.ApiError(500, "InternalError", "try again")
        self.statuses[name] = status
        return {"status": status}
