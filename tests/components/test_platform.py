"""MlPlatform: one component wires the others together, and a team's explicit values win over the wiring."""

from __future__ import annotations

import json
from collections.abc import Callable

import pulumi
import pulumi_aws as aws
import pytest

from mlplat.components.cluster import ClusterArgs
from mlplat.components.model_service import Canary, ModelServiceArgs
from mlplat.components.network import NetworkArgs
from mlplat.components.platform import PLATFORM, MlPlatform, MlPlatformArgs, tracking_args, wired
from mlplat.components.registry import ContainerRegistryArgs
from mlplat.components.training_job import TrainingJobArgs
from mlplat.infra.engine import ProgramError, Render

IMAGES = {"serving": "123.dkr.ecr.us-east-1.amazonaws.com/serving:1", "training": "123.dkr.ecr/training:1",
          "tracking": "123.dkr.ecr/tracking:1"}


def platform_args(**overrides: object) -> MlPlatformArgs:
    base: dict[str, object] = {
        "region": "us-east-1",
        "network": NetworkArgs(nat="single", interface_endpoints=False),
        "cluster": ClusterArgs(vpc_id=PLATFORM, private_subnet_ids=PLATFORM, region="us-east-1"),
        "registry": ContainerRegistryArgs(images=IMAGES, cuda_images={"training": "123.dkr.ecr/training:1-cuda"}),
        "tracking": tracking_args(),
        "services": {"digits": ModelServiceArgs(namespace=PLATFORM, image=PLATFORM,
                                                model_uri="models:/digits@champion",
                                                canary=Canary(model_uri="models:/digits@challenger", weight=10))},
        "training_jobs": {"digits": TrainingJobArgs(namespace=PLATFORM, image=PLATFORM, nodes=2)},
    }
    return MlPlatformArgs(**{**base, **overrides})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def platform() -> Render:
    from mlplat.infra.engine import render

    def program() -> None:
        provider = aws.Provider("aws", region="us-east-1")
        MlPlatform("mlp", platform_args(), opts=pulumi.ResourceOptions(providers=[provider]))

    return render(program, project="mlplat", stack="test")


def env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container["env"]}


def test_the_cluster_runs_in_the_networks_private_subnets(platform: Render) -> None:
    cluster = platform.one("eks:index:Cluster")
    private = {s.id for s in platform.by_type("aws:ec2/subnet:Subnet")
               if s.inputs["tags"]["mlplat.io/tier"] == "private"}
    assert set(cluster.inputs["privateSubnetIds"]) == private
    assert cluster.inputs["vpcId"] == platform.one("aws:ec2/vpc:Vpc").id


def test_tracking_database_sits_in_the_database_subnets_and_admits_the_cluster(platform: Render) -> None:
    database = {s.id for s in platform.by_type("aws:ec2/subnet:Subnet")
                if s.inputs["tags"]["mlplat.io/tier"] == "database"}
    assert set(platform.one("aws:rds/subnetGroup:SubnetGroup").inputs["subnetIds"]) == database
    sources = {r.inputs.get("referencedSecurityGroupId")
               for r in platform.by_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
               if r.inputs.get("fromPort") == 5432}
    assert sources and all(s and s.startswith("sg-") for s in sources)


def test_mlflow_writes_artifacts_under_its_prefix_with_its_own_role(platform: Render) -> None:
    bucket = platform.one("aws:s3/bucket:Bucket").id
    server = platform.one("kubernetes:apps/v1:Deployment", "mlp-tracking-server")
    args = server.inputs["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--artifacts-destination") + 1] == f"s3://{bucket}/mlflow"
    grant = json.loads(platform.one("aws:iam/rolePolicy:RolePolicy", "mlp-artifacts-write-mlflow").inputs["policy"])
    assert grant["Statement"][0]["Resource"] == [f"arn:aws:s3:::{bucket}/mlflow/*"]


