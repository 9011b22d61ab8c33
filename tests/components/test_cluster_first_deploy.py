"""Cluster: what a first real `pulumi up` depends on (issue 14 items 5, 8, 9, 10, 12), rendered offline."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from mlplat.components import cluster_system as system
from mlplat.components.cluster import (
    DEFAULT_VERSION,
    STORAGE_CLASS,
    AddonVersions,
    Cluster,
    ClusterArgs,
    ClusterSpec,
)
from mlplat.components.k8s_versions import CHECKED, EKS_VERSIONS, UnknownVersion, support_status
from mlplat.components.load_balancer_controller import POLICY_FILE, POLICY_SOURCE, install_load_balancer_controller
from mlplat.infra.config import ENVIRONMENTS, preset
from mlplat.infra.engine import Render, render

EKS = "eks:index:Cluster"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
ADDON = "aws:eks/addon:Addon"
RELEASE = "kubernetes:helm.sh/v3:Release"
CORE_ADDONS = {"vpc-cni", "kube-proxy", "coredns", "aws-ebs-csi-driver"}


@pytest.fixture(scope="module")
def built() -> dict[str, Any]:
    """A Cluster with the default pools (on-demand CPU, spot GPU) and the load balancer controller."""
    made: dict[str, Any] = {}

    def program() -> None:
        cluster = Cluster(
            "c", ClusterArgs(vpc_id="vpc-1", private_subnet_ids=["subnet-a", "subnet-b"], region="us-east-1")
        )
        made["cluster"] = cluster
        made["lbc"] = install_load_balancer_controller(
            "c", cluster, "us-east-1", "vpc-1", pulumi.ResourceOptions(providers=[cluster.provider])
        )

    made["stack"] = render(program, project="mlplat", stack="test")
    return made


@pytest.fixture(scope="module")
def stack(built: dict[str, Any]) -> Render:
    return built["stack"]


def release(stack: Render, chart: str) -> Any:
    (found,) = [r for r in stack.by_type(RELEASE) if r.inputs["chart"].rsplit("/", 1)[-1] == chart]
    return found


# -- 5: Helm releases wait for capacity, with explicit timeouts ------------------------------------------------


def test_capacity_is_the_node_groups_and_the_addons_pods_need(built: dict[str, Any]) -> None:
    cluster: Cluster = built["cluster"]
    expected = [*cluster.node_groups.values(), *(cluster.addons[a] for a in sorted(CORE_ADDONS))]
    assert {id(r) for r in cluster.capacity} == {id(r) for r in expected}
    assert cluster.addons["metrics-server"] not in cluster.capacity  # HPAs need it; nothing's pods wait on it


def test_every_release_waits_for_the_clusters_capacity(stack: Render) -> None:
    capacity = {g.urn for g in stack.by_type(NODE_GROUP)} | {
        a.urn for a in stack.by_type(ADDON) if a.inputs["addonName"] in CORE_ADDONS
    }
    assert len(capacity) == 2 + len(CORE_ADDONS)
    releases = stack.by_type(RELEASE)
    assert {r.inputs["name"] for r in releases} == {
        "cluster-autoscaler",
        "aws-node-termination-handler",
        "nvidia-device-plugin",
        "aws-load-balancer-controller",
    }
    for r in releases:
        assert capacity <= set(r.options["depends_on"]), r.name


def test_install_load_balancer_controller_returns_its_release(built: dict[str, Any], stack: Render) -> None:
    lbc = release(stack, "aws-load-balancer-controller")
    assert isinstance(built["lbc"], pulumi.CustomResource) and lbc.name == "c-aws-load-balancer-controller"


def test_every_release_has_an_explicit_per_chart_timeout(stack: Render) -> None:
    for r in stack.by_type(RELEASE):
        chart = r.inputs["name"]
        assert r.inputs["timeout"] == system.RELEASE_TIMEOUTS[chart] >= 300, chart
        assert r.inputs["atomic"] is True  # so a timeout rolls back: the timeout must cover image pulls and volumes
    assert system.RELEASE_TIMEOUTS["kube-prometheus-stack"] > system.RELEASE_TIMEOUTS["cluster-autoscaler"]


# -- 8: the StorageClass PVCs name exists under that name ----------------------------------------------------


def test_storage_class_is_really_named_gp3(stack: Render) -> None:
    classes = stack.one(EKS).inputs["storageClasses"]
    assert STORAGE_CLASS == "gp3"
    assert classes[STORAGE_CLASS]["metadata"]["name"] == STORAGE_CLASS
    assert classes[STORAGE_CLASS]["type"] == "gp3" and classes[STORAGE_CLASS]["default"] is True


# -- 9: the load balancer controller's IAM policy is upstream's ----------------------------------------------


def _grants(policy: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    """(effect, action, resource, condition) for every action and resource a policy grants."""
    out = set()
    for stmt in policy["Statement"]:
        actions = stmt["Action"] if isinstance(stmt["Action"], list) else [stmt["Action"]]
        resources = stmt["Resource"] if isinstance(stmt["Resource"], list) else [stmt["Resource"]]
        condition = json.dumps(stmt.get("Condition", {}), sort_keys=True)
        out |= {(stmt["Effect"], a, r, condition) for a in actions for r in resources}
    return out


def test_shipped_policy_is_the_upstream_file_unchanged() -> None:
    blob = POLICY_FILE.read_bytes()
    git_blob = hashlib.sha1(b"blob %d\0" % len(blob) + blob).hexdigest()  # git's object id
    assert git_blob == POLICY_SOURCE["git_blob"]
    assert POLICY_SOURCE["tag"] == "v2.13.0" and POLICY_SOURCE["tag"] in POLICY_FILE.name  # chart 1.13.0's app


def test_controller_role_grants_everything_the_upstream_policy_grants(stack: Render) -> None:
    upstream = _grants(json.loads(POLICY_FILE.read_text()))
    (role,) = [r for r in stack.by_type("aws:iam/role:Role") if r.name.endswith("-aws-load-balancer-controller")]
    (inline,) = [p for p in stack.by_type("aws:iam/rolePolicy:RolePolicy") if p.inputs["role"] == role.id]
    ours = _grants(json.loads(inline.inputs["policy"]))
    assert upstream <= ours, sorted(upstream - ours)
    for needed in ("ec2:AuthorizeSecurityGroupIngress", "elasticloadbalancing:SetRulePriorities"):
        assert ("Allow", needed, "*", "{}") in ours  # unconditioned: the node security group is not the controller's


def test_policy_data_ships_in_the_wheel(repo_root: Path) -> None:
    setuptools = tomllib.loads((repo_root / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert POLICY_FILE.parent.name == "data"
    assert "mlplat.components.data" in setuptools["packages"]
    assert "*.json" in setuptools["package-data"]["mlplat.components.data"]


# -- 10: spot interruptions reach the handler and fit the warning ---------------------------------------------


def test_nth_managed_tag_is_on_every_instance_the_groups_launch(stack: Render) -> None:
    values = release(stack, "aws-node-termination-handler").inputs["values"]
    assert values["checkTagBeforeDraining"] is True
    templates = {t.id: t for t in stack.by_type(LAUNCH_TEMPLATE)}
    for group in stack.by_type(NODE_GROUP):
        template = templates[group.inputs["launchTemplate"]["id"]]
        tags = {t["resourceType"]: t["tags"] for t in template.inputs["tagSpecifications"]}
        # NTH reads the instance's own tags (DescribeInstances), so that is where the key must be.
        assert values["managedTag"] in tags["instance"], group.name
    # No non-propagated copy on the Auto Scaling group pretending to do the job.
    assert not [t for t in stack.by_type("aws:autoscaling/tag:Tag") if t.inputs["tag"]["key"] == values["managedTag"]]


def test_eventbridge_sends_the_spot_warning_and_leaves_rebalancing_to_eks(stack: Render) -> None:
    patterns = [json.loads(r.inputs["eventPattern"]) for r in stack.by_type("aws:cloudwatch/eventRule:EventRule")]
    kinds = {k for p in patterns for k in p["detail-type"]}
    assert "EC2 Spot Instance Interruption Warning" in kinds
    assert "EC2 Instance Rebalance Recommendation" not in kinds
    # EKS enables Capacity Rebalancing only on SPOT managed node groups: the spot pool must be one.
    assert "SPOT" in {g.inputs["capacityType"] for g in stack.by_type(NODE_GROUP)}


def test_drain_fits_in_the_two_minute_spot_warning(stack: Render) -> None:
    values = release(stack, "aws-node-termination-handler").inputs["values"]
    assert values["podTerminationGracePeriod"] == -1  # each pod's own grace period, never a shorter one
    assert values["nodeTerminationGracePeriod"] == system.SPOT_WARNING_SECONDS == 120
    assert system.SPOT_POD_GRACE_SECONDS + system.NTH_REACTION_SECONDS <= system.SPOT_WARNING_SECONDS
    assert system.SPOT_POD_GRACE_SECONDS == 90


def test_training_pods_fit_in_the_spot_warning(dev_stack: Render) -> None:
    jobs = [r for r in dev_stack.resources if r.type in ("kubernetes:batch/v1:Job", "kubernetes:batch/v1:CronJob")]
    assert jobs
    for job in jobs:
        spec = job.inputs["spec"]
        spec = spec["jobTemplate"]["spec"] if "jobTemplate" in spec else spec
        grace = spec["template"]["spec"].get("terminationGracePeriodSeconds", 30)
        assert grace <= system.SPOT_POD_GRACE_SECONDS, (job.name, grace)


# -- 12: the Kubernetes version is in standard support, and every pin matches it ----------------------------


def test_support_status_follows_the_eks_calendar() -> None:
    today = dt.date(2026, 11, 29)
    assert support_status("1.32", on=today) == "extended"
    assert support_status("1.31", on=today) == "unsupported"  # extended support ended 2026-11-26
    assert support_status("1.34", on=today) == "standard"
    assert support_status("1.34", on=dt.date(2026, 12, 2)) == "extended"  # billing starts that day
    assert support_status("1.28", on=today) == "unsupported"
    with pytest.raises(UnknownVersion, match=r"1\.36"):
        support_status("1.36", on=today)
    for entry in EKS_VERSIONS.values():
        assert entry.released < entry.standard_support_end < entry.extended_support_end


def test_new_clusters_start_in_standard_support(repo_root: Path) -> None:
    versions = {"ClusterSpec": ClusterSpec.model_fields["version"].default, "DEFAULT_VERSION": DEFAULT_VERSION}
    for env in ("dev", "production"):
        config = yaml.safe_load((repo_root / f"Pulumi.{env}.yaml").read_text())["config"]
        versions[f"Pulumi.{env}.yaml"] = config["mlplat:cluster"]["version"]
    assert set(versions.values()) == {"1.35"}, versions
    assert support_status(DEFAULT_VERSION, on=CHECKED) == "standard"
    # Standard support should last a few months past the check, not end next week.
    assert EKS_VERSIONS[DEFAULT_VERSION].standard_support_end - CHECKED > dt.timedelta(days=90)


def test_pins_match_the_kubernetes_version(repo_root: Path) -> None:
    minor = DEFAULT_VERSION
    assert AddonVersions().kube_proxy.startswith(f"v{minor}.")
    app = system.AUTOSCALER_APP_VERSIONS[system.ChartVersions().cluster_autoscaler]
    assert app.rsplit(".", 1)[0] == minor  # cluster-autoscaler's minor must match the cluster's
    releases = [
        pool["releaseVersion"]
        for env in ENVIRONMENTS
        for pool in preset(env)["mlplat:cluster"]["nodeGroups"].values()
        if "releaseVersion" in pool
    ]
    for env in ("dev", "production"):
        config = yaml.safe_load((repo_root / f"Pulumi.{env}.yaml").read_text())["config"]
        releases += [
            p["releaseVersion"] for p in config["mlplat:cluster"]["nodeGroups"].values() if "releaseVersion" in p
        ]
    assert releases and all(r.startswith(f"{minor}.") for r in releases), releases


def test_termination_handler_comes_from_its_upstream_registry(stack: Render) -> None:
    nth = release(stack, "aws-node-termination-handler")
    assert nth.inputs["chart"] == "oci://public.ecr.aws/aws-ec2/helm/aws-node-termination-handler"
    assert "repositoryOpts" not in nth.inputs and nth.inputs["version"] == "0.27.6"


def test_network_policies_are_enforced_by_the_cni(production_stack: Render) -> None:
    # ModelService and Tracking render NetworkPolicies; EKS enforces them only with the CNI's policy agent on.
    assert production_stack.by_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
    cni = production_stack.one("aws:eks/addon:Addon", "mlplat-production-vpc-cni")
    assert json.loads(cni.inputs["configurationValues"]) == {"enableNetworkPolicy": "true"}
