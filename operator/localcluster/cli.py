"""`baseline-localcluster`: build, start and stop the local control plane for the demo and for humans.

`up` starts a detached supervisor (`serve`) that owns the control-plane processes and stops them on
SIGTERM; the processes die with the supervisor even if it is killed. `down` stops it and removes its
state. The e2e tests do not use this: they start a `LocalCluster` of their own inside the test session.
With `--node`, `up` starts a real node too (`localcluster.node`: Pods run, NetworkPolicies are enforced;
needs root), and `down` also cleans up after any node whose owner was killed before it could.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NoReturn

from localcluster import binaries, host, node
from localcluster.cluster import ClusterError, LocalCluster, pid_alive

_DEFAULT_DEV_DIR = Path(".dev")


def _say(message: str) -> None:
    print(f"[localcluster] {message}", file=sys.stderr, flush=True)


class _Layout:
    """Where `up` keeps things, under the git-ignored `.dev/` folder of the checkout."""

    def __init__(self, dev_dir: Path) -> None:
        self.dev_dir = dev_dir.resolve()
        self.state_dir = self.dev_dir / "cluster"
        self.kubeconfig = self.dev_dir / "kubeconfig"
        self.bin_dir = self.dev_dir / "bin"
        self.pid_file = self.state_dir / "supervisor.pid"
        self.ready_file = self.state_dir / "ready"
        self.supervisor_log = self.dev_dir / "localcluster.log"

    def supervisor_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if pid_alive(pid, command_contains="localcluster") else None


def cmd_build(args: argparse.Namespace) -> int:
    started = time.monotonic()
    tools: tuple[binaries.GoTool, ...] = binaries.CONTROL_PLANE
    if args.node:
        tools = (*tools, *binaries.NODE)
    if args.tools:
        tools = (*tools, *binaries.TEST_TOOLS)
    for name, path in binaries.ensure_control_plane(tools=tools).items():
        print(f"{name}: {path}")
    _say(f"binaries ready in {time.monotonic() - started:.0f} s")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    layout = _Layout(args.dev_dir)
    if layout.supervisor_pid() is not None:
        if layout.ready_file.exists():
            _say(f"a local control plane is already running (pid {layout.supervisor_pid()}); reusing it")
            _print_usage(layout)
            return 0
        _say("a local control plane is still starting; run `make cluster-down` first if it is stuck")
        return 1
    # A stale state from a supervisor that died. A node's mounts must go before its files do: a Pod's
    # volume may be a bind mount of a host folder, which removing the state folder would empty.
    _reap_dead_nodes()
    _remove_state(layout)
    if args.node:
        missing = node.missing_prerequisites()
        if missing:
            _say("this machine cannot run the node; it lacks: " + "; ".join(missing))
            return 1
    started = time.monotonic()
    paths = binaries.ensure_control_plane(
        tools=(*binaries.CONTROL_PLANE, *binaries.NODE) if args.node else binaries.CONTROL_PLANE
    )
    _say(f"binaries ready in {time.monotonic() - started:.0f} s")
    layout.bin_dir.mkdir(parents=True, exist_ok=True)
    kubectl_link = layout.bin_dir / "kubectl"
    kubectl_link.unlink(missing_ok=True)
    kubectl_link.symlink_to(paths["kubectl"])
    layout.state_dir.mkdir(parents=True, exist_ok=True)
    if args.node:
        _say("starting the control plane and a real node in a network namespace of their own")
    else:
        _say("starting etcd, kube-apiserver and kube-controller-manager on loopback")
    serve = ["serve", "--node"] if args.node else ["serve"]
    with layout.supervisor_log.open("ab") as log:
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "localcluster", "--dev-dir", str(layout.dev_dir), *serve],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # it outlives this command, by design
        )
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if layout.ready_file.exists():
            _say(f"ready in {args.timeout - (deadline - time.monotonic()):.1f} s")
            _print_usage(layout)
            return 0
        if supervisor.poll() is not None:
            _say(f"the control plane failed to start; see {layout.supervisor_log}:")
            print(layout.supervisor_log.read_text(errors="replace")[-4000:], file=sys.stderr)
            return 1
        time.sleep(0.2)
    _say(f"not ready after {args.timeout:.0f} s; stopping it (log: {layout.supervisor_log})")
    _stop_supervisor(layout)
    return 1


def _print_usage(layout: _Layout) -> None:
    print(f"export KUBECONFIG={layout.kubeconfig}")
    print(f"export PATH={layout.bin_dir}:$PATH   # kubectl of the same release")


def cmd_serve(args: argparse.Namespace) -> int:
    layout = _Layout(args.dev_dir)
    layout.state_dir.mkdir(parents=True, exist_ok=True)
    layout.pid_file.write_text(str(os.getpid()))
    if args.node:
        return _serve_node(layout)
    cluster = LocalCluster(layout.state_dir, kubeconfig_path=layout.kubeconfig)
    stopping = False

    def request_stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        cluster.start()
        version = cluster.version()["gitVersion"]
        layout.ready_file.write_text(cluster.server)
        _say(f"kubernetes {version} ready at {cluster.server}")
        while not stopping:
            for name, process in cluster.processes.items():
                if not process.running():
                    _say(f"{name} exited unexpectedly; its log ends with:\n{process.tail()}")
                    stopping = True
            time.sleep(0.5)
    except ClusterError as error:
        _say(str(error))
        return 1
    finally:
        cluster.stop()
        layout.ready_file.unlink(missing_ok=True)
        layout.pid_file.unlink(missing_ok=True)
    return 0


def _serve_node(layout: _Layout) -> int:
    local = node.LocalNode(layout.state_dir, kubeconfig_path=layout.kubeconfig)
    stopping = False

    def request_stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        local.start()
        layout.ready_file.write_text(local.cluster.server)
        _say(f"a real node is Ready; control plane at {local.cluster.server}; start times: {local.timings}")
        while not stopping:
            processes = {**local.cluster.processes, **local.processes}
            for name, process in processes.items():
                if not process.running():
                    _say(f"{name} exited unexpectedly; its log ends with:\n{process.tail()}")
                    stopping = True
            time.sleep(0.5)
    except ClusterError as error:
        _say(str(error))
        return 1
    finally:
        local.stop()
        layout.ready_file.unlink(missing_ok=True)
        layout.pid_file.unlink(missing_ok=True)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    layout = _Layout(args.dev_dir)
    if layout.supervisor_pid() is None:
        _say("no local control plane is running")
    else:
        _stop_supervisor(layout)
        _say("stopped")
    _reap_dead_nodes()
    _remove_state(layout)
    return 0


def _reap_dead_nodes() -> None:
    # A node whose supervisor was killed leaves its namespaces, mounts and cgroups: take them away.
    if host.LEDGER_DIR.exists():
        for slot in host.reap_dead(node.reap_slot):
            _say(f"removed what the node in slot {slot.number} left behind")


def _stop_supervisor(layout: _Layout) -> None:
    pid = layout.supervisor_pid()
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid):
        # Its children hold PR_SET_PDEATHSIG, so killing the supervisor takes them down as well.
        os.kill(pid, signal.SIGKILL)


def _remove_state(layout: _Layout) -> None:
    shutil.rmtree(layout.state_dir, ignore_errors=True)
    layout.kubeconfig.unlink(missing_ok=True)


def cmd_status(args: argparse.Namespace) -> int:
    layout = _Layout(args.dev_dir)
    pid = layout.supervisor_pid()
    if pid is None or not layout.ready_file.exists():
        print("not running")
        return 1
    print(
        f"running (supervisor pid {pid}) at {layout.ready_file.read_text()}; KUBECONFIG={layout.kubeconfig}"
    )
    return 0


def main(argv: list[str] | None = None) -> NoReturn:
    parser = argparse.ArgumentParser(prog="baseline-localcluster", description=__doc__.splitlines()[0])
    parser.add_argument("--dev-dir", type=Path, default=_DEFAULT_DEV_DIR, help="state folder (default .dev)")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser(
        "build", help="build the control-plane binaries, and with flags more (cached per machine)"
    )
    build.add_argument("--node", action="store_true", help="the real node's binaries too")
    build.add_argument(
        "--tools", action="store_true", help="the test tools too (Prometheus, Conftest, kube-score, Helm)"
    )
    build.set_defaults(func=cmd_build)
    up = commands.add_parser("up", help="start a control plane in the background and write .dev/kubeconfig")
    up.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait once the binaries are built"
    )
    up.add_argument("--node", action="store_true", help="with a real node (root; see localcluster.node)")
    up.set_defaults(func=cmd_up)
    commands.add_parser("down", help="stop it and remove its state").set_defaults(func=cmd_down)
    commands.add_parser("status", help="say whether one is running").set_defaults(func=cmd_status)
    serve = commands.add_parser("serve", help="run one in the foreground (what `up` starts)")
    serve.add_argument("--node", action="store_true", help="with a real node")
    serve.set_defaults(func=cmd_serve)
    args = parser.parse_args(argv)
    sys.exit(args.func(args))
