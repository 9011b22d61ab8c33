"""The cluster's system workloads: cluster-autoscaler, spot interruption handling and the NVIDIA device plugin.

Each is a pinned Helm release installed through the cluster's own Kubernetes provider, with an IRSA role
scoped to what it does. The values are built here as plain data so tests can read them from the render.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from mlplat.components.iam import policy_document, statement
from mlplat.components.node_groups import GPU_RESOURCE, NTH_MANAGED_TAG, NodePoolArgs

ROLE_ARN_ANNOTATION = "eks.amazonaws.com/role-arn"
SYSTEM_NAMESPACE = "kube-system"
AUTOSCALER_SA = "cluster-autoscaler"
NTH_SA = "aws-node-termination-handler"

# Events aws-node-termination-handler acts on in queue mode (EventBridge -> SQS -> NTH cordons and drains).
INTERRUPTION_EVENTS: dict[str, dict[str, Any]] = {
    "spot-interruption": {"source": ["aws.ec2"], "detail-type": ["EC2 Spot Instance Interruption Warning"]},
    "rebalance": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance Rebalance Recommendation"]},
    "state-change": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance State-change Notification"]},
    "scheduled-change": {
        "source": ["aws.health"],
        "detail-type": ["AWS Health Event"],
        "detail": {"service": ["EC2"], "eventTypeCategory": ["scheduledChange"]},
    },
}


@dataclass(frozen=True)
class Chart:
    """A pinned Helm chart: name, version and repository URL."""

    name: str
    version: str
    repo: str


@dataclass(frozen=True)
class ChartVersions:
    """Pinned chart versions of the system workloads (bump deliberately, one at a time).

    Attributes:
        cluster_autoscaler: ``cluster-autoscaler`` chart; its app's minor should match the cluster's.
        node_termination_handler: ``aws-node-termination-handler`` chart (queue mode).
        nvidia_device_plugin: ``nvidia-device-plugin`` chart.
    """

    cluster_autoscaler: str = "9.46.0"
    node_termination_handler: str = "0.21.0"
    nvidia_device_plugin: str = "0.17.1"

    def autoscaler(self) -> Chart:
        return Chart("cluster-autoscaler", self.cluster_autoscaler, "https://kubernetes.github.io/autoscaler")

    def termination_handler(self) -> Chart:
        return Chart("aws-node-termination-handler", self.node_termination_handler, "https://aws.github.io/eks-charts")

    def device_plugin(self) -> Chart:
        return Chart("nvidia-device-plugin", self.nvidia_device_plugin, "https://nvidia.github.io/k8s-device-plugin")


def release(
    resource_name: str, chart: Chart, values: pulumi.Input[dict[str, Any]], opts: pulumi.ResourceOptions,
    namespace: pulumi.Input[str] = SYSTEM_NAMESPACE,
) -> k8s.helm.v3.Release:
    """A Helm release of a pinned chart (into kube-system unless ``namespace`` says otherwise)."""
    return k8s.helm.v3.Release(
        resource_name,
        k8s.helm.v3.ReleaseArgs(
            # The conventional release name (Helm caps names at 53 characters; an auto-name could exceed it).
            name=chart.name,
            chart=chart.name,
            version=chart.version,
            namespace=namespace,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=chart.repo),
            values=values,
            atomic=True,
            cleanup_on_fail=True,
        ),
        opts=opts,
    )


def autoscaler_policy(cluster_name: str) -> pulumi.Output[str]:
    """cluster-autoscaler's permissions: read anything it must inspect, resize only this cluster's groups."""
    return policy_document(
        [
            statement(
                [
                    "autoscaling:DescribeAutoScalingGroups",
                    "autoscaling:DescribeAutoScalingInstances",
                    "autoscaling:DescribeLaunchConfigurations",
                    "autoscaling:DescribeScalingActivities",
                    "autoscaling:DescribeTags",
                    "ec2:DescribeImages",
                    "ec2:DescribeInstanceTypes",
                    "ec2:DescribeLaunchTemplateVersions",
                    "ec2:GetInstanceTypesFromInstanceRequirements",
                    "eks:DescribeNodegroup",
                ],
                "*",
                sid="Describe",
            ),
            statement(
                ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"],
                "*",
                sid="ResizeOwnGroups",
                condition={"StringEquals": {f"aws:ResourceTag/k8s.io/cluster-autoscaler/{cluster_name}": "owned"}},
            ),
        ]
    )


def autoscaler_values(cluster_name: str, region: pulumi.Input[str], role_arn: pulumi.Input[str]) -> dict[str, Any]:
    """Helm values: auto-discovery by the cluster's tags, IRSA, on-demand nodes only."""
    return {
        "cloudProvider": "aws",
        "awsRegion": region,
        "autoDiscovery": {"clusterName": cluster_name},
        "rbac": {"serviceAccount": {"create": True, "name": AUTOSCALER_SA,
                                    "annotations": {ROLE_ARN_ANNOTATION: role_arn}}},
        "extraArgs": {
            "balance-similar-node-groups": True,
            "expander": "least-waste",
            "skip-nodes-with-system-pods": False,
            "scale-down-unneeded-time": "5m",
            # Per-node-group min/max/target sizes on /metrics: the GPU-pool-at-max alert compares them.
            "emit-per-nodegroup-metrics": True,
        },
        # A spot reclaim would take the autoscaler down exactly when it is needed.
        "nodeSelector": {"eks.amazonaws.com/capacityType": "ON_DEMAND"},
        "priorityClassName": "system-cluster-critical",
    }


