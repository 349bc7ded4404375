"""The `baseline-operator` command line: `run` the operator, `render` what a baseline would apply."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import os
import signal
import sys
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import yaml

from baseline_operator import __version__
from baseline_operator.spec import MAX_EXEMPTION_DAYS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Coroutine, Sequence

    from baseline_operator.handlers import OperatorContext
    from baseline_operator.leader import ElectionSettings, LeaderElector
    from baseline_operator.observed import ObservedPolicy
    from baseline_operator.spec import BaselineSpec

_DEFAULT_ALLOWED_ROLES = "view,edit"
_LONGEST_EXEMPTION_CEILING = 365


def _exemption_days(text: str) -> int:
    days = int(text)
    if not 1 <= days <= _LONGEST_EXEMPTION_CEILING:
        msg = f"must be between 1 and {_LONGEST_EXEMPTION_CEILING} days"
        raise argparse.ArgumentTypeError(msg)
    return days


def _admin_priority(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 1000:  # noqa: PLR2004 - the network policy API's range
        raise argparse.ArgumentTypeError(f"{value} is not in 0..1000")
    return value


def _env(name: str, default: str) -> str:
    return os.environ.get(f"BASELINE_{name}", default)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="baseline-operator",
        description="Keeps every selected namespace at its SecurityBaseline: network policies, metadata-API "
        "block, LimitRange, ResourceQuota, least-privilege RBAC and Pod Security labels.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the operator against the current cluster (in-cluster account, else $KUBECONFIG)",
        description="Every option can also be set with the environment variable named in brackets.",
    )
    run.add_argument(
        "--operator-namespace",
        default=_env("OPERATOR_NAMESPACE", os.environ.get("POD_NAMESPACE", "")),
        help="the operator's own namespace, never selected by any baseline [BASELINE_OPERATOR_NAMESPACE]",
    )
    run.add_argument(
        "--extra-protected-namespaces",
        default=_env("EXTRA_PROTECTED_NAMESPACES", ""),
        help="more namespaces no baseline ever selects, comma-separated, besides kube-system, kube-public, "
        "kube-node-lease and the operator's own [BASELINE_EXTRA_PROTECTED_NAMESPACES]",
    )
    run.add_argument(
        "--max-exemption-days",
        type=_exemption_days,
        default=_exemption_days(_env("MAX_EXEMPTION_DAYS", str(MAX_EXEMPTION_DAYS))),
        help="the furthest ahead an exemption may expire; one running longer is reported, not applied "
        "[BASELINE_MAX_EXEMPTION_DAYS] (default: %(default)s)",
    )
    run.add_argument(
        "--allowed-cluster-roles",
        default=_env("ALLOWED_CLUSTER_ROLES", _DEFAULT_ALLOWED_ROLES),
        help="comma-separated ClusterRoles baselines may bind; must match the operator's `bind` "
        "permission [BASELINE_ALLOWED_CLUSTER_ROLES] (default: %(default)s)",
    )
    run.add_argument(
        "--max-in-flight",
        type=int,
        default=int(_env("MAX_IN_FLIGHT", "16")),
        help="API requests in flight at most [BASELINE_MAX_IN_FLIGHT] (default: %(default)s)",
    )
    run.add_argument(
        "--workers",
        type=int,
        default=int(_env("WORKERS", "32")),
        help="namespaces reconciled concurrently [BASELINE_WORKERS] (default: %(default)s)",
    )
    run.add_argument(
        "--backstop-interval",
        type=float,
        default=float(_env("BACKSTOP_INTERVAL", "600")),
        help="seconds between full comparisons from the caches, a safety net for a missed watch event "
        "[BASELINE_BACKSTOP_INTERVAL] (default: %(default)s)",
    )
    run.add_argument(
        "--watch-timeout",
        type=int,
        default=int(_env("WATCH_TIMEOUT", "300")),
        help="seconds after which the API server ends each watch and the operator starts a new one "
        "[BASELINE_WATCH_TIMEOUT] (default: %(default)s)",
    )
    run.add_argument(
        "--watch-stale-after",
        type=float,
        default=None,
        help="liveness fails when a watch has shown no sign of life for this long (default: the watch "
        "timeout plus 60 s; bookmarks come about every minute)",
    )
    run.add_argument(
        "--admin-policy-priority",
        type=_admin_priority,
        default=_admin_priority(_env("ADMIN_POLICY_PRIORITY", "20")),
        help="priority (0..1000, lower first) of the Admin-tier policies that block the metadata APIs, where "
        "the cluster serves the network policy API [BASELINE_ADMIN_POLICY_PRIORITY] (default: %(default)s)",
    )
    run.add_argument(
        "--fight-repairs",
        type=int,
        default=int(_env("FIGHT_REPAIRS", "3")),
        help="repairs of one object within --fight-window that make it a fight with another writer "
        "[BASELINE_FIGHT_REPAIRS] (default: %(default)s)",
    )
    run.add_argument(
        "--fight-window",
        type=float,
        default=float(_env("FIGHT_WINDOW", "60")),
        help="seconds over which repairs are counted [BASELINE_FIGHT_WINDOW] (default: %(default)s)",
    )
    run.add_argument(
        "--fight-backoff",
        type=float,
        default=float(_env("FIGHT_BACKOFF", "60")),
        help="seconds repairs of a fought-over object first pause; doubled for each further fight, up "
        "to 30 times this [BASELINE_FIGHT_BACKOFF] (default: %(default)s)",
    )
    run.add_argument(
        "--events-namespace",
        default=_env("EVENTS_NAMESPACE", "default"),
        help="namespace of the Events about (cluster-scoped) SecurityBaselines "
        "[BASELINE_EVENTS_NAMESPACE] (default: %(default)s)",
    )
    run.add_argument(
        "--metrics-address",
        default=_env("METRICS_ADDRESS", "0.0.0.0:8080"),
        help="host:port of the Prometheus /metrics endpoint, empty to turn it off "
        "[BASELINE_METRICS_ADDRESS] (default: %(default)s)",
    )
    run.add_argument(
        "--metrics-without-namespace",
        action="store_true",
        default=_env("METRICS_WITHOUT_NAMESPACE", "") in {"1", "true"},
        help="drop the namespace label of the drifted-objects gauge, for very large clusters "
        "[BASELINE_METRICS_WITHOUT_NAMESPACE=true]",
    )
    run.add_argument(
        "--liveness",
        default=_env("LIVENESS", "http://0.0.0.0:8081/healthz"),
        help="liveness endpoint URL [BASELINE_LIVENESS] (default: %(default)s)",
    )
    run.add_argument(
        "--leader-election-id",
        default=_env("LEADER_ELECTION_ID", ""),
        help="run as one of several replicas: only the holder of the Lease `baseline-operator` in the "
        "operator's namespace works; this is the replica's identity, e.g. its Pod name "
        "[BASELINE_LEADER_ELECTION_ID] (default: no election, a single replica)",
    )
    run.add_argument("--verbose", action="store_true", help="debug logging")
    run.set_defaults(func=cmd_run)

    render = commands.add_parser(
        "render",
        help="print the objects a baseline would apply to a namespace (no cluster needed)",
        description="Print, as YAML, exactly the objects the operator would apply for one baseline in one "
        "namespace: for review in GitOps pull requests.",
    )
    render.add_argument("-f", "--file", type=Path, required=True, help="a SecurityBaseline YAML file")
    render.add_argument("--namespace", required=True, help="the namespace to render for")
    render.add_argument("--labels", default="", help="the namespace's labels, k=v,k2=v2")
    render.add_argument(
        "--policies",
        type=Path,
        help="the namespace's own NetworkPolicies (YAML, several documents or a List): the metadata block "
        "leaves the pods their egress policies select alone; policies that open a metadata API are listed",
    )
    render.set_defaults(func=cmd_render)
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    import kopf  # noqa: PLC0415 - imported here so that `render` and `--help` stay fast and cluster-free

    from baseline_operator import kube  # noqa: PLC0415
    from baseline_operator.engine import EngineSettings  # noqa: PLC0415
    from baseline_operator.events import EventSettings  # noqa: PLC0415
    from baseline_operator.fights import FightSettings  # noqa: PLC0415
    from baseline_operator.handlers import LoopBounds, OperatorContext  # noqa: PLC0415
    from baseline_operator.leader import ElectionSettings  # noqa: PLC0415
    from baseline_operator.metrics import MetricsRecorder  # noqa: PLC0415
    from baseline_operator.planner import Policy  # noqa: PLC0415
    from baseline_operator.selection import protected_namespaces  # noqa: PLC0415
    from baseline_operator.supervision import Supervisor  # noqa: PLC0415

    kopf.configure(verbose=args.verbose, log_prefix=True)
    if not args.verbose:
        # kopf logs "Handler ... succeeded" for every watch event: thousands of lines a minute in a
        # roll-out, and 4 % of the CPU time. The operator's own log says what happened.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    policy = Policy(
        protected_namespaces=protected_namespaces(args.operator_namespace or None)
        | {name.strip() for name in args.extra_protected_namespaces.split(",") if name.strip()},
        allowed_cluster_roles=frozenset(
            role.strip() for role in args.allowed_cluster_roles.split(",") if role.strip()
        ),
        longest_exemption=dt.timedelta(days=args.max_exemption_days),
    )
    metrics = MetricsRecorder(with_namespace=not args.metrics_without_namespace)
    if args.metrics_address:
        metrics.serve(args.metrics_address)
    context = OperatorContext(
        api=kube.KubeApi.connect(max_in_flight=args.max_in_flight, observe=metrics.api_request),
        metrics=metrics,
        policy=policy,
        engine_settings=EngineSettings(
            workers=args.workers,
            fights=FightSettings(
                max_repairs=args.fight_repairs,
                window=args.fight_window,
                initial_backoff=args.fight_backoff,
                max_backoff=30 * args.fight_backoff,
            ),
        ),
        event_settings=EventSettings(namespace=args.events_namespace),
        backstop_interval=args.backstop_interval,
        admin_policy_priority=args.admin_policy_priority,
        supervisor=Supervisor(metrics),
        loop_bounds=LoopBounds(
            watch_timeout=args.watch_timeout,
            watch=args.watch_stale_after or args.watch_timeout + 60.0,
        ),
    )
    election = None
    if args.leader_election_id:
        if not args.operator_namespace:
            raise SystemExit("--leader-election-id needs --operator-namespace: the Lease lives there")
        election = ElectionSettings(namespace=args.operator_namespace, identity=args.leader_election_id)
    return asyncio.run(_operate(context, election, args.liveness or None))


async def _operate(context: OperatorContext, election: ElectionSettings | None, liveness: str | None) -> int:
    """Run the operator; with an election, first wait for the Lease and stop working the moment it is lost."""
    import kopf  # noqa: PLC0415

    from baseline_operator.handlers import build_registry, prepare  # noqa: PLC0415
    from baseline_operator.leader import LeaderElector  # noqa: PLC0415

    async def operator() -> None:
        # The cache is filled before kopf watches anything (see cache.py).
        await prepare(context)
        await kopf.operator(
            registry=build_registry(),
            memo=context,
            clusterwide=True,
            # One writer at a time comes from the Lease below, not from kopf's peering.
            standalone=True,
        )

    async with _health_endpoints(liveness, context, standby=lambda: context.standby):
        try:
            if election is None:
                await operator()
                return 0
            return await _lead(context, LeaderElector(context.api, election), operator)
        finally:
            context.api.close()  # after the Lease is released: that needs the API too


async def _lead(
    context: OperatorContext,
    elector: LeaderElector,
    operator: Callable[[], Coroutine[Any, Any, None]],
) -> int:
    """Wait for the Lease, work while holding it, hand it over on a graceful stop."""
    context.metrics.leading(leading=False)
    context.standby = True
    if not await _acquire_unless_stopped(elector):
        return 0
    context.standby = False
    context.metrics.leading(leading=True)
    assert context.supervisor is not None  # noqa: S101 - made in cmd_run
    # Never restarted: a replica that cannot renew the Lease exits (below), to come back as a standby.
    heartbeat = context.supervisor.watch("leader-election", stale_after=context.loop_bounds.other)
    working = asyncio.create_task(operator())
    holding = asyncio.create_task(elector.hold(heartbeat))
    await asyncio.wait({working, holding}, return_when=asyncio.FIRST_COMPLETED)
    if holding.done():
        # Another replica may take the Lease soon: stop writing now, not after a graceful shutdown.
        logging.getLogger(__name__).critical("leadership lost: exiting, to restart as a standby")
        os._exit(1)
    holding.cancel()
    await elector.release()
    await working  # a crash of the operator itself still fails the process, after the hand-over
    return 0


async def _acquire_unless_stopped(elector: LeaderElector) -> bool:
    """Wait for the Lease; False when SIGTERM or SIGINT came first.

    kopf handles those signals only once it runs. A standby in a container is its PID 1, for which the
    kernel drops a signal nobody handles: it would neither stop when its Pod is deleted (until the grace
    period kills it) nor keep from taking the Lease meanwhile. A Lease taken just as the signal came is
    released again.
    """
    loop = asyncio.get_running_loop()
    acquiring = asyncio.ensure_future(elector.acquire())
    stops = (signal.SIGTERM, signal.SIGINT)
    for stop in stops:
        loop.add_signal_handler(stop, acquiring.cancel)
    try:
        await asyncio.wait({acquiring})
    finally:
        for stop in stops:
            loop.remove_signal_handler(stop)
    if acquiring.cancelled():
        logging.getLogger(__name__).info("stopped while standing by")
        await elector.release()
        return False
    acquiring.result()
    return True


@contextlib.asynccontextmanager
async def _health_endpoints(
    liveness: str | None, context: OperatorContext, standby: Callable[[], bool]
) -> AsyncIterator[None]:
    """Serve `/healthz` (liveness) at the --liveness address and `/readyz` (readiness) beside it.

    Liveness fails (500) when a supervised loop is dead or stuck (supervision.py) and says which. Readiness
    holds (200) on a standby, which is ready to take over, and on the working replica once its caches are
    filled and its first pass over every namespace is done.
    """
    if liveness is None:
        yield
        return
    from aiohttp import web  # noqa: PLC0415 - kopf's own HTTP library

    async def healthz(_: web.Request) -> web.Response:
        problems = context.supervisor.problems() if context.supervisor is not None else []
        return web.json_response(
            {"alive": not problems, "problems": problems}, status=500 if problems else 200
        )

    async def readyz(_: web.Request) -> web.Response:
        engine = context.engine
        ready = standby() or (engine is not None and engine.first_pass_done)
        return web.json_response({"ready": ready, "standby": standby()}, status=200 if ready else 503)

    url = urllib.parse.urlsplit(liveness)
    app = web.Application()
    app.router.add_get(url.path or "/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, url.hostname, url.port).start()
    try:
        yield
    finally:
        await runner.cleanup()


def _parse_labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in filter(None, (part.strip() for part in text.split(","))):
        key, separator, value = pair.partition("=")
        if not separator or not key:
            raise ValueError(f"--labels: expected key=value, got {pair!r}")
        labels[key] = value
    return labels


def cmd_render(args: argparse.Namespace) -> int:
    from baseline_operator.builders import BuildContext, BuildError, build_all  # noqa: PLC0415
    from baseline_operator.selection import protected_namespaces, selects  # noqa: PLC0415
    from baseline_operator.spec import BaselineRef, NamespaceInfo, Section  # noqa: PLC0415

    try:
        document, spec, labels, policies = _render_inputs(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    name = str(document.get("metadata", {}).get("name", "baseline"))
    namespace = NamespaceInfo(
        name=args.namespace, labels={"kubernetes.io/metadata.name": args.namespace, **labels}
    )
    if not selects(spec, namespace.name, namespace.labels, protected_namespaces(None)):
        print(
            f"# baseline {name} does not select namespace {args.namespace}: nothing to apply", file=sys.stderr
        )
        return 0
    context = BuildContext(
        baseline=BaselineRef(name=name, uid="<uid of the SecurityBaseline>"),
        namespace=namespace,
        other_egress_selectors=tuple(policy.pod_selector for policy in policies if policy.egress is not None),
    )
    try:
        objects = build_all(spec, context, [section for section in Section if spec.section(section)])
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    _warn_metadata_openings(spec, policies)
    sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False))
    return 0


def _render_inputs(
    args: argparse.Namespace,
) -> tuple[dict[str, Any], BaselineSpec, dict[str, str], list[ObservedPolicy]]:
    """The baseline, its spec, the namespace's labels and its policies; ValueError says what is wrong."""
    from baseline_operator.spec import SpecError, parse_spec  # noqa: PLC0415

    try:
        document: Any = yaml.safe_load(args.file.read_text())
        labels = _parse_labels(args.labels)
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(str(error)) from None
    if not isinstance(document, dict) or document.get("kind") != "SecurityBaseline":
        raise ValueError(f"{args.file} is not a SecurityBaseline")
    try:
        spec = parse_spec(document.get("spec") or {})
    except SpecError as error:
        raise ValueError(str(error)) from None
    try:
        policies = _read_policies(args.policies, args.namespace) if args.policies else []
    except (OSError, yaml.YAMLError, ValueError) as error:
        raise ValueError(f"{args.policies}: {error}") from None
    return document, spec, labels, policies


