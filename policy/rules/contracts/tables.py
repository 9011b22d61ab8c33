"""What the contract rules know about objects they cannot see into, declared per pinned version.

pulumi-eks, EKS managed add-ons and Helm charts create Kubernetes objects (ServiceAccounts, Services,
DaemonSets, an IngressClass, CRDs) that the render does not show. The contract rules read those names from
these tables, never from guesses: each entry cites the chart or manifest at the version mlplat pins. A chart
at a version without an entry is reported (``contract-ref-chart-facts``) so the table is extended on purpose.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlplat.components.capacity import DAEMONSETS, DaemonSet
from mlplat.components.load_balancer_controller import POLICY_FILE
from mlplat.components.node_groups import NTH_MANAGED_TAG

BUILTIN_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
BUILTIN_PRIORITY_CLASSES = frozenset({"system-cluster-critical", "system-node-critical"})
DEFAULT_SERVICE_ACCOUNT = "default"
SKIP_AWAIT = "pulumi.com/skipAwait"
AWAIT_COMPLETION = "mlplat.io/await-completion"
"""Set to ``"true"`` on a Job that is *meant* to hold ``pulumi up`` until it completes (a migration)."""
REQUIRES = "mlplat.io/requires"
"""Comma-separated capabilities a workload needs from its image (e.g. ``psycopg2,boto3``), besides the derived ones."""
IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"
EKS_DEFAULT_GP2_BEFORE = 30
"""EKS created a ``gp2`` StorageClass in clusters before Kubernetes 1.30 (EKS user guide, "Storage classes")."""
EBS_PROVISIONERS = frozenset({"ebs.csi.aws.com", "kubernetes.io/aws-ebs"})

# EKS managed add-on -> the DaemonSet it runs on every node (requests: mlplat.components.capacity.DAEMONSETS,
# each with its source). All three tolerate every taint (operator: Exists).
ADDON_DAEMONSETS: dict[str, DaemonSet] = {
    "vpc-cni": DAEMONSETS["aws-node"],
    "kube-proxy": DAEMONSETS["kube-proxy"],
    "aws-ebs-csi-driver": DAEMONSETS["ebs-csi-node"],
}
NETWORK_ADDONS: tuple[str, ...] = ("vpc-cni", "kube-proxy", "coredns")
"""Add-ons without which a new node never turns Ready (CNI, service routing) or pods cannot resolve names."""


@dataclass(frozen=True)
class PodGroup:
    """Pods a chart runs, and where in its values their scheduling settings live.

    ``path``: the values key holding ``resources``, ``nodeSelector``, ``tolerations``, ``affinity``,
    ``priorityClassName`` for these pods (() for the values' root).
    """

    name: str
    path: tuple[str, ...] = ()
    daemonset: DaemonSet | None = None
    default_tolerations: tuple[Mapping[str, str], ...] = ()
    default_affinity: Mapping[str, Any] | None = None
    gpu_device_plugin: bool = False


@dataclass(frozen=True)
class ChartService:
    """A Service a chart creates: labels and ``(port name, port)`` pairs."""

    labels: Mapping[str, str]
    ports: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class ChartFacts:
    """What a chart creates, at the versions listed (each checked against its templates, cited in ``source``)."""

    versions: tuple[str, ...]
    source: str
    service_account_paths: tuple[tuple[str, ...], ...] = (("serviceAccount",),)
    pods: tuple[PodGroup, ...] = (PodGroup("controller"),)
    ingress_class: str | None = None
    crd_groups: frozenset[str] = frozenset()
    secret_refs: tuple[tuple[tuple[str, ...], tuple[tuple[str, ...], ...]], ...] = ()
    """(path to a Secret name, paths to its keys) in the values; the Secret is read in the release's namespace."""
    iam_actions: Mapping[str, tuple[dict[str, Any], ...]] = field(default_factory=dict)
    """Chart version -> the upstream IAM policy statements its controller needs."""
    services: tuple[ChartService, ...] = ()
    name_default: str = ""

    def service_accounts(self, values: Mapping[str, Any], release: str) -> list[tuple[str, str | None]]:
        """(name, role ARN annotation) of each ServiceAccount the chart creates with these values."""
        found = []
        for path in self.service_account_paths:
            sa = _at(values, path)
            sa = sa if isinstance(sa, Mapping) else {}
            if sa.get("create", True) is False:
                continue
            name = sa.get("name") or self.name_default or release
            annotations = sa.get("annotations") if isinstance(sa.get("annotations"), Mapping) else {}
            found.append((str(name), annotations.get(IRSA_ANNOTATION) if annotations else None))
        return found


def _at(values: Any, path: tuple[str, ...]) -> Any:
    for step in path:
        values = values.get(step) if isinstance(values, Mapping) else None
    return values


def _upstream_lbc_policy() -> tuple[dict[str, Any], ...]:
    document = json.loads(POLICY_FILE.read_text())
    return tuple(s for s in document["Statement"] if s.get("Effect") == "Allow")


# aws-node-termination-handler README (v1.25.x, "Queue Processor" IAM policy): what queue mode calls. Upstream
# grants the SQS calls on "*"; scoping them to the interruption queue is the same grant for the queue NTH reads
# ("ResourceOptional": any Resource is accepted).
NTH_QUEUE_POLICY: tuple[dict[str, Any], ...] = (
    {
        "Action": [
            "autoscaling:CompleteLifecycleAction",
            "autoscaling:DescribeAutoScalingInstances",
            "autoscaling:DescribeTags",
            "ec2:DescribeInstances",
        ],
        "Resource": "*",
    },
    {"Action": ["sqs:DeleteMessage", "sqs:ReceiveMessage"], "Resource": "*", "ResourceOptional": True},
)
# kubernetes/autoscaler cluster-autoscaler/cloudprovider/aws/README.md ("Full Cluster Autoscaler Features
# Policy"), for app 1.35: Describe* on everything, resize only the cluster's own groups (a tag condition is fine).
CLUSTER_AUTOSCALER_POLICY: tuple[dict[str, Any], ...] = (
    {
        "Action": [
            "autoscaling:DescribeAutoScalingGroups",
            "autoscaling:DescribeAutoScalingInstances",
            "autoscaling:DescribeLaunchConfigurations",
            "autoscaling:DescribeScalingActivities",
            "ec2:DescribeImages",
            "ec2:DescribeInstanceTypes",
            "ec2:DescribeLaunchTemplateVersions",
            "ec2:GetInstanceTypesFromInstanceRequirements",
            "eks:DescribeNodegroup",
        ],
        "Resource": "*",
    },
    {
        "Action": ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"],
        "Resource": "*",
        "ConditionOptional": True,
    },
)

NVIDIA_DEFAULT_TOLERATIONS: tuple[Mapping[str, str], ...] = (
    {"key": "CriticalAddonsOnly", "operator": "Exists"},
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
)
# The chart's default affinity wants node-feature-discovery / GPU-feature-discovery labels (values.yaml 0.17.1).
NVIDIA_DEFAULT_AFFINITY: Mapping[str, Any] = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {
                    "matchExpressions": [
                        {"key": "feature.node.kubernetes.io/pci-10de.present", "operator": "In", "values": ["true"]}
                    ]
                },
                {
                    "matchExpressions": [
                        {
                            "key": "feature.node.kubernetes.io/cpu-model.vendor_id",
                            "operator": "In",
                            "values": ["NVIDIA"],
                        }
                    ]
                },
                {"matchExpressions": [{"key": "nvidia.com/gpu.present", "operator": "In", "values": ["true"]}]},
            ]
        }
    }
}

