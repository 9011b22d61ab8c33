"""Components as Pulumi's guidelines and pulumi-eks consumers expect (issue 21 item 3).

Fields that come from another resource take Outputs (checked once known, with the field's message); outputs are
annotated class attributes with a docstring, all registered; no component gets a child after ``register_outputs``.
"""

from __future__ import annotations

import ast
import inspect
import json
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
import pytest

import mlplat.components as package
from mlplat.components.bootstrap import GitHubAccess, GitHubAccessArgs
from mlplat.components.cluster import Cluster, ClusterArgs
from mlplat.components.model_service import Canary, ModelService, ModelServiceArgs
from mlplat.components.node_groups import NodePoolArgs
from mlplat.components.pipeline_access import PipelineAccess, PipelineAccessArgs
from mlplat.components.storage import ArtifactStore, ArtifactStoreArgs, BucketGrant
from mlplat.components.tracking import Tracking, TrackingArgs
from mlplat.components.training_job import TrainingJob, TrainingJobArgs
from mlplat.infra.engine import ProgramError, Render
from mlplat.infra.synth import render_stack

REPO_ROOT = Path(__file__).resolve().parents[2]
REGION = {"aws:region": "us-east-1"}
CERTIFICATE = "arn:aws:acm:us-east-1:123456789012:certificate/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"


def known(value: Any) -> pulumi.Output[Any]:
    """A value as another resource would hand it over: an Output."""
    return pulumi.Output.from_input(value)


def _components() -> list[type[pulumi.ComponentResource]]:
    exported = (getattr(package, name) for name in package.__all__)
    return [c for c in exported if inspect.isclass(c) and issubclass(c, pulumi.ComponentResource)]


def _output_attributes(cls: type) -> dict[str, str]:
    """The class's annotated Output attributes: name -> annotation (the modules use postponed annotations)."""
    return {
        name: str(annotation)
        for name, annotation in inspect.get_annotations(cls).items()
        if "Output" in str(annotation)
    }


@pytest.fixture(scope="module")
def registered() -> Iterator[dict[type, set[str]]]:
    """Each component class -> the output keys it registered, over the production stack and a bootstrap program;
    and the check that no resource is created as a child of a component that registered its outputs already."""
    keys: dict[type, set[str]] = {}
    finished: set[int] = set()
    late: list[str] = []
    original_register = pulumi.ComponentResource.register_outputs
    original_init = pulumi.Resource.__init__

    def register_outputs(self: pulumi.ComponentResource, outputs: Any) -> None:
        keys.setdefault(type(self), set()).update(outputs)
        finished.add(id(self))
        original_register(self, outputs)

    def init(self: pulumi.Resource, t: str, name: str, *args: Any, **kwargs: Any) -> None:
        opts = kwargs.get("opts", args[2] if len(args) > 2 else None)
        parent = getattr(opts, "parent", None)
        if parent is not None and id(parent) in finished:
            late.append(f"{t} {name} under {type(parent).__name__}")
        original_init(self, t, name, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pulumi.ComponentResource, "register_outputs", register_outputs)
        patch.setattr(pulumi.Resource, "__init__", init)
        render_stack("production", REPO_ROOT)
        from mlplat.infra.engine import render

        def others() -> None:  # the components the production stack does not use
            GitHubAccess("gh", GitHubAccessArgs(repository="example-org/mlplat"))
            PipelineAccess("pipeline", PipelineAccessArgs(cluster_name="c", role_arn="arn:aws:iam::1:role/p"))

        render(others, project="mlplat", stack="test", config=REGION)
    assert late == [], f"children created after their parent's register_outputs: {late}"
    yield keys


def test_every_component_registers_exactly_its_annotated_outputs(registered: dict[type, set[str]]) -> None:
    components = _components()
    assert len(components) == 12
    for component in components:
        declared = set(_output_attributes(component))
        assert declared, f"{component.__name__} declares no outputs"
        assert component in registered, f"{component.__name__} was not rendered"
        assert registered[component] == declared, component.__name__


def test_every_annotated_output_has_a_docstring() -> None:
    for component in _components():
        tree = ast.parse(textwrap.dedent(inspect.getsource(component)))
        body = tree.body[0].body  # type: ignore[attr-defined]
        for statement, following in zip(body, [*body[1:], None], strict=True):
            if isinstance(statement, ast.AnnAssign) and "Output" in ast.unparse(statement.annotation):
                name = ast.unparse(statement.target)
                assert (
                    isinstance(following, ast.Expr)
                    and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)
                ), f"{component.__name__}.{name} has no docstring"


