"""Cluster: EKS, node pools that scale from zero, add-ons, IRSA, system charts; rendered by the offline engine."""

from __future__ import annotations

import collections
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from mlplat.components.cluster import Cluster, ClusterArgs, ClusterSpec, ClusterWiring, default_node_pools
from mlplat.components.node_groups import NodePoolArgs, SpotDiversityWarning, Taint
from mlplat.infra.config import ConfigError, load, preset
from mlplat.infra.engine import Render, ResourceRecord
from mlplat.infra.program import build

EKS = "eks:index:Cluster"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
ASG_TAG = "aws:autoscaling/tag:Tag"
ROLE = "aws:iam/role:Role"
ADDON = "aws:eks/addon:Addon"
RELEASE = "kubernetes:helm.sh/v3:Release"
TEMPLATE = "k8s.io/cluster-autoscaler/node-template"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}
BASE = {"aws:region": "us-east-1"}


def pool(stack: Render, name: str) -> ResourceRecord:
    return stack.one(NODE_GROUP, f"mlplat-{stack.stack}-{name}")


def release(stack: Render, chart: str) -> ResourceRecord:
    (found,) = [r for r in stack.by_type(RELEASE) if r.inputs["chart"].rsplit("/", 1)[-1] == chart]
    return found


def role(stack: Render, suffix: str) -> ResourceRecord:
    (found,) = [r for r in stack.by_type(ROLE) if r.name.endswith(suffix)]
    return found


def asg_tags_of(stack: Render, group: ResourceRecord) -> dict[str, str]:
    return {
        t.inputs["tag"]["key"]: t.inputs["tag"]["value"]
        for t in stack.by_type(ASG_TAG)
        if t.inputs["autoscalingGroupName"].startswith(f"eks-{group.inputs['nodeGroupName']}-")
    }


def issuer_of(stack: Render) -> str:
    return str(stack.outputs["oidcProviderArn"]).split(":oidc-provider/", 1)[1]


def config(env: str, cluster: dict[str, Any]) -> dict[str, str]:
    """The env's preset pools with the given pools' fields changed (a stack's nodeGroups replace the preset's)."""
    if "nodeGroups" in cluster:
        pools = preset(env)["mlplat:cluster"]["nodeGroups"]
        changed = {name: {**pools.get(name, {}), **pool} for name, pool in cluster["nodeGroups"].items()}
        cluster = {**cluster, "nodeGroups": {**pools, **changed}}
    return {**BASE, "mlplat:environment": env, "mlplat:cluster": json.dumps(cluster)}


