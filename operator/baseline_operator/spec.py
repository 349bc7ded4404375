"""The SecurityBaseline spec as typed, immutable values, and `parse_spec`, the one way to read it.

The CRD schema rejects most malformed specs at admission, but objects stored before a CRD upgrade
never went through the new schema, and a spec can be well-formed per field yet contradictory (a
LimitRange `min` above its `max`). `parse_spec` re-checks everything and raises `SpecError` naming
the JSON path of the first bad field, so the operator reports a bad baseline instead of crashing on
it or sending the API server objects it will refuse. Defaults are the ones docs/api-contract.md
documents.

Every value here is frozen: maps are `FrozenMap`, lists are tuples. Builders can therefore share the
parsed spec between namespaces without any chance of one build changing the next.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, TypeAlias, TypeVar

from baseline_operator.quantity import parse_quantity

if TYPE_CHECKING:
    from decimal import Decimal

IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address


class SpecError(ValueError):
    """A SecurityBaseline spec that cannot be enforced; `field` is the JSON path of the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class FrozenMap(Mapping[str, str]):
    """A read-only, hashable `str -> str` map: labels, selectors and resource lists.

    `types.MappingProxyType` would be read-only too, but it can be neither hashed nor deep-copied,
    and frozen dataclasses holding one could then not be used as keys or copied by callers.
    """

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        self._items: dict[str, str] = dict(items or {})

    def __getitem__(self, key: str) -> str:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __repr__(self) -> str:
        return f"FrozenMap({self._items!r})"


class Mode(StrEnum):
    """Enforce writes the desired objects; Audit only reports how far a namespace is from them."""

    ENFORCE = "Enforce"
    AUDIT = "Audit"


class Section(StrEnum):
    """The independently managed parts of a baseline; per section, the highest priority wins."""

    NETWORK_POLICY = "networkPolicy"
    LIMIT_RANGE = "limitRange"
    RESOURCE_QUOTA = "resourceQuota"
    RBAC = "rbac"
    POD_SECURITY = "podSecurity"
    WORKLOADS = "workloads"


class SelectorOperator(StrEnum):
    """The operators of a LabelSelector's matchExpressions."""

    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class SubjectKind(StrEnum):
    """The kinds of subject a RoleBinding may name."""

    USER = "User"
    GROUP = "Group"
    SERVICE_ACCOUNT = "ServiceAccount"


class PodSecurityLevel(StrEnum):
    """Pod Security Standards levels, as the `pod-security.kubernetes.io/*` labels spell them."""

    PRIVILEGED = "privileged"
    BASELINE = "baseline"
    RESTRICTED = "restricted"


# The contract's table. `aws-ecs` and `aws-pod-identity` are opt-in: blocking the EKS Pod Identity
# agent breaks every workload that uses it, so nobody gets that by default.
METADATA_API_PROVIDERS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "aws": ("169.254.169.254/32", "fd00:ec2::254/128"),
        "aws-ecs": ("169.254.170.2/32",),
        "aws-pod-identity": ("169.254.170.23/32", "fd00:ec2::23/128"),
        "gcp": ("169.254.169.254/32",),
        "azure": ("169.254.169.254/32", "168.63.129.16/32"),
        "alibaba": ("100.100.100.200/32",),
        "openstack": ("169.254.169.254/32", "fe80::a9fe:a9fe/128"),
        "oracle": ("169.254.169.254/32",),
        "scaleway": ("169.254.42.42/32", "fd00:42::42/128"),
        "tencent": ("169.254.0.23/32",),
        "digitalocean": ("169.254.169.254/32",),
        "hetzner": ("169.254.169.254/32",),
        "linode": ("169.254.169.254/32",),
        "upcloud": ("169.254.169.254/32",),
        "outscale": ("169.254.169.254/32",),
    }
)
DEFAULT_METADATA_PROVIDERS: Final[tuple[str, ...]] = (
    "aws",
    "gcp",
    "azure",
    "alibaba",
    "openstack",
    "oracle",
    "scaleway",
    "tencent",
    "digitalocean",
    "hetzner",
    "linode",
    "upcloud",
    "outscale",
)

# `${namespace}` and `${label:<key>}` in RoleBinding subjects; role_bindings.py substitutes them.
PLACEHOLDER_PATTERN: Final = re.compile(r"\$\{(?P<body>[^}]*)\}")
NAMESPACE_PLACEHOLDER: Final = "namespace"
LABEL_PLACEHOLDER_PREFIX: Final = "label:"

MAX_EXCLUDED_NAMESPACES: Final = 100
MAX_SUBJECTS: Final = 20
MIN_PRIORITY: Final = -1000
MAX_PRIORITY: Final = 1000
_MAX_LABEL_LENGTH = 63
_MAX_SUBDOMAIN_LENGTH = 253

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_POD_SECURITY_VERSION = re.compile(r"latest|v1\.(0|[1-9][0-9]*)")
# Characters of a namespace name plus those of a glob: a pattern with any other can never match.
_NAMESPACE_PATTERN = re.compile(r"[a-z0-9*?!\[\]-]+")
# `baseline-<name>` must stay a DNS-1123 label, as the CRD says.
_MAX_BINDING_NAME = _MAX_LABEL_LENGTH - len("baseline-")
_CONTAINER_RESOURCES = frozenset({"cpu", "memory", "ephemeral-storage"})