def test_services_and_jobs_get_images_tracking_and_scoped_roles(platform: Render) -> None:
    tracking_uri = "http://mlflow.mlflow.svc.cluster.local:5000"
    stable = platform.one("kubernetes:apps/v1:Deployment", "mlp-digits-stable")
    container = stable.inputs["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == IMAGES["serving"]
    assert env(container)["MLFLOW_TRACKING_URI"] == tracking_uri
    job = platform.one("kubernetes:batch/v1:Job", "mlp-digits")
    trainer = job.inputs["spec"]["template"]["spec"]["containers"][0]
    # The job requests a GPU (TrainingJobArgs' default): it runs the CUDA build of the trainer.
    assert trainer["image"] == "123.dkr.ecr/training:1-cuda" and env(trainer)["MLFLOW_TRACKING_URI"] == tracking_uri
    bucket = platform.one("aws:s3/bucket:Bucket").id
    checkpoint = json.loads(platform.one("aws:iam/rolePolicy:RolePolicy", "mlp-artifacts-write-train-digits")
                            .inputs["policy"])
    assert checkpoint["Statement"][0]["Resource"] == [f"arn:aws:s3:::{bucket}/checkpoints/digits/*"]
    read = json.loads(platform.one("aws:iam/rolePolicy:RolePolicy", "mlp-artifacts-read-serve-digits").inputs["policy"])
    assert "s3:PutObject" not in read["Statement"][0]["Action"]
    namespaces = {n.inputs["metadata"]["name"] for n in platform.by_type("kubernetes:core/v1:Namespace")}
    assert namespaces == {"mlflow", "serving", "training"}


def test_irsa_roles_trust_exactly_their_service_accounts(platform: Render) -> None:
    sa = next(r.inputs for r in platform.by_type("kubernetes:core/v1:ServiceAccount")
              if "mlplat:serving:ModelService$" in r.urn)
    role_arn = sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    role = next(r for r in platform.by_type("aws:iam/role:Role") if role_arn.endswith("/" + r.id))
    (statement,) = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
    subjects = [v for cond in statement["Condition"].values() for k, v in cond.items() if k.endswith(":sub")]
    assert subjects == ["system:serviceaccount:serving:mlp-digits"]


def test_the_load_balancer_controller_is_installed_for_the_canary_ingress(platform: Render) -> None:
    releases = {r.inputs["chart"] for r in platform.by_type("kubernetes:helm.sh/v3:Release")}
    assert "aws-load-balancer-controller" in releases
    assert platform.by_type("kubernetes:networking.k8s.io/v1:Ingress")


def test_workloads_use_the_clusters_kubernetes_provider(platform: Render) -> None:
    provider = platform.one("pulumi:providers:kubernetes")
    for record in platform.resources:
        if record.type.startswith("kubernetes:") and record.custom:
            assert record.options["provider"] == provider.urn, record.urn


def test_a_service_without_an_image_is_a_clear_error(render_program: Callable[..., Render]) -> None:
    def program() -> None:
        MlPlatform("mlp", platform_args(registry=ContainerRegistryArgs(images={"tracking": "t:1"}), training_jobs={}))

    with pytest.raises(ProgramError, match=r"MlPlatformArgs.services needs a 'serving' image"):
        render_program(program)

    with pytest.raises(ProgramError, match=r"MlPlatformArgs.tracking needs a 'tracking' image: set registry "
                                           r"images\['tracking'\]"):
        render_program(lambda: MlPlatform("mlp", platform_args(
            registry=ContainerRegistryArgs(images={"serving": "s:1"}), training_jobs={}, services={})))


def test_explicit_values_win_over_the_wiring() -> None:
    args = ModelServiceArgs(namespace="team-ns", image=PLATFORM, model_uri="models:/m@a",
                            tracking_uri="http://their-mlflow")
    result = wired(args, namespace="serving", image="img", tracking_uri="http://ours")
    assert (result.namespace, result.image, result.tracking_uri) == ("team-ns", "img", "http://their-mlflow")


def test_cpu_jobs_run_the_cpu_build_and_tracking_runs_the_tracking_image(
        render_program: Callable[..., Render]) -> None:
    from mlplat.components.pods import Resources

    def program() -> None:
        provider = aws.Provider("aws", region="us-east-1")
        jobs = {"small": TrainingJobArgs(namespace=PLATFORM, image=PLATFORM,
                                         resources=Resources(cpu="1", memory="2Gi"))}
        MlPlatform("mlp", platform_args(training_jobs=jobs, registry=ContainerRegistryArgs(default_tag="7")),
                   opts=pulumi.ResourceOptions(providers=[provider]))

    stack = render_program(program)
    trainer = stack.one("kubernetes:batch/v1:Job").inputs["spec"]["template"]["spec"]["containers"][0]
    assert trainer["image"].endswith("/mlplat/training:7")
    mlflow = stack.one("kubernetes:apps/v1:Deployment", "mlp-tracking-server").inputs["spec"]["template"]["spec"]
    assert mlflow["containers"][0]["image"].endswith("/mlplat/tracking:7")
    assert mlflow["initContainers"][0]["image"] == mlflow["containers"][0]["image"]


def test_workloads_wait_for_nodes_and_the_load_balancer_controller(platform: Render) -> None:
    # The controller's Service webhook (failurePolicy: Fail) rejects every Service until it runs, and pods need
    # nodes: on a fresh stack nothing may race either.
    controller = platform.one("kubernetes:helm.sh/v3:Release", "mlp-aws-load-balancer-controller").urn
    node_groups = {r.urn for r in platform.by_type("aws:eks/nodeGroup:NodeGroup")}
    assert node_groups
    waiting = [r for r in platform.resources if r.type in (
        "kubernetes:core/v1:Service", "kubernetes:networking.k8s.io/v1:Ingress", "kubernetes:apps/v1:Deployment",
        "kubernetes:batch/v1:Job", "kubernetes:helm.sh/v3:Release") and r.urn != controller]
    assert {r.type for r in waiting} >= {"kubernetes:core/v1:Service", "kubernetes:networking.k8s.io/v1:Ingress",
                                         "kubernetes:batch/v1:Job", "kubernetes:helm.sh/v3:Release"}
    for record in waiting:
        deps = set(record.options["depends_on"])
        assert node_groups <= deps, record.name
        if not record.parent.split("::")[-2].endswith("mlplat:cluster:Cluster"):  # the cluster's own charts
            assert controller in deps, record.name


def test_monitoring_waits_for_nodes_volumes_and_the_controller(production_stack: Render) -> None:
    monitoring = production_stack.one("kubernetes:helm.sh/v3:Release", "mlplat-production-monitoring-stack")
    deps = set(monitoring.options["depends_on"])
    controller = production_stack.one("kubernetes:helm.sh/v3:Release", "mlplat-production-aws-load-balancer-controller")
    ebs = production_stack.one("aws:eks/addon:Addon", "mlplat-production-aws-ebs-csi-driver")
    assert {controller.urn, ebs.urn} <= deps
    assert monitoring.inputs["timeout"] >= 600  # Prometheus' volumes and pods come up after the nodes do
