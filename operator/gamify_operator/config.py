"""The operator's configuration, read once from its environment (the Helm chart sets it).

==================================== ========================= =============================================
Variable                             Default                   Meaning
==================================== ========================= =============================================
GAMIFY_NATS_URL                      nats://127.0.0.1:4222     NATS JetStream the operator provisions
                                                               streams on.
GAMIFY_WORKLOAD_NATS_URL             GAMIFY_NATS_URL           NATS URL given to the program's pods (the
                                                               `<program>-nats` Secret).
GAMIFY_MYSQL_URL                     root@127.0.0.1:3306       MySQL admin URL (SQLAlchemy); the chart takes
                                                               it from a Secret.
GAMIFY_BUCKET                        a file:// folder under    Bucket base of programs without
                                     .gamify/                  `spec.snapshots.bucket`.
GAMIFY_IMAGE                         <repository>:<tag>        Full image reference of the program's pods;
                                                               wins over the two below.
GAMIFY_IMAGE_REPOSITORY              ghcr.io/gamify/gamify     Image repository.
GAMIFY_IMAGE_TAG                     gamify's version          Image tag.
GAMIFY_IMAGE_PULL_POLICY             IfNotPresent              `Always`, `IfNotPresent` or `Never`.
GAMIFY_WORKLOAD_LOG_LEVEL            INFO                      `GAMIFY_LOG_LEVEL` of the program's pods.
GAMIFY_WORKLOAD_ENV                  {}                        JSON object of extra env for every program
                                                               container (e.g. `GOOGLE_CLOUD_PROJECT`, or
                                                               `STORAGE_EMULATOR_HOST` in tests).
GAMIFY_RESOURCES                     see DEFAULT_RESOURCES     JSON overrides per workload: `{"ingest":
                                                               {"requests": {"cpu": "200m"}}}`.
GAMIFY_NATS_NAMESPACE                nats                      Namespace of the NATS pods (egress
                                                               NetworkPolicy).
GAMIFY_NATS_POD_LABELS               none                      `k=v,k=v`: narrows the NATS egress to those
                                                               pods.
GAMIFY_NATS_CIDRS                    none                      Comma-separated CIDRs: NATS outside the
                                                               cluster; replaces the namespace rule.
GAMIFY_NATS_PORT                     port in the NATS URL,     NATS client port (the pods' port, not a
                                     else 4222                 Service port).
GAMIFY_MYSQL_NAMESPACE               mysql                     Namespace of the MySQL pods.
GAMIFY_MYSQL_POD_LABELS              none                      `k=v,k=v`: narrows the MySQL egress to those
                                                               pods.
GAMIFY_MYSQL_CIDRS                   none                      Comma-separated CIDRs: MySQL outside the
                                                               cluster (e.g. Cloud SQL private IP).
GAMIFY_MYSQL_PORT                    port in the MySQL URL,    MySQL port.
                                     else 3306
GAMIFY_DNS_NAMESPACE                 kube-system               Namespace of the cluster DNS.
GAMIFY_DNS_POD_LABELS                none                      E.g. `k8s-app=kube-dns` to allow only the DNS
                                                               pods.
GAMIFY_DNS_CIDRS                     none                      Extra DNS destinations, e.g. NodeLocal
                                                               DNSCache `169.254.20.10/32`.
GAMIFY_INGEST_FROM_NAMESPACES        none: any source          Namespaces allowed to reach ingest (ingress
                                                               controller, gateway).
GAMIFY_METRICS_FROM_NAMESPACES       none: no scrape rule      Namespaces allowed to scrape the scoring
                                                               metrics port.
GAMIFY_STORAGE_CIDRS                 0.0.0.0/0                 Where the snapshot job may reach object
                                                               storage (HTTPS).
GAMIFY_STORAGE_PORT                  443                       Object storage port.
GAMIFY_METADATA_SERVER_EGRESS        true                      Let the snapshot job reach the GKE metadata
                                                               server (Workload Identity).
GAMIFY_SNAPSHOTS_GCP_SERVICE_ACCOUNT none                      Workload Identity: annotates the `snapshots`
                                                               ServiceAccount.
GAMIFY_SNAPSHOT_ACTIVE_DEADLINE      600                       Seconds a snapshot Job may run.
GAMIFY_SNAPSHOT_STARTING_DEADLINE    120                       Seconds a missed snapshot run may still
                                                               start.
GAMIFY_NATS_USERS_SECRET             none: no NATS users       `namespace/name` of the Secret the NATS
                                                               server includes its users from (key
                                                               `users.conf`); the operator keeps it. Needs
                                                               GAMIFY_NATS_URL with the admin's login.
==================================== ========================= =============================================

NetworkPolicy destinations: by default NATS and MySQL are reached by namespace
(`kubernetes.io/metadata.name`, a label the API server sets and nobody can forge), because the
pods behind a Service change IPs. A CIDR is for servers outside the cluster: most CNIs apply
policies after Service DNAT, so an `ipBlock` must hold the server's own addresses.

NATS users (`GAMIFY_NATS_USERS_SECRET`): each program's ingest and scoring sign in as their own
NATS users (`gamify.provisioning.nats_auth`); the operator signs in as the admin named in
GAMIFY_NATS_URL, which is also the admin entry of the users it writes. The program pods then get
the NATS URL without any login (`workload_nats_url_for_pods`). Unset, the server is expected to
take anyone (no authorization), and the pods get GAMIFY_WORKLOAD_NATS_URL as it is.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from importlib.metadata import PackageNotFoundError, version
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote, urlsplit

from gamify.settings import DEFAULT_MYSQL_URL, DEFAULT_NATS_URL, Servers, home, without_login

DEFAULT_IMAGE_REPOSITORY = "ghcr.io/gamify/gamify"
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
WORKLOADS = ("ingest", "scoring", "snapshots")
DEFAULT_NATS_PORT = 4222
DEFAULT_MYSQL_PORT = 3306

# Requests sized for a quiet program, limits for a launch peak; memory limit = what the process
# may really use (an OOM kill beats starving the node).
DEFAULT_RESOURCES: Mapping[str, Mapping[str, Mapping[str, str]]] = MappingProxyType(
    {
        "ingest": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}},
        # Two lane processes beside the main one (GAMIFY_SCORING_LANES): up to ~1.5 cores at a
        # peak, ~90 MiB resident each.
        "scoring": {
            "requests": {"cpu": "200m", "memory": "256Mi"},
            "limits": {"cpu": "2", "memory": "768Mi"},
        },
        "snapshots": {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"cpu": "1", "memory": "1Gi"},
        },
    }
)


class ConfigError(ValueError):
    """An operator setting that cannot be used; the message names the variable."""


# --- Kubernetes quantities (enough for cpu and memory; the quota sums them) -----------------

_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([a-zA-Z]*)$")
_SUFFIXES = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
}
MEBIBYTE = 2**20


def parse_quantity(text: str) -> Decimal:
    """`500m` -> 0.5, `1` -> 1, `256Mi` -> 268435456, `1G` -> 1e9."""
    match = _QUANTITY.match(text.strip())
    if not match or match.group(2) not in _SUFFIXES:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. 500m, 1, 256Mi, 1Gi)")
    try:
        return Decimal(match.group(1)) * _SUFFIXES[match.group(2)]
    except InvalidOperation:  # pragma: no cover - the pattern already rules it out
        raise ValueError(f"{text!r} is not a number") from None


def cpu_millis(text: str) -> int:
    return int((parse_quantity(text) * 1000).to_integral_value(rounding="ROUND_CEILING"))


def memory_bytes(text: str) -> int:
    return int(parse_quantity(text).to_integral_value(rounding="ROUND_CEILING"))


def format_cpu(millis: int) -> str:
    return f"{millis // 1000}" if millis % 1000 == 0 else f"{millis}m"


def format_memory(size: int) -> str:
    mebibytes = -(-size // MEBIBYTE)  # round up: a quota must never come out smaller
    return f"{mebibytes // 1024}Gi" if mebibytes % 1024 == 0 else f"{mebibytes}Mi"


@dataclass(frozen=True)
class Resources:
    """Requests and limits of one container (Kubernetes quantities)."""

    requests: Mapping[str, str]
    limits: Mapping[str, str]

    def manifest(self) -> dict[str, dict[str, str]]:
        return {"requests": dict(self.requests), "limits": dict(self.limits)}


@dataclass(frozen=True)
class Peer:
    """A NetworkPolicy destination: a namespace (optionally some of its pods), or CIDRs."""

    namespace: str
    pod_labels: Mapping[str, str] = field(default_factory=dict)
    cidrs: tuple[str, ...] = ()


def _package_version() -> str:
    try:
        return version("gamify")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "latest"


def _default_resources() -> dict[str, Resources]:
    return {
        name: Resources(requests=dict(parts["requests"]), limits=dict(parts["limits"]))
        for name, parts in DEFAULT_RESOURCES.items()
    }


@dataclass(frozen=True)
class SecretRef:
    """Where a Secret the operator keeps outside the programs' namespaces lives."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class NatsAdmin:
    """The NATS admin login of the operator (from GAMIFY_NATS_URL)."""

    user: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class OperatorConfig:
    nats_url: str = DEFAULT_NATS_URL
    workload_nats_url: str = DEFAULT_NATS_URL
    mysql_admin_url: str = DEFAULT_MYSQL_URL
    bucket: str = "file:///tmp/gamify-bucket"
    image: str = f"{DEFAULT_IMAGE_REPOSITORY}:{_package_version()}"
    image_pull_policy: str = "IfNotPresent"
    log_level: str = "INFO"
    workload_env: Mapping[str, str] = field(default_factory=dict)
    resources: Mapping[str, Resources] = field(default_factory=_default_resources)
    nats: Peer = field(default_factory=lambda: Peer(namespace="nats"))
    nats_port: int = DEFAULT_NATS_PORT
    mysql: Peer = field(default_factory=lambda: Peer(namespace="mysql"))
    mysql_port: int = DEFAULT_MYSQL_PORT
    dns: Peer = field(default_factory=lambda: Peer(namespace="kube-system"))
    ingest_from_namespaces: tuple[str, ...] = ()
    metrics_from_namespaces: tuple[str, ...] = ()
    storage_cidrs: tuple[str, ...] = ("0.0.0.0/0",)
    storage_port: int = 443
    metadata_server_egress: bool = True
    snapshots_gcp_service_account: str | None = None
    snapshot_active_deadline_seconds: int = 600
    snapshot_starting_deadline_seconds: int = 120
    nats_users_secret: SecretRef | None = None
    # Fixed by the images and the services' defaults; fields so tests and charts can see them.
    ingest_port: int = 8080
    ingest_service_port: int = 80
    metrics_port: int = 9090

    @property
    def servers(self) -> Servers:
        """What the shared provisioning code (`gamify.provisioning`) takes."""
        return Servers(nats_url=self.nats_url, mysql_admin_url=self.mysql_admin_url, bucket=self.bucket)

    def resources_of(self, workload: str) -> Resources:
        return self.resources[workload]

    @property
    def nats_users_enabled(self) -> bool:
        return self.nats_users_secret is not None

    @property
    def workload_nats_url_for_pods(self) -> str:
        """The NATS URL a program's pods get: with users, never a login (each workload signs in
        as its own user, from GAMIFY_NATS_USER/GAMIFY_NATS_PASSWORD)."""
        return without_login(self.workload_nats_url) if self.nats_users_enabled else self.workload_nats_url

    def nats_admin(self) -> NatsAdmin:
        """The admin login in GAMIFY_NATS_URL (checked at `from_env` when users are on)."""
        return _url_login(self.nats_url, "GAMIFY_NATS_URL")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if environ is None else environ
        reader = _Reader(env)
        nats_url = reader.text("GAMIFY_NATS_URL", DEFAULT_NATS_URL)
        workload_nats_url = reader.text("GAMIFY_WORKLOAD_NATS_URL", nats_url)
        mysql_url = reader.text("GAMIFY_MYSQL_URL", DEFAULT_MYSQL_URL)
        repository = reader.text("GAMIFY_IMAGE_REPOSITORY", DEFAULT_IMAGE_REPOSITORY)
        tag = reader.text("GAMIFY_IMAGE_TAG", _package_version())
        return cls(
            nats_url=nats_url,
            workload_nats_url=workload_nats_url,
            mysql_admin_url=mysql_url,
            bucket=reader.text("GAMIFY_BUCKET", (home() / "bucket").as_uri()),
            image=reader.text("GAMIFY_IMAGE", f"{repository}:{tag}"),
            image_pull_policy=reader.choice("GAMIFY_IMAGE_PULL_POLICY", "IfNotPresent", PULL_POLICIES),
            log_level=reader.text("GAMIFY_WORKLOAD_LOG_LEVEL", "INFO").upper(),
            workload_env=reader.json_strings("GAMIFY_WORKLOAD_ENV"),
            resources=reader.resources("GAMIFY_RESOURCES"),
            nats=reader.peer("NATS", "nats"),
            nats_port=reader.port("GAMIFY_NATS_PORT", _url_port(workload_nats_url, DEFAULT_NATS_PORT)),
            mysql=reader.peer("MYSQL", "mysql"),
            mysql_port=reader.port("GAMIFY_MYSQL_PORT", _url_port(mysql_url, DEFAULT_MYSQL_PORT)),
            dns=reader.peer("DNS", "kube-system"),
            ingest_from_namespaces=reader.names("GAMIFY_INGEST_FROM_NAMESPACES"),
            metrics_from_namespaces=reader.names("GAMIFY_METRICS_FROM_NAMESPACES"),
            storage_cidrs=reader.cidrs("GAMIFY_STORAGE_CIDRS") or ("0.0.0.0/0",),
            storage_port=reader.port("GAMIFY_STORAGE_PORT", 443),
            metadata_server_egress=reader.flag("GAMIFY_METADATA_SERVER_EGRESS", True),
            snapshots_gcp_service_account=reader.text("GAMIFY_SNAPSHOTS_GCP_SERVICE_ACCOUNT", "") or None,
            snapshot_active_deadline_seconds=reader.positive("GAMIFY_SNAPSHOT_ACTIVE_DEADLINE", 600),
            snapshot_starting_deadline_seconds=reader.positive("GAMIFY_SNAPSHOT_STARTING_DEADLINE", 120),
            nats_users_secret=_nats_users_secret(reader, nats_url),
        )