@dataclass(frozen=True)
class LabelSelectorRequirement:
    """One matchExpressions entry; `values` is empty for Exists and DoesNotExist."""

    key: str
    operator: SelectorOperator
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabelSelector:
    """A standard Kubernetes label selector; the empty selector matches everything."""

    match_labels: Mapping[str, str] = field(default_factory=FrozenMap)
    match_expressions: tuple[LabelSelectorRequirement, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "match_labels", FrozenMap(self.match_labels))


@dataclass(frozen=True)
class DefaultDeny:
    """Which directions the namespace denies by default; unset directions default to denied."""

    ingress: bool = True
    egress: bool = True


class MetadataEnforcement(StrEnum):
    """Which API enforces the metadata block (see README, "The metadata block")."""

    AUTO = "Auto"
    CLUSTER_NETWORK_POLICY = "ClusterNetworkPolicy"
    ADMIN_NETWORK_POLICY = "AdminNetworkPolicy"
    NETWORK_POLICY = "NetworkPolicy"


@dataclass(frozen=True)
class MetadataAPI:
    """Blocking of cloud metadata endpoints: providers from the contract's table, plus extra CIDRs."""

    block: bool = True
    providers: tuple[str, ...] = DEFAULT_METADATA_PROVIDERS
    extra_cidrs: tuple[IPNetwork, ...] = ()
    enforcement: MetadataEnforcement = MetadataEnforcement.AUTO


@dataclass(frozen=True)
class NetworkPolicySpec:
    """The networkPolicy section; `dns_ips` are extra resolvers allowed on port 53 only."""

    default_deny: DefaultDeny = field(default_factory=DefaultDeny)
    allow_dns: bool = True
    dns_ips: tuple[IPAddress, ...] = ()
    allow_same_namespace: bool = False
    metadata_api: MetadataAPI = field(default_factory=MetadataAPI)


@dataclass(frozen=True)
class LimitRangeSpec:
    """Limits of type Container; each map is resource name -> quantity, spelled as the user wrote it."""

    default: Mapping[str, str] = field(default_factory=FrozenMap)
    default_request: Mapping[str, str] = field(default_factory=FrozenMap)
    max: Mapping[str, str] = field(default_factory=FrozenMap)
    min: Mapping[str, str] = field(default_factory=FrozenMap)
    max_limit_request_ratio: Mapping[str, str] = field(default_factory=FrozenMap)

    def __post_init__(self) -> None:
        for name in ("default", "default_request", "max", "min", "max_limit_request_ratio"):
            object.__setattr__(self, name, FrozenMap(getattr(self, name)))


@dataclass(frozen=True)
class ResourceQuotaSpec:
    """The resourceQuota section: resource name -> quantity, spelled as the user wrote it."""

    hard: Mapping[str, str] = field(default_factory=FrozenMap)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hard", FrozenMap(self.hard))


@dataclass(frozen=True)
class Subject:
    """A RoleBinding subject; `name` and `namespace` may hold placeholders until built."""

    kind: SubjectKind
    name: str
    namespace: str | None = None


@dataclass(frozen=True)
class RoleBindingSpec:
    """One RoleBinding to a ClusterRole; `name` is unique in the list and becomes `baseline-<name>`."""

    name: str
    cluster_role: str
    subjects: tuple[Subject, ...]


@dataclass(frozen=True)
class DefaultServiceAccountSpec:
    """What the baseline sets on the namespace's `default` ServiceAccount."""

    automount_token: bool = False


@dataclass(frozen=True)
class RbacSpec:
    """The rbac section."""

    role_bindings: tuple[RoleBindingSpec, ...] = ()
    # The CRD defaults it to {} (no token mounted) whenever the rbac section is set; parsing does the
    # same, so that `render` shows what the cluster will do. None (never from a spec) leaves it alone.
    default_service_account: DefaultServiceAccountSpec | None = None


@dataclass(frozen=True)
class PodSecuritySpec:
    """Pod Security Admission levels; a level left None is not set on the namespace."""

    enforce: PodSecurityLevel | None = None
    audit: PodSecurityLevel | None = None
    warn: PodSecurityLevel | None = None
    version: str = "latest"


class WorkloadRule(StrEnum):
    """The container rules of the workloads section (docs/controls.md maps each to the benchmarks)."""

    RUN_AS_NON_ROOT = "runAsNonRoot"
    MIN_UID = "minUID"
    NO_PRIVILEGED = "noPrivileged"
    NO_PRIVILEGE_ESCALATION = "noPrivilegeEscalation"
    DROP_ALL_CAPABILITIES = "dropAllCapabilities"
    READ_ONLY_ROOT_FILESYSTEM = "readOnlyRootFilesystem"
    REQUIRE_REQUESTS = "requireRequests"
    REQUIRE_LIMITS = "requireLimits"
    IMAGE_PULL_POLICY_ALWAYS = "imagePullPolicyAlways"
    REQUIRE_DIGEST = "requireDigest"
    ALLOWED_REGISTRIES = "allowedRegistries"
    NO_HOST_NAMESPACES = "noHostNamespaces"
    NO_HOST_PATH = "noHostPath"


