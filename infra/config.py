"""The stack's typed config: one schema for every stack, validated with errors that name the key.

Keys live in the ``mlplat:`` namespace of ``Pulumi.<stack>.yaml`` (camelCase, as Pulumi config is written);
``aws:region`` comes from the AWS provider's namespace. Per-environment defaults live in one table,
:data:`ENVIRONMENT_DEFAULTS`: the components take explicit knobs and never look at the environment name.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
import warnings
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import InitErrorDetails, PydanticCustomError

from mlplat.components.capacity import Workload, check_workloads
from mlplat.components.cluster import REQUIRED_LOG_TYPES, AddonVersions, ClusterArgs
from mlplat.components.cluster_system import ChartVersions
from mlplat.components.node_groups import NodePoolArgs, Taint
from mlplat.components.subnets import plan_subnets
from mlplat.infra.config_workloads import (
    AlarmsConfig,
    MonitoringConfig,
    ServiceConfig,
    TrackingConfig,
    TrainingJobConfig,
)

Environment = Literal["dev", "staging", "production"]
ENVIRONMENTS: tuple[str, ...] = ("dev", "staging", "production")
NAMESPACE = "mlplat"

def _cpu_pool(types: list[str], *, min_size: int, desired_size: int, max_size: int) -> dict[str, Any]:
    """The on-demand CPU pool: system pods, serving, MLflow."""
    return {"instanceTypes": types, "capacityType": "ON_DEMAND", "minSize": min_size, "desiredSize": desired_size,
            "maxSize": max_size, "diskSizeGib": 50, "labels": {"workload": "general"},
            "amiType": "AL2023_x86_64_STANDARD"}


def _gpu_pool(types: list[str], *, max_size: int, release_version: str) -> dict[str, Any]:
    """The spot GPU pool: empty until a pod asks for ``nvidia.com/gpu``; its AMI (and driver) pinned."""
    return {"instanceTypes": types, "capacityType": "SPOT", "minSize": 0, "desiredSize": 0, "maxSize": max_size,
            "diskSizeGib": 100, "labels": {"workload": "gpu"}, "taints": ["nvidia.com/gpu=true:NoSchedule"],
            "amiType": "AL2023_x86_64_NVIDIA", "releaseVersion": release_version}


# What differs between environments, and nothing else. Stack files override any of it.
ENVIRONMENT_DEFAULTS: dict[str, dict[str, Any]] = {
    "dev": {
        "network": {"nat": "single", "interfaceEndpoints": False, "flowLogRetentionDays": 7},
        "artifacts": {"forceDestroy": True, "protect": False, "noncurrentExpireDays": 90},
        "registry": {"keepTaggedImages": 10, "forceDelete": True},
        "tracking": {"replicas": 1, "workers": 1, "database": {
            "instanceClass": "db.t4g.small", "multiAz": False, "deletionProtection": False,
            "backupRetentionDays": 7, "finalSnapshot": False, "protect": False}},
        "monitoring": {"prometheusReplicas": 1, "alertmanagerReplicas": 1, "retention": "7d", "storageGb": 20},
        "cluster": {
            "deletionProtection": False,
            "nodeGroups": {
                "cpu": _cpu_pool(["t3.large", "t3a.large"], min_size=1, desired_size=2, max_size=3),
                "gpu": _gpu_pool(["g5.xlarge", "g6.xlarge", "g4dn.xlarge"], max_size=2,
                                 release_version="1.35.6-20260714"),
            },
        },
    },
    "staging": {
        "network": {"nat": "single", "interfaceEndpoints": True, "flowLogRetentionDays": 30},
        "artifacts": {"forceDestroy": False, "protect": True, "noncurrentExpireDays": 180},
        "registry": {"keepTaggedImages": 20, "forceDelete": False},
        "tracking": {"replicas": 1, "database": {"multiAz": False, "backupRetentionDays": 7}},
        "monitoring": {"prometheusReplicas": 1, "alertmanagerReplicas": 1, "retention": "15d", "storageGb": 50},
        "cluster": {
            "deletionProtection": False,
            "nodeGroups": {
                "cpu": _cpu_pool(["m6i.large", "m6a.large", "m5.large"], min_size=2, desired_size=2, max_size=5),
                "gpu": _gpu_pool(["g5.xlarge", "g6.xlarge", "g4dn.xlarge"], max_size=4,
                                 release_version="1.35.6-20260714"),
            },
        },
    },
    "production": {
        "network": {"nat": "per_az", "interfaceEndpoints": True, "flowLogRetentionDays": 90},
        "artifacts": {"forceDestroy": False, "protect": True, "noncurrentExpireDays": 365},
        "registry": {"keepTaggedImages": 50, "forceDelete": False},
        "tracking": {"replicas": 2, "database": {"instanceClass": "db.r6g.large", "multiAz": True,
                                                 "backupRetentionDays": 14}},
        # Two Prometheus replicas each scrape everything: a node loss or an upgrade leaves one recording.
        "monitoring": {"prometheusReplicas": 2, "alertmanagerReplicas": 3, "retention": "30d", "storageGb": 200},
        "cluster": {
            "deletionProtection": True,
            "nodeGroups": {
                "cpu": _cpu_pool(["m6i.xlarge", "m6a.xlarge", "m5.xlarge"], min_size=3, desired_size=3, max_size=10),
                "gpu": _gpu_pool(["g5.xlarge", "g6.xlarge", "g4dn.xlarge", "g5.2xlarge", "g6.2xlarge"], max_size=8,
                                 release_version="1.35.6-20260714"),
            },
        },
    },
}

# CloudWatch Logs accepts only these retention periods.
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
                      2922, 3288, 3653)


class ConfigError(ValueError):
    """Invalid stack config: one line per problem, each naming the key, the bad value and what is allowed."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid stack config:\n  " + "\n  ".join(problems))


