"""EKS managed node pools: validated args, the scale-from-zero tags derived from them, and the resources.

A pool is one ``aws.eks.NodeGroup`` with its own launch template (IMDSv2 with hop limit 1, an encrypted gp3 root
volume, instance tags that opt every pool in to aws-node-termination-handler) and, because EKS does not copy
node-group tags onto the Auto Scaling group, one ``aws.autoscaling.Tag`` per cluster-autoscaler node-template tag. Those
tags are computed from the pool's own labels, taints and GPU count, so what the autoscaler assumes about an empty
group cannot drift from what the nodes actually get.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Self

import pulumi
import pulumi_aws as aws
from pydantic import Field, field_validator

from mlplat.components.spec import Problem, Spec, raise_problems

__all__ = ["NodePoolArgs", "SpotDiversityWarning", "Taint"]

CapacityType = Literal["ON_DEMAND", "SPOT"]
TaintEffect = Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]

AMI_TYPES: tuple[str, ...] = (
    "AL2023_x86_64_STANDARD",
    "AL2023_ARM_64_STANDARD",
    "AL2023_x86_64_NVIDIA",
    "AL2023_ARM_64_NVIDIA",
)
NVIDIA_AMI_TYPES = frozenset(t for t in AMI_TYPES if t.endswith("_NVIDIA"))
GPU_RESOURCE = "nvidia.com/gpu"
NODE_TEMPLATE = "k8s.io/cluster-autoscaler/node-template"
# aws-node-termination-handler (queue mode) only drains instances whose EC2 instance tags carry this key.
NTH_MANAGED_TAG = "aws-node-termination-handler/managed"

# Kubernetes taint effect -> the EKS API's spelling.
_EKS_EFFECTS: dict[str, str] = {
    "NoSchedule": "NO_SCHEDULE",
    "PreferNoSchedule": "PREFER_NO_SCHEDULE",
    "NoExecute": "NO_EXECUTE",
}

# NVIDIA GPUs per instance for the families a training/serving pool uses. Sizes not listed have one GPU.
_GPU_FAMILIES: dict[str, dict[str, int]] = {
    "g4dn": {"12xlarge": 4, "metal": 8},
    "g5": {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8},
    "g6": {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8},
    "g6e": {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8},
    "p3": {"8xlarge": 4, "16xlarge": 8},
    "p4d": {"24xlarge": 8},
    "p5": {"48xlarge": 8},
}
_INSTANCE_TYPE = re.compile(r"[a-z][a-z0-9-]*\.[a-z0-9]+")
_LABEL_KEY = re.compile(r"([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
_POOL_NAME = re.compile(r"[a-z][a-z0-9-]{0,30}")
_K8S_MINOR = re.compile(r"1\.(\d+)")
_TAINT = re.compile(r"(?P<key>[^=:\s]+)(=(?P<value>[^:\s]*))?:(?P<effect>\w+)")


class SpotDiversityWarning(UserWarning):
    """A spot pool that can draw on too few instance types, so one type's shortage empties it."""


def gpu_count(instance_type: str) -> int | None:
    """NVIDIA GPUs of an EC2 instance type, or None when the type is not in a known GPU family."""
    family, _, size = instance_type.partition(".")
    sizes = _GPU_FAMILIES.get(family)
    return None if sizes is None else sizes.get(size, 1)