@dataclass(frozen=True)
class WorkloadsSpec:
    """The workloads section: the seeds' container rules, each off (False, None, empty) or on."""

    run_as_non_root: bool = True
    min_uid: int | None = 10001
    no_privileged: bool = True
    no_privilege_escalation: bool = True
    drop_all_capabilities: bool = True
    read_only_root_filesystem: bool = True
    require_requests: tuple[str, ...] = ("cpu", "memory")
    require_limits: tuple[str, ...] = ("cpu", "memory")
    image_pull_policy_always: bool = True
    require_digest: bool = True
    allowed_registries: tuple[str, ...] = ()
    """Image reference prefixes (`registry.example.com/`, `ghcr.io/acme/`); empty: any registry."""
    no_host_namespaces: bool = True
    no_host_path: bool = True

    def rules(self) -> tuple[WorkloadRule, ...]:
        """The rules switched on, in `WorkloadRule` order."""
        on = {
            WorkloadRule.RUN_AS_NON_ROOT: self.run_as_non_root,
            WorkloadRule.MIN_UID: self.min_uid is not None,
            WorkloadRule.NO_PRIVILEGED: self.no_privileged,
            WorkloadRule.NO_PRIVILEGE_ESCALATION: self.no_privilege_escalation,
            WorkloadRule.DROP_ALL_CAPABILITIES: self.drop_all_capabilities,
            WorkloadRule.READ_ONLY_ROOT_FILESYSTEM: self.read_only_root_filesystem,
            WorkloadRule.REQUIRE_REQUESTS: bool(self.require_requests),
            WorkloadRule.REQUIRE_LIMITS: bool(self.require_limits),
            WorkloadRule.IMAGE_PULL_POLICY_ALWAYS: self.image_pull_policy_always,
            WorkloadRule.REQUIRE_DIGEST: self.require_digest,
            WorkloadRule.ALLOWED_REGISTRIES: bool(self.allowed_registries),
            WorkloadRule.NO_HOST_NAMESPACES: self.no_host_namespaces,
            WorkloadRule.NO_HOST_PATH: self.no_host_path,
        }
        return tuple(rule for rule in WorkloadRule if on[rule])


@dataclass(frozen=True)
class Exemption:
    """Namespaces a baseline's sections or workload rules do not apply to, for a reason, until `expires`."""

    namespaces: tuple[str, ...]
    sections: tuple[Section, ...]
    rules: tuple[WorkloadRule, ...]
    reason: str
    expires: dt.datetime

    def covers(self, namespace: str, now: dt.datetime) -> bool:
        return namespace in self.namespaces and now < self.expires


@dataclass(frozen=True)
class BaselineSpec:
    """A parsed SecurityBaseline spec; a section left None is not managed by this baseline."""

    mode: Mode = Mode.ENFORCE
    priority: int = 0
    namespace_selector: LabelSelector = field(default_factory=LabelSelector)
    exclude_namespaces: tuple[str, ...] = ()
    network_policy: NetworkPolicySpec | None = None
    limit_range: LimitRangeSpec | None = None
    resource_quota: ResourceQuotaSpec | None = None
    rbac: RbacSpec | None = None
    pod_security: PodSecuritySpec | None = None
    workloads: WorkloadsSpec | None = None
    exemptions: tuple[Exemption, ...] = ()

    def section(self, section: Section) -> SectionSpec | None:
        """The settings of one section, or None when this baseline does not manage it."""
        match section:
            case Section.NETWORK_POLICY:
                return self.network_policy
            case Section.LIMIT_RANGE:
                return self.limit_range
            case Section.RESOURCE_QUOTA:
                return self.resource_quota
            case Section.RBAC:
                return self.rbac
            case Section.POD_SECURITY:
                return self.pod_security
            case Section.WORKLOADS:
                return self.workloads

    @property
    def sections(self) -> tuple[Section, ...]:
        """The sections this baseline manages, in `Section` order."""
        return tuple(section for section in Section if self.section(section) is not None)


SectionSpec: TypeAlias = (
    NetworkPolicySpec | LimitRangeSpec | ResourceQuotaSpec | RbacSpec | PodSecuritySpec | WorkloadsSpec
)


@dataclass(frozen=True)
class BaselineRef:
    """The SecurityBaseline that owns what is built: just enough for labels and an ownerReference.

    Deliberately not the whole object: its labels and annotations (Argo CD tracking labels among
    them) must never reach the objects we create.
    """

    name: str
    uid: str


@dataclass(frozen=True)
class NamespaceInfo:
    """The target namespace: its name and labels (for `${label:<key>}` placeholders)."""

    name: str
    labels: Mapping[str, str] = field(default_factory=FrozenMap)

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", FrozenMap(self.labels))


_Parsed = TypeVar("_Parsed")
_Member = TypeVar("_Member", bound=StrEnum)

# ---------------------------------------------------------------------------------------------
# Reading the raw spec. Each reader takes the raw value as `object` and the JSON path it came
# from, and either returns a typed value or raises SpecError with that path.


def parse_spec(raw: Mapping[str, Any]) -> BaselineSpec:
    """The typed spec, with the contract's defaults; SpecError names the first malformed field."""
    path = "spec"
    spec = _object(raw, path)
    _only_keys(
        spec,
        path,
        {
            "mode",
            "priority",
            "namespaceSelector",
            "excludeNamespaces",
            "networkPolicy",
            "limitRange",
            "resourceQuota",
            "rbac",
            "podSecurity",
            "workloads",
            "exemptions",
        },
    )
    mode = _enum(Mode, spec.get("mode"), f"{path}.mode", default=Mode.ENFORCE)
    priority = _priority(spec.get("priority"), f"{path}.priority")
    selector = _optional(spec, "namespaceSelector", path, _label_selector) or LabelSelector()
    excluded = _exclude_namespaces(spec.get("excludeNamespaces"), f"{path}.excludeNamespaces")
    return BaselineSpec(
        mode=mode,
        priority=priority,
        namespace_selector=selector,
        exclude_namespaces=excluded,
        network_policy=_optional(spec, "networkPolicy", path, _network_policy),
        limit_range=_optional(spec, "limitRange", path, _limit_range),
        resource_quota=_optional(spec, "resourceQuota", path, _resource_quota),
        rbac=_optional(spec, "rbac", path, _rbac),
        pod_security=_optional(spec, "podSecurity", path, _pod_security),
        workloads=_optional(spec, "workloads", path, _workloads),
        exemptions=_exemptions(spec.get("exemptions"), f"{path}.exemptions"),
    )


