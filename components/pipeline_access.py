"""PipelineAccess: the ML pipeline's role inside the cluster, and nothing more.

``.github/workflows/ml-pipeline.yml``'s canary job assumes the bootstrap's pipeline role
(:class:`mlplat.components.bootstrap.GitHubAccess`) and runs kubectl for exactly this:

* in the services' namespace: ``rollout restart`` / ``rollout status`` / ``get`` of a ``<service>-canary``
  Deployment, and ``get pods -l ...`` (restart counts of the canary's pods);
* in the monitoring namespace: ``get svc`` and ``port-forward svc/...`` of Prometheus, to ask whether any of the
  service's alerts fire.

EKS's managed access policies are too wide for that even at namespace scope (``AmazonEKSEditPolicy`` reads and
writes every Secret, Deployment and ConfigMap there; ``AmazonEKSViewPolicy`` cannot restart or port-forward), so the
access entry maps the role to one Kubernetes group with no access policy, and a Role per namespace grants that group
those verbs on those objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from mlplat.components.monitoring import ALERTMANAGER_SERVICE_ACCOUNT
from mlplat.components.options import checked_when_known, component_args

__all__ = ["PipelineAccess", "PipelineAccessArgs"]

PIPELINE_GROUP = "mlplat:ml-pipeline"
"""The Kubernetes group of the pipeline's access entry (EKS forbids the ``system:`` prefix)."""
PIPELINE_ROLE_NAME = "mlplat-ml-pipeline"
"""The name of the Kubernetes Role and RoleBinding in each namespace."""
PROMETHEUS_SERVICE = ALERTMANAGER_SERVICE_ACCOUNT.removesuffix("-alertmanager") + "-prometheus"
"""kube-prometheus-stack's Prometheus Service: ``<fullname>-prometheus``, the release's fullname being the chart's."""


@dataclass(frozen=True)
class PipelineAccessArgs:
    """Arguments of :class:`PipelineAccess`.

    Attributes:
        cluster_name: The EKS cluster.
        role_arn: The pipeline's IAM role (the bootstrap's ``pipelineRoleArn``; an output is checked once known).
        service_namespace: Namespace of the model services; None: no services, no access there.
        canary_deployments: Names of the canary Deployments (``<service>-canary``) the pipeline may restart;
            the only Deployments it can touch.
        monitoring_namespace: Namespace of kube-prometheus-stack; None: no monitoring, no access there.
        prometheus_service: The Prometheus Service the pipeline port-forwards to.
    """

    cluster_name: pulumi.Input[str]
    role_arn: pulumi.Input[str]
    service_namespace: pulumi.Input[str] | None = None
    canary_deployments: Sequence[str] = ()
    monitoring_namespace: pulumi.Input[str] | None = None
    prometheus_service: str = PROMETHEUS_SERVICE

    def __post_init__(self) -> None:
        if not isinstance(self.role_arn, pulumi.Output):  # an Output: checked once known (PipelineAccess)
            _check_role_arn(self.role_arn)
        if isinstance(self.canary_deployments, str):
            raise ValueError("PipelineAccessArgs.canary_deployments: a list of Deployment names, not one string")
        if self.canary_deployments and self.service_namespace is None:
            raise ValueError("PipelineAccessArgs.canary_deployments needs service_namespace")


def _check_role_arn(role_arn: Any) -> None:
    if not isinstance(role_arn, str) or not role_arn.startswith("arn:aws:iam::") or ":role/" not in role_arn:
        raise ValueError(
            f"PipelineAccessArgs.role_arn={role_arn!r}: expected an IAM role ARN (arn:aws:iam::<account>:role/<name>)"
        )


