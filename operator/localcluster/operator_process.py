"""The real operator as a separate process, for the tests and the benchmarks: `baseline-operator run`.

It runs the operator exactly as a user does (the console entry point's module, a kubeconfig, its command-line
flags), with its liveness and metrics on free loopback ports; it dies with whoever started it, even on
`kill -9`. Development tooling: it starts the operator, it never imports it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING

from localcluster.cluster import free_port

if TYPE_CHECKING:
    from pathlib import Path

OPERATOR_NAMESPACE = "baseline-system"
_PR_SET_PDEATHSIG = 1


class OperatorExitedError(RuntimeError):
    """The operator process ended while it was expected to run."""


@dataclass
class OperatorProcess:
    """The real operator, `baseline-operator run`, as a separate process."""

    kubeconfig: Path
    log: Path
    liveness_port: int
    metrics_port: int
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
                    OPERATOR_NAMESPACE,
                    "--metrics-address",
                    f"127.0.0.1:{self.metrics_port}",
                    *self.extra_args,
                ],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only a prctl, before exec
            )
        deadline = time.monotonic() + timeout
        while not self.alive():
            if time.monotonic() > deadline:
                raise OperatorExitedError(f"the operator's liveness endpoint did not answer in {timeout} s")
            time.sleep(0.1)

    def alive(self) -> bool:
        if self.popen is None or self.popen.poll() is not None:
            raise OperatorExitedError(f"the operator exited; its log ends with:\n{self.tail()}")
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=1
            ) as response:
                return bool(response.status == 200)  # noqa: PLR2004 - HTTP OK
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

    def metrics(self) -> str:
        """The operator's Prometheus exposition, as scraped."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text: str = response.read().decode()
        return text

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def new_operator(tmp: Path, kubeconfig: Path, *extra_args: str) -> OperatorProcess:
    return OperatorProcess(kubeconfig, tmp / "operator.log", free_port(), free_port(), tuple(extra_args))


def _die_with_parent() -> None:
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
