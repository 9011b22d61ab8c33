"""The AWS Load Balancer Controller: turns ``ingressClassName: alb`` Ingresses into ALBs (weighted canaries)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pulumi
import pulumi_kubernetes as k8s

from mlplat.components.cluster_system import Chart, release

__all__ = ["install_load_balancer_controller"]

if TYPE_CHECKING:
    from mlplat.components.cluster import Cluster

CHART = Chart("aws-load-balancer-controller", "1.13.0", "https://aws.github.io/eks-charts")
SERVICE_ACCOUNT = "aws-load-balancer-controller"
CLUSTER_TAG = "elbv2.k8s.aws/cluster"


# The controller's IAM policy, verbatim from upstream at the chart's app version (chart 1.13.0 ships v2.13.0):
# https://github.com/kubernetes-sigs/aws-load-balancer-controller/blob/v2.13.0/docs/install/iam_policy.json
# (commit 73980cf11d1c79c310f4f14a089554f58b165d7d, git blob 761d0e73...; checked 2026-11-29). Bump it with CHART.
POLICY_FILE: Path = Path(__file__).parent / "data" / "aws-load-balancer-controller-iam-policy-v2.13.0.json"
POLICY_SOURCE = {
    "url": "https://github.com/kubernetes-sigs/aws-load-balancer-controller/blob/v2.13.0/docs/install/iam_policy.json",
    "tag": "v2.13.0",
    "commit": "73980cf11d1c79c310f4f14a089554f58b165d7d",
    "git_blob": "761d0e733c41089c91ea009dd29faf71918085e5",
    "checked": "2026-11-29",
}


def controller_policy() -> str:
    """The controller's permissions: the published ``iam_policy.json`` of its app version, as is.

    The controller uses grants a condensed copy missed (it opens the node security group to the ALB with
    unconditioned ``ec2:AuthorizeSecurityGroupIngress``, reorders rules with ``SetRulePriorities``), so the
    upstream document is shipped unchanged as package data and a test compares the rendered role against it.
    """
    return POLICY_FILE.read_text()


def _controller_values(
    cluster_name: pulumi.Input[str], region: str, vpc_id: pulumi.Input[str], role_arn: pulumi.Input[str]
) -> dict[str, Any]:
    return {
        "clusterName": cluster_name,
        "region": region,
        "vpcId": vpc_id,
        "replicaCount": 2,
        "serviceAccount": {
            "create": True,
            "name": SERVICE_ACCOUNT,
            "annotations": {"eks.amazonaws.com/role-arn": role_arn},
        },
        "podDisruptionBudget": {"maxUnavailable": 1},
    }


def install_load_balancer_controller(
    name: str, cluster: Cluster, region: str, vpc_id: pulumi.Input[str], opts: pulumi.ResourceOptions
) -> k8s.helm.v3.Release:
    """The controller's IRSA role and its Helm release in kube-system.

    The release waits for ``cluster.capacity`` (nodes, CNI, DNS) itself. Returns the Release: Services and
    Ingresses it serves (and anything else that needs its webhook) should pass it in ``depends_on``.
    """
    # The role is the caller's (``opts.parent``), as the release is: the cluster's outputs are registered already.
    role = cluster.service_account_role(
        "kube-system", SERVICE_ACCOUNT, controller_policy(), opts=pulumi.ResourceOptions(parent=opts.parent)
    )
    after_capacity = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=cluster.capacity))
    return release(
        f"{name}-aws-load-balancer-controller",
        CHART,
        _controller_values(cluster.cluster_name, region, vpc_id, role.arn),
        after_capacity,
    )