def test_the_platforms_irsa_roles_and_credentials_are_its_own_with_aliases_to_their_old_parents(
    production_stack: Render,
) -> None:
    platform = production_stack.one("mlplat:platform:MlPlatform")
    cluster = production_stack.one("mlplat:cluster:Cluster")
    tracking = production_stack.one("mlplat:tracking:Tracking")
    moved = {
        r.name: r
        for r in production_stack.resources
        if r.parent == platform.urn and r.type in ("aws:iam/role:Role", "kubernetes:core/v1:Secret")
    }
    assert sorted(moved) == [
        "mlplat-production-irsa-kube-system-aws-load-balancer-controller",
        "mlplat-production-irsa-mlflow-mlflow",
        "mlplat-production-irsa-monitoring-kube-prometheus-stack-alertmanager",
        "mlplat-production-irsa-serving-mlplat-production-digits",
        "mlplat-production-irsa-training-mlplat-production-digits",
        "mlplat-production-tracking-serving-credentials",
        "mlplat-production-tracking-trainer-credentials",
    ]
    for record in moved.values():
        (alias,) = [json.loads(a) for a in record.options["aliases"]]
        old_parent = cluster.urn if record.type == "aws:iam/role:Role" else tracking.urn
        assert alias == {"spec": {"parentUrn": old_parent}}, record.name
    # The cluster's own roles (add-ons, autoscaler, termination handler) stay its children, without aliases.
    own = [r for r in production_stack.by_type("aws:iam/role:Role") if r.parent == cluster.urn and "-irsa-" in r.name]
    assert len(own) == 4 and all(r.options["aliases"] == [] for r in own)
    # The store owns the platform's grants, under their old names.
    store = production_stack.one("mlplat:storage:ArtifactStore")
    grants = sorted(r.name for r in production_stack.by_type("aws:iam/rolePolicy:RolePolicy") if r.parent == store.urn)
    assert grants == [
        "mlplat-production-artifacts-read-serve-digits",
        "mlplat-production-artifacts-write-mlflow",
        "mlplat-production-artifacts-write-train-digits",
    ]


# --- Outputs into fields --------------------------------------------------------------------------------------