@dataclass(frozen=True)
class Taint:
    """A Kubernetes node taint, e.g. ``Taint.parse("nvidia.com/gpu=true:NoSchedule")``."""

    key: str
    value: str = ""
    effect: TaintEffect = "NoSchedule"

    @classmethod
    def parse(cls, text: str) -> Taint:
        """Parse ``key=value:Effect`` (or ``key:Effect``), as ``kubectl taint`` writes it."""
        match = _TAINT.fullmatch(text.strip())
        if match is None:
            raise ValueError(
                f"taint {text!r} is not of the form key=value:Effect (e.g. nvidia.com/gpu=true:NoSchedule)"
            )
        effect = match["effect"]
        if effect not in _EKS_EFFECTS:
            raise ValueError(f"taint {text!r}: effect {effect!r} is not one of {', '.join(_EKS_EFFECTS)}")
        return cls(match["key"], match["value"] or "", effect)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"{self.key}={self.value}:{self.effect}" if self.value else f"{self.key}:{self.effect}"

    @property
    def eks_effect(self) -> str:
        """The effect as the EKS node-group API spells it (``NO_SCHEDULE``)."""
        return _EKS_EFFECTS[self.effect]

    def toleration(self) -> dict[str, str]:
        """The pod toleration that admits exactly this taint."""
        if self.value:
            return {"key": self.key, "operator": "Equal", "value": self.value, "effect": self.effect}
        return {"key": self.key, "operator": "Exists", "effect": self.effect}


