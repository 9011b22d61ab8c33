"""MlPlatform: one component wires the others together from their specs, with no placeholder anywhere."""

from __future__ import annotations

import json
from collections.abc import Callable

import pulumi
import pulumi_aws as aws
import pytest

from mlplat.components import platform as platform_module
from mlplat.components.cluster import ClusterSpec
from mlplat.components.model_service import Canary, ModelServiceArgs, ModelServiceSpec
from mlplat.components.network import NetworkArgs
from mlplat.components.platform import MlPlatform, MlPlatformArgs
from mlplat.components.registry import ContainerRegistryArgs
from mlplat.components.tracking import TrackingArgs, TrackingSpec
from mlplat.components.training_job import TrainingJobArgs, TrainingJobSpec
from mlplat.infra.engine import ProgramError, Render

IMAGES = {
    "serving": "123.dkr.ecr.us-east-1.amazonaws.com/serving:1",
    "training": "123.dkr.ecr/training:1",
    "tracking": "123.dkr.ecr/tracking:1",
}


def platform_args(**overrides: object) -> MlPlatformArgs:
    base: dict[str, object] = {
        "region": "us-east-1",
        "network": NetworkArgs(nat="single", interface_endpoints=False),
        "cluster": ClusterSpec(),
        "registry": ContainerRegistryArgs(images=IMAGES, cuda_images={"training": "123.dkr.ecr/training:1-cuda"}),
        "tracking": TrackingSpec(),
        "services": {
            "digits": ModelServiceSpec(
                model_uri="models:/digits@champion", canary=Canary(model_uri="models:/digits@challenger", weight=10)
            )
        },
        "training_jobs": {"digits": TrainingJobSpec(nodes=2)},
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
    private = {
        s.id for s in platform.by_type("aws:ec2/subnet:Subnet") if s.inputs["tags"]["mlplat.io/tier"] == "private"
    }
    assert set(cluster.inputs["privateSubnetIds"]) == private
    assert cluster.inputs["vpcId"] == platform.one("aws:ec2/vpc:Vpc").id


def test_tracking_database_sits_in_the_database_subnets_and_admits_the_cluster(platform: Render) -> None:
    database = {
        s.id for s in platform.by_type("aws:ec2/subnet:Subnet") if s.inputs["tags"]["mlplat.io/tier"] == "database"
    }
    assert set(platform.one("aws:rds/subnetGroup:SubnetGroup").inputs["subnetIds"]) == database
    sources = {
        r.inputs.get("referencedSecurityGroupId")
        for r in platform.by_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
        if r.inputs.get("fromPort") == 5432
    }
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
    checkpoint = json.loads(
        platform.one("aws:iam/rolePolicy:RolePolicy", "mlp-artifacts-write-train-digits").inputs["policy"]
    )
    assert checkpoint["Statement"][0]["Resource"] == [f"arn:aws:s3:::{bucket}/checkpoints/digits/*"]
    read = json.loads(platform.one("aws:iam/rolePolicy:RolePolicy", "mlp-artifacts-read-serve-digits").inputs["policy"])
    assert "s3:PutObject" not in read["Statement"][0]["Action"]
    namespaces = {n.inputs["metadata"]["name"] for n in platform.by_type("kubernetes:core/v1:Namespace")}
    assert namespaces == {"mlflow", "serving", "training"}


def test_irsa_roles_trust_exactly_their_service_accounts(platform: Render) -> None:
    sa = next(
        r.inputs
        for r in platform.by_type("kubernetes:core/v1:ServiceAccount")
        if "mlplat:serving:ModelService$" in r.urn
    )
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

    with pytest.raises(
        ProgramError,
        match=r"MlPlatformArgs.tracking needs a 'tracking' image: set registry "
        r"images\['tracking'\]",
    ):
        render_program(
            lambda: MlPlatform(
                "mlp",
                platform_args(registry=ContainerRegistryArgs(images={"serving": "s:1"}), training_jobs={}, services={}),
            )
        )


def test_a_workload_may_use_an_mlflow_of_its_own(render_program: Callable[..., Render]) -> None:
    # tracking_uri is an explicit optional field of the spec: None is the platform's MLflow, a URI another one,
    # which gets no platform credentials and whose models the platform does not create.
    theirs = "http://their-mlflow:5000"

    def program() -> None:
        provider = aws.Provider("aws", region="us-east-1")
        MlPlatform(
            "mlp",
            platform_args(
                services={
                    "digits": ModelServiceSpec(model_uri="models:/digits@champion"),
                    "fraud": ModelServiceSpec(model_uri="models:/fraud@champion", tracking_uri=theirs),
                },
                training_jobs={
                    "fraud": TrainingJobSpec(tracking_uri=theirs, config={"registry": {"model_name": "fraud"}})
                },
            ),
            opts=pulumi.ResourceOptions(providers=[provider]),
        )

    stack = render_program(program)
    ours = "http://mlflow.mlflow.svc.cluster.local:5000"
    digits = stack.one("kubernetes:apps/v1:Deployment", "mlp-digits-stable").inputs["spec"]["template"]["spec"]
    fraud = stack.one("kubernetes:apps/v1:Deployment", "mlp-fraud-stable").inputs["spec"]["template"]["spec"]
    job = stack.one("kubernetes:batch/v1:Job", "mlp-fraud").inputs["spec"]["template"]["spec"]
    assert env(digits["containers"][0])["MLFLOW_TRACKING_URI"] == ours
    assert "MLFLOW_TRACKING_USERNAME" in env(digits["containers"][0])
    for container in (fraud["containers"][0], job["containers"][0]):
        assert env(container)["MLFLOW_TRACKING_URI"] == theirs
        assert "MLFLOW_TRACKING_USERNAME" not in env(container), "another server knows nothing of our users"
    bootstrap = stack.one("kubernetes:apps/v1:Deployment", "mlp-tracking-server").inputs["spec"]["template"]["spec"]
    models = [a for a in bootstrap["initContainers"][1]["command"] if a.startswith("--model")]
    assert models == ["--model=digits"]


def test_the_specs_hold_no_wiring_and_the_platform_no_placeholder() -> None:
    assert not hasattr(platform_module, "PLATFORM") and not hasattr(platform_module, "wired")
    for spec, args, wiring in [
        (
            TrackingSpec,
            TrackingArgs,
            {"vpc_id", "database_subnet_ids", "client_security_group_ids", "artifacts_uri", "service_account_role_arn"},
        ),
        (
            ModelServiceSpec,
            ModelServiceArgs,
            {"namespace", "image", "tracking_credentials_secret", "service_account_role_arn"},
        ),
        (
            TrainingJobSpec,
            TrainingJobArgs,
            {
                "namespace",
                "image",
                "checkpoint_uri",
                "tracking_credentials_secret",
                "service_account_role_arn",
                "image_cuda",
            },
        ),
    ]:
        assert set(args.model_fields) - set(spec.model_fields) == wiring, spec.__name__
        assert issubclass(args, spec)


def test_no_placeholder_reaches_a_render(production_stack: Render) -> None:
    rendered = json.dumps([r.inputs for r in production_stack.resources], default=str)
    assert "<wired by MlPlatform>" not in rendered and "wired by" not in rendered


def test_cpu_jobs_run_the_cpu_build_and_tracking_runs_the_tracking_image(render_program: Callable[..., Render]) -> None:
    from mlplat.components.pods import Resources

    def program() -> None:
        provider = aws.Provider("aws", region="us-east-1")
        jobs = {"small": TrainingJobSpec(resources=Resources(cpu="1", memory="2Gi"))}
        MlPlatform(
            "mlp",
            platform_args(training_jobs=jobs, registry=ContainerRegistryArgs(default_tag="7")),
            opts=pulumi.ResourceOptions(providers=[provider]),
        )

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
    waiting = [
        r
        for r in platform.resources
        if r.type
        in (
            "kubernetes:core/v1:Service",
            "kubernetes:networking.k8s.io/v1:Ingress",
            "kubernetes:apps/v1:Deployment",
            "kubernetes:batch/v1:Job",
            "kubernetes:helm.sh/v3:Release",
        )
        and r.urn != controller
    ]
    assert {r.type for r in waiting} >= {
        "kubernetes:core/v1:Service",
        "kubernetes:networking.k8s.io/v1:Ingress",
        "kubernetes:batch/v1:Job",
        "kubernetes:helm.sh/v3:Release",
    }
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