def cluster_problems(env: str, cluster: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(config(env, cluster))
    return caught.value.problems


# -- node pools ------------------------------------------------------------------------------------------


def test_gpu_pool_is_spot_from_zero_tainted_and_diversified(production_stack: Render, dev_stack: Render) -> None:
    for stack in (production_stack, dev_stack):
        gpu = pool(stack, "gpu")
        assert gpu.inputs["capacityType"] == "SPOT"
        assert gpu.inputs["scalingConfig"]["minSize"] == 0 and gpu.inputs["scalingConfig"]["desiredSize"] == 0
        assert gpu.inputs["taints"] == [GPU_TAINT]
        assert gpu.inputs["labels"] == {"workload": "gpu"}
        assert len(gpu.inputs["instanceTypes"]) >= 3
        assert {t.split(".")[0] for t in gpu.inputs["instanceTypes"]} >= {"g5", "g6", "g4dn"}
        assert gpu.inputs["amiType"] == "AL2023_x86_64_NVIDIA"


def test_cpu_pool_is_on_demand_and_spans_the_private_subnets(production_stack: Render) -> None:
    cpu = pool(production_stack, "cpu")
    assert cpu.inputs["capacityType"] == "ON_DEMAND"
    assert cpu.inputs["amiType"] == "AL2023_x86_64_STANDARD"
    assert (cpu.inputs["scalingConfig"]["minSize"], cpu.inputs["scalingConfig"]["maxSize"]) == (3, 10)
    private = {
        s.id
        for s in production_stack.by_type("aws:ec2/subnet:Subnet")
        if s.inputs["tags"]["mlplat.io/tier"] == "private"
    }
    assert set(cpu.inputs["subnetIds"]) == private and len(private) == 3
    assert "taints" not in cpu.inputs or cpu.inputs["taints"] == []


def test_every_launch_template_requires_imdsv2_with_hop_limit_one_and_encrypted_gp3(
    production_stack: Render, dev_stack: Render
) -> None:
    for stack in (production_stack, dev_stack):
        templates = {t.id: t for t in stack.by_type(LAUNCH_TEMPLATE)}
        assert len(templates) == len(stack.by_type(NODE_GROUP)) == 2
        for group in stack.by_type(NODE_GROUP):
            template = templates[group.inputs["launchTemplate"]["id"]]  # each group runs its own template
            meta = template.inputs["metadataOptions"]
            assert (meta["httpTokens"], meta["httpPutResponseHopLimit"]) == ("required", 1)
            (disk,) = template.inputs["blockDeviceMappings"]
            assert disk["ebs"]["volumeType"] == "gp3" and disk["ebs"]["encrypted"] == "true"
            assert "diskSize" not in group.inputs  # the size lives in the launch template, as EKS requires


def test_pulumi_leaves_desired_size_to_the_autoscaler(production_stack: Render) -> None:
    for group in production_stack.by_type(NODE_GROUP):
        assert group.options["ignore_changes"] == ["scalingConfig.desiredSize"]


def test_node_groups_carry_their_own_version_and_gpu_ami_is_pinned(production_stack: Render) -> None:
    eks = production_stack.one(EKS)
    for group in production_stack.by_type(NODE_GROUP):
        assert group.inputs["version"] == eks.inputs["version"] == "1.35"
    assert pool(production_stack, "gpu").inputs["releaseVersion"] == "1.35.6-20260714"


def test_node_role_has_only_what_nodes_need(production_stack: Render) -> None:
    node_role = production_stack.one(ROLE, "mlplat-production-node")
    assert json.loads(node_role.inputs["assumeRolePolicy"])["Statement"][0]["Principal"] == {
        "Service": "ec2.amazonaws.com"
    }
    attached = {
        a.inputs["policyArn"].rsplit("/", 1)[-1]
        for a in production_stack.by_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        if a.inputs["role"] == node_role.id
    }
    assert attached == {"AmazonEKSWorkerNodePolicy", "AmazonEC2ContainerRegistryPullOnly"}
    assert {g.inputs["nodeRoleArn"] for g in production_stack.by_type(NODE_GROUP)} == {
        f"arn:aws:iam::123456789012:role/{node_role.id}"
    }


# -- scale from zero and interruptions -------------------------------------------------------------------


def test_gpu_group_tells_the_autoscaler_what_an_empty_group_would_bring(production_stack: Render) -> None:
    gpu = pool(production_stack, "gpu")
    tags = asg_tags_of(production_stack, gpu)
    assert tags[f"{TEMPLATE}/label/workload"] == "gpu"
    assert tags[f"{TEMPLATE}/taint/nvidia.com/gpu"] == "true:NoSchedule"
    assert tags[f"{TEMPLATE}/resources/nvidia.com/gpu"] == "1"
    assert tags[f"{TEMPLATE}/label/eks.amazonaws.com/capacityType"] == "SPOT"
    # Derived from the group's own labels and taints: every label and taint has its tag, and nothing else.
    assert {k.removeprefix(f"{TEMPLATE}/label/") for k in tags if "/label/" in k} == {
        *gpu.inputs["labels"],
        "eks.amazonaws.com/capacityType",
        "eks.amazonaws.com/nodegroup",
    }
    assert {k.removeprefix(f"{TEMPLATE}/taint/") for k in tags if "/taint/" in k} == {
        t["key"] for t in gpu.inputs["taints"]
    }
    cpu_tags = asg_tags_of(production_stack, pool(production_stack, "cpu"))
    assert f"{TEMPLATE}/resources/nvidia.com/gpu" not in cpu_tags
    assert cpu_tags[f"{TEMPLATE}/label/workload"] == "general"


def test_autoscaler_discovers_this_cluster_with_a_scoped_irsa_role(production_stack: Render) -> None:
    ca = release(production_stack, "cluster-autoscaler")
    values = ca.inputs["values"]
    assert values["autoDiscovery"]["clusterName"] == "mlplat-production"
    ca_role = role(production_stack, "irsa-kube-system-cluster-autoscaler")
    assert (
        values["rbac"]["serviceAccount"]["annotations"]["eks.amazonaws.com/role-arn"]
        == f"arn:aws:iam::123456789012:role/{ca_role.id}"
    )
    assert ca.inputs["version"] and ca.inputs["repositoryOpts"]["repo"] == "https://kubernetes.github.io/autoscaler"
    (policy,) = [p for p in production_stack.by_type("aws:iam/rolePolicy:RolePolicy") if p.inputs["role"] == ca_role.id]
    statements = {s["Sid"]: s for s in json.loads(policy.inputs["policy"])["Statement"]}
    resize = statements["ResizeOwnGroups"]
    assert "autoscaling:SetDesiredCapacity" in resize["Action"]
    assert resize["Condition"] == {
        "StringEquals": {"aws:ResourceTag/k8s.io/cluster-autoscaler/mlplat-production": "owned"}
    }
    assert not any(a.startswith("autoscaling:Set") for a in statements["Describe"]["Action"])


def test_spot_interruptions_flow_from_eventbridge_through_sqs_to_the_handler(production_stack: Render) -> None:
    queue = production_stack.one("aws:sqs/queue:Queue")
    rules = production_stack.by_type("aws:cloudwatch/eventRule:EventRule")
    kinds = {json.loads(r.inputs["eventPattern"])["detail-type"][0] for r in rules}
    # Rebalance recommendations are left to EKS managed node groups (replace first, then drain).
    assert "EC2 Spot Instance Interruption Warning" in kinds and "EC2 Instance Rebalance Recommendation" not in kinds
    targets = production_stack.by_type("aws:cloudwatch/eventTarget:EventTarget")
    assert {t.inputs["rule"] for t in targets} == {r.id for r in rules}
    assert {t.inputs["arn"] for t in targets} == {f"arn:aws:sqs:us-east-1:123456789012:{queue.id.rsplit('/', 1)[1]}"}
    values = release(production_stack, "aws-node-termination-handler").inputs["values"]
    assert values["enableSqsTerminationDraining"] is True and values["queueURL"] == queue.id
    gpu = pool(production_stack, "gpu")
    template = production_stack.one(LAUNCH_TEMPLATE, "mlplat-production-gpu")
    assert gpu.inputs["launchTemplate"]["id"] == template.id
    (instance,) = [t for t in template.inputs["tagSpecifications"] if t["resourceType"] == "instance"]
    assert values["managedTag"] in instance["tags"]


def test_device_plugin_runs_only_on_gpu_nodes_and_tolerates_their_taint(production_stack: Render) -> None:
    values = release(production_stack, "nvidia-device-plugin").inputs["values"]
    assert {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"} in values[
        "tolerations"
    ]
    terms = values["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": "workload", "operator": "In", "values": ["gpu"]}]}]