CHARTS: dict[str, ChartFacts] = {
    "aws-load-balancer-controller": ChartFacts(
        versions=("1.13.0",),
        source="aws/eks-charts stable/aws-load-balancer-controller 1.13.0: templates/serviceaccount.yaml, "
        "ingressclass.yaml (ingressClass: alb, createIngressClassResource: true), deployment.yaml; "
        "webhook.yaml (mservice.elbv2.k8s.aws, failurePolicy Fail) mutates every Service",
        ingress_class="alb",
        iam_actions={"1.13.0": _upstream_lbc_policy()},
    ),
    "cluster-autoscaler": ChartFacts(
        versions=("9.46.0", "9.59.0"),
        source="kubernetes/autoscaler charts/cluster-autoscaler 9.59.0: templates/serviceaccount.yaml "
        "(rbac.serviceAccount), service.yaml (port named service.portName 'http', 8085; labels "
        "app.kubernetes.io/name <cloudProvider>-cluster-autoscaler, app.kubernetes.io/instance <release>)",
        service_account_paths=(("rbac", "serviceAccount"),),
        iam_actions={"9.46.0": CLUSTER_AUTOSCALER_POLICY, "9.59.0": CLUSTER_AUTOSCALER_POLICY},
        services=(ChartService({"app.kubernetes.io/name": "aws-cluster-autoscaler"}, (("http", 8085),)),),
    ),
    "aws-node-termination-handler": ChartFacts(
        versions=("0.27.6",),
        source="aws/aws-node-termination-handler config/helm/aws-node-termination-handler 0.27.6: queue mode "
        "(enableSqsTerminationDraining) runs a Deployment; checkTagBeforeDraining true and managedTag "
        f"{NTH_MANAGED_TAG!r} by default",
        iam_actions={"0.27.6": NTH_QUEUE_POLICY},
    ),
    "nvidia-device-plugin": ChartFacts(
        versions=("0.17.1",),
        source="NVIDIA/k8s-device-plugin deployments/helm/nvidia-device-plugin 0.17.1 values.yaml: a DaemonSet, "
        "tolerations CriticalAddonsOnly and nvidia.com/gpu:NoSchedule, affinity on NFD/GFD labels",
        service_account_paths=(),
        pods=(
            PodGroup(
                "device-plugin",
                daemonset=DAEMONSETS["nvidia-device-plugin"],
                default_tolerations=NVIDIA_DEFAULT_TOLERATIONS,
                default_affinity=NVIDIA_DEFAULT_AFFINITY,
                gpu_device_plugin=True,
            ),
        ),
    ),
    "kube-prometheus-stack": ChartFacts(
        versions=("75.15.0",),
        source="prometheus-community/helm-charts kube-prometheus-stack 75.15.0: values.yaml (prometheusSpec, "
        "alertmanagerSpec, grafana.admin.existingSecret), prometheus-node-exporter 4.47.3 DaemonSet "
        "(tolerations: NoSchedule, operator Exists), CRDs of monitoring.coreos.com",
        service_account_paths=(("alertmanager", "serviceAccount"),),
        pods=(
            PodGroup("prometheus", ("prometheus", "prometheusSpec")),
            PodGroup("alertmanager", ("alertmanager", "alertmanagerSpec")),
            PodGroup("grafana", ("grafana",)),
            PodGroup("operator", ("prometheusOperator",)),
            PodGroup(
                "node-exporter",
                ("prometheus-node-exporter",),
                daemonset=DAEMONSETS["node-exporter"],
                default_tolerations=({"effect": "NoSchedule", "operator": "Exists"},),
            ),
        ),
        crd_groups=frozenset({"monitoring.coreos.com"}),
        secret_refs=(
            (
                ("grafana", "admin", "existingSecret"),
                (("grafana", "admin", "userKey"), ("grafana", "admin", "passwordKey")),
            ),
        ),
    ),
}