@dataclass(frozen=True)
class HandlerSettings:
    """How the operator itself runs (not what it builds): lifecycle timer, draining, retries,
    concurrency and sharding (`GAMIFY_OPERATOR_*`, see gamify_operator.handlers)."""

    timer_interval: float = 30.0
    timer_idle: float = 10.0
    drain_timeout: float = 3600.0
    backoff: float = 5.0
    worker_limit: int | None = None
    selector: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> HandlerSettings:
        reader = _Reader(os.environ if environ is None else environ)
        defaults = cls()
        return cls(
            timer_interval=reader.seconds("GAMIFY_OPERATOR_TIMER_INTERVAL", defaults.timer_interval),
            timer_idle=reader.seconds("GAMIFY_OPERATOR_TIMER_IDLE", defaults.timer_idle),
            drain_timeout=reader.seconds("GAMIFY_OPERATOR_DRAIN_TIMEOUT", defaults.drain_timeout),
            backoff=reader.seconds("GAMIFY_OPERATOR_BACKOFF", defaults.backoff),
            worker_limit=reader.positive("GAMIFY_OPERATOR_WORKER_LIMIT", 0) or None,
            selector=reader.text("GAMIFY_OPERATOR_SELECTOR", "") or None,
        )


def _nats_users_secret(reader: _Reader, nats_url: str) -> SecretRef | None:
    raw = reader.text("GAMIFY_NATS_USERS_SECRET", "")
    if not raw:
        return None
    namespace, sep, name = raw.partition("/")
    if not sep or not _DNS_LABEL.match(namespace) or not _DNS_SUBDOMAIN.match(name):
        raise ConfigError(f"GAMIFY_NATS_USERS_SECRET={raw!r}: expected namespace/name")
    _url_login(nats_url, "GAMIFY_NATS_URL")  # the admin entry of the users comes from it
    return SecretRef(namespace, name)


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def _url_login(url: str, variable: str) -> NatsAdmin:
    parts = urlsplit(url)
    if not parts.username or not parts.password:
        # The message names the variable, never the URL (it may hold half a login).
        raise ConfigError(
            f"{variable}: NATS users (GAMIFY_NATS_USERS_SECRET) need the admin's user and password"
            " in the URL (nats://user:password@host:4222)"
        )
    return NatsAdmin(unquote(parts.username), unquote(parts.password))