def test_system_charts_are_pinned_and_installed_through_the_clusters_provider(production_stack: Render) -> None:
    provider = production_stack.one("pulumi:providers:kubernetes")
    assert provider.inputs["kubeconfig"] == "[secret]"
    assert production_stack.outputs["kubeconfig"] == "[secret]"
    releases = production_stack.by_type(RELEASE)
    # The cluster's own charts, plus what MlPlatform installs: the load balancer controller (for Ingresses) and
    # the monitoring stack (in its own namespace).
    charts = {r.inputs["chart"].rsplit("/", 1)[-1] for r in releases}  # an OCI chart is a full reference
    assert charts == {
        "cluster-autoscaler",
        "aws-node-termination-handler",
        "nvidia-device-plugin",
        "aws-load-balancer-controller",
        "kube-prometheus-stack",
    }
    for r in releases:
        assert r.options["provider"] == provider.urn and re.fullmatch(r"\d+\.\d+\.\d+", r.inputs["version"])
        expected = "monitoring" if r.inputs["chart"] == "kube-prometheus-stack" else "kube-system"
        assert r.inputs["namespace"] == expected
    # The GPU-pool-at-max alert reads the autoscaler's per-node-group sizes.
    assert release(production_stack, "cluster-autoscaler").inputs["values"]["extraArgs"]["emit-per-nodegroup-metrics"]


