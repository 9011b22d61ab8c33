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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import pulumi
import pulumi_aws as aws

from mlplat.components.validation import check_list_of_names

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
_EKS_EFFECTS: dict[str, str] = {"NoSchedule": "NO_SCHEDULE", "PreferNoSchedule": "PREFER_NO_SCHEDULE",
                                "NoExecute": "NO_EXECUTE"}

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
            raise ValueError(f"taint {text!r} is not of the form key=value:Effect "
                             "(e.g. nvidia.com/gpu=true:NoSchedule)")
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


@dataclass(frozen=True)
class NodePoolArgs:
    """One EKS managed node group.

    Attributes:
        name: Pool name, ``[a-z][a-z0-9-]*``; the node group is named ``<cluster>-<name>``.
        instance_types: EC2 instance types the group may launch; list several for spot (capacity pools).
        capacity_type: ``ON_DEMAND`` or ``SPOT``.
        min_size: Smallest node count; 0 lets the autoscaler empty the pool (scale from zero).
        max_size: Largest node count the autoscaler may reach.
        desired_size: Node count at creation; default ``min_size``. Later changes are ignored, because the
            autoscaler owns the running count and Pulumi must not reset it on every ``up``.
        disk_size_gib: Root volume size (encrypted gp3) in GiB; images and datasets land here.
        labels: Kubernetes labels on every node (and in the autoscaler's node template).
        taints: Kubernetes taints on every node (and in the autoscaler's node template).
        ami_type: An AL2023 EKS AMI type; ``*_NVIDIA`` for GPU instances (driver and container toolkit).
        version: Kubernetes minor version of the nodes; default the cluster's. Pinned per pool so an
            upgrade goes control plane first, then pool by pool.
        release_version: The EKS AMI release to run (e.g. ``1.35.6-20260714``); default: the latest at
            creation, then left alone. Pin it for GPU pools so driver versions change only on purpose.
        gpus_per_node: NVIDIA GPUs per node, advertised to the autoscaler for an empty pool; derived from
            the instance types for known GPU families, required for others with an NVIDIA AMI.
        max_unavailable_percentage: Share of nodes replaced at once during an AMI or version update.
    """

    name: str
    instance_types: Sequence[str]
    capacity_type: CapacityType = "ON_DEMAND"
    min_size: int = 1
    max_size: int = 3
    desired_size: int | None = None
    disk_size_gib: int = 50
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: Sequence[Taint] = ()
    ami_type: str = "AL2023_x86_64_STANDARD"
    version: str | None = None
    release_version: str | None = None
    gpus_per_node: int | None = None
    max_unavailable_percentage: int = 33

    def __post_init__(self) -> None:
        check_list_of_names(f"NodePoolArgs({self.name!r})", "instance_types", self.instance_types)
        errors, notes = check_pool(self)
        if errors:
            raise ValueError(f"node pool {self.name!r}: " + "; ".join(errors))
        for note in notes:
            warnings.warn(f"node pool {self.name!r}: {note}", SpotDiversityWarning, stacklevel=3)

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


def check_pool(pool: NodePoolArgs) -> tuple[list[str], list[str]]:
    """Validate a pool: (errors, warnings), each a sentence naming the field, the value and what is allowed."""
    types = list(pool.instance_types)
    errors = [
        *_check_pool_name(pool),
        *_check_instance_types(types),
        *_check_capacity_type(pool),
        *_check_sizes(pool),
        *_check_disk_and_updates(pool),
        *_check_labels_and_taints(pool),
        *_check_ami_type(pool),
        *_check_gpus(pool, types),
        *_check_release_version(pool),
    ]
    return errors, _spot_notes(pool, types)


def _check_pool_name(pool: NodePoolArgs) -> list[str]:
    if not _POOL_NAME.fullmatch(pool.name):
        return [f"name {pool.name!r} must be 1-31 characters of a-z, 0-9 and '-', starting with a letter"]
    return []


def _check_instance_types(types: list[str]) -> list[str]:
    errors: list[str] = []
    if not types:
        errors.append("instance_types is empty; list at least one EC2 instance type such as m6i.xlarge")
    bad = [t for t in types if not _INSTANCE_TYPE.fullmatch(t)]
    if bad:
        errors.append(f"instance_types {bad} are not EC2 instance type names such as m6i.xlarge")
    if len(set(types)) != len(types):
        errors.append(f"instance_types {types} lists a type twice")
    return errors


def _check_capacity_type(pool: NodePoolArgs) -> list[str]:
    if pool.capacity_type not in ("ON_DEMAND", "SPOT"):
        return [f"capacity_type {pool.capacity_type!r} is not one of ON_DEMAND, SPOT"]
    return []


