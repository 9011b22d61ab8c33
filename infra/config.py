"""The stack's typed config: one schema for every stack, validated with errors that name the key.

Keys live in the ``mlplat:`` namespace of ``Pulumi.<stack>.yaml`` (camelCase, as Pulumi config is written);
``aws:region`` comes from the AWS provider's namespace.

**Environment defaults** live in one documented preset per environment, ``infra/presets/<environment>.yaml``
(shipped in the package; :func:`preset`), written like a stack file. :func:`load` lays the stack file over it:

* sections (objects with a fixed set of keys: ``network``, ``tracking.database``, ...) merge key by key;
* a map of named entries (a ``dict`` field: ``cluster.nodeGroups``, ``services``, ``trainingJobs``, ``labels``,
  ``images``) given in the stack file replaces the preset's whole, so a stack can drop or rename a pool;
* a key set in neither takes its field default below (the component's own for a node pool): generic values,
  never another environment's or another pool's.

We chose presets over spelling every default in each stack file so that an environment without a stack file in
this repository (staging) still has its defaults, and the shipped stack files stay short; the components take
explicit knobs and never look at the environment name.

Errors name the key as the stack file spells it (pydantic aliases, camelCase) from the error's location and repeat
the user's value verbatim; messages are never rewritten after the fact.
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
import ipaddress
import json
import re
import types
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal, NoReturn, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import InitErrorDetails, PydanticCustomError

from mlplat.components import node_groups
from mlplat.components.capacity import INSTANCE_TYPES, Workload, check_workloads
from mlplat.components.cluster import LOG_TYPES, REQUIRED_LOG_TYPES, AddonVersions, ClusterArgs, default_node_pools
from mlplat.components.cluster_system import ChartVersions
from mlplat.components.node_groups import AMI_TYPES, NVIDIA_AMI_TYPES, NodePoolArgs, Taint, gpu_count
from mlplat.components.subnets import plan_subnets, public_source_problem
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

REGIONS: tuple[str, ...] = ("us-east-1",)
"""The regions ``aws:region`` may name: those the price table (infra/prices.json) prices in full, so ``mlplat cost``
and ``mlplat diff`` never leave a stack's resources out (tests check each against the table). No other commercial
region could be sourced in full when the table was dated; add one here with its prices."""

NODE_INSTANCE_TYPES: tuple[str, ...] = tuple(INSTANCE_TYPES)
"""The instance types a node pool may list: mlplat's capacity table (the fit of pods is checked against it), each
priced in every region of the price table (tests check it)."""

# The node pool's name patterns, the component's own (one definition each).
INSTANCE_TYPE_NAME = node_groups._INSTANCE_TYPE
LABEL_KEY = node_groups._LABEL_KEY
LABEL_VALUE = node_groups._LABEL_VALUE
POOL_NAME = node_groups._POOL_NAME
# The component's rules (mlplat.components.cluster.check_cluster), restated here so that errors can name the
# stack file's keys: a Kubernetes minor version and an IAM role ARN.
_K8S_MINOR = re.compile(r"1\.(\d+)")
IAM_ROLE_ARN = re.compile(r"arn:aws[\w-]*:iam::\d{12}:role/[\w+=,.@/-]+")


def _minor(version: str) -> int | None:
    match = _K8S_MINOR.fullmatch(version)
    return int(match.group(1)) if match else None


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


PROBLEM = "mlplat_problem"
"""The error type of a problem whose message already shows the user's value (so no ``(got ...)`` is added)."""

Problem = tuple[tuple[str, ...], str]
"""Where a problem is, relative to the model being validated (camelCase keys as in the stack file), and what."""