# -- control plane -----------------------------------------------------------------------------------------


def test_shipped_apis_are_private(production_stack: Render, dev_stack: Render) -> None:
    # Both stacks deploy from a self-hosted runner inside their VPC (mlplat:deploy.runner).
    for stack in (production_stack, dev_stack):
        api = stack.one(EKS).inputs
        assert api["endpointPrivateAccess"] is True and api["endpointPublicAccess"] is False
        assert "publicAccessCidrs" not in api


@pytest.mark.parametrize(
    ("cidr", "why"),
    [
        ("203.0.113.0/24", "203.0.113.0/24 is a documentation range (RFC 5737/3849), a placeholder"),
        ("198.51.100.7/32", "198.51.100.7/32 is a documentation range"),
        ("10.0.0.0/8", "10.0.0.0/8 is not a public range"),
        ("100.64.0.0/10", "100.64.0.0/10 is not a public range"),
    ],
)
def test_placeholder_and_private_api_sources_are_refused(cidr: str, why: str) -> None:
    (problem,) = cluster_problems("dev", {"endpointPublicAccess": True, "publicAccessCidrs": [cidr]})
    assert problem.startswith(f"mlplat:cluster.publicAccessCidrs: {why}"), problem
    public = load(config("dev", {"endpointPublicAccess": True, "publicAccessCidrs": ["52.94.0.0/22"]}))
    assert public.cluster.public_access_cidrs == ["52.94.0.0/22"]


def test_secrets_are_encrypted_and_control_plane_logs_are_on(production_stack: Render) -> None:
    eks = production_stack.one(EKS).inputs
    key = production_stack.one("aws:kms/key:Key", "mlplat-production-secrets")
    assert eks["encryptionConfigKeyArn"] == f"arn:aws:kms:us-east-1:123456789012:key/{key.id}"
    assert key.inputs["enableKeyRotation"] is True
    assert set(eks["enabledClusterLogTypes"]) >= {"api", "audit", "authenticator"}
    assert eks["authenticationMode"] == "API" and eks["createOidcProvider"] is True
    assert eks["skipDefaultNodeGroup"] is True and eks["deletionProtection"] is True


def test_cluster_uses_the_name_the_network_tagged_its_subnets_for(production_stack: Render) -> None:
    assert production_stack.one(EKS).inputs["name"] == "mlplat-production"
    assert production_stack.outputs["clusterName"] == "mlplat-production"
    tagged = [
        s
        for s in production_stack.by_type("aws:ec2/subnet:Subnet")
        if "kubernetes.io/cluster/mlplat-production" in s.inputs["tags"]
    ]
    assert len(tagged) == 6
    assert str(production_stack.outputs["clusterEndpoint"]).startswith("https://")


