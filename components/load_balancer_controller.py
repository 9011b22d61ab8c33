"""The AWS Load Balancer Controller: turns ``ingressClassName: alb`` Ingresses into ALBs (weighted canaries)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pulumi
import pulumi_kubernetes as k8s

from mlplat.components.cluster_system import Chart, release
from mlplat.components.iam import policy_document, statement

if TYPE_CHECKING:
    from mlplat.components.cluster import Cluster

CHART = Chart("aws-load-balancer-controller", "1.13.0", "https://aws.github.io/eks-charts")
SERVICE_ACCOUNT = "aws-load-balancer-controller"
CLUSTER_TAG = "elbv2.k8s.aws/cluster"


def controller_policy() -> pulumi.Output[str]:
    """The controller's permissions, condensed from its published ``iam_policy.json``.

    Reads are account-wide (the API has no resource scoping for them); writes to load balancers, target
    groups and security groups are limited to resources carrying the controller's ``elbv2.k8s.aws/cluster``
    tag, or to creating resources with it, as the published policy does.
    """
    tagged = {"Null": {f"aws:ResourceTag/{CLUSTER_TAG}": "false"}}
    requested = {"Null": {f"aws:RequestTag/{CLUSTER_TAG}": "false"}}
    return policy_document(
        [
            statement(["iam:CreateServiceLinkedRole"], "*",
                      condition={"StringEquals": {"iam:AWSServiceName": "elasticloadbalancing.amazonaws.com"}}),
            statement(
                ["ec2:Describe*", "ec2:GetCoipPoolUsage", "ec2:GetSecurityGroupsForVpc",
                 "elasticloadbalancing:Describe*", "acm:ListCertificates", "acm:DescribeCertificate",
                 "iam:ListServerCertificates",
                 "iam:GetServerCertificate", "cognito-idp:DescribeUserPoolClient", "wafv2:GetWebACL",
                 "wafv2:GetWebACLForResource", "wafv2:AssociateWebACL", "wafv2:DisassociateWebACL",
                 "shield:GetSubscriptionState", "shield:DescribeProtection", "tag:GetResources"],
                "*",
                sid="Read",
            ),
            statement(["ec2:CreateSecurityGroup", "ec2:CreateTags"], "*", sid="CreateTaggedSecurityGroups",
                      condition=requested),
            statement(["ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress",
                       "ec2:DeleteSecurityGroup", "ec2:CreateTags", "ec2:DeleteTags"], "*",
                      sid="ManageOwnSecurityGroups", condition=tagged),
            statement(["elasticloadbalancing:CreateLoadBalancer", "elasticloadbalancing:CreateTargetGroup",
                       "elasticloadbalancing:AddTags"], "*", sid="CreateTaggedLoadBalancers", condition=requested),
            statement(["elasticloadbalancing:CreateListener", "elasticloadbalancing:DeleteListener",
                       "elasticloadbalancing:CreateRule", "elasticloadbalancing:DeleteRule",
                       "elasticloadbalancing:ModifyListener", "elasticloadbalancing:ModifyRule",
                       "elasticloadbalancing:AddListenerCertificates",
                       "elasticloadbalancing:RemoveListenerCertificates"], "*", sid="Listeners"),
            statement(["elasticloadbalancing:ModifyLoadBalancerAttributes", "elasticloadbalancing:SetIpAddressType",
                       "elasticloadbalancing:SetSecurityGroups", "elasticloadbalancing:SetSubnets",
                       "elasticloadbalancing:DeleteLoadBalancer", "elasticloadbalancing:ModifyTargetGroup",
                       "elasticloadbalancing:ModifyTargetGroupAttributes", "elasticloadbalancing:DeleteTargetGroup",
                       "elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets",
                       "elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags",
                       "elasticloadbalancing:SetWebAcl"], "*", sid="ManageOwnLoadBalancers", condition=tagged),
        ]
    )


def controller_values(cluster_name: pulumi.Input[str], region: str, vpc_id: pulumi.Input[str],
                      role_arn: pulumi.Input[str]) -> dict[str, Any]:
    return {
        "clusterName": cluster_name,
        "region": region,
        "vpcId": vpc_id,
        "replicaCount": 2,
        "serviceAccount": {"create": True, "name": SERVICE_ACCOUNT,
                           "annotations": {"eks.amazonaws.com/role-arn": role_arn}},
        "podDisruptionBudget": {"maxUnavailable": 1},
    }


def install_load_balancer_controller(
    name: str, cluster: Cluster, region: str, vpc_id: pulumi.Input[str], opts: pulumi.ResourceOptions
) -> k8s.helm.v3.Release:
    """The controller's IRSA role and its Helm release in kube-system."""
    role = cluster.service_account_role("kube-system", SERVICE_ACCOUNT, controller_policy())
    return release(f"{name}-aws-load-balancer-controller", CHART,
                   controller_values(cluster.cluster_name, region, vpc_id, role.arn), opts)