def _read_policies(path: Path, namespace: str) -> list[ObservedPolicy]:
    """The NetworkPolicies of a YAML file that are not the operator's, as the operator observes them."""
    from baseline_operator.builders.common import MANAGED_BY_LABEL, MANAGED_BY_VALUE  # noqa: PLC0415
    from baseline_operator.observed import observe_policy  # noqa: PLC0415

    found: list[ObservedPolicy] = []
    for document in yaml.safe_load_all(path.read_text()):
        is_list = isinstance(document, dict) and document.get("kind") == "List"
        items = (document.get("items") or []) if is_list else [document]
        for item in items:
            if not isinstance(item, dict) or item.get("kind") != "NetworkPolicy":
                continue
            metadata = item.setdefault("metadata", {})
            if (metadata.get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE:
                continue
            metadata.setdefault("namespace", namespace)
            found.append(observe_policy(item))
    return found


def _warn_metadata_openings(spec: BaselineSpec, policies: list[ObservedPolicy]) -> None:
    from baseline_operator.builders import metadata_cidrs  # noqa: PLC0415
    from baseline_operator.metadata_audit import metadata_openings  # noqa: PLC0415

    settings = spec.network_policy
    if settings is None or not settings.metadata_api.block:
        return
    blocked = metadata_cidrs(settings.metadata_api.providers, settings.metadata_api.extra_cidrs)
    for opening in metadata_openings(policies, [*blocked.ipv4, *blocked.ipv6]):
        print(
            f"# warning: {opening.describe()}: cloud metadata APIs; the baseline cannot take that away",
            file=sys.stderr,
        )


def main(argv: Sequence[str] | None = None) -> NoReturn:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        sys.exit(2)
    sys.exit(args.func(args))