def test_addons_are_pinned_and_ebs_csi_runs_with_its_irsa_role(production_stack: Render) -> None:
    addons = {a.inputs["addonName"]: a for a in production_stack.by_type(ADDON)}
    assert set(addons) == {"vpc-cni", "coredns", "kube-proxy", "aws-ebs-csi-driver", "metrics-server"}
    assert all(re.fullmatch(r"v\d+\.\d+\.\d+-eksbuild\.\d+", a.inputs["addonVersion"]) for a in addons.values())
    assert addons["kube-proxy"].inputs["addonVersion"].startswith("v1.35.")
    ebs_role = role(production_stack, "irsa-kube-system-ebs-csi-controller-sa")
    assert (
        addons["aws-ebs-csi-driver"].inputs["serviceAccountRoleArn"] == f"arn:aws:iam::123456789012:role/{ebs_role.id}"
    )
    cni_role = role(production_stack, "irsa-kube-system-aws-node")
    assert addons["vpc-cni"].inputs["serviceAccountRoleArn"] == f"arn:aws:iam::123456789012:role/{cni_role.id}"
    groups = {g.urn for g in production_stack.by_type(NODE_GROUP)}
    assert groups <= set(addons["coredns"].options["depends_on"])  # coredns needs nodes to become ACTIVE
    for group in production_stack.by_type(NODE_GROUP):  # and nodes need the CNI to become Ready
        assert {addons["vpc-cni"].urn, addons["kube-proxy"].urn} <= set(group.options["depends_on"])


def test_physical_names_fit_aws_and_helm_limits(production_stack: Render, dev_stack: Render) -> None:
    for stack in (production_stack, dev_stack):
        for r in stack.by_type(ROLE):  # an auto-name is "<resource name>-<7 hex>"
            assert len(r.inputs.get("name") or f"{r.name}-abcdef0") <= 64, r.name
        assert {r.inputs["name"] for r in stack.by_type(RELEASE)} == {
            "cluster-autoscaler",
            "aws-node-termination-handler",
            "nvidia-device-plugin",
            "aws-load-balancer-controller",
            "kube-prometheus-stack",
        }
    long = role(production_stack, "irsa-kube-system-aws-node-termination-handler")
    assert long.inputs["name"].startswith("mlplat-production-irsa-kube-system-aws-node-termin")


# -- IRSA --------------------------------------------------------------------------------------------------


def test_every_irsa_role_admits_exactly_its_service_account(production_stack: Render) -> None:
    issuer = issuer_of(production_stack)
    irsa = [r for r in production_stack.by_type(ROLE) if "-irsa-" in r.name]
    assert sorted(r.inputs["tags"]["mlplat.io/service-account"] for r in irsa) == sorted(
        [
            "kube-system.aws-load-balancer-controller",
            "kube-system.aws-node-termination-handler",
            "kube-system.cluster-autoscaler",
            "kube-system.ebs-csi-controller-sa",
            "kube-system.aws-node",
            "mlflow.mlflow",
            "serving.mlplat-production-digits",
            "training.mlplat-production-digits",
            "monitoring.kube-prometheus-stack-alertmanager",
        ]
    )
    for record in irsa:
        namespace, account = record.inputs["tags"]["mlplat.io/service-account"].split(".", 1)
        (stmt,) = json.loads(record.inputs["assumeRolePolicy"])["Statement"]
        assert stmt["Principal"] == {"Federated": production_stack.outputs["oidcProviderArn"]}
        assert stmt["Action"] == "sts:AssumeRoleWithWebIdentity"
        assert stmt["Condition"] == {
            "StringEquals": {
                f"{issuer}:sub": f"system:serviceaccount:{namespace}:{account}",
                f"{issuer}:aud": "sts.amazonaws.com",
            }
        }


def test_service_account_role_helper(render_program: Callable[..., Render]) -> None:
    def program() -> None:
        cluster = Cluster(
            "c", ClusterArgs(vpc_id="vpc-1", private_subnet_ids=["subnet-a", "subnet-b"], region="us-east-1")
        )
        cluster.service_account_role("ml", "trainer", policy='{"Version": "2012-10-17", "Statement": []}')
        pulumi.export("oidcProviderArn", cluster.oidc_provider_arn)

    stack = render_program(program)
    trainer = stack.one(ROLE, "c-irsa-ml-trainer")
    (stmt,) = json.loads(trainer.inputs["assumeRolePolicy"])["Statement"]
    sub = {k: v for k, v in stmt["Condition"]["StringEquals"].items() if k.endswith(":sub")}
    assert sub == {f"{issuer_of(stack)}:sub": "system:serviceaccount:ml:trainer"}
    assert "StringLike" not in stmt["Condition"]
    inline = stack.one("aws:iam/rolePolicy:RolePolicy", "c-irsa-ml-trainer")
    assert inline.inputs["role"] == trainer.id
    # The caller's resource (no opts here: the stack's), aliased to the cluster that used to parent it.
    assert trainer.parent is None or stack.get(trainer.parent).type == "pulumi:pulumi:Stack"
    assert [json.loads(a)["spec"]["parentUrn"] for a in trainer.options["aliases"]] == [
        stack.one("mlplat:cluster:Cluster").urn
    ]