def chart_name(chart: str) -> str:
    """``oci://registry/path/name`` or ``repo/name`` -> ``name``."""
    return chart.rstrip("/").rsplit("/", 1)[-1]


# --- Images ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageContents:
    """What an image carries, as capabilities (python packages, ``cuda``)."""

    provides: frozenset[str]
    source: str


# Repositories the platform's registry fills from this repository's Dockerfiles, by short name (the last path
# segment of the ECR repository); a tag ending in -cuda adds `cuda` (training/Dockerfile with CUDA build args).
OWN_IMAGES: dict[str, ImageContents] = {
    "tracking": ImageContents(
        frozenset({"mlflow", "psycopg2", "boto3", "Flask-WTF"}),
        "tracking/Dockerfile + tracking/requirements.txt (mlflow, psycopg2-binary, boto3, Flask-WTF)",
    ),
    "serving": ImageContents(frozenset({"mlplat-serve", "mlflow", "boto3"}), "serving/Dockerfile"),
    "training": ImageContents(frozenset({"mlplat-train", "mlflow", "boto3"}), "training/Dockerfile"),
}
CUDA_TAG_SUFFIX = "-cuda"
# Images from elsewhere that mlplat knows the contents of (repository -> contents; a tag suffix may add more).
EXTERNAL_IMAGES: dict[str, ImageContents] = {
    "ghcr.io/mlflow/mlflow": ImageContents(
        frozenset({"mlflow"}), "mlflow/mlflow docker/Dockerfile: `pip install mlflow==$VERSION` only"
    ),
}
EXTERNAL_FULL_SUFFIX = "-full"
EXTERNAL_FULL_EXTRAS = frozenset({"psycopg2", "boto3"})
"""ghcr.io/mlflow/mlflow:<v>-full (docker/Dockerfile.full) adds the db and extras extras."""
EXTERNAL_REGISTRIES = frozenset(
    {"public.ecr.aws", "registry.k8s.io", "ghcr.io", "docker.io", "quay.io", "nvcr.io", "gcr.io", "mcr.microsoft.com"}
)
"""Registries whose images a stack may run without building them (pulled from the internet through the NAT)."""