def _env(deployment_inputs: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment_inputs["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_model_service_takes_outputs_for_uri_image_secret_and_namespaces(on_cluster: Callable[..., Render]) -> None:
    stack = on_cluster(
        lambda opts: ModelService(
            "scorer",
            ModelServiceArgs(
                namespace=known("serving"),
                image=known("registry/serving:1"),
                model_uri=known("models:/digits@champion"),
                canary=Canary(model_uri=known("models:/digits@challenger"), image=known("registry/serving:2")),
                api_key_secret=known("scorer-key"),
                monitoring_namespace=known("monitoring"),
                certificate_arn=known(CERTIFICATE),
            ),
            opts=opts,
        )
    )
    stable = stack.one("kubernetes:apps/v1:Deployment", "scorer-stable").inputs
    canary = stack.one("kubernetes:apps/v1:Deployment", "scorer-canary").inputs
    assert _env(stable)["MLPLAT_SERVING_MODEL_URI"] == "models:/digits@champion"
    assert _env(canary)["MLPLAT_SERVING_MODEL_URI"] == "models:/digits@challenger"
    assert stable["spec"]["template"]["spec"]["containers"][0]["image"] == "registry/serving:1"
    assert canary["spec"]["template"]["spec"]["containers"][0]["image"] == "registry/serving:2"
    assert _env(stable)["MLPLAT_SERVING_API_KEY"]["secretKeyRef"]["name"] == "scorer-key"
    (rule,) = stack.one("kubernetes:networking.k8s.io/v1:NetworkPolicy").inputs["spec"]["ingress"]
    (selector,) = [p for p in rule["from"] if "namespaceSelector" in p]
    assert selector["namespaceSelector"]["matchExpressions"][0]["values"] == ["monitoring"]
    annotations = stack.one("kubernetes:networking.k8s.io/v1:Ingress").inputs["metadata"]["annotations"]
    assert annotations["alb.ingress.kubernetes.io/certificate-arn"] == CERTIFICATE


@pytest.mark.parametrize(
    ("field", "args", "message"),
    [
        (
            "model_uri",
            {"model_uri": known("/tmp/model")},
            "ModelServiceArgs.model_uri='/tmp/model': not a model URI; use models:/",
        ),
        ("canary", {"canary": Canary(model_uri=known("digits"))}, "Canary.model_uri='digits': not a model URI"),
        (
            "certificate_arn",
            {"certificate_arn": known("arn:aws:iam::1:cert")},
            "ModelServiceArgs.certificate_arn='arn:aws:iam::1:cert': not an ACM certificate ARN",
        ),
    ],
)
def test_an_invalid_output_fails_with_the_fields_message(
    on_cluster: Callable[..., Render], field: str, args: dict[str, Any], message: str
) -> None:
    base: dict[str, Any] = {"namespace": "serving", "image": "registry/serving:1", "model_uri": "models:/d@champion"}
    with pytest.raises(ProgramError, match=message.replace("(", r"\(").replace(".", r"\.")):
        on_cluster(lambda opts: ModelService("scorer", ModelServiceArgs(**{**base, **args}), opts=opts))


def test_plain_invalid_values_keep_their_messages() -> None:
    with pytest.raises(ValueError, match=r"ModelServiceArgs\.model_uri='/tmp/model': not a model URI"):
        ModelServiceArgs(namespace="serving", image="i", model_uri="/tmp/model")
    with pytest.raises(ValueError, match=r"Canary\.model_uri='digits': not a model URI"):
        Canary(model_uri="digits")
    with pytest.raises(ValueError, match=r"^PipelineAccessArgs\.role_arn='nope': expected an IAM role ARN"):
        PipelineAccessArgs(cluster_name="c", role_arn="nope")
    # One schema: the stack file's message (mlplat:cluster.adminRoleArns), in the ValidationError's text.
    with pytest.raises(ValueError, match=r"\['nope'\] are not IAM role ARNs \(arn:aws:iam::<12-digit account>"):
        ClusterArgs(vpc_id="vpc", private_subnet_ids=["s"], region="us-east-1", admin_role_arns=["nope"])


def test_training_job_takes_its_image_and_checkpoint_location_as_outputs(on_cluster: Callable[..., Render]) -> None:
    stack = on_cluster(
        lambda opts: TrainingJob(
            "digits",
            TrainingJobArgs(
                namespace=known("training"),
                image=known("registry/training:1-cuda"),
                image_cuda=True,
                checkpoint_uri=known("s3://bucket/checkpoints/digits"),
                tracking_uri=known("http://mlflow:5000"),
                service_account_role_arn=known("arn:aws:iam::123456789012:role/train"),
                config={"epochs": 1},
            ),
            opts=opts,
        )
    )
    job = stack.one("kubernetes:batch/v1:Job").inputs
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry/training:1-cuda"
    assert "s3://bucket/checkpoints/digits" in json.dumps(stack.one("kubernetes:core/v1:ConfigMap").inputs)
    account = stack.one("kubernetes:core/v1:ServiceAccount").inputs
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == "arn:aws:iam::123456789012:role/train"


def test_tracking_takes_its_artifact_location_and_role_as_outputs(on_cluster: Callable[..., Render]) -> None:
    stack = on_cluster(
        lambda opts: Tracking(
            "tracking",
            TrackingArgs(
                vpc_id=known("vpc-0abc"),
                database_subnet_ids=known(["subnet-a", "subnet-b"]),
                client_security_group_ids=[known("sg-nodes")],
                artifacts_uri=known("s3://bucket/mlflow"),
                image=known("registry/tracking:1"),
                service_account_role_arn=known("arn:aws:iam::123456789012:role/mlflow"),
            ),
            opts=opts,
        )
    )
    server = next(r for r in stack.by_type("kubernetes:apps/v1:Deployment"))
    (container,) = server.inputs["spec"]["template"]["spec"]["containers"]
    assert container["args"][container["args"].index("--artifacts-destination") + 1] == "s3://bucket/mlflow"
    assert container["image"] == "registry/tracking:1"


def test_artifact_store_takes_its_bucket_name_and_grant_roles_as_outputs(render_program: Callable[..., Render]) -> None:
    def program() -> None:
        role = aws.iam.Role("reader", assume_role_policy="{}")
        ArtifactStore(
            "art",
            ArtifactStoreArgs(
                protect=False, bucket_name=known("team-models"), grants=[BucketGrant("svc", role.name, "models/")]
            ),
        )

    stack = render_program(program, config=REGION)
    assert stack.one("aws:s3/bucket:Bucket").inputs["bucket"] == "team-models"
    grant = stack.one("aws:iam/rolePolicy:RolePolicy", "art-read-svc")
    assert grant.parent == stack.one("mlplat:storage:ArtifactStore").urn
    assert grant.inputs["role"] == stack.one("aws:iam/role:Role", "reader").id


def test_artifact_store_from_keywords_takes_a_bucket_name_output_checked_when_known(
    render_program: Callable[..., Render],
) -> None:
    stack = render_program(lambda: ArtifactStore("art", protect=False, bucket_name=known("team-models")), config=REGION)
    assert stack.one("aws:s3/bucket:Bucket").inputs["bucket"] == "team-models"
    message = r"'Team_Models' is not a valid S3 bucket name"
    with pytest.raises(ProgramError, match=message):
        render_program(lambda: ArtifactStore("art", protect=False, bucket_name=known("Team_Models")), config=REGION)
    with pytest.raises(ValueError, match=message):  # a plain value: at construction, with the same message
        ArtifactStore("art", protect=False, bucket_name="Team_Models")


def test_grant_methods_create_policies_the_caller_owns(render_program: Callable[..., Render]) -> None:
    def program() -> None:
        store = ArtifactStore("art", ArtifactStoreArgs(protect=False))
        owner = pulumi.ComponentResource("team:index:Owner", "team")
        role = aws.iam.Role("writer", assume_role_policy="{}", opts=pulumi.ResourceOptions(parent=owner))
        store.grant_write(role.name, prefix="checkpoints", name="svc", opts=pulumi.ResourceOptions(parent=owner))

    stack = render_program(program, config=REGION)
    grant = stack.one("aws:iam/rolePolicy:RolePolicy", "art-write-svc")
    assert grant.parent == stack.one("team:index:Owner").urn
    (alias,) = [json.loads(a) for a in grant.options["aliases"]]
    assert alias == {"spec": {"parentUrn": stack.one("mlplat:storage:ArtifactStore").urn}}


def test_repeated_grants_are_refused() -> None:
    with pytest.raises(ValueError, match=r"ArtifactStoreArgs\.grants: \['read-svc'\] named more than once"):
        ArtifactStoreArgs(grants=[BucketGrant("svc", "a"), BucketGrant("svc", "b", prefix="x/")])


def _cluster(admin: pulumi.Output[str]) -> Callable[[], None]:
    def program() -> None:
        Cluster(
            "c",
            ClusterArgs(
                vpc_id=known("vpc-1"),
                private_subnet_ids=known(["subnet-a"]),
                region="us-east-1",
                node_pools=[NodePoolArgs(name="cpu", instance_types=["m6i.xlarge", "m6a.xlarge"])],
                admin_role_arns=[admin],
            ),
        )

    return program


def test_cluster_admin_role_arns_take_outputs_and_check_them_once_known(render_program: Callable[..., Render]) -> None:
    arn = "arn:aws:iam::123456789012:role/admins"
    stack = render_program(_cluster(known(arn)), config=REGION)
    entries = stack.one("eks:index:Cluster").inputs["accessEntries"]
    assert entries["admin-0"]["principalArn"] == arn
    with pytest.raises(ProgramError, match=r"ClusterArgs: admin_role_arns: 'admins' is not an IAM role ARN"):
        render_program(_cluster(known("admins")), config=REGION)


def test_cluster_service_account_role_belongs_to_the_caller(render_program: Callable[..., Render]) -> None:
    def program() -> None:
        cluster = Cluster(
            "c",
            ClusterArgs(
                vpc_id="vpc-1",
                private_subnet_ids=["subnet-a"],
                region="us-east-1",
                node_pools=[NodePoolArgs(name="cpu", instance_types=["m6i.xlarge", "m6a.xlarge"])],
            ),
        )
        owner = pulumi.ComponentResource("team:index:Owner", "team")
        cluster.service_account_role(
            "team", "scorer", '{"Version": "2012-10-17", "Statement": []}', opts=pulumi.ResourceOptions(parent=owner)
        )

    stack = render_program(program, config=REGION)
    role = stack.one("aws:iam/role:Role", "c-irsa-team-scorer")
    assert role.parent == stack.one("team:index:Owner").urn
    assert [json.loads(a) for a in role.options["aliases"]] == [
        {"spec": {"parentUrn": stack.one("mlplat:cluster:Cluster").urn}}
    ]
    policy = stack.one("aws:iam/rolePolicy:RolePolicy", "c-irsa-team-scorer")
    assert policy.parent == role.urn and policy.options["aliases"] == []


def test_pipeline_access_takes_its_role_as_an_output(render_program: Callable[..., Render]) -> None:
    def program(arn: str) -> Callable[[], None]:
        return lambda: PipelineAccess("pipeline", PipelineAccessArgs(cluster_name=known("c"), role_arn=known(arn)))

    arn = "arn:aws:iam::123456789012:role/pipeline"
    stack = render_program(program(arn), config=REGION)
    assert stack.one("aws:eks/accessEntry:AccessEntry").inputs["principalArn"] == arn
    with pytest.raises(ProgramError, match=r"PipelineAccessArgs\.role_arn='pipeline': expected an IAM role ARN"):
        render_program(program("pipeline"), config=REGION)