def termination_handler_policy(queue_arn: pulumi.Input[str]) -> pulumi.Output[str]:
    """aws-node-termination-handler's permissions in queue mode."""
    return policy_document(
        [
            statement(["sqs:ReceiveMessage", "sqs:DeleteMessage"], [queue_arn], sid="Queue"),
            statement(
                [
                    "autoscaling:CompleteLifecycleAction",
                    "autoscaling:DescribeAutoScalingInstances",
                    "autoscaling:DescribeTags",
                    "ec2:DescribeInstances",
                ],
                "*",
                sid="Describe",
            ),
        ]
    )


def termination_handler_values(
    queue_url: pulumi.Input[str], region: pulumi.Input[str], role_arn: pulumi.Input[str]
) -> dict[str, Any]:
    """Helm values: queue mode, draining only nodes of groups tagged as managed by it."""
    return {
        "enableSqsTerminationDraining": True,
        "queueURL": queue_url,
        "awsRegion": region,
        "checkTagBeforeDraining": True,
        "managedTag": NTH_MANAGED_TAG,
        "serviceAccount": {"create": True, "name": NTH_SA, "annotations": {ROLE_ARN_ANNOTATION: role_arn}},
        "nodeSelector": {"eks.amazonaws.com/capacityType": "ON_DEMAND"},
    }


def device_plugin_values(gpu_pools: Sequence[NodePoolArgs]) -> dict[str, Any]:
    """Helm values: run on the GPU pools' nodes only (one affinity term per pool), tolerating their taints.

    The chart's default affinity expects node-feature-discovery labels, which these nodes do not carry,
    so it is replaced by the pools' own labels.
    """
    terms = [
        {"matchExpressions": [{"key": k, "operator": "In", "values": [v]} for k, v in sorted(p.labels.items())]}
        for p in gpu_pools
        if p.labels
    ]
    unique = {json.dumps(t.toleration(), sort_keys=True): t.toleration() for p in gpu_pools for t in p.taints}
    tolerations = list(unique.values())
    if not any(t["key"] == GPU_RESOURCE for t in tolerations):
        tolerations.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    return {
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}},
        "tolerations": tolerations,
        "priorityClassName": "system-node-critical",
    }


@dataclass(frozen=True)
class InterruptionQueue:
    """The SQS queue that EventBridge fills with interruption events."""

    queue: aws.sqs.Queue
    rules: list[aws.cloudwatch.EventRule]


def interruption_queue(prefix: str, opts: pulumi.ResourceOptions) -> InterruptionQueue:
    """An SQS queue fed by EventBridge rules for spot interruptions, rebalances, state changes and maintenance."""
    queue = aws.sqs.Queue(
        f"{prefix}-interruptions",
        # NTH must act within the two-minute spot warning; older messages are useless.
        message_retention_seconds=300,
        sqs_managed_sse_enabled=True,
        tags={"Name": f"{prefix}-interruptions"},
        opts=opts,
    )
    aws.sqs.QueuePolicy(
        f"{prefix}-interruptions",
        queue_url=queue.url,
        policy=policy_document(
            [
                {
                    "Sid": "EventBridge",
                    "Effect": "Allow",
                    "Principal": {"Service": ["events.amazonaws.com", "sqs.amazonaws.com"]},
                    "Action": "sqs:SendMessage",
                    "Resource": queue.arn,
                }
            ]
        ),
        opts=opts,
    )
    rules = []
    for event, pattern in INTERRUPTION_EVENTS.items():
        rule = aws.cloudwatch.EventRule(
            f"{prefix}-{event}",
            description=f"{event} events for aws-node-termination-handler",
            event_pattern=json.dumps(pattern),
            tags={"Name": f"{prefix}-{event}"},
            opts=opts,
        )
        aws.cloudwatch.EventTarget(f"{prefix}-{event}", rule=rule.name, arn=queue.arn, opts=opts)
        rules.append(rule)
    return InterruptionQueue(queue, rules)
