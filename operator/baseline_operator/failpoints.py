"""Named failpoints, as etcd has them: faults injected at chosen places, off unless asked for.

`BASELINE_FAILPOINTS="engine.worker=panic*1,watch.namespaces=hang"` arms them for a process; the e2e tests
use it to show that a crashed loop is restarted, a hung one fails liveness, and nothing is lost. Unarmed (the
normal case) `hit()` is one dictionary lookup on an empty dictionary.

Actions:
- `panic`: raise `FailpointError` (a crash of the loop that hits it); `panic*N`: the first N hits only;
- `error*N`: raise `kube.ApiError` 500 the first N hits (a request that fails, to be retried);
- `hang`: never return (a stuck loop: its heartbeat goes stale);
- `sleep(S)`: wait S seconds, every hit.

Failpoints in the code: `engine.worker` (a reconcile worker, between taking a namespace and reconciling it),
`status.write` (before each status patch), `resync` (before the resync's lists), `watch.<plural>` (each batch
of a lean watch, e.g. `watch.namespaces`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from dataclasses import dataclass
from typing import Final

from baseline_operator import kube

logger = logging.getLogger(__name__)

ENVIRONMENT_VARIABLE: Final = "BASELINE_FAILPOINTS"
_SPEC = re.compile(r"(?P<action>panic|error|hang|sleep)(\((?P<seconds>[0-9.]+)\))?(\*(?P<count>[0-9]+))?")


class FailpointError(RuntimeError):
    """Raised where a `panic` failpoint is armed."""


@dataclass
class _Armed:
    action: str
    remaining: int | None
    seconds: float = 0.0


def _parse(text: str) -> dict[str, _Armed]:
    armed: dict[str, _Armed] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, spec = item.partition("=")
        match = _SPEC.fullmatch(spec.strip())
        if not name or match is None:
            raise ValueError(
                f"{ENVIRONMENT_VARIABLE}: cannot read {item!r} (name=panic|error*N|hang|sleep(S))"
            )
        count = int(match["count"]) if match["count"] else None
        armed[name.strip()] = _Armed(match["action"], count, float(match["seconds"] or 0))
    return armed


_ARMED: dict[str, _Armed] = _parse(os.environ.get(ENVIRONMENT_VARIABLE, ""))


def arm(text: str) -> None:
    """Arm failpoints from a spec like the environment variable's (tests in-process)."""
    _ARMED.clear()
    _ARMED.update(_parse(text))


async def hit(name: str) -> None:
    """Where failpoint `name` sits: do what it is armed to do, or nothing."""
    if not _ARMED:
        return
    armed = _ARMED.get(name)
    if armed is None:
        return
    if armed.remaining is not None:
        if armed.remaining <= 0:
            return
        armed.remaining -= 1
    match armed.action:
        case "panic":
            raise FailpointError(f"failpoint {name}")
        case "error":
            raise kube.ApiError(500, "InternalError", f"failpoint {name}")
        case "hang":
            logger.warning("failpoint %s: hanging", name)
            await asyncio.Event().wait()
        case "sleep":
            await asyncio.sleep(armed.seconds)
