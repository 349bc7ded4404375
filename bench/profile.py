"""Where the operator's CPU goes: py-spy attached to the operator process while a scenario runs.

`python -m bench --profile` records every cold convergence this way (`py-spy record --gil`: only the
samples that hold the GIL, i.e. the operator's own CPU time, not threads waiting for the API server) and
keeps, next to the figures, the functions with the most samples: by own time (the frame at the top of
the stack) and by total time (anywhere on the stack), plus the raw collapsed stacks for a flame graph
(`flamegraph.pl` or speedscope read them).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.harness import BenchError

if TYPE_CHECKING:
    from collections.abc import Iterator

TOP = 15


def py_spy() -> str:
    """The py-spy command next to this Python, or on PATH; an error that says how to get it."""
    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise BenchError(
            "--profile needs py-spy, which the bench extra installs: make bench, or pip install py-spy"
        )
    return found


@contextlib.contextmanager
def recording(pid: int, output: Path, found: dict[str, Any]) -> Iterator[None]:
    """Record `pid` while the block runs; then fill `found` with the summary of the samples."""
    process = subprocess.Popen(
        [
            py_spy(),
            "record",
            "--gil",
            "--nonblocking",
            "-r",
            "100",
            "-f",
            "raw",
            "-o",
            str(output),
            "-p",
            str(pid),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)  # py-spy writes what it has when interrupted
        try:
            _, errors = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            errors = b""
        if output.exists():
            found.update(summarize(output.read_text()), collapsed_stacks=str(output))
        else:
            found["error"] = errors.decode(errors="replace")[-500:]


def summarize(collapsed: str) -> dict[str, Any]:
    """Own and total samples per function from collapsed stacks (`frame;frame;... count` lines)."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = [_short(frame) for frame in stack.split(";")]
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    return {
        "samples": samples,
        "own_top": [[name, round(100 * count / max(1, samples), 1)] for name, count in own.most_common(TOP)],
        "total_top": [
            [name, round(100 * count / max(1, samples), 1)] for name, count in total.most_common(TOP * 2)
        ],
    }


def _short(frame: str) -> str:
    """`func (path/to/site-packages/pkg/mod.py:12)` -> `func (pkg/mod.py)`: lines merged, paths cut."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rpartition(":")[0] or where.rstrip(")")
    for marker in ("site-packages/", "/lib/python3", "operator/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"