# -- config and args ---------------------------------------------------------------------------------------


def test_min_greater_than_max_fails_naming_the_pool_and_keys() -> None:
    (problem,) = cluster_problems("dev", {"nodeGroups": {"gpu": {"minSize": 5, "maxSize": 3}}})
    assert problem == "mlplat:cluster.nodeGroups.gpu: minSize (5) is greater than maxSize (3)"


def test_spot_pool_with_one_instance_type_warns() -> None:
    with pytest.warns(SpotDiversityWarning, match=r"'gpu'.*single instance type \(g5.xlarge\)"):
        load(config("dev", {"nodeGroups": {"gpu": {"instanceTypes": ["g5.xlarge"]}}}))


def test_production_api_open_to_the_world_is_rejected() -> None:
    (problem,) = cluster_problems("production", {"endpointPublicAccess": True, "publicAccessCidrs": ["0.0.0.0/0"]})
    assert problem.startswith("mlplat:cluster.publicAccessCidrs: ['0.0.0.0/0'] opens production's Kubernetes API")


@pytest.mark.parametrize(
    ("cluster", "message"),
    [
        ({"endpointPublicAccess": True}, "publicAccessCidrs is empty, which EKS reads as 0.0.0.0/0"),
        ({"nodeGroups": {"cpu": {"version": "1.36"}}}, "version: '1.36' is newer than the control plane's '1.35'"),
        ({"nodeGroups": {"cpu": {"taints": ["dedicated=x:NoSchedule"]}}}, "every node pool is tainted"),
        ({"nodeGroups": {"gpu": {"instanceTypes": ["g5.xlarge", "g5.12xlarge"]}}}, "mix GPU counts"),
        ({"nodeGroups": {"cpu": {"instanceTypes": ["g5.xlarge"]}}}, "have NVIDIA GPUs but amiType"),
        ({"nodeGroups": {"gpu": {"taints": ["nvidia.com/gpu=true"]}}}, "not of the form key=value:Effect"),
        ({"nodeGroups": {"gpu": {"releaseVersion": "1.34.2-20260120"}}}, "not a release of Kubernetes 1.35"),
        (
            {"logTypes": ["api"]},
            "logTypes: ['api'] must include api, audit, authenticator; missing audit, authenticator",
        ),
        ({"nodeGroups": {"cpu": {"instanceTypes": []}}}, "instanceTypes: [] lists no instance type"),
    ],
)
def test_bad_cluster_config_names_what_is_wrong(cluster: dict[str, Any], message: str) -> None:
    problems = cluster_problems("dev", cluster)
    assert any(message in p for p in problems), problems


def test_a_render_checks_each_pool_and_the_cluster_once(
    monkeypatch: pytest.MonkeyPatch, render_program: Callable[..., Render]
) -> None:
    # One schema: the stack config holds the component's own args, so nothing re-validates them on the way to the
    # resources (before, each pool was validated 3 times and the cluster args 5 times per render).
    checked: collections.Counter[str] = collections.Counter()
    for model in (NodePoolArgs, ClusterSpec):

        def counting(self: Any, original: Any = model._consistent, name: str = model.__name__) -> Any:
            checked[name] += 1
            return original(self)

        monkeypatch.setattr(model, "_consistent", counting)
    values = config("dev", {})
    cfg = load(values)
    render_program(lambda: build(cfg), config=values, stack="dev")
    assert checked == {"NodePoolArgs": 2, "ClusterSpec": 1}