def _check_sizes(pool: NodePoolArgs) -> list[str]:
    errors: list[str] = []
    if pool.min_size < 0:
        errors.append(f"min_size ({pool.min_size}) must be 0 or more")
    if pool.max_size < 1:
        errors.append(f"max_size ({pool.max_size}) must be at least 1")
    if pool.min_size > pool.max_size:
        errors.append(f"min_size ({pool.min_size}) is greater than max_size ({pool.max_size})")
    elif pool.desired_size is not None and not pool.min_size <= pool.desired_size <= pool.max_size:
        errors.append(f"desired_size ({pool.desired_size}) must lie between min_size ({pool.min_size}) "
                      f"and max_size ({pool.max_size})")
    return errors


def _check_disk_and_updates(pool: NodePoolArgs) -> list[str]:
    errors: list[str] = []
    if not 20 <= pool.disk_size_gib <= 16384:
        errors.append(f"disk_size_gib ({pool.disk_size_gib}) must be between 20 and 16384")
    if not 1 <= pool.max_unavailable_percentage <= 100:
        errors.append(f"max_unavailable_percentage ({pool.max_unavailable_percentage}) must be between 1 and 100")
    return errors


def _check_labels_and_taints(pool: NodePoolArgs) -> list[str]:
    errors = [
        f"label {key}={value!r} is not a valid Kubernetes label (name up to 63 characters "
        "of letters, digits, '-', '_', '.', with an optional DNS prefix)"
        for key, value in pool.labels.items()
        if not _LABEL_KEY.fullmatch(key) or not _LABEL_VALUE.fullmatch(value)
    ]
    keys = [t.key for t in pool.taints]
    if len(set(keys)) != len(keys):
        errors.append(f"taints {[str(t) for t in pool.taints]} repeat a key; the autoscaler keeps one per key")
    return errors


def _check_ami_type(pool: NodePoolArgs) -> list[str]:
    if pool.ami_type not in AMI_TYPES:
        return [f"ami_type {pool.ami_type!r} is not one of {', '.join(AMI_TYPES)}"]
    return []


def _check_release_version(pool: NodePoolArgs) -> list[str]:
    if pool.version is not None and pool.release_version is not None \
            and not pool.release_version.startswith(pool.version + "."):
        return [f"release_version {pool.release_version!r} is not a release of Kubernetes {pool.version} "
                f"(expected {pool.version}.<patch>-<date>)"]
    return []


def _spot_notes(pool: NodePoolArgs, types: list[str]) -> list[str]:
    if pool.capacity_type == "SPOT" and len(types) == 1:
        return [f"SPOT with a single instance type ({types[0]}) is interrupted together and may find no "
                "capacity; list several similar types (e.g. g5.xlarge, g6.xlarge, g4dn.xlarge)"]
    return []


def _check_gpus(pool: NodePoolArgs, types: list[str]) -> list[str]:
    counts = {t: gpu_count(t) for t in types}
    gpu_types = sorted(t for t, n in counts.items() if n is not None)
    if pool.ami_type not in NVIDIA_AMI_TYPES:
        if gpu_types:
            return [f"instance_types {gpu_types} have NVIDIA GPUs but ami_type {pool.ami_type!r} has no driver; "
                    "use AL2023_x86_64_NVIDIA"]
        if pool.gpus_per_node:
            return [f"gpus_per_node={pool.gpus_per_node} needs an NVIDIA ami_type, not {pool.ami_type!r}"]
        return []
    if pool.gpus_per_node is not None:
        if pool.gpus_per_node < 1:
            return [f"gpus_per_node ({pool.gpus_per_node}) must be at least 1 for an NVIDIA pool"]
        wrong = {t: n for t, n in counts.items() if n is not None and n != pool.gpus_per_node}
        return [f"gpus_per_node={pool.gpus_per_node} contradicts {wrong}"] if wrong else []
    unknown = sorted(t for t, n in counts.items() if n is None)
    if unknown:
        return [f"instance_types {unknown} are not known GPU types; set gpus_per_node, or use g4dn/g5/g6/g6e/p3/"
                "p4d/p5 types"]
    if len(set(counts.values())) > 1:
        # The autoscaler sizes an empty group from one template node: mixed GPU counts make it guess wrong.
        return [f"instance_types mix GPU counts {counts}; a group must have one GPU count per node"]
    return []


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
            aws.ec2.LaunchTemplateTagSpecificationArgs(resource_type="instance",
                                                       tags={"Name": group_name, NTH_MANAGED_TAG: "true"}),
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
        taints=[aws.eks.NodeGroupTaintArgs(key=t.key, value=t.value or None, effect=t.eks_effect)
                for t in pool.taints],
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