def _raise(model: str, problems: Sequence[Problem]) -> NoReturn:
    # Raised inside a validator, pydantic prefixes each location with the field path above it, so the key is built
    # from locations (aliases) and the message is never rewritten.
    raise ValidationError.from_exception_data(model, [
        InitErrorDetails(type=PydanticCustomError(PROBLEM, "{problem}", {"problem": message}), loc=loc, input=None)
        for loc, message in problems
    ])


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
    image_tag: str | None = None
    """The tag the workloads run (``<repo>:<imageTag>``), pinned in the stack file. Usually unset: the tag is then
    ``MLPLAT_IMAGE_TAG`` (which wins over this key; the deploy workflow sets it to the commit whose images it
    pushed) or the commit checked out; see :mod:`mlplat.infra.images`."""
    images: dict[str, str] = {}
    cuda_images: dict[str, str] = {}
    """CUDA builds built elsewhere, per repository (GPU training jobs run them); default ``<repo>:<imageTag>-cuda``."""

    @staticmethod
    def check_tag(value: str) -> str:
        """A Docker tag that stays one with ``-cuda`` appended (128 characters at most), and never ``latest``:
        the repositories' tags are immutable, so a tag names one build."""
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,122}", value):
            raise ValueError(f"{value!r} is not an image tag: 1-123 letters, digits, '_', '.' and '-', not starting "
                             "with '.' or '-' (e.g. the commit the images were built from)")
        if value == "latest":
            raise ValueError("'latest' is not an image tag here: tags are immutable, each names one build "
                             "(e.g. the commit the images were built from)")
        return value

    @field_validator("image_tag")
    @classmethod
    def _tag(cls, value: str | None) -> str | None:
        return None if value is None else cls.check_tag(value)

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


def _pool_default(name: str) -> Any:
    """A node pool field's default as the component declares it (one definition of each)."""
    return NodePoolArgs.__dataclass_fields__[name].default