def _optional(
    raw: Mapping[str, object], key: str, path: str, reader: Callable[[object, str], _Parsed]
) -> _Parsed | None:
    # A null value is treated like an absent key: that is how `kubectl edit` leaves a cleared field.
    value = raw.get(key)
    return None if value is None else reader(value, f"{path}.{key}")


def _type_name(value: object) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "object"}
    return names.get(type(value), type(value).__name__)


def _object(value: object, path: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise SpecError(path, f"must be an object, not {_type_name(value)}")
    for key in value:
        if not isinstance(key, str):
            raise SpecError(path, f"keys must be strings, found {key!r}")
    return value


def _only_keys(value: Mapping[str, object], path: str, allowed: set[str]) -> None:
    # Unknown fields are refused rather than ignored: a typo such as `allowDns` silently ignored
    # would leave a namespace less protected than its owner believes.
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise SpecError(f"{path}.{unknown[0]}", f"unknown field; known fields: {', '.join(sorted(allowed))}")


def _list(value: object, path: str) -> list[object]:
    if not isinstance(value, list | tuple):
        raise SpecError(path, f"must be a list, not {_type_name(value)}")
    return list(value)


def _optional_list(value: object, path: str) -> list[object]:
    # Only an absent or null list is empty; `{}` or `""` where a list belongs is an error.
    return [] if value is None else _list(value, path)


def _bool(value: object, path: str, *, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise SpecError(path, f"must be true or false, not {_type_name(value)}")
    return value


def _string(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise SpecError(path, f"must be a string, not {_type_name(value)}")
    if not value:
        raise SpecError(path, "must not be empty")
    return value


def _enum(kind: type[_Member], value: object, path: str, *, default: _Member) -> _Member:
    if value is None:
        return default
    return _required_enum(kind, value, path)


def _required_enum(kind: type[_Member], value: object, path: str) -> _Member:
    allowed = [member.value for member in kind]
    if not isinstance(value, str) or value not in allowed:
        raise SpecError(path, f"must be one of {', '.join(allowed)}; found {value!r}")
    return kind(value)


def _priority(value: object, path: str) -> int:
    if value is None:
        return 0
    # bool is an int subclass in Python; `priority: true` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(path, f"must be an integer, not {_type_name(value)}")
    if not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise SpecError(path, f"must be between {MIN_PRIORITY} and {MAX_PRIORITY}; found {value}")
    return value


def _dns_label(value: object, path: str) -> str:
    text = _string(value, path)
    if len(text) > _MAX_LABEL_LENGTH or not _DNS_LABEL.fullmatch(text):
        raise SpecError(path, f"{text!r} is not a DNS-1123 label (lower case a-z, 0-9 and '-', at most 63)")
    return text


def _check_label_key(key: str, path: str) -> None:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > _MAX_SUBDOMAIN_LENGTH or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        raise SpecError(path, f"{key!r} is not a valid label key: its prefix must be a DNS subdomain")
    if len(name) > _MAX_LABEL_LENGTH or not _LABEL_NAME.fullmatch(name):
        raise SpecError(path, f"{key!r} is not a valid label key")


def _check_label_value(value: str, path: str) -> None:
    if len(value) > _MAX_LABEL_LENGTH or not _LABEL_VALUE.fullmatch(value):
        raise SpecError(path, f"{value!r} is not a valid label value")


def _label_selector(value: object, path: str) -> LabelSelector:
    raw = _object(value, path)
    _only_keys(raw, path, {"matchLabels", "matchExpressions"})
    labels: dict[str, str] = {}
    match_labels = raw.get("matchLabels")
    if match_labels is not None:
        for key, label_value in _object(match_labels, f"{path}.matchLabels").items():
            key_path = f"{path}.matchLabels[{key}]"
            _check_label_key(key, key_path)
            if not isinstance(label_value, str):
                raise SpecError(key_path, f"must be a string, not {_type_name(label_value)}")
            _check_label_value(label_value, key_path)
            labels[key] = label_value
    expressions = [
        _selector_requirement(item, f"{path}.matchExpressions[{index}]")
        for index, item in enumerate(_optional_list(raw.get("matchExpressions"), f"{path}.matchExpressions"))
    ]
    return LabelSelector(FrozenMap(labels), tuple(expressions))


def _label_value(value: object, path: str) -> str:
    # A value that no label can hold would only make the requirement silently unsatisfiable (In) or
    # always true (NotIn); the API server refuses such selectors everywhere else too.
    if not isinstance(value, str):
        raise SpecError(path, f"must be a string, not {_type_name(value)}")
    _check_label_value(value, path)
    return value


def _selector_requirement(value: object, path: str) -> LabelSelectorRequirement:
    raw = _object(value, path)
    _only_keys(raw, path, {"key", "operator", "values"})
    key = _string(raw.get("key"), f"{path}.key")
    _check_label_key(key, f"{path}.key")
    operator = _required_enum(SelectorOperator, raw.get("operator"), f"{path}.operator")
    values = tuple(
        _label_value(item, f"{path}.values[{index}]")
        for index, item in enumerate(_optional_list(raw.get("values"), f"{path}.values"))
    )
    if operator in {SelectorOperator.IN, SelectorOperator.NOT_IN} and not values:
        raise SpecError(f"{path}.values", f"must not be empty for operator {operator}")
    if operator in {SelectorOperator.EXISTS, SelectorOperator.DOES_NOT_EXIST} and values:
        raise SpecError(f"{path}.values", f"must be empty for operator {operator}")
    return LabelSelectorRequirement(key, operator, values)


def _exclude_namespaces(value: object, path: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = _list(value, path)
    if len(items) > MAX_EXCLUDED_NAMESPACES:
        raise SpecError(path, f"at most {MAX_EXCLUDED_NAMESPACES} patterns; found {len(items)}")
    patterns = tuple(_string(item, f"{path}[{index}]") for index, item in enumerate(items))
    for index, pattern in enumerate(patterns):
        if len(pattern) > _MAX_SUBDOMAIN_LENGTH or not _NAMESPACE_PATTERN.fullmatch(pattern):
            raise SpecError(
                f"{path}[{index}]",
                f"{pattern!r} can never match a namespace name: use lower case a-z, 0-9, '-' and the "
                "glob characters * ? [ ] !",
            )
    return patterns


# --- networkPolicy ---------------------------------------------------------------------------


def _network_policy(value: object, path: str) -> NetworkPolicySpec:
    raw = _object(value, path)
    _only_keys(raw, path, {"defaultDeny", "allowDNS", "dnsIPs", "allowSameNamespace", "metadataAPI"})
    return NetworkPolicySpec(
        default_deny=_optional(raw, "defaultDeny", path, _default_deny) or DefaultDeny(),
        allow_dns=_bool(raw.get("allowDNS"), f"{path}.allowDNS", default=True),
        dns_ips=_dns_ips(raw.get("dnsIPs"), f"{path}.dnsIPs"),
        allow_same_namespace=_bool(
            raw.get("allowSameNamespace"), f"{path}.allowSameNamespace", default=False
        ),
        metadata_api=_optional(raw, "metadataAPI", path, _metadata_api) or MetadataAPI(),
    )


def _default_deny(value: object, path: str) -> DefaultDeny:
    raw = _object(value, path)
    _only_keys(raw, path, {"ingress", "egress"})
    return DefaultDeny(
        ingress=_bool(raw.get("ingress"), f"{path}.ingress", default=True),
        egress=_bool(raw.get("egress"), f"{path}.egress", default=True),
    )


def _dns_ips(value: object, path: str) -> tuple[IPAddress, ...]:
    if value is None:
        return ()
    addresses: list[IPAddress] = []
    for index, item in enumerate(_list(value, path)):
        item_path = f"{path}[{index}]"
        text = _string(item, item_path)
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            raise SpecError(item_path, f"{text!r} is not an IP address (a resolver, not a CIDR)") from None
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
            raise SpecError(item_path, f"{text!r}: a zone index is not valid in a NetworkPolicy")
        if address not in addresses:
            addresses.append(address)
    return tuple(addresses)


def _metadata_api(value: object, path: str) -> MetadataAPI:
    raw = _object(value, path)
    _only_keys(raw, path, {"block", "providers", "extraCIDRs", "enforcement"})
    providers = DEFAULT_METADATA_PROVIDERS
    if raw.get("providers") is not None:
        providers = _providers(raw["providers"], f"{path}.providers")
    return MetadataAPI(
        block=_bool(raw.get("block"), f"{path}.block", default=True),
        providers=providers,
        extra_cidrs=_extra_cidrs(raw.get("extraCIDRs"), f"{path}.extraCIDRs"),
        enforcement=_enum(
            MetadataEnforcement,
            raw.get("enforcement"),
            f"{path}.enforcement",
            default=MetadataEnforcement.AUTO,
        ),
    )


def _providers(value: object, path: str) -> tuple[str, ...]:
    providers: list[str] = []
    for index, item in enumerate(_list(value, path)):
        name = _string(item, f"{path}[{index}]")
        if name not in METADATA_API_PROVIDERS:
            known = ", ".join(sorted(METADATA_API_PROVIDERS))
            raise SpecError(f"{path}[{index}]", f"unknown provider {name!r}; known providers: {known}")
        if name not in providers:
            providers.append(name)
    return tuple(providers)


def _extra_cidrs(value: object, path: str) -> tuple[IPNetwork, ...]:
    if value is None:
        return ()
    networks: list[IPNetwork] = []
    for index, item in enumerate(_list(value, path)):
        item_path = f"{path}[{index}]"
        text = _string(item, item_path)
        try:
            network = ipaddress.ip_network(text)
        except ValueError as error:
            # Host bits set (`169.254.169.254/16`) most likely means a typo in the prefix length:
            # refuse it rather than guess which of the two numbers was meant.
            raise SpecError(item_path, f"{text!r} is not a CIDR: {error}") from None
        if network.prefixlen == 0:
            raise SpecError(
                item_path,
                f"{text!r} would block all egress of one address family; use defaultDeny.egress instead",
            )
        if network not in networks:
            networks.append(network)
    return tuple(networks)


# --- limitRange and resourceQuota -----------------------------------------------------------


def _quantity_map(value: object, path: str) -> FrozenMap:
    if value is None:
        return FrozenMap()
    quantities: dict[str, str] = {}
    for resource, quantity in _object(value, path).items():
        entry_path = f"{path}[{resource}]"
        if not resource:
            raise SpecError(path, "resource names must not be empty")
        quantities[resource] = _quantity_text(quantity, entry_path)
    return FrozenMap(quantities)


def _quantity_text(value: object, path: str) -> str:
    # YAML turns `pods: 50` into an integer and `cpu: 0.5` into a float; both are fine quantities.
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise SpecError(path, f"must be a quantity string such as 500m or 2Gi, not {_type_name(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(path, f"{value!r} is not a quantity")
    text = str(value)
    try:
        amount = parse_quantity(text)
    except ValueError as error:
        raise SpecError(path, str(error)) from None
    if amount < 0:
        raise SpecError(path, f"{text!r} must not be negative")
    return text


def _limit_range(value: object, path: str) -> LimitRangeSpec:
    raw = _object(value, path)
    fields = {
        "default": "default",
        "defaultRequest": "default_request",
        "max": "max",
        "min": "min",
        "maxLimitRequestRatio": "max_limit_request_ratio",
    }
    _only_keys(raw, path, set(fields))
    maps = {name: _quantity_map(raw.get(key), f"{path}.{key}") for key, name in fields.items()}
    for key, name in fields.items():
        for resource in maps[name]:
            if not (resource in _CONTAINER_RESOURCES or resource.startswith("hugepages-") or "/" in resource):
                raise SpecError(
                    f"{path}.{key}[{resource}]",
                    "not a container resource: cpu, memory, ephemeral-storage, hugepages-<size>, or an "
                    "extended resource such as example.com/gpu (the LimitRange API refuses any other)",
                )
    spec = LimitRangeSpec(**maps)
    _check_limit_order(spec, path)
    return spec


def _check_limit_order(spec: LimitRangeSpec, path: str) -> None:
    """The orderings the API server enforces on a Container limit, checked before it refuses them."""

    def value(limits: Mapping[str, str], resource: str) -> Decimal | None:
        return parse_quantity(limits[resource]) if resource in limits else None

    resources = sorted(
        {*spec.default, *spec.default_request, *spec.max, *spec.min, *spec.max_limit_request_ratio}
    )
    for resource in resources:
        default = value(spec.default, resource)
        request = value(spec.default_request, resource)
        maximum = value(spec.max, resource)
        minimum = value(spec.min, resource)
        ratio = value(spec.max_limit_request_ratio, resource)
        # (field, lower, upper, lower's name, upper's name): lower must not exceed upper.
        orderings = (
            ("min", minimum, maximum, "min", "max"),
            ("defaultRequest", minimum, request, "min", "defaultRequest"),
            ("defaultRequest", request, maximum, "defaultRequest", "max"),
            ("defaultRequest", request, default, "defaultRequest", "default"),
            ("default", minimum, default, "min", "default"),
            ("default", default, maximum, "default", "max"),
        )
        for field_name, lower, upper, lower_name, upper_name in orderings:
            if lower is not None and upper is not None and lower > upper:
                raise SpecError(
                    f"{path}.{field_name}[{resource}]",
                    f"{lower_name} ({_plain(lower)}) is greater than {upper_name} ({_plain(upper)})",
                )
        ratio_path = f"{path}.maxLimitRequestRatio[{resource}]"
        if ratio is not None and ratio < 1:
            raise SpecError(ratio_path, f"must be at least 1; found {_plain(ratio)}")
        if ratio is not None and minimum and maximum is not None and ratio > maximum / minimum:
            raise SpecError(ratio_path, f"is greater than max/min = {_plain(maximum / minimum)}")


def _plain(amount: Decimal) -> str:
    # `2E+3` is exact but unreadable in a status message; `2000` is what a person expects.
    return f"{amount.normalize():f}"


def _resource_quota(value: object, path: str) -> ResourceQuotaSpec:
    raw = _object(value, path)
    _only_keys(raw, path, {"hard"})
    return ResourceQuotaSpec(hard=_quantity_map(raw.get("hard"), f"{path}.hard"))


# --- rbac ------------------------------------------------------------------------------------


def _rbac(value: object, path: str) -> RbacSpec:
    raw = _object(value, path)
    _only_keys(raw, path, {"roleBindings", "defaultServiceAccount"})
    bindings_path = f"{path}.roleBindings"
    bindings: list[RoleBindingSpec] = []
    for index, item in enumerate(_optional_list(raw.get("roleBindings"), bindings_path)):
        binding = _role_binding(item, f"{bindings_path}[{index}]")
        if any(existing.name == binding.name for existing in bindings):
            raise SpecError(f"{bindings_path}[{index}].name", f"duplicate role binding name {binding.name!r}")
        bindings.append(binding)
    return RbacSpec(
        role_bindings=tuple(bindings),
        default_service_account=_default_service_account(
            raw.get("defaultServiceAccount") or {}, f"{path}.defaultServiceAccount"
        ),
    )


def _role_binding(value: object, path: str) -> RoleBindingSpec:
    raw = _object(value, path)
    _only_keys(raw, path, {"name", "clusterRole", "subjects"})
    name = _dns_label(raw.get("name"), f"{path}.name")
    if len(name) > _MAX_BINDING_NAME:
        raise SpecError(
            f"{path}.name", f"at most {_MAX_BINDING_NAME} characters, so that baseline-<name> is at most 63"
        )
    cluster_role = _string(raw.get("clusterRole"), f"{path}.clusterRole")
    # RBAC object names are path segments: anything but '/', '%', '.' and '..'.
    if cluster_role in {".", ".."} or "/" in cluster_role or "%" in cluster_role:
        raise SpecError(f"{path}.clusterRole", f"{cluster_role!r} is not a valid ClusterRole name")
    subjects_path = f"{path}.subjects"
    items = _optional_list(raw.get("subjects"), subjects_path)
    if not 1 <= len(items) <= MAX_SUBJECTS:
        raise SpecError(subjects_path, f"must hold 1 to {MAX_SUBJECTS} subjects; found {len(items)}")
    subjects = tuple(_subject(item, f"{subjects_path}[{index}]") for index, item in enumerate(items))
    return RoleBindingSpec(name=name, cluster_role=cluster_role, subjects=subjects)


def _subject(value: object, path: str) -> Subject:
    raw = _object(value, path)
    _only_keys(raw, path, {"kind", "name", "namespace"})
    kind = _required_enum(SubjectKind, raw.get("kind"), f"{path}.kind")
    name = _string(raw.get("name"), f"{path}.name")
    _check_placeholders(name, f"{path}.name")
    namespace = None
    if raw.get("namespace") is not None:
        if kind is not SubjectKind.SERVICE_ACCOUNT:
            raise SpecError(f"{path}.namespace", f"only ServiceAccount subjects have a namespace, not {kind}")
        namespace = _string(raw["namespace"], f"{path}.namespace")
        _check_placeholders(namespace, f"{path}.namespace")
        if not PLACEHOLDER_PATTERN.search(namespace):
            check_namespace_name(namespace, f"{path}.namespace")
    # With placeholders the final name is only known per namespace; role_bindings.py checks it then.
    if kind is SubjectKind.SERVICE_ACCOUNT and not PLACEHOLDER_PATTERN.search(name):
        check_service_account_name(name, f"{path}.name")
    return Subject(kind=kind, name=name, namespace=namespace)


def check_service_account_name(name: str, path: str) -> None:
    """SpecError unless `name` is a valid ServiceAccount name (a DNS-1123 subdomain)."""
    if len(name) > _MAX_SUBDOMAIN_LENGTH or not _DNS_SUBDOMAIN.fullmatch(name):
        raise SpecError(path, f"{name!r} is not a valid ServiceAccount name (a DNS-1123 subdomain)")


def check_namespace_name(name: str, path: str) -> None:
    """SpecError unless `name` is a valid namespace name (a DNS-1123 label)."""
    _dns_label(name, path)


def _check_placeholders(text: str, path: str) -> None:
    for match in PLACEHOLDER_PATTERN.finditer(text):
        body = match["body"]
        if body == NAMESPACE_PLACEHOLDER:
            continue
        if body.startswith(LABEL_PLACEHOLDER_PREFIX) and body != LABEL_PLACEHOLDER_PREFIX:
            _check_label_key(body.removeprefix(LABEL_PLACEHOLDER_PREFIX), path)
            continue
        raise SpecError(
            path, f"unknown placeholder {match[0]!r}; known placeholders: ${{namespace}}, ${{label:<key>}}"
        )
    if "${" in PLACEHOLDER_PATTERN.sub("", text):
        raise SpecError(path, f"{text!r} has an unterminated placeholder ('${{' without '}}')")


def _default_service_account(value: object, path: str) -> DefaultServiceAccountSpec:
    raw = _object(value, path)
    _only_keys(raw, path, {"automountToken"})
    return DefaultServiceAccountSpec(
        automount_token=_bool(raw.get("automountToken"), f"{path}.automountToken", default=False)
    )


# --- podSecurity -----------------------------------------------------------------------------


def _pod_security(value: object, path: str) -> PodSecuritySpec:
    raw = _object(value, path)
    _only_keys(raw, path, {"enforce", "audit", "warn", "version"})
    levels = {
        mode: None if raw.get(mode) is None else _required_enum(PodSecurityLevel, raw[mode], f"{path}.{mode}")
        for mode in ("enforce", "audit", "warn")
    }
    version = "latest"
    if raw.get("version") is not None:
        version = _string(raw["version"], f"{path}.version")
        if not _POD_SECURITY_VERSION.fullmatch(version):
            raise SpecError(f"{path}.version", f"must be 'latest' or 'v1.N' (v1.31); found {version!r}")
    return PodSecuritySpec(
        enforce=levels["enforce"], audit=levels["audit"], warn=levels["warn"], version=version
    )


# --- workloads -------------------------------------------------------------------------------

# `host[:port]/` optionally followed by path segments and a `/`: a prefix of image references. Lower case,
# as registries and repositories are; the trailing `/` keeps `ghcr.io/acme` from allowing `ghcr.io/acme2` too.
_REGISTRY_PREFIX = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?/([a-z0-9._-]+/)*")
_RESOURCE_NAME = re.compile(r"(cpu|memory|ephemeral-storage|hugepages-[0-9A-Za-z]+|[a-z0-9.-]+/[a-z0-9._-]+)")
MAX_UID: Final = 2**31 - 1


def _workloads(value: object, path: str) -> WorkloadsSpec:
    raw = _object(value, path)
    _only_keys(raw, path, {rule.value for rule in WorkloadRule})
    defaults = WorkloadsSpec()
    min_uid: int | None = defaults.min_uid
    if "minUID" in raw:
        min_uid = None if raw["minUID"] is None else _uid(raw["minUID"], f"{path}.minUID")

    def flag(rule: WorkloadRule, default: bool) -> bool:  # noqa: FBT001 - the rule's own default
        return _bool(raw.get(rule.value), f"{path}.{rule.value}", default=default)

    return WorkloadsSpec(
        run_as_non_root=flag(WorkloadRule.RUN_AS_NON_ROOT, defaults.run_as_non_root),
        min_uid=min_uid,
        no_privileged=flag(WorkloadRule.NO_PRIVILEGED, defaults.no_privileged),
        no_privilege_escalation=flag(WorkloadRule.NO_PRIVILEGE_ESCALATION, defaults.no_privilege_escalation),
        drop_all_capabilities=flag(WorkloadRule.DROP_ALL_CAPABILITIES, defaults.drop_all_capabilities),
        read_only_root_filesystem=flag(
            WorkloadRule.READ_ONLY_ROOT_FILESYSTEM, defaults.read_only_root_filesystem
        ),
        require_requests=_resource_names(raw, "requireRequests", path, defaults.require_requests),
        require_limits=_resource_names(raw, "requireLimits", path, defaults.require_limits),
        image_pull_policy_always=flag(
            WorkloadRule.IMAGE_PULL_POLICY_ALWAYS, defaults.image_pull_policy_always
        ),
        require_digest=flag(WorkloadRule.REQUIRE_DIGEST, defaults.require_digest),
        allowed_registries=_registries(raw.get("allowedRegistries"), f"{path}.allowedRegistries"),
        no_host_namespaces=flag(WorkloadRule.NO_HOST_NAMESPACES, defaults.no_host_namespaces),
        no_host_path=flag(WorkloadRule.NO_HOST_PATH, defaults.no_host_path),
    )


def _uid(value: object, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(path, f"must be an integer, not {_type_name(value)}")
    if not 0 <= value <= MAX_UID:
        raise SpecError(path, f"must be between 0 and {MAX_UID}; found {value}")
    return value


def _resource_names(
    raw: Mapping[str, object], key: str, path: str, default: tuple[str, ...]
) -> tuple[str, ...]:
    if key not in raw:
        return default
    names: list[str] = []
    for index, item in enumerate(_optional_list(raw[key], f"{path}.{key}")):
        name = _string(item, f"{path}.{key}[{index}]")
        if not _RESOURCE_NAME.fullmatch(name):
            raise SpecError(f"{path}.{key}[{index}]", f"{name!r} is not a container resource name")
        if name not in names:
            names.append(name)
    return tuple(names)


def _registries(value: object, path: str) -> tuple[str, ...]:
    if value is None:
        return ()
    prefixes: list[str] = []
    for index, item in enumerate(_list(value, path)):
        prefix = _string(item, f"{path}[{index}]")
        if not _REGISTRY_PREFIX.fullmatch(prefix):
            raise SpecError(
                f"{path}[{index}]",
                f"{prefix!r} is not a registry prefix: host[:port]/ and path segments, lower case, ending "
                "with '/' (registry.example.com/ or ghcr.io/acme/)",
            )
        if prefix not in prefixes:
            prefixes.append(prefix)
    return tuple(prefixes)


# --- exemptions ------------------------------------------------------------------------------

MAX_EXEMPTIONS: Final = 50
MAX_EXEMPTION_DAYS: Final = 90
"""The default longest an exemption may run (`--max-exemption-days`); the CRD cannot know today's date, so
the operator checks it and reports an exemption that runs longer (it is then not applied)."""


def _exemptions(value: object, path: str) -> tuple[Exemption, ...]:
    if value is None:
        return ()
    items = _list(value, path)
    if len(items) > MAX_EXEMPTIONS:
        raise SpecError(path, f"at most {MAX_EXEMPTIONS} exemptions; found {len(items)}")
    return tuple(_exemption(item, f"{path}[{index}]") for index, item in enumerate(items))


def _exemption(value: object, path: str) -> Exemption:
    raw = _object(value, path)
    _only_keys(raw, path, {"namespaces", "sections", "rules", "reason", "expires"})
    namespaces = tuple(
        _string(item, f"{path}.namespaces[{index}]")
        for index, item in enumerate(_list(raw.get("namespaces"), f"{path}.namespaces"))
    )
    if not namespaces:
        raise SpecError(f"{path}.namespaces", "name at least one namespace")
    for index, name in enumerate(namespaces):
        check_namespace_name(name, f"{path}.namespaces[{index}]")
    sections = tuple(
        _required_enum(Section, item, f"{path}.sections[{index}]")
        for index, item in enumerate(_optional_list(raw.get("sections"), f"{path}.sections"))
    )
    rules = tuple(
        _required_enum(WorkloadRule, item, f"{path}.rules[{index}]")
        for index, item in enumerate(_optional_list(raw.get("rules"), f"{path}.rules"))
    )
    if not sections and not rules:
        raise SpecError(path, "an exemption names the sections or the workload rules it lifts")
    reason = _string(raw.get("reason"), f"{path}.reason")
    if len(reason.strip()) < 10:  # noqa: PLR2004 - a reason, not a placeholder
        raise SpecError(f"{path}.reason", "say why, in at least 10 characters")
    return Exemption(namespaces, sections, rules, reason, _timestamp(raw.get("expires"), f"{path}.expires"))


def _timestamp(value: object, path: str) -> dt.datetime:
    text = _string(value, path)
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise SpecError(path, f"{text!r} is not an RFC 3339 time such as 2027-01-31T00:00:00Z") from None
    if parsed.tzinfo is None:
        raise SpecError(path, f"{text!r} has no time zone (end it with Z)")
    return parsed
