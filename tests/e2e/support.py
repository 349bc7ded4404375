"""Helpers for the e2e tier: waiting for outcomes, reading the audit log, running the operator."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from localcluster.cluster import free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

OPERATOR_USER = "baseline-operator-e2e"


def eventually(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1, what: str = "") -> Any:
    """Poll `check` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what or check.__name__} (last: {last!r})")
        time.sleep(interval)


def audit_events(audit_log: Path, *, user: str, since: float = 0.0) -> Iterator[dict[str, Any]]:
    """Audit events (ResponseComplete) of `user` whose request was received after `since` (epoch s)."""
    with audit_log.open() as lines:
        for line in lines:
            event = json.loads(line)
            if event.get("stage") != "ResponseComplete" or event.get("user", {}).get("username") != user:
                continue
            received = event.get("requestReceivedTimestamp", "")
            if _epoch(received) >= since:
                yield event


def _epoch(timestamp: str) -> float:
    return dt.datetime.fromisoformat(timestamp).timestamp()


WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


def writes(audit_log: Path, *, user: str = OPERATOR_USER, since: float = 0.0) -> list[str]:
    """`verb resource namespace/name` of each write by `user` (status writes included)."""
    return [
        f"{event['verb']} {event['objectRef'].get('resource')}"
        f"{'/' + event['objectRef']['subresource'] if event['objectRef'].get('subresource') else ''} "
        f"{event['objectRef'].get('namespace', '')}/{event['objectRef'].get('name', '')}"
        for event in audit_events(audit_log, user=user, since=since)
        if event.get("verb") in WRITE_VERBS
    ]


@dataclass
class OperatorProcess:
    """The real operator, `baseline-operator run`, as a separate process."""

    kubeconfig: Path
    log: Path
    liveness_port: int
    extra_args: tuple[str, ...] = ()
    popen: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PYTHONUNBUFFERED": "1"}
        with self.log.open("ab") as log:
            self.popen = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "baseline_operator",
                    "run",
                    "--liveness",
                    f"http://127.0.0.1:{self.liveness_port}/healthz",
                    "--operator-namespace",
                    "baseline-system",
                    *self.extra_args,
                ],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509
            )
        eventually(self.alive, timeout=timeout, what="the operator's liveness endpoint answers")

    def alive(self) -> bool:
        if self.popen is None or self.popen.poll() is not None:
            pytest.fail(f"the operator exited; its log ends with:\n{self.tail()}")
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=1
            ) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.popen = None

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def new_operator(tmp: Path, kubeconfig: Path, *extra_args: str) -> OperatorProcess:
    return OperatorProcess(kubeconfig, tmp / "operator.log", free_port(), tuple(extra_args))


def _die_with_parent() -> None:
    import ctypes  # noqa: PLC0415

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)