def _canary_rules(deployments: Sequence[str]) -> list[k8s.rbac.v1.PolicyRuleArgs]:
    """What ``rollout restart|status`` and ``get`` of the named Deployments, and ``get pods -l``, need."""
    return [
        # restart = get + patch; status = get + a watch with fieldSelector metadata.name=<name>, which RBAC
        # admits under resourceNames (list and watch included for that reason).
        k8s.rbac.v1.PolicyRuleArgs(
            api_groups=["apps"],
            resources=["deployments"],
            resource_names=list(deployments),
            verbs=["get", "list", "watch", "patch"],
        ),
        # A label selector cannot be limited by resourceNames: the namespace's pods, listed only.
        k8s.rbac.v1.PolicyRuleArgs(api_groups=[""], resources=["pods"], verbs=["list"]),
    ]


def _prometheus_rules(service: str) -> list[k8s.rbac.v1.PolicyRuleArgs]:
    """What ``get svc <service>`` and ``port-forward svc/<service>`` need."""
    return [
        k8s.rbac.v1.PolicyRuleArgs(api_groups=[""], resources=["services"], resource_names=[service], verbs=["get"]),
        # port-forward to a Service resolves it to a pod by its selector: list, then get the pod it picked.
        k8s.rbac.v1.PolicyRuleArgs(api_groups=[""], resources=["pods"], verbs=["get", "list"]),
        # The operator names Prometheus' pods, so they are not listed by name. kubectl's WebSocket port-forward is
        # authorized as `get` up to Kubernetes 1.34 and also as `create` from 1.35 (AuthorizePodWebsocketUpgrade-
        # CreatePermission); the SPDY one as `create`.
        k8s.rbac.v1.PolicyRuleArgs(api_groups=[""], resources=["pods/portforward"], verbs=["get", "create"]),
    ]


class PipelineAccess(pulumi.ComponentResource):
    """An EKS access entry for the ML pipeline's role (a Kubernetes group, no access policy) and, per namespace the
    pipeline works in, a Role with only the verbs its kubectl commands use, bound to that group.

    ``access_entry`` is the EKS access entry resource.
    """

    access_entry_arn: pulumi.Output[str]
    """The EKS access entry's ARN."""

    def __init__(
        self,
        name: str,
        args: PipelineAccessArgs | None = None,
        opts: pulumi.ResourceOptions | None = None,
        **kwargs: Any,
    ) -> None:
        args = component_args("PipelineAccess", PipelineAccessArgs, args, kwargs)
        super().__init__("mlplat:cluster:PipelineAccess", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.access_entry = aws.eks.AccessEntry(
            name,
            cluster_name=args.cluster_name,
            principal_arn=checked_when_known(args.role_arn, _check_role_arn),
            type="STANDARD",
            kubernetes_groups=[PIPELINE_GROUP],
            tags={"Name": name},
            opts=child,
        )
        grants: list[tuple[str, pulumi.Input[str], list[k8s.rbac.v1.PolicyRuleArgs]]] = []
        if args.service_namespace is not None and args.canary_deployments:
            grants.append(("canary", args.service_namespace, _canary_rules(args.canary_deployments)))
        if args.monitoring_namespace is not None:
            grants.append(("prometheus", args.monitoring_namespace, _prometheus_rules(args.prometheus_service)))
        for suffix, namespace, rules in grants:
            metadata = k8s.meta.v1.ObjectMetaArgs(
                name=PIPELINE_ROLE_NAME, namespace=namespace, labels={"app.kubernetes.io/managed-by": "mlplat"}
            )
            role = k8s.rbac.v1.Role(f"{name}-{suffix}", metadata=metadata, rules=rules, opts=child)
            k8s.rbac.v1.RoleBinding(
                f"{name}-{suffix}",
                metadata=metadata,
                role_ref=k8s.rbac.v1.RoleRefArgs(
                    api_group="rbac.authorization.k8s.io", kind="Role", name=PIPELINE_ROLE_NAME
                ),
                subjects=[
                    k8s.rbac.v1.SubjectArgs(api_group="rbac.authorization.k8s.io", kind="Group", name=PIPELINE_GROUP)
                ],
                # The group exists once the access entry maps the role to it.
                opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[role, self.access_entry])),
            )
        self.access_entry_arn = self.access_entry.access_entry_arn
        self.register_outputs({"access_entry_arn": self.access_entry_arn})