class NodeGroupConfig(_Section):
    """One entry of ``mlplat:cluster.nodeGroups`` (the key is the pool's name); the fields of NodePoolArgs.

    A key the entry leaves out takes the field default below (the component's), never a value from a preset's pool
    of the same name: a stack file's ``nodeGroups`` replaces the preset's whole.
    """

    instance_types: list[str]
    capacity_type: Literal["ON_DEMAND", "SPOT"] = _pool_default("capacity_type")
    min_size: int = Field(_pool_default("min_size"), ge=0)
    max_size: int = Field(_pool_default("max_size"), ge=1)
    desired_size: int | None = Field(None, ge=0)
    """Nodes at creation; default ``minSize``, so a pool that sets only ``maxSize`` is valid."""
    disk_size_gib: int = Field(_pool_default("disk_size_gib"), ge=20, le=16384)
    labels: dict[str, str] = {}
    taints: list[str] = []
    ami_type: str = _pool_default("ami_type")
    version: str | None = None
    release_version: str | None = None
    gpus_per_node: int | None = None
    max_unavailable_percentage: int = Field(_pool_default("max_unavailable_percentage"), ge=1, le=100)

    @classmethod
    def of(cls, pool: NodePoolArgs) -> NodeGroupConfig:
        """The config entry of a component pool (the schema's default pools are the component's)."""
        fields = {name: getattr(pool, name) for name in cls.model_fields if name not in ("taints", "instance_types")}
        return cls(instance_types=list(pool.instance_types), taints=[str(t) for t in pool.taints], **fields)

    @field_validator("instance_types")
    @classmethod
    def _instance_types(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("[] lists no instance type; list at least one EC2 instance type such as m6i.xlarge")
        bad = [t for t in value if not INSTANCE_TYPE_NAME.fullmatch(t)]
        if bad:
            raise ValueError(f"{bad} are not EC2 instance type names such as m6i.xlarge")
        unknown = [t for t in value if t not in NODE_INSTANCE_TYPES]
        if unknown:
            raise ValueError(f"{unknown} {'is' if len(unknown) == 1 else 'are'} not in mlplat's capacity and price "
                             "tables, so neither the fit of pods nor the cost could be checked; allowed: "
                             + ", ".join(NODE_INSTANCE_TYPES))
        if len(set(value)) != len(value):
            raise ValueError(f"{value} lists a type twice")
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        problems: list[Problem] = []
        for key, text in value.items():
            if not LABEL_KEY.fullmatch(key):
                problems.append(((key,), f"{key!r} is not a Kubernetes label name: at most 63 letters, digits, '-', "
                                         "'_' and '.', starting and ending with a letter or digit, with an optional "
                                         "DNS prefix and '/' (e.g. example.com/team)"))
            elif not LABEL_VALUE.fullmatch(text):
                problems.append(((key,), f"{text!r} is not a Kubernetes label value: at most 63 letters, digits, "
                                         "'-', '_' and '.', starting and ending with a letter or digit (or empty)"))
        if problems:
            _raise(cls.__name__, problems)
        return value

    @field_validator("taints")
    @classmethod
    def _taints(cls, value: list[str]) -> list[str]:
        keys = [Taint.parse(text).key for text in value]  # raises naming the taint and the form it should take
        if len(set(keys)) != len(keys):
            raise ValueError(f"{value} repeat a key; the autoscaler keeps one taint per key")
        return value

    @field_validator("ami_type")
    @classmethod
    def _ami_type(cls, value: str) -> str:
        if value not in AMI_TYPES:
            raise ValueError(f"{value!r} is not an EKS AMI type; allowed: {', '.join(AMI_TYPES)}")
        return value

    @field_validator("version")
    @classmethod
    def _version(cls, value: str | None) -> str | None:
        if value is not None and _minor(value) is None:
            raise ValueError(f"{value!r} is not a Kubernetes minor version such as '1.35'")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> NodeGroupConfig:
        problems = [((), message) for message in [*self._size_problems(), *self._gpu_problems()]]
        if problems:
            _raise(type(self).__name__, problems)
        return self

    def _shown(self, field: str) -> str:
        # Say when a value is the field's default: the user may not know it is there, and must set the key.
        value = getattr(self, field)
        return f"{value}" if field in self.model_fields_set else f"{value}, the default"

    def _size_problems(self) -> list[str]:
        if self.min_size > self.max_size:
            fix = "" if "max_size" in self.model_fields_set else f"; set maxSize to {self.min_size} or more"
            return [f"minSize ({self._shown('min_size')}) is greater than maxSize ({self._shown('max_size')}){fix}"]
        desired = self.desired_size
        if desired is None or self.min_size <= desired <= self.max_size:
            return []
        if desired > self.max_size:
            fix = "" if "max_size" in self.model_fields_set else f"; set maxSize to {desired} or more"
        else:
            fix = "" if "min_size" in self.model_fields_set else f"; set minSize to {desired} or less"
        return [f"desiredSize ({desired}) must lie between minSize ({self._shown('min_size')}) and maxSize "
                f"({self._shown('max_size')}){fix}"]

    def _gpu_problems(self) -> list[str]:
        counts = {t: gpu_count(t) for t in self.instance_types}
        ami = f"amiType {self.ami_type!r}" + ("" if "ami_type" in self.model_fields_set else " (the default)")
        if self.ami_type not in NVIDIA_AMI_TYPES:
            gpu_types = sorted(t for t, n in counts.items() if n is not None)
            if gpu_types:
                return [f"instanceTypes {gpu_types} have NVIDIA GPUs but {ami} has no driver; set amiType: "
                        "AL2023_x86_64_NVIDIA"]
            if self.gpus_per_node:
                return [f"gpusPerNode ({self.gpus_per_node}) needs an NVIDIA amiType, not {ami}"]
            return []
        if self.gpus_per_node is not None:
            if self.gpus_per_node < 1:
                return [f"gpusPerNode ({self.gpus_per_node}) must be at least 1 for an NVIDIA pool"]
            wrong = {t: n for t, n in counts.items() if n is not None and n != self.gpus_per_node}
            return [f"gpusPerNode ({self.gpus_per_node}) contradicts the GPUs per node of {wrong}"] if wrong else []
        unknown = sorted(t for t, n in counts.items() if n is None)
        if unknown:
            return [f"instanceTypes {unknown} are not known GPU types; set gpusPerNode, or use g4dn/g5/g6/g6e/p3/"
                    "p4d/p5 types"]
        if len(set(counts.values())) > 1:
            # The autoscaler sizes an empty group from one template node: mixed GPU counts make it guess wrong.
            return [f"instanceTypes mix GPU counts {counts}; a pool must have one GPU count per node"]
        return []

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


def _component_pools() -> dict[str, NodeGroupConfig]:
    return {pool.name: NodeGroupConfig.of(pool) for pool in default_node_pools()}


class ClusterConfig(_Section):
    """``mlplat:cluster``: EKS, its node groups, add-ons and system charts."""

    version: str = "1.35"
    endpoint_public_access: bool = False
    public_access_cidrs: list[str] = []
    admin_role_arns: list[str] = []
    log_types: list[str] = list(REQUIRED_LOG_TYPES)
    deletion_protection: bool = True
    node_groups: dict[str, NodeGroupConfig] = Field(default_factory=_component_pools)
    """Pool name -> pool. Without presets, the component's default pools (``default_node_pools``)."""
    addons: AddonsConfig = AddonsConfig()
    charts: ChartsConfig = ChartsConfig()

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if _minor(value) is None:
            raise ValueError(f"{value!r} is not a Kubernetes minor version such as '1.35'")
        return value

    @field_validator("public_access_cidrs")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        problems = []
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=True)
            except ValueError as exc:
                problems.append(f"{cidr!r} is not a CIDR such as 52.94.0.0/22 ({exc})")
                continue
            unroutable = public_source_problem(cidr)
            if unroutable:
                problems.append(unroutable)
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @field_validator("admin_role_arns")
    @classmethod
    def _admin_roles(cls, value: list[str]) -> list[str]:
        bad = [arn for arn in value if not IAM_ROLE_ARN.fullmatch(arn)]
        if bad:
            raise ValueError(f"{bad} are not IAM role ARNs (arn:aws:iam::<12-digit account>:role/<name>)")
        return value

    @field_validator("log_types")
    @classmethod
    def _log_types(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(LOG_TYPES))
        if unknown:
            raise ValueError(f"{unknown} are not control-plane log types; allowed: {', '.join(LOG_TYPES)}")
        missing = [t for t in REQUIRED_LOG_TYPES if t not in value]
        if missing:
            raise ValueError(f"{value} must include {', '.join(REQUIRED_LOG_TYPES)}; missing {', '.join(missing)}")
        return value

    @field_validator("node_groups")
    @classmethod
    def _pool_names(cls, value: dict[str, NodeGroupConfig]) -> dict[str, NodeGroupConfig]:
        bad = [((name,), f"{name!r} is not a node pool name: 1-31 characters of a-z, 0-9 and '-', starting with a "
                         "letter (it names the node group <cluster>-<pool>)")
               for name in value if not POOL_NAME.fullmatch(name)]
        if bad:
            _raise(cls.__name__, bad)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ClusterConfig:
        problems: list[Problem] = []
        if self.endpoint_public_access and not self.public_access_cidrs:
            problems.append(((), "endpointPublicAccess is true but publicAccessCidrs is empty, which EKS reads as "
                                 "0.0.0.0/0; list the CIDRs that may reach the API, or keep the endpoint private"))
        if not self.endpoint_public_access and self.public_access_cidrs:
            problems.append(((), f"publicAccessCidrs {self.public_access_cidrs} is set but endpointPublicAccess is "
                                 "false; set it to true or drop the CIDRs"))
        if not self.node_groups:
            problems.append((("nodeGroups",), "{} lists no pool; the cluster needs at least one for system pods"))
        elif all(pool.taints for pool in self.node_groups.values()):
            problems.append((("nodeGroups",), "every node pool is tainted, so coredns and the autoscaler cannot "
                                              "schedule; leave at least one pool without taints"))
        for name, pool in self.node_groups.items():
            problems += [(("nodeGroups", name, *loc), message) for loc, message in self._version_skew(pool)]
        if problems:
            _raise(type(self).__name__, problems)
        try:  # the component has the last word; a rule of its own this schema lacks is reported in its words
            self._args(self.node_pools(), "vpc-config-check", [], "us-east-1")
        except ValueError as exc:
            _raise(type(self).__name__, [((), str(exc))])
        return self

    def _version_skew(self, pool: NodeGroupConfig) -> list[Problem]:
        control = _minor(self.version)
        version = pool.version or self.version
        node = _minor(version)
        problems: list[Problem] = []
        if control is not None and node is not None and node > control:
            problems.append((("version",), f"{version!r} is newer than the control plane's {self.version!r} "
                                           "(mlplat:cluster.version); upgrade the control plane first"))
        elif control is not None and node is not None and control - node > 3:
            problems.append((("version",), f"{version!r} is more than 3 minors behind the control plane's "
                                           f"{self.version!r}, beyond the kubelet skew Kubernetes supports"))
        if pool.release_version is not None and not pool.release_version.startswith(f"{version}."):
            whose = "the pool's version" if pool.version else "the cluster's version"
            problems.append((("releaseVersion",), f"{pool.release_version!r} is not a release of Kubernetes "
                                                  f"{version} ({whose}); expected {version}.<patch>-<date>"))
        return problems

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
    pipeline_role_arn: str | None = None
    """The ML pipeline's IAM role (the bootstrap stack's ``pipelineRoleArn`` output). Given, it gets an EKS access
    entry with only what ``ml-pipeline.yml`` runs with kubectl (see :mod:`mlplat.components.pipeline_access`);
    unset, the pipeline cannot reach the cluster."""

    @field_validator("pipeline_role_arn")
    @classmethod
    def _pipeline_role(cls, value: str | None) -> str | None:
        if value is not None and not IAM_ROLE_ARN.fullmatch(value):
            raise ValueError(f"{value!r} is not an IAM role ARN (arn:aws:iam::<12-digit account>:role/<name>)")
        return value

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
        if value not in REGIONS:
            raise ValueError(f"{value!r} is not a region mlplat's price table prices (infra/prices.json), so "
                             f"`mlplat cost` could not price the stack; allowed: {', '.join(REGIONS)}")
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


