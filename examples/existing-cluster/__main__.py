"""A team's own program on a cluster it does not own: mlplat's ModelService and TrainingJob in its namespace.

The platform team runs mlplat's stack; this team reads that stack's outputs (kubeconfig, the cluster's OIDC
provider, the artifact bucket, MLflow) with a StackReference and deploys a model service and a weekly GPU
retraining job into its own namespace, each with an IRSA role scoped to its own prefix of the bucket.
"""

import json

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from mlplat.components.iam import policy_document, statement
from mlplat.components.irsa import create_service_account_role
from mlplat.components.model_service import ModelService, ModelServiceArgs
from mlplat.components.pods import Resources
from mlplat.components.training_job import TrainingJob, TrainingJobArgs

NAMESPACE = "search"
config = pulumi.Config()
platform = pulumi.StackReference(config.require("platformStack"))

aws_provider = aws.Provider(
    "aws",
    region=pulumi.Config("aws").require("region"),
    default_tags=aws.ProviderDefaultTagsArgs(
        tags={
            "project": "search-ranking",
            "environment": pulumi.get_stack(),
            "owner": "search-team",
            "cost-center": "search",
            "managed-by": "pulumi",
        }
    ),
)
cluster = k8s.Provider("platform-cluster", kubeconfig=platform.require_output("kubeconfig"))
oidc_provider_arn = platform.require_output("oidcProviderArn")
oidc_issuer = oidc_provider_arn.apply(lambda arn: str(arn).split(":oidc-provider/", 1)[1])
bucket = platform.require_output("artifactBucket")
tracking_uri = platform.require_output("trackingUri")


def bucket_policy(prefix: str, actions: list[str]) -> pulumi.Output[str]:
    """Only this team's prefix of the platform's artifact bucket."""
    return policy_document(
        [
            statement(actions, [pulumi.Output.concat("arn:aws:s3:::", bucket, "/", prefix, "/*")], sid="Objects"),
            statement(
                ["s3:ListBucket"],
                [pulumi.Output.concat("arn:aws:s3:::", bucket)],
                sid="List",
                condition={"StringLike": {"s3:prefix": [f"{prefix}/*"]}},
            ),
        ]
    )


def irsa(service_account: str, policy: pulumi.Output[str]) -> aws.iam.Role:
    return create_service_account_role(
        f"search-{service_account}",
        oidc_provider_arn=oidc_provider_arn,
        oidc_issuer=oidc_issuer,
        namespace=NAMESPACE,
        service_account=service_account,
        policy=policy,
        opts=pulumi.ResourceOptions(provider=aws_provider),
    )


namespace = k8s.core.v1.Namespace(
    "search",
    metadata=k8s.meta.v1.ObjectMetaArgs(name=NAMESPACE, labels={"pod-security.kubernetes.io/enforce": "restricted"}),
    opts=pulumi.ResourceOptions(provider=cluster),
)
on_cluster = pulumi.ResourceOptions(providers=[cluster])

scorer_role = irsa("search-ranker", bucket_policy("mlflow", ["s3:GetObject"]))
ranker = ModelService(
    "search-ranker",
    ModelServiceArgs(
        namespace=namespace.metadata.name,
        image=config.require("servingImage"),
        model_uri="models:/search-ranker@champion",
        tracking_uri=tracking_uri,
        service_account_role_arn=scorer_role.arn,
        min_replicas=2,
        max_replicas=8,
        resources=Resources(cpu="1", memory="2Gi"),
        ingress=False,  # called in-cluster by the search API
    ),
    opts=on_cluster,
)

trainer_role = irsa(
    "search-ranker-train",
    bucket_policy("checkpoints/search-ranker", ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]),
)
retrain = TrainingJob(
    "search-ranker-train",
    TrainingJobArgs(
        namespace=namespace.metadata.name,
        image=config.require("trainingImage"),  # a CUDA build (tag ending in -cuda): the job asks for a GPU
        config={"epochs": 30, "registry": {"model_name": "search-ranker"}},
        checkpoint_uri=pulumi.Output.concat("s3://", bucket, "/checkpoints/search-ranker"),
        tracking_uri=tracking_uri,
        resources=Resources(cpu="3", memory="12Gi", gpus=1),
        service_account_role_arn=trainer_role.arn,
        schedule="0 4 * * 0",
    ),
    opts=on_cluster,
)

pulumi.export("services", ranker.service_names)
pulumi.export("trainingJob", retrain.job_name)
pulumi.export("roles", pulumi.Output.all(scorer_role.arn, trainer_role.arn).apply(json.dumps))
