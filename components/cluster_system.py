"""The cluster's system workloads: cluster-autoscaler, spot interruption handling and the NVIDIA device plugin.

Each is a pinned Helm release installed through the cluster's own Kubernetes provider, with an IRSA role scoped to
what it does. The values are built here as plain data so tests can read them from the render.

Spot interruptions are handled by both EKS and aws-node-termination-handler (NTH), split by event. EKS managed node
groups enable EC2 Auto Scaling Capacity Rebalancing on every SPOT group: on a rebalance recommendation EKS launches
a replacement node and, once it is Ready, cordons and drains the old one; if the two-minute interruption warning
comes first it starts draining, "on a best-effort basis" (EKS user guide, managed-node-groups, "Spot"). That is the
right answer to a rebalance recommendation (replace first, then drain), so the recommendation is left to EKS and not
sent to NTH, whose queue mode cordons and drains on every event it receives (NTH README, "Queue Processor": filter
what NTH handles through the EventBridge rules). NTH (queue mode) is kept for what EKS does not promise: a drain
that starts within seconds of the spot interruption warning, EC2 scheduled maintenance (AWS Health) and instance
state changes, on every pool. It drains only instances whose EC2 *instance* tags carry its managed tag
(``checkTagBeforeDraining``; it reads ``DescribeInstances`` tags, not the node group's or the Auto Scaling group's),
so each pool's launch template tags the instances it launches. NTH's own README says managed node groups do not need
it; the cost of keeping it is one small Deployment and one SQS queue, the gain is a guaranteed, prompt drain for the
training pods on the spot GPU pool.

Time budget of the two-minute warning: NTH reacts within ``NTH_REACTION_SECONDS`` (EventBridge delivery, its 1 s
queue poll, a DescribeInstances call, the cordon; an allowance, not a published figure), then evicts with each pod's
own grace period (``podTerminationGracePeriod: -1``) and waits for the drain up to the whole warning
(``nodeTerminationGracePeriod``). So a pod on a spot node must set ``terminationGracePeriodSeconds`` to at most
``SPOT_POD_GRACE_SECONDS``.
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
from mlplat.components.spec import Spec

ROLE_ARN_ANNOTATION = "eks.amazonaws.com/role-arn"
SYSTEM_NAMESPACE = "kube-system"
AUTOSCALER_SA = "cluster-autoscaler"
NTH_SA = "aws-node-termination-handler"

# Events aws-node-termination-handler acts on in queue mode (EventBridge -> SQS -> NTH cordons and drains).
# No rebalance recommendation: EKS managed node groups act on it themselves (see the module docstring), and NTH's
# queue mode would drain at once on it, before EKS has a replacement node Ready.
INTERRUPTION_EVENTS: dict[str, dict[str, Any]] = {
    "spot-interruption": {"source": ["aws.ec2"], "detail-type": ["EC2 Spot Instance Interruption Warning"]},
    "state-change": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance State-change Notification"]},
    "scheduled-change": {
        "source": ["aws.health"],
        "detail-type": ["AWS Health Event"],
        "detail": {"service": ["EC2"], "eventTypeCategory": ["scheduledChange"]},
    },
}


# EC2 gives a spot instance two minutes' warning before it reclaims it.
SPOT_WARNING_SECONDS = 120
NTH_REACTION_SECONDS = 30
SPOT_POD_GRACE_SECONDS = SPOT_WARNING_SECONDS - NTH_REACTION_SECONDS

# Helm release timeouts (seconds). Pulumi's Release waits up to `timeout` (default 300) for the chart's resources,
# and with `atomic` a timeout rolls the release back, so a slow image pull or volume must fit in it. The releases
# start only after the cluster's capacity (node groups, core add-ons) exists, so this covers the chart alone.
DEFAULT_RELEASE_TIMEOUT = 600
RELEASE_TIMEOUTS: dict[str, int] = {
    "cluster-autoscaler": 600,
    "aws-node-termination-handler": 600,
    # A DaemonSet on the GPU pool, which usually has no nodes: nothing to wait for.
    "nvidia-device-plugin": 300,
    "aws-load-balancer-controller": 600,
    # CRDs, the operator, then Prometheus and Alertmanager StatefulSets whose gp3 volumes are provisioned first.
    "kube-prometheus-stack": 900,
}

# The cluster-autoscaler app version each pinned chart ships (its minor must match the cluster's). Source: the
# chart's Chart.yaml at tag cluster-autoscaler-chart-<version> of github.com/kubernetes/autoscaler (checked 2026-11-29).
AUTOSCALER_APP_VERSIONS: dict[str, str] = {"9.46.0": "1.32.0", "9.59.0": "1.35.0"}


@dataclass(frozen=True)
class Chart:
    """A pinned Helm chart: name, version and repository URL (``https://`` index or ``oci://`` registry)."""

    name: str
    version: str
    repo: str


class ChartVersions(Spec):
    """Pinned chart versions of the system workloads (bump deliberately, one at a time); ``mlplat:cluster.charts``."""

    cluster_autoscaler: str = "9.59.0"
    """``cluster-autoscaler`` chart; its app's minor must match the cluster's (``AUTOSCALER_APP_VERSIONS``; 9.59.0
    ships 1.35.0)."""
    node_termination_handler: str = "0.27.6"
    """``aws-node-termination-handler`` chart (queue mode), from its upstream OCI registry: eks-charts removed it in
    2024 (last there: 0.21.0, app 1.19.0). 0.27.6 ships app 1.25.6."""
    nvidia_device_plugin: str = "0.17.1"
    """``nvidia-device-plugin`` chart."""

    def autoscaler(self) -> Chart:
        return Chart("cluster-autoscaler", self.cluster_autoscaler, "https://kubernetes.github.io/autoscaler")

    def termination_handler(self) -> Chart:
        return Chart("aws-node-termination-handler", self.node_termination_handler, "oci://public.ecr.aws/aws-ec2/helm")

    def device_plugin(self) -> Chart:
        return Chart("nvidia-device-plugin", self.nvidia_device_plugin, "https://nvidia.github.io/k8s-device-plugin")


def release(
    resource_name: str,
    chart: Chart,
    values: pulumi.Input[dict[str, Any]],
    opts: pulumi.ResourceOptions,
    namespace: pulumi.Input[str] = SYSTEM_NAMESPACE,
    *,
    timeout: int | None = None,
) -> k8s.helm.v3.Release:
    """A Helm release of a pinned chart (into kube-system unless ``namespace`` says otherwise).

    ``timeout`` (seconds) bounds the wait for the chart's resources; default ``RELEASE_TIMEOUTS[chart.name]``.
    The release is atomic: on a timeout Helm rolls it back. Pass the cluster's ``capacity`` in
    ``opts.depends_on`` so the wait does not start before there are nodes to run the pods.
    """
    oci = chart.repo.startswith("oci://")
    return k8s.helm.v3.Release(
        resource_name,
        k8s.helm.v3.ReleaseArgs(
            # The conventional release name (Helm caps names at 53 characters; an auto-name could exceed it).
            name=chart.name,
            chart=f"{chart.repo}/{chart.name}" if oci else chart.name,
            version=chart.version,
            namespace=namespace,
            repository_opts=None if oci else k8s.helm.v3.RepositoryOptsArgs(repo=chart.repo),
            values=values,
            atomic=True,
            cleanup_on_fail=True,
            timeout=timeout if timeout is not None else RELEASE_TIMEOUTS.get(chart.name, DEFAULT_RELEASE_TIMEOUT),
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
        "rbac": {
            "serviceAccount": {"create": True, "name": AUTOSCALER_SA, "annotations": {ROLE_ARN_ANNOTATION: role_arn}}
        },
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
    """Helm values: queue mode, draining only instances tagged as managed by it (see the module docstring)."""
    return {
        "enableSqsTerminationDraining": True,
        "queueURL": queue_url,
        "awsRegion": region,
        "checkTagBeforeDraining": True,
        "managedTag": NTH_MANAGED_TAG,
        # -1: evict with each pod's own terminationGracePeriodSeconds, never a shorter one.
        "podTerminationGracePeriod": -1,
        # The drain may take the whole spot warning.
        "nodeTerminationGracePeriod": SPOT_WARNING_SECONDS,
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
    """An SQS queue fed by EventBridge rules for spot interruption warnings, state changes and maintenance."""
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
