"""What the real node changes on the host itself, written down before the change and given back after.

Most of a node lives in its own network namespace, state folder and cgroup, and goes with them. A few
things cannot be kept out of the host: the kubelet rewrites global sysctls (`vm.overcommit_memory`,
`kernel.panic`...), and containerd, libcni and the kubelet create fixed host paths (`/run/containerd`,
`/var/lib/cni`, `/var/lib/kubelet/device-plugins`, `/var/log/containers`; `ip netns` creates
`/run/netns`). Several nodes may run at once (a test session and `make cluster-up NODE=1`), so one
ledger, `/run/baseline-node/ledger.json` under a lock, records the host's values before the first node
starts, hands out slots (each node's /30 and names), and the last node out restores the sysctls and
removes the paths that did not exist before. A slot whose owner died without cleaning up (SIGKILL) is
reaped by the next node that starts, or by `baseline-localcluster down`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

LEDGER_DIR = Path("/run/baseline-node")
KUBELET_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
"""What the kubelet sets at start (`setupKernelTunables`) unless protectKernelDefaults makes it refuse."""
HOST_PATHS = (
    "/run/containerd",
    "/run/netns",
    "/run/nri",
    "/var/lib/cni",
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/opt/cni",
    "/etc/cni",
    "/opt/containerd",
)
"""Fixed paths that containerd, libcni, the kubelet or `ip netns` may create whatever they are told."""


class LedgerError(RuntimeError):
    """No free slot, or the ledger could not be read."""


@dataclass(frozen=True)
class Slot:
    """One node's claim: its number, owner process and state folder."""

    number: int
    pid: int
    state_dir: str
    started: str = ""
    """The owner's start time (clock ticks since boot), so that a reused pid is not taken for it."""

    @classmethod
    def from_entry(cls, number: str, entry: dict[str, Any]) -> Slot:
        return cls(int(number), int(entry["pid"]), str(entry["state_dir"]), str(entry.get("started", "")))

    def owner_alive(self) -> bool:
        started = _start_time(self.pid)
        return started is not None and started == self.started


@contextlib.contextmanager
def _locked() -> Iterator[dict[str, Any]]:
    LEDGER_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    with (LEDGER_DIR / "ledger.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = LEDGER_DIR / "ledger.json"
        ledger: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        try:
            yield ledger
        finally:
            if ledger.get("slots"):
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(ledger, indent=1, sort_keys=True))
                tmp.replace(path)
            else:
                path.unlink(missing_ok=True)


def claim(state_dir: Path, reap: Callable[[Slot], None], slots: int) -> Slot:
    """Take a free slot for a node kept in `state_dir`; reap slots of dead owners on the way."""
    with _locked() as ledger:
        if not ledger.get("slots"):
            # The first node: the host as it is now is what the last node out gives back.
            ledger["sysctls"] = {name: _read_sysctl(name) for name in KUBELET_SYSCTLS}
            ledger["absent_paths"] = [path for path in HOST_PATHS if not os.path.lexists(path)]
            ledger["slots"] = {}
        taken: dict[str, Any] = ledger["slots"]
        for key, entry in list(taken.items()):
            if not Slot.from_entry(key, entry).owner_alive():
                reap(Slot.from_entry(key, entry))
                del taken[key]
        free = next((number for number in range(slots) if str(number) not in taken), None)
        if free is None:
            raise LedgerError(f"all {slots} node slots are taken: {sorted(taken)}")
        slot = Slot(free, os.getpid(), str(state_dir), _start_time(os.getpid()) or "")
        taken[str(free)] = {"pid": slot.pid, "state_dir": slot.state_dir, "started": slot.started}
        return slot


def release(slot: Slot) -> None:
    """Give the slot back; the last node out restores the host (sysctls, paths it did not have)."""
    with _locked() as ledger:
        ledger.get("slots", {}).pop(str(slot.number), None)
        last = not ledger.get("slots")
        if last:
            _restore(ledger)
    if last:
        _remove_ledger_dir()


def reap_dead(reap: Callable[[Slot], None]) -> list[Slot]:
    """Clean up after every node whose owner died; restore the host if none is left."""
    if not (LEDGER_DIR / "ledger.json").exists():
        return []
    reaped: list[Slot] = []
    with _locked() as ledger:
        taken: dict[str, Any] = ledger.get("slots", {})
        for key, entry in list(taken.items()):
            slot = Slot.from_entry(key, entry)
            if not slot.owner_alive():
                reap(slot)
                del taken[key]
                reaped.append(slot)
        last = not taken and bool(reaped)
        if last:
            _restore(ledger)
    if last:
        _remove_ledger_dir()
    return reaped


def _restore(ledger: dict[str, Any]) -> None:
    for name, value in ledger.get("sysctls", {}).items():
        if _read_sysctl(name) != value:
            Path("/proc/sys", name).write_text(value)
    for path in ledger.get("absent_paths", []):
        target = Path(path)
        # `ip netns add` bind-mounts /run/netns onto itself (is_mount() cannot see that), maybe twice.
        while path in _mount_points():
            if subprocess.run(["umount", "--lazy", path], check=False, capture_output=True).returncode != 0:
                break
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target, ignore_errors=True)
        elif os.path.lexists(target):
            target.unlink()
    ledger.clear()


def _remove_ledger_dir() -> None:
    # The ledger's folder is itself a path the node created: it goes once no node holds a slot.
    with contextlib.suppress(OSError):
        if not (LEDGER_DIR / "ledger.json").exists():
            (LEDGER_DIR / "ledger.lock").unlink(missing_ok=True)
            LEDGER_DIR.rmdir()


def host_snapshot() -> dict[str, Any]:
    """What a node could leave behind on the host, for a before/after comparison."""
    netns_dir = Path("/run/netns")
    return {
        "sysctls": {name: _read_sysctl(name) for name in KUBELET_SYSCTLS},
        "paths": sorted(path for path in (*HOST_PATHS, str(LEDGER_DIR)) if os.path.lexists(path)),
        "links": sorted(link.name for link in Path("/sys/class/net").iterdir()),
        "netns": sorted(entry.name for entry in netns_dir.iterdir()) if netns_dir.is_dir() else [],
        "mounts": sorted(_mount_points()),
        "cgroups": sorted(_top_cgroups()),
    }


def _mount_points() -> list[str]:
    return [
        line.split()[4].replace("\\040", " ")
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
    ]


def _top_cgroups() -> list[str]:
    found = []
    root = Path("/sys/fs/cgroup")
    for hierarchy in root.iterdir():
        if hierarchy.is_dir():
            found += [f"{hierarchy.name}/{child.name}" for child in hierarchy.iterdir() if child.is_dir()]
    return found


def _read_sysctl(name: str) -> str:
    return Path("/proc/sys", name).read_text().strip()


def _start_time(pid: int) -> str | None:
    """The process's start time from /proc (None when it is gone or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the parenthesised command name: state is the first, starttime the 20th.
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else fields[19]