PRESET_PACKAGE = "mlplat.infra"
PRESET_FOLDER = "presets"
"""Where the presets ship: ``infra/presets/<environment>.yaml`` (package data of ``mlplat.infra``)."""


def preset(environment: str) -> dict[str, Any]:
    """The environment's defaults, as a stack file's ``config:`` block (``{"mlplat:network": {...}, ...}``).

    A fresh copy each call: callers may change it.
    """
    if environment not in ENVIRONMENTS:
        raise ValueError(f"{environment!r} is not an environment; allowed: {', '.join(ENVIRONMENTS)}")
    return copy.deepcopy(_read_preset(environment))


@functools.cache
def _read_preset(environment: str) -> dict[str, Any]:
    resource = importlib.resources.files(PRESET_PACKAGE) / PRESET_FOLDER / f"{environment}.yaml"
    config: dict[str, Any] = yaml.safe_load(resource.read_text(encoding="utf-8"))["config"]
    return config


def _field(model: type[BaseModel], key: str) -> tuple[str, Any] | None:
    """(alias, annotation) of the field ``key`` names, by alias (``azCount``) or by name (``az_count``)."""
    for name, info in model.model_fields.items():
        if key in (to_camel(name), name):
            return to_camel(name), info.annotation
    return None


def _section_of(annotation: Any) -> type[BaseModel] | None:
    """The section a field holds (a model, optional or not), or None for scalars, lists and maps."""
    options = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    models = [o for o in options if isinstance(o, type) and issubclass(o, BaseModel)]
    return models[0] if len(models) == 1 else None