def _url_port(url: str, default: int) -> int:
    try:
        return urlsplit(url).port or default
    except ValueError:
        return default


class _Reader:
    """Typed reads of environment variables; every error names its variable."""

    def __init__(self, env: Mapping[str, str]):
        self.env = env

    def text(self, name: str, default: str) -> str:
        value = self.env.get(name, "").strip()
        return value or default

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.text(name, default)
        if value not in allowed:
            raise ConfigError(f"{name}={value!r}: expected one of {', '.join(allowed)}")
        return value

    def seconds(self, name: str, default: float) -> float:
        raw = self.text(name, str(default))
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r}: expected a number of seconds") from None
        if not value > 0 or value == float("inf"):
            raise ConfigError(f"{name}={raw!r}: must be a number of seconds greater than zero")
        return value

    def positive(self, name: str, default: int) -> int:
        """A whole number > 0; `default` (any, e.g. 0 for "none") when the variable is unset."""
        raw = self.text(name, "")
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r}: expected a whole number") from None
        if value <= 0:
            raise ConfigError(f"{name}={raw!r}: must be greater than zero")
        return value

    def port(self, name: str, default: int) -> int:
        value = self.positive(name, default)
        if value > 65535:
            raise ConfigError(f"{name}={value}: not a port number")
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self.text(name, "true" if default else "false").lower()
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}={raw!r}: expected true or false")

    def names(self, name: str) -> tuple[str, ...]:
        return tuple(part.strip() for part in self.env.get(name, "").split(",") if part.strip())

    def cidrs(self, name: str) -> tuple[str, ...]:
        result = []
        for part in self.names(name):
            try:
                result.append(str(ipaddress.ip_network(part, strict=False)))
            except ValueError:
                raise ConfigError(f"{name}: {part!r} is not a CIDR (e.g. 10.0.0.0/8)") from None
        return tuple(result)

    def labels(self, name: str) -> dict[str, str]:
        labels = {}
        for part in self.names(name):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"{name}: {part!r} is not key=value")
            labels[key.strip()] = value.strip()
        return labels

    def peer(self, what: str, default_namespace: str) -> Peer:
        return Peer(
            namespace=self.text(f"GAMIFY_{what}_NAMESPACE", default_namespace),
            pod_labels=self.labels(f"GAMIFY_{what}_POD_LABELS"),
            cidrs=self.cidrs(f"GAMIFY_{what}_CIDRS"),
        )

    def _json(self, name: str) -> Any:
        raw = self.env.get(name, "").strip()
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{name}: not valid JSON ({exc.msg})") from None

    def json_strings(self, name: str) -> dict[str, str]:
        data = self._json(name)
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            raise ConfigError(f"{name}: expected a JSON object of strings")
        return dict(data)

    def resources(self, name: str) -> dict[str, Resources]:
        overrides = self._json(name)
        if not isinstance(overrides, dict):
            raise ConfigError(f"{name}: expected a JSON object keyed by workload")
        result = _default_resources()
        for workload, parts in overrides.items():
            if workload not in WORKLOADS:
                raise ConfigError(f"{name}: unknown workload {workload!r} (one of {', '.join(WORKLOADS)})")
            if not isinstance(parts, dict) or not set(parts) <= {"requests", "limits"}:
                raise ConfigError(f"{name}.{workload}: expected {{'requests': {{...}}, 'limits': {{...}}}}")
            current = result[workload]
            merged = {}
            for kind in ("requests", "limits"):
                extra = parts.get(kind, {})
                if not isinstance(extra, dict) or not all(isinstance(v, str) for v in extra.values()):
                    raise ConfigError(f"{name}.{workload}.{kind}: expected quantities as strings")
                merged[kind] = {**getattr(current, kind), **extra}
                for resource, quantity in merged[kind].items():
                    if resource not in ("cpu", "memory"):
                        raise ConfigError(f"{name}.{workload}.{kind}: only cpu and memory, not {resource!r}")
                    try:
                        parse_quantity(quantity)
                    except ValueError as exc:
                        raise ConfigError(f"{name}.{workload}.{kind}.{resource}: {exc}") from None
            result[workload] = Resources(requests=merged["requests"], limits=merged["limits"])
        return result
