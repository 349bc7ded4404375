"""Honest health: supervised loops, liveness that tells the truth, and nothing lost (issue #17).

Faults are injected with the operator's named failpoints (BASELINE_FAILPOINTS, see failpoints.py), in the
real operator process against the real control plane; the tests read what a kubelet would: /healthz and
/readyz, and the metrics.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

from support import FULL_SET, Cluster, OperatorProcess, eventually, full_spec, new_operator

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    import pytest


@contextlib.contextmanager
def operator_with(
    monkeypatch: pytest.MonkeyPatch,
    session_operator: OperatorProcess,
    tmp_path: Path,
    kubeconfig: Path,
    failpoints: str,
    *args: str,
) -> Iterator[OperatorProcess]:
    """The session's operator replaced by one with failpoints armed (and other arguments); put back after."""
    session_operator.stop()
    monkeypatch.setenv("BASELINE_FAILPOINTS", failpoints)
    own = new_operator(tmp_path, kubeconfig, *args)
    try:
        own.start()
        monkeypatch.delenv("BASELINE_FAILPOINTS")
        yield own
    finally:
        own.stop()
        session_operator.start()


def probe(process: OperatorProcess, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{process.liveness_port}{path}", timeout=2) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def restarts(process: OperatorProcess) -> dict[str, float]:
    found = re.findall(
        r'baseline_operator_loop_restarts_total\{loop="([^"]+)"\} ([0-9.]+)', process.metrics()
    )
    return {loop: float(count) for loop, count in found}


def test_a_worker_that_crashes_is_restarted_and_its_namespace_is_not_lost(
    monkeypatch: pytest.MonkeyPatch,
    operator: OperatorProcess,
    operator_kubeconfig: Path,
    tmp_path: Path,
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    with operator_with(monkeypatch, operator, tmp_path, operator_kubeconfig, "engine.worker=panic*3") as own:
        namespace = make_namespace("crash", {"e2e": label})
        name = make_baseline(full_spec(label))["metadata"]["name"]
        eventually(lambda: kube.managed(namespace) == FULL_SET and kube.ready(name), what="converged anyway")
        counted = eventually(
            lambda: sum(restarts(own).values()) >= 3 and restarts(own), what="restarts counted"
        )
        assert all(loop.startswith("reconcile-") for loop in counted)
        assert sum(counted.values()) == 3
        assert probe(own, "/healthz")[0] == 200  # each worker crashed once: restarted, alive
        assert probe(own, "/readyz") == (200, {"ready": True, "standby": False})


def test_a_hung_watch_fails_liveness_within_its_bound(
    monkeypatch: pytest.MonkeyPatch,
    operator: OperatorProcess,
    operator_kubeconfig: Path,
    tmp_path: Path,
    make_namespace: Callable[..., str],
) -> None:
    bound = 6.0
    args = ("--watch-timeout", "2", "--watch-stale-after", str(bound))
    with operator_with(
        monkeypatch, operator, tmp_path, operator_kubeconfig, "watch.namespaces=hang", *args
    ) as own:
        hang_logged = "failpoint watch.namespaces: hanging"
        time.sleep(bound + 2)  # every watch restarting every 2 s beats: alive (unless it hung already)
        if hang_logged not in own.tail(400):
            assert probe(own, "/healthz")[0] == 200
        # The namespace watch's next batch hangs: this one's, or an earlier test's namespace terminating.
        make_namespace("hang")
        eventually(lambda: hang_logged in own.tail(400), interval=0.05, what="the watch hung")
        hung = time.monotonic()
        status, body = eventually(lambda: (answer := probe(own, "/healthz"))[0] == 500 and answer, timeout=30)
        took = time.monotonic() - hung
        print(f"hung watch -> liveness failing: {took:.1f} s (bound {bound:.0f} s)")  # noqa: T201
        assert took <= bound + 2.0
        assert status == 500
        assert any("watch-namespaces" in problem for problem in body["problems"]), body


def test_a_status_write_failing_three_times_is_retried_until_it_lands(
    monkeypatch: pytest.MonkeyPatch,
    operator: OperatorProcess,
    operator_kubeconfig: Path,
    tmp_path: Path,
    kube: Cluster,
    make_namespace: Callable[..., str],
    make_baseline: Callable[..., dict[str, Any]],
    label: str,
) -> None:
    with operator_with(monkeypatch, operator, tmp_path, operator_kubeconfig, "status.write=error*3") as own:
        namespace = make_namespace("status", {"e2e": label})
        name = make_baseline(full_spec(label))["metadata"]["name"]
        eventually(lambda: kube.managed(namespace) == FULL_SET, what="applied")
        eventually(lambda: kube.ready(name), timeout=30, what="the status written after all")
        assert own.log.read_text().count("not written (500 InternalError: failpoint status.write)") == 3


def test_a_failing_resync_is_tried_again_after_a_back_off_not_a_whole_interval(
    monkeypatch: pytest.MonkeyPatch,
    operator: OperatorProcess,
    operator_kubeconfig: Path,
    tmp_path: Path,
) -> None:
    args = ("--backstop-interval", "3")
    with operator_with(monkeypatch, operator, tmp_path, operator_kubeconfig, "resync=error*3", *args) as own:
        pattern = re.compile(r"\[\S+ (\d\d:\d\d:\d\d,\d+)\] .*resync failed .*trying again in ([0-9.]+) s")

        def failures() -> list[tuple[float, float]]:
            found = []
            for line in own.log.read_text().splitlines():
                match = pattern.search(line)
                if match:
                    hours, minutes, rest = match[1].split(":")
                    seconds = int(hours) * 3600 + int(minutes) * 60 + float(rest.replace(",", "."))
                    found.append((seconds, float(match[2])))
            return found

        found = eventually(
            lambda: len(failures()) >= 3 and failures(), timeout=30, what="three failed resyncs"
        )
        assert [delay for _, delay in found] == [0.5, 1.0, 2.0]
        gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(found)]
        assert all(gap < 3.0 for gap in gaps), gaps  # not the 3 s interval: the back-off