def _entry_of(annotation: Any) -> type[BaseModel] | None:
    """The model of each entry of a map of named entries (``dict[str, NodeGroupConfig]``), or None."""
    if get_origin(annotation) is not dict:
        return None
    return _section_of(get_args(annotation)[1])


def _overlay(model: type[BaseModel], base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` (the stack file) laid over ``base`` (the preset), guided by the schema.

    Sections merge key by key; anything else the stack file sets (a scalar, a list, a map of named entries such as
    ``nodeGroups``) replaces the preset's value whole, so a stack can drop a pool the preset has.
    """
    merged = dict(base)
    for key, value in override.items():
        field = _field(model, key)
        if field is None:  # unknown: validation reports it, spelled as the user wrote it
            merged[key] = value
            continue
        alias, annotation = field
        section = _section_of(annotation)
        if section is not None and isinstance(value, Mapping) and isinstance(merged.get(alias), Mapping):
            merged[alias] = _overlay(section, merged[alias], value)
        else:
            merged[alias] = value
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
    defaults = {key.partition(":")[2]: value for key, value in preset(str(env)).items()}
    merged = _overlay(StackConfig, defaults, raw)
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
    if err["type"] == PROBLEM:  # the message shows the value itself
        return f"{_key_path(loc)}: {msg}"
    got = err.get("input")
    shown = "" if isinstance(got, dict | list) or msg.startswith(repr(got)) else f" (got {got!r})"
    return f"{_key_path(loc)}: {msg}{shown}"


def _allowed_keys(loc: tuple[int | str, ...]) -> str:
    model: type[BaseModel] | None = StackConfig
    parts = [str(p) for p in loc]
    while parts and model is not None:
        field = _field(model, parts.pop(0))
        if field is None:
            return ""
        entry = _entry_of(field[1])
        if entry is not None and parts:  # nodeGroups.<pool>: skip the entry's name
            parts.pop(0)
            model = entry
        else:
            model = _section_of(field[1])
    return "" if model is None else "; allowed: " + ", ".join(to_camel(name) for name in model.model_fields)


def from_pulumi() -> StackConfig:
    """Read and validate the running stack's config (``pulumi up`` or the offline engine)."""
    from pulumi.runtime import config as runtime_config

    values: dict[str, Any] = dict(runtime_config.get_config_env())
    values.update(runtime_config.CONFIG.get())
    return load({k: v for k, v in values.items() if k.startswith(f"{NAMESPACE}:") or k == "aws:region"})