def test_cluster_args_are_the_spec_and_its_wiring() -> None:
    # What a user decides (the spec, the stack file's mlplat:cluster) and what a parent wires never overlap.
    assert set(ClusterSpec.model_fields).isdisjoint(ClusterWiring.model_fields)
    assert set(ClusterArgs.model_fields) == {*ClusterSpec.model_fields, *ClusterWiring.model_fields}
    spec = ClusterSpec(node_pools=[NodePoolArgs(name="cpu", instance_types=["m6i.xlarge"])], deletion_protection=False)
    wiring = ClusterWiring(vpc_id="vpc-1", private_subnet_ids=["subnet-a"], region="us-east-1", cluster_name="c")
    assert ClusterArgs.of(spec, wiring) == ClusterArgs(
        vpc_id="vpc-1",
        private_subnet_ids=["subnet-a"],
        region="us-east-1",
        cluster_name="c",
        node_pools=spec.node_pools,
        deletion_protection=False,
    )


def test_component_args_reject_contradictions_without_config() -> None:
    with pytest.raises(ValueError, match=r"minSize \(4\) is greater than maxSize \(2\)"):
        NodePoolArgs(name="x", instance_types=["m6i.large"], min_size=4, max_size=2)
    with pytest.raises(ValueError, match="node_pools repeat the names"):
        ClusterArgs(
            vpc_id="v",
            private_subnet_ids=[],
            region="us-east-1",
            node_pools=[*default_node_pools(), default_node_pools()[0]],
        )
    with pytest.raises(ValueError, match="effect 'NoWay' is not one of"):
        Taint.parse("a=b:NoWay")


def test_autoscaler_tags_follow_a_pools_own_labels_and_taints() -> None:
    custom = NodePoolArgs(
        name="a100",
        instance_types=["p4d.24xlarge"],
        min_size=0,
        max_size=2,
        labels={"accelerator": "a100"},
        taints=[Taint("dedicated", "", "NoExecute")],
        ami_type="AL2023_x86_64_NVIDIA",
    )
    tags = custom.autoscaler_tags("mlplat-x")
    assert tags[f"{TEMPLATE}/label/accelerator"] == "a100"
    assert tags[f"{TEMPLATE}/taint/dedicated"] == ":NoExecute"
    assert tags[f"{TEMPLATE}/resources/nvidia.com/gpu"] == "8"
    assert tags["k8s.io/cluster-autoscaler/mlplat-x"] == "owned"


def test_readme_third_pool_renders_with_its_own_tags(repo_root: Path, render_program: Callable[..., Render]) -> None:
    readme = (repo_root / "README.md").read_text()
    section = readme.split("\n## Cluster\n", 1)[1]
    snippet = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert snippet is not None
    extra = yaml.safe_load(snippet.group(1))["mlplat:cluster"]
    # The snippet goes into the stack file's nodeGroups, beside its pools (the map replaces the preset's whole).
    cluster = yaml.safe_load((repo_root / "Pulumi.dev.yaml").read_text())["config"]["mlplat:cluster"]
    cluster["nodeGroups"].update(extra["nodeGroups"])
    values = {**BASE, "mlplat:environment": "dev", "mlplat:cluster": json.dumps(cluster)}
    cfg = load(values)
    stack = render_program(lambda: build(cfg), config=values, stack="dev")
    assert {g.inputs["nodeGroupName"] for g in stack.by_type(NODE_GROUP)} == {
        "mlplat-dev-cpu",
        "mlplat-dev-gpu",
        "mlplat-dev-inference",
    }
    inference = stack.one(NODE_GROUP, "mlplat-dev-inference")
    assert inference.inputs["capacityType"] == "ON_DEMAND"
    tags = asg_tags_of(stack, inference)
    assert tags[f"{TEMPLATE}/label/workload"] == "inference"
    assert tags[f"{TEMPLATE}/taint/workload"] == "inference:NoSchedule"
    # The stack file's own pools are still there beside it.
    assert stack.one(NODE_GROUP, "mlplat-dev-gpu").inputs["capacityType"] == "SPOT"