class _Section(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class SubnetCidrs(_Section):
    """Explicit subnet CIDRs per tier, one per AZ, in AZ order (overrides the computed layout)."""

    public: list[ipaddress.IPv4Network]
    private: list[ipaddress.IPv4Network]
    database: list[ipaddress.IPv4Network]


class SubnetNewbits(_Section):
    """Bits added to the VPC prefix for each tier's subnets (as Terraform's ``cidrsubnet``): /16 + 3 = /19."""

    private: int = Field(3, ge=1, le=12)
    public: int = Field(6, ge=1, le=12)
    database: int = Field(8, ge=1, le=12)


class NetworkConfig(_Section):
    """``mlplat:network``: the VPC."""

    cidr: ipaddress.IPv4Network = ipaddress.IPv4Network("10.0.0.0/16")
    az_count: int = Field(3, ge=2, le=6)
    availability_zones: list[str] | None = None
    nat: Literal["single", "per_az"] = "per_az"
    interface_endpoints: bool = True
    flow_log_retention_days: int = 90
    subnet_newbits: SubnetNewbits = SubnetNewbits()
    subnets: SubnetCidrs | None = None

    @field_validator("cidr", mode="before")
    @classmethod
    def _cidr(cls, value: Any) -> Any:
        try:
            net = ipaddress.IPv4Network(str(value), strict=True)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not an IPv4 network in CIDR form ({exc}); e.g. 10.0.0.0/16") from exc
        if not 16 <= net.prefixlen <= 24:
            raise ValueError(f"{value!r}: the VPC prefix must be between /16 and /24 (AWS allows /16 to /28, "
                             "and a /25 or smaller leaves no room for three tiers of subnets)")
        if not net.is_private:
            raise ValueError(f"{value!r} is not a private (RFC 1918) range; use e.g. 10.0.0.0/16")
        return net

    @field_validator("flow_log_retention_days")
    @classmethod
    def _retention(cls, value: int) -> int:
        if value not in LOG_RETENTION_DAYS:
            raise ValueError(f"{value} is not a CloudWatch Logs retention period; allowed: "
                             + ", ".join(map(str, LOG_RETENTION_DAYS)))
        return value

    @field_validator("availability_zones")
    @classmethod
    def _azs(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError(f"{value} lists an availability zone twice")
        return value

    @model_validator(mode="after")
    def _layout(self) -> NetworkConfig:
        if self.availability_zones is not None and len(self.availability_zones) != self.az_count:
            raise ValueError(f"availabilityZones lists {len(self.availability_zones)} zones but azCount is "
                             f"{self.az_count}; list exactly azCount zones or leave availabilityZones out")
        self.subnet_layout()  # raises with a specific message when the subnets do not fit or overlap
        return self

    def subnet_layout(self) -> dict[str, list[ipaddress.IPv4Network]]:
        """Each tier's subnet CIDRs, one per AZ (see :func:`mlplat.components.subnets.plan_subnets`)."""
        explicit = None if self.subnets is None else self.subnets.model_dump()
        return plan_subnets(self.cidr, self.az_count, self.subnet_newbits.model_dump(), explicit)


class ArtifactsConfig(_Section):
    """``mlplat:artifacts``: the S3 artifact bucket."""

    bucket_name: str | None = None
    force_destroy: bool = False
    protect: bool = True
    kms_key: bool = True
    noncurrent_to_glacier_days: int = Field(30, ge=1)
    noncurrent_expire_days: int = Field(365, ge=1)
    abort_multipart_days: int = Field(7, ge=1)

    @field_validator("bucket_name")
    @classmethod
    def _bucket_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", value):
            raise ValueError(f"{value!r} is not a valid S3 bucket name: 3-63 characters of a-z, 0-9, '.' and "
                             "'-', starting and ending with a letter or digit")
        return value

    @model_validator(mode="after")
    def _order(self) -> ArtifactsConfig:
        if self.noncurrent_expire_days <= self.noncurrent_to_glacier_days:
            raise ValueError(f"noncurrentExpireDays ({self.noncurrent_expire_days}) must be greater than "
                             f"noncurrentToGlacierDays ({self.noncurrent_to_glacier_days})")
        if self.force_destroy and self.protect:
            raise ValueError("forceDestroy=true contradicts protect=true; a protected bucket is never emptied")
        return self


class RegistryConfig(_Section):
    """``mlplat:registry``: ECR repositories and, optionally, image builds."""

    repositories: list[str] = ["serving", "training", "tracking"]
    keep_tagged_images: int = Field(50, ge=1, le=1000)
    untagged_expire_days: int = Field(7, ge=1)
    force_delete: bool = False
    build_images: bool = False
    image_tag: str = "0.1.0"
    images: dict[str, str] = {}
    cuda_images: dict[str, str] = {}
    """CUDA builds built elsewhere, per repository (GPU training jobs run them); default ``<repo>:<imageTag>-cuda``."""

    @field_validator("repositories")
    @classmethod
    def _repos(cls, value: list[str]) -> list[str]:
        for repo in value:
            if not re.fullmatch(r"[a-z0-9]+(?:[._-][a-z0-9]+)*", repo):
                raise ValueError(f"{repo!r} is not a valid ECR repository name (lowercase letters, digits, "
                                 "and . _ - between them)")
        if len(set(value)) != len(value):
            raise ValueError(f"{value} lists a repository twice")
        return value

    @model_validator(mode="after")
    def _images(self) -> RegistryConfig:
        for key, images in (("images", self.images), ("cudaImages", self.cuda_images)):
            unknown = set(images) - set(self.repositories)
            if unknown:
                raise ValueError(f"{key} names {sorted(unknown)}, which are not repositories; allowed: "
                                 f"{self.repositories}")
        return self


class NodeGroupConfig(_Section):
    """One entry of ``mlplat:cluster.nodeGroups`` (the key is the pool's name); see NodePoolArgs."""

    instance_types: list[str]
    capacity_type: Literal["ON_DEMAND", "SPOT"] = "ON_DEMAND"
    min_size: int = 1
    max_size: int = 3
    desired_size: int | None = None
    disk_size_gib: int = 50
    labels: dict[str, str] = {}
    taints: list[str] = []
    ami_type: str = "AL2023_x86_64_STANDARD"
    version: str | None = None
    release_version: str | None = None
    gpus_per_node: int | None = None
    max_unavailable_percentage: int = 33

    @field_validator("taints")
    @classmethod
    def _taints(cls, value: list[str]) -> list[str]:
        for text in value:
            Taint.parse(text)  # raises naming the taint and the form it should take
        return value

    def to_args(self, name: str) -> NodePoolArgs:
        """The component's args for this pool (validates it; a spot pool of one type warns)."""
        fields = self.model_dump(exclude={"taints"})
        return NodePoolArgs(name=name, taints=[Taint.parse(t) for t in self.taints], **fields)


class AddonsConfig(_Section):
    """``mlplat:cluster.addons``: pinned EKS add-on versions."""

    vpc_cni: str = AddonVersions.vpc_cni
    coredns: str = AddonVersions.coredns
    kube_proxy: str = AddonVersions.kube_proxy
    aws_ebs_csi_driver: str = AddonVersions.aws_ebs_csi_driver
    metrics_server: str = AddonVersions.metrics_server


class ChartsConfig(_Section):
    """``mlplat:cluster.charts``: pinned Helm chart versions."""

    cluster_autoscaler: str = ChartVersions.cluster_autoscaler
    node_termination_handler: str = ChartVersions.node_termination_handler
    nvidia_device_plugin: str = ChartVersions.nvidia_device_plugin


class ClusterConfig(_Section):
    """``mlplat:cluster``: EKS, its node groups, add-ons and system charts."""

    version: str = "1.35"
    endpoint_public_access: bool = False
    public_access_cidrs: list[str] = []
    admin_role_arns: list[str] = []
    log_types: list[str] = list(REQUIRED_LOG_TYPES)
    deletion_protection: bool = True
    node_groups: dict[str, NodeGroupConfig] = Field(
        default_factory=lambda: {name: NodeGroupConfig.model_validate(pool) for name, pool
                                 in ENVIRONMENT_DEFAULTS["production"]["cluster"]["nodeGroups"].items()}
    )
    addons: AddonsConfig = AddonsConfig()
    charts: ChartsConfig = ChartsConfig()

    @field_validator("public_access_cidrs")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=True)
            except ValueError as exc:
                raise ValueError(f"{cidr!r} is not a CIDR such as 203.0.113.0/24 ({exc})") from exc
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ClusterConfig:
        problems: list[str] = []
        pools = []
        for name, group in self.node_groups.items():
            try:
                pools.append(group.to_args(name))
            except ValueError as exc:
                problems.append(f"nodeGroups.{name}: {_camel_fields(str(exc).split(': ', 1)[-1])}")
        if not problems:
            try:  # the cross-pool checks (versions, an untainted pool, endpoint CIDRs) live in ClusterArgs
                self._args(pools, "vpc-config-check", [], "us-east-1")
            except ValueError as exc:
                problems.append(_camel_fields(str(exc).removeprefix("ClusterArgs: ")))
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def node_pools(self) -> list[NodePoolArgs]:
        """The node pools, in config order."""
        return [group.to_args(name) for name, group in self.node_groups.items()]

    def to_args(self, vpc_id: Any, private_subnet_ids: Any, region: str, cluster_name: str) -> ClusterArgs:
        """The component's args, given the network it runs in."""
        return self._args(self.node_pools(), vpc_id, private_subnet_ids, region, cluster_name)

    def _args(self, pools: list[NodePoolArgs], vpc_id: Any, subnets: Any, region: str,
              cluster_name: str | None = None) -> ClusterArgs:
        return ClusterArgs(
            vpc_id=vpc_id, private_subnet_ids=subnets, region=region, cluster_name=cluster_name, version=self.version,
            endpoint_public_access=self.endpoint_public_access, public_access_cidrs=self.public_access_cidrs,
            admin_role_arns=self.admin_role_arns, log_types=self.log_types,
            deletion_protection=self.deletion_protection, node_pools=pools,
            addon_versions=AddonVersions(**self.addons.model_dump()), charts=ChartVersions(**self.charts.model_dump()),
        )


def _camel_fields(message: str) -> str:
    # Component messages name Python fields (min_size); stack files spell them in camelCase (minSize).
    message = message.replace("node_pools", "nodeGroups")
    return re.sub(r"\b[a-z]+(?:_[a-z]+)+\b", lambda m: to_camel(m.group(0)), message)


GITHUB_HOSTED_RUNNER = re.compile(r"(ubuntu|windows|macos)-[\w.-]+")


class DeployConfig(_Section):
    """``mlplat:deploy``: where this stack's ``pulumi up`` runs (``.github/workflows/deploy-stack.yml``).

    ``runner`` is the job's ``runs-on`` labels. The Kubernetes half of ``pulumi up`` talks to the cluster's API
    endpoint, so the runner must reach it: a private endpoint needs a runner inside the VPC (a self-hosted
    runner, e.g. a CodeBuild-hosted or EC2 runner in the private subnets); GitHub-hosted runners come from
    changing public addresses that no ``publicAccessCidrs`` list can name.
    """

    runner: list[str] | None = None
    """Default: ``[self-hosted, linux, mlplat-<environment>]``."""

    @field_validator("runner")
    @classmethod
    def _labels(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("an empty list names no runner; give runs-on labels such as [self-hosted, mlplat-dev]")
        return value

    def labels(self, environment: str) -> list[str]:
        return list(self.runner) if self.runner else ["self-hosted", "linux", f"mlplat-{environment}"]


class StackConfig(_Section):
    """The whole stack config, after environment defaults are applied."""

    environment: Environment
    region: str
    owner: str = "ml-platform"
    cost_center: str = "ml"
    network: NetworkConfig = NetworkConfig()
    artifacts: ArtifactsConfig = ArtifactsConfig()
    registry: RegistryConfig = RegistryConfig()
    cluster: ClusterConfig = ClusterConfig()
    tracking: TrackingConfig = TrackingConfig()
    services: dict[str, ServiceConfig] = {}
    training_jobs: dict[str, TrainingJobConfig] = {}
    monitoring: MonitoringConfig = MonitoringConfig()
    alarms: AlarmsConfig = AlarmsConfig()
    deploy: DeployConfig = DeployConfig()

    @field_validator("services", "training_jobs", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        for name in value if isinstance(value, dict) else ():
            # It names Kubernetes objects as mlplat-<environment>-<name>(-stable|-canary|-split): a DNS-1035 label
            # whose longest form (production, an ALB action annotation) must stay within 63 characters.
            if not re.fullmatch(r"[a-z]([a-z0-9-]{0,29}[a-z0-9])?", name):
                raise ValueError(f"{name!r} is not a valid workload name (a lowercase letter, then lowercase "
                                 "letters, digits and '-', at most 31 characters: it names Kubernetes objects)")
        return value

    @model_validator(mode="after")
    def _production_api_not_public(self) -> StackConfig:
        # Environment policy belongs in config, not in the component: production's API is never world-open.
        if self.environment == "production" and self.cluster.endpoint_public_access:
            open_to_all = [c for c in self.cluster.public_access_cidrs if ipaddress.ip_network(c).prefixlen == 0]
            if open_to_all:
                raise ValueError(f"{NAMESPACE}:cluster.publicAccessCidrs: {open_to_all} opens production's Kubernetes "
                                 "API to the whole internet; list your VPN/office CIDRs or set "
                                 "endpointPublicAccess: false")
        return self

    @model_validator(mode="after")
    def _alerts_page_someone(self) -> StackConfig:
        mon = self.monitoring
        if mon.enabled and not (self.alarms.enabled or mon.sns_topic_arn or mon.receiver
                                or mon.alerts_receiver_optional):
            raise ValueError(f"{NAMESPACE}:monitoring: alerts would page no one (mlplat:alarms is disabled and no "
                             "snsTopicArn or receiver is set); enable mlplat:alarms, set monitoring.snsTopicArn or "
                             "monitoring.receiver, or set monitoring.alertsReceiverOptional: true")
        return self

    @model_validator(mode="after")
    def _runner_reaches_the_api(self) -> StackConfig:
        hosted = [label for label in self.deploy.labels(self.environment) if GITHUB_HOSTED_RUNNER.fullmatch(label)]
        world_open = self.cluster.endpoint_public_access and any(
            ipaddress.ip_network(c).prefixlen == 0 for c in self.cluster.public_access_cidrs)
        if hosted and not world_open:
            where = ("private" if not self.cluster.endpoint_public_access
                     else f"open only to {self.cluster.public_access_cidrs}")
            raise ValueError(f"{NAMESPACE}:deploy.runner: {hosted} is a GitHub-hosted runner, which cannot reach this "
                             f"stack's Kubernetes API ({where}); use a self-hosted runner inside the VPC, e.g. "
                             f"[self-hosted, linux, mlplat-{self.environment}]")
        return self

    @model_validator(mode="after")
    def _workloads_fit_the_nodes(self) -> StackConfig:
        # Every pod must fit the smallest instance type of a pool that can host it, after the kubelet's
        # reservations and the DaemonSets (mlplat.components.capacity): else it stays Pending forever.
        workloads = [Workload("tracking.resources", **self.tracking.resources.model_dump())] \
            if self.tracking.enabled else []
        workloads += [Workload(f"services.{name}.resources", **svc.resources.model_dump())  # the canary's too
                      for name, svc in self.services.items()]
        workloads += [Workload(f"trainingJobs.{name}.resources", **job.resources.model_dump())
                      for name, job in self.training_jobs.items()]
        with warnings.catch_warnings():  # the pools' own warnings were given when the cluster section loaded
            warnings.simplefilter("ignore")
            pools = self.cluster.node_pools()
        problems = check_workloads(workloads, pools, monitoring=self.monitoring.enabled)
        if problems:  # one line each, through load()'s error list
            raise ValidationError.from_exception_data(type(self).__name__, [
                InitErrorDetails(type=PydanticCustomError("capacity", "{problem}", {"problem": f"{NAMESPACE}:{p}"}),
                                 loc=(), input=None)
                for p in problems
            ])
        return self

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z]{2}(-gov)?-[a-z]+-\d", value):
            raise ValueError(f"{value!r} is not an AWS region name such as us-east-1")
        return value

    @property
    def tags(self) -> dict[str, str]:
        """The default tags every AWS resource carries (known at plan time: no timestamps)."""
        return {
            "project": NAMESPACE,
            "environment": self.environment,
            "owner": self.owner,
            "cost-center": self.cost_center,
            "managed-by": "pulumi",
        }


# Top-level ``mlplat:`` keys (camelCase) the schema knows.
SECTIONS = {to_camel(name): name for name in StackConfig.model_fields if name != "region"}


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _parse(key: str, value: Any) -> Any:
    # Pulumi hands the program every config value as a string; objects and lists arrive JSON-encoded.
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError as exc:
            raise ConfigError([f"{key}: {value!r} is not valid JSON ({exc})"]) from exc
    return value


def _key_path(loc: tuple[int | str, ...]) -> str:
    head, *rest = [str(p) for p in loc] or ["?"]
    key = "aws:region" if head == "region" else f"{NAMESPACE}:{head}"
    return key + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in rest)


def load(values: Mapping[str, Any]) -> StackConfig:
    """Validate raw stack config (``{"mlplat:network": "{...}", "aws:region": "us-east-1"}``).

    Raises :class:`ConfigError` listing every problem.
    """
    problems: list[str] = []
    raw: dict[str, Any] = {}
    for full_key, value in values.items():
        namespace, _, key = full_key.partition(":")
        if full_key == "aws:region":
            raw["region"] = value
        elif namespace == NAMESPACE:
            if key not in SECTIONS:
                problems.append(f"{full_key}: unknown key; allowed: "
                                + ", ".join(f"{NAMESPACE}:{k}" for k in sorted(SECTIONS)))
                continue
            raw[key] = _parse(full_key, value)
    if "region" not in raw:
        problems.append("aws:region: missing; set it with `pulumi config set aws:region us-east-1`")
    env = raw.get("environment")
    if env not in ENVIRONMENTS:
        problems.append(f"{NAMESPACE}:environment: {env!r} is not an environment; allowed: {', '.join(ENVIRONMENTS)}")
    if problems:
        raise ConfigError(problems)
    merged = _deep_merge(ENVIRONMENT_DEFAULTS[str(env)], raw)
    try:
        return StackConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError([_describe(err) for err in exc.errors()]) from None


def _describe(err: Any) -> str:
    loc = tuple(err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    if not loc:  # a whole-stack rule: its message names the keys itself
        return msg
    if err["type"] == "extra_forbidden":
        return f"{_key_path(loc)}: unknown key{_allowed_keys(loc[:-1])}"
    if err["type"] == "missing":
        return f"{_key_path(loc)}: required"
    got = err.get("input")
    shown = "" if isinstance(got, dict | list) or msg.startswith(repr(got)) else f" (got {got!r})"
    return f"{_key_path(loc)}: {msg}{shown}"


def _allowed_keys(loc: tuple[int | str, ...]) -> str:
    model: Any = StackConfig
    for part in loc:
        field = model.model_fields.get(to_snake(str(part)))
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return ""
        model = field.annotation
    return "; allowed: " + ", ".join(to_camel(name) for name in model.model_fields)


def to_snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def from_pulumi() -> StackConfig:
    """Read and validate the running stack's config (``pulumi up`` or the offline engine)."""
    from pulumi.runtime import config as runtime_config

    values: dict[str, Any] = dict(runtime_config.get_config_env())
    values.update(runtime_config.CONFIG.get())
    return load({k: v for k, v in values.items() if k.startswith(f"{NAMESPACE}:") or k == "aws:region"})
