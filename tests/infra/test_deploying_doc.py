"""docs/deploying.md lists every version pin the code deploys, with the value the code uses."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from mlplat.components.cluster import DEFAULT_VERSION, AddonVersions
from mlplat.components.cluster_system import ChartVersions
from mlplat.components.load_balancer_controller import CHART as LBC_CHART
from mlplat.components.monitoring import CHART as MONITORING_CHART
from mlplat.components.registry import CUDA_BUILD_ARGS
from mlplat.components.tracking import DatabaseArgs


def pins(repo_root: Path) -> dict[str, str]:
    rows = {}
    for line in (repo_root / "docs" / "deploying.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[1].startswith("`"):
            rows[cells[0]] = cells[1].strip("`")
    return rows


def test_every_pin_in_the_code_has_its_row(repo_root: Path) -> None:
    doc = pins(repo_root)
    addons, charts = AddonVersions(), ChartVersions()
    requirements = dict(
        line.split("==")
        for line in (repo_root / "tracking" / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    expected = {
        "Kubernetes (EKS)": DEFAULT_VERSION,
        "vpc-cni add-on": addons.vpc_cni,
        "coredns add-on": addons.coredns,
        "kube-proxy add-on": addons.kube_proxy,
        "aws-ebs-csi-driver add-on": addons.aws_ebs_csi_driver,
        "metrics-server add-on": addons.metrics_server,
        "cluster-autoscaler chart": charts.cluster_autoscaler,
        "aws-node-termination-handler chart": charts.node_termination_handler,
        "nvidia-device-plugin chart": charts.nvidia_device_plugin,
        "aws-load-balancer-controller chart": LBC_CHART.version,
        "kube-prometheus-stack chart": MONITORING_CHART.version,
        "MLflow (tracking image, trainer, server)": requirements["mlflow"],
        "psycopg2-binary (tracking image)": requirements["psycopg2-binary"],
        "boto3 (tracking image)": requirements["boto3"],
        "PostgreSQL (RDS)": DatabaseArgs().engine_version,
        "CUDA training base": CUDA_BUILD_ARGS["BASE_IMAGE"],
    }
    assert {k: doc.get(k) for k in expected} == expected
    torch = re.search(r'TORCH_VERSION="\$\{TORCH_VERSION:-([\d.]+)\}"', (repo_root / "scripts/setup.sh").read_text())
    assert torch is not None and doc["torch"] == torch.group(1)
    for stack in ("dev", "production"):
        config = yaml.safe_load((repo_root / f"Pulumi.{stack}.yaml").read_text())["config"]["mlplat:cluster"]
        assert config["version"] == doc["Kubernetes (EKS)"]
        assert config["nodeGroups"]["gpu"]["releaseVersion"] == doc["GPU node AMI release"]