class NodePoolArgs(Spec):
    """One EKS managed node group: what a pool is, validated before any resource is created.

    In the stack file a pool is an entry of ``mlplat:cluster.nodeGroups`` whose key is its name (the entry does not
    repeat it); in Python, ``NodePoolArgs(name="cpu", instance_types=[...])``. Errors name the stack file's keys
    (``minSize``, ``instanceTypes``) and say when a value they cite is the field's default.
    """

    instance_types: list[str]
    """EC2 instance types the group may launch; list several for spot (capacity pools)."""
    capacity_type: CapacityType = "ON_DEMAND"
    """``ON_DEMAND`` or ``SPOT``."""
    min_size: int = Field(default=1, ge=0)
    """Smallest node count; 0 lets the autoscaler empty the pool (scale from zero)."""
    max_size: int = Field(default=3, ge=1)
    """Largest node count the autoscaler may reach."""
    desired_size: int | None = Field(default=None, ge=0)
    """Node count at creation; default ``min_size``, so a pool that sets only ``max_size`` is valid. Later changes
    are ignored, because the autoscaler owns the running count and Pulumi must not reset it on every ``up``."""
    disk_size_gib: int = Field(default=50, ge=20, le=16384)
    """Root volume size (encrypted gp3) in GiB; images and datasets land here."""
    labels: dict[str, str] = {}
    """Kubernetes labels on every node (and in the autoscaler's node template)."""
    taints: list[Taint] = []
    """Kubernetes taints on every node (and in the autoscaler's node template); a :class:`Taint` or its text,
    ``key=value:Effect`` as ``kubectl taint`` writes it (the stack file's form)."""
    ami_type: str = "AL2023_x86_64_STANDARD"
    """An AL2023 EKS AMI type; ``*_NVIDIA`` for GPU instances (driver and container toolkit)."""
    version: str | None = None
    """Kubernetes minor version of the nodes; default the cluster's. Pinned per pool so an upgrade goes control
    plane first, then pool by pool."""
    release_version: str | None = None
    """The EKS AMI release to run (e.g. ``1.35.6-20260714``); default: the latest at creation, then left alone.
    Pin it for GPU pools so driver versions change only on purpose."""
    gpus_per_node: int | None = None
    """NVIDIA GPUs per node, advertised to the autoscaler for an empty pool; derived from the instance types for
    known GPU families, required for others with an NVIDIA AMI."""
    max_unavailable_percentage: int = Field(default=33, ge=1, le=100)
    """Share of nodes replaced at once during an AMI or version update."""
    # Last: a stack file's entry takes its name from its key, so the keys it writes are the ones above.
    name: str
    """Pool name, ``[a-z][a-z0-9-]*``; the node group is named ``<cluster>-<name>``. In ``cluster.nodeGroups`` the
    entry's key."""

    @field_validator("instance_types", mode="before")
    @classmethod
    def _not_one_string(cls, value: Any) -> Any:
        # pydantic refuses a string for a list anyway; say why a list is meant.
        if isinstance(value, str | bytes):
            raise ValueError(
                f"{value!r} is a single string, which would be read as one name per letter; give a "
                f"list, e.g. [{value!r}]"
            )
        return value

    @field_validator("instance_types")
    @classmethod
    def _instance_types(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("[] lists no instance type; list at least one EC2 instance type such as m6i.xlarge")
        bad = [t for t in value if not _INSTANCE_TYPE.fullmatch(t)]
        if bad:
            raise ValueError(f"{bad} are not EC2 instance type names such as m6i.xlarge")
        if len(set(value)) != len(value):
            raise ValueError(f"{value} lists a type twice")
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        problems: list[Problem] = []
        for key, text in value.items():
            if not _LABEL_KEY.fullmatch(key):
                problems.append(
                    (
                        (key,),
                        f"{key!r} is not a Kubernetes label name: at most 63 letters, digits, '-', "
                        "'_' and '.', starting and ending with a letter or digit, with an optional "
                        "DNS prefix and '/' (e.g. example.com/team)",
                    )
                )
            elif not _LABEL_VALUE.fullmatch(text):
                problems.append(
                    (
                        (key,),
                        f"{text!r} is not a Kubernetes label value: at most 63 letters, digits, "
                        "'-', '_' and '.', starting and ending with a letter or digit (or empty)",
                    )
                )
        if problems:
            raise_problems(cls.__name__, problems)
        return value

    @field_validator("taints", mode="before")
    @classmethod
    def _parse_taints(cls, value: Any) -> Any:
        # The stack file writes a taint as kubectl does; Taint.parse raises naming it and the form it should take.
        if isinstance(value, list | tuple):
            return [Taint.parse(t) if isinstance(t, str) else t for t in value]
        return value

    @field_validator("taints")
    @classmethod
    def _taint_keys(cls, value: list[Taint]) -> list[Taint]:
        keys = [t.key for t in value]
        if len(set(keys)) != len(keys):
            raise ValueError(f"{[str(t) for t in value]} repeat a key; the autoscaler keeps one taint per key")
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
        if value is not None and k8s_minor(value) is None:
            raise ValueError(f"{value!r} is not a Kubernetes minor version such as '1.35'")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        problem = pool_name_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    def _consistent(self) -> Self:
        problems: list[Problem] = [((), message) for message in [*self._size_problems(), *self._gpu_problems()]]
        if (
            self.version is not None
            and self.release_version is not None
            and not self.release_version.startswith(f"{self.version}.")
        ):
            problems.append(
                (
                    ("releaseVersion",),
                    f"{self.release_version!r} is not a release of Kubernetes "
                    f"{self.version} (the pool's version); expected "
                    f"{self.version}.<patch>-<date>",
                )
            )
        if problems:
            raise_problems(type(self).__name__, problems)
        if self.capacity_type == "SPOT" and len(self.instance_types) == 1:
            warnings.warn(
                f"node pool {self.name!r}: SPOT with a single instance type ({self.instance_types[0]}) is "
                "interrupted together and may find no capacity; list several similar types (e.g. "
                "g5.xlarge, g6.xlarge, g4dn.xlarge)",
                SpotDiversityWarning,
                stacklevel=2,
            )
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
        return [
            f"desiredSize ({desired}) must lie between minSize ({self._shown('min_size')}) and maxSize "
            f"({self._shown('max_size')}){fix}"
        ]

    def _gpu_problems(self) -> list[str]:
        counts = {t: gpu_count(t) for t in self.instance_types}
        ami = f"amiType {self.ami_type!r}" + ("" if "ami_type" in self.model_fields_set else " (the default)")
        if self.ami_type not in NVIDIA_AMI_TYPES:
            gpu_types = sorted(t for t, n in counts.items() if n is not None)
            if gpu_types:
                return [
                    f"instanceTypes {gpu_types} have NVIDIA GPUs but {ami} has no driver; set amiType: "
                    "AL2023_x86_64_NVIDIA"
                ]
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
            return [
                f"instanceTypes {unknown} are not known GPU types; set gpusPerNode, or use g4dn/g5/g6/g6e/p3/"
                "p4d/p5 types"
            ]
        if len(set(counts.values())) > 1:
            # The autoscaler sizes an empty group from one template node: mixed GPU counts make it guess wrong.
            return [f"instanceTypes mix GPU counts {counts}; a pool must have one GPU count per node"]
        return []

    @property
    def initial_size(self) -> int:
        """The node count at creation."""
        return self.min_size if self.desired_size is None else self.desired_size

    @property
    def is_gpu(self) -> bool:
        """Whether the pool runs the NVIDIA AMI (and so advertises ``nvidia.com/gpu``)."""
        return self.ami_type in NVIDIA_AMI_TYPES

    @property
    def gpus(self) -> int:
        """GPUs per node (0 for a CPU pool)."""
        if not self.is_gpu:
            return 0
        if self.gpus_per_node is not None:
            return self.gpus_per_node
        return gpu_count(self.instance_types[0]) or 0

    def autoscaler_tags(self, cluster_name: str) -> dict[str, str]:
        """The cluster-autoscaler tags for this pool's Auto Scaling group.

        Auto-discovery tags plus node-template tags describing a node of an empty group: its labels,
        taints, GPUs and ephemeral storage. Derived from the pool itself, so they cannot disagree with it.
        """
        tags = {
            "k8s.io/cluster-autoscaler/enabled": "true",
            f"k8s.io/cluster-autoscaler/{cluster_name}": "owned",
            f"{NODE_TEMPLATE}/label/eks.amazonaws.com/capacityType": self.capacity_type,
            f"{NODE_TEMPLATE}/label/eks.amazonaws.com/nodegroup": f"{cluster_name}-{self.name}",
            f"{NODE_TEMPLATE}/resources/ephemeral-storage": f"{self.disk_size_gib}Gi",
        }
        tags.update({f"{NODE_TEMPLATE}/label/{k}": v for k, v in self.labels.items()})
        tags.update({f"{NODE_TEMPLATE}/taint/{t.key}": f"{t.value}:{t.effect}" for t in self.taints})
        if self.is_gpu:
            tags[f"{NODE_TEMPLATE}/resources/{GPU_RESOURCE}"] = str(self.gpus)
        return tags


def k8s_minor(version: str) -> int | None:
    """The minor of a Kubernetes minor version (``"1.35"`` -> 35), or None when ``version`` is not one."""
    match = _K8S_MINOR.fullmatch(version)
    return int(match.group(1)) if match else None


def pool_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a pool (it names the node group ``<cluster>-<pool>``), or None."""
    if not _POOL_NAME.fullmatch(name):
        return (
            f"{name!r} is not a node pool name: 1-31 characters of a-z, 0-9 and '-', starting with a letter (it "
            "names the node group <cluster>-<pool>)"
        )
    return None


@dataclass(frozen=True)
class NodePoolDeps:
    """What a pool needs from its cluster (passed in, never looked up)."""

    cluster_name: pulumi.Input[str]
    cluster_version: str
    node_role_arn: pulumi.Input[str]
    subnet_ids: pulumi.Input[Sequence[pulumi.Input[str]]]
    security_group_ids: Sequence[pulumi.Input[str]]
    ebs_kms_key_arn: pulumi.Input[str] | None = None


@dataclass(frozen=True)
class NodePool:
    """The resources of one pool."""

    args: NodePoolArgs
    launch_template: aws.ec2.LaunchTemplate
    node_group: aws.eks.NodeGroup
    asg_tags: list[aws.autoscaling.Tag]


def create_node_pool(
    prefix: str, cluster_name: str, pool: NodePoolArgs, deps: NodePoolDeps, opts: pulumi.ResourceOptions
) -> NodePool:
    """Create a pool's launch template, node group and Auto Scaling group tags under ``opts.parent``."""
    name = f"{prefix}-{pool.name}"
    group_name = f"{cluster_name}-{pool.name}"
    template = aws.ec2.LaunchTemplate(
        name,
        description=f"{group_name}: IMDSv2 only, encrypted gp3 root volume",
        metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
            http_endpoint="enabled",
            http_tokens="required",
            # Hop limit 1 keeps pods from reaching the node role's credentials: they use IRSA instead.
            http_put_response_hop_limit=1,
            instance_metadata_tags="disabled",
        ),
        block_device_mappings=[
            aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                device_name="/dev/xvda",
                ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                    volume_size=pool.disk_size_gib,
                    volume_type="gp3",
                    encrypted="true",
                    kms_key_id=deps.ebs_kms_key_arn,
                    delete_on_termination="true",
                ),
            )
        ],
        vpc_security_group_ids=list(deps.security_group_ids),
        # NTH reads the managed tag from the instance itself (DescribeInstances); EKS copies neither node-group
        # nor ASG tags onto instances, but EC2 applies the launch template's instance tags at launch.
        tag_specifications=[
            aws.ec2.LaunchTemplateTagSpecificationArgs(
                resource_type="instance", tags={"Name": group_name, NTH_MANAGED_TAG: "true"}
            ),
            aws.ec2.LaunchTemplateTagSpecificationArgs(resource_type="volume", tags={"Name": group_name}),
        ],
        update_default_version=True,
        tags={"Name": group_name},
        opts=opts,
    )
    ca_tags = pool.autoscaler_tags(cluster_name)
    group_tags = {"Name": group_name, **ca_tags}
    node_group = aws.eks.NodeGroup(
        name,
        cluster_name=deps.cluster_name,
        node_group_name=group_name,
        node_role_arn=deps.node_role_arn,
        subnet_ids=deps.subnet_ids,
        instance_types=list(pool.instance_types),
        capacity_type=pool.capacity_type,
        ami_type=pool.ami_type,
        version=pool.version or deps.cluster_version,
        release_version=pool.release_version,
        scaling_config=aws.eks.NodeGroupScalingConfigArgs(
            min_size=pool.min_size, max_size=pool.max_size, desired_size=pool.initial_size
        ),
        update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable_percentage=pool.max_unavailable_percentage),
        labels=dict(pool.labels),
        taints=[aws.eks.NodeGroupTaintArgs(key=t.key, value=t.value or None, effect=t.eks_effect) for t in pool.taints],
        launch_template=aws.eks.NodeGroupLaunchTemplateArgs(id=template.id, version=template.latest_version.apply(str)),
        tags=group_tags,
        # The autoscaler owns the running count; Pulumi would otherwise scale the pool back on every `up`.
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(ignore_changes=["scalingConfig.desiredSize"])),
    )
    # EKS puts the auto-discovery tags on the node group's Auto Scaling group itself, but not other
    # node-group tags; the node-template tags go there one by one, where the autoscaler reads them.
    asg_name = node_group.resources.apply(lambda rs: rs[0].autoscaling_groups[0].name)  # type: ignore[index]
    asg_only = {k: v for k, v in group_tags.items() if k.startswith(NODE_TEMPLATE)}
    asg_tags = [
        aws.autoscaling.Tag(
            f"{name}-asg-{_slug(key)}",
            autoscaling_group_name=asg_name,
            tag=aws.autoscaling.TagTagArgs(key=key, value=value, propagate_at_launch=False),
            opts=opts,
        )
        for key, value in sorted(asg_only.items())
    ]
    return NodePool(pool, template, node_group, asg_tags)


def _slug(tag_key: str) -> str:
    # A stable resource-name suffix from a tag key: "k8s.io/.../taint/nvidia.com/gpu" -> "taint-nvidia-com-gpu".
    tail = tag_key.removeprefix(f"{NODE_TEMPLATE}/")
    return re.sub(r"[^a-z0-9]+", "-", tail.lower()).strip("-")
