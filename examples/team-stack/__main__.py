"""A team's own Pulumi program: mlplat's components on infrastructure the team already has.

The team brings an EKS cluster (its kubeconfig, as a secret), deploys one model service on it and keeps
its artifacts in its own bucket. Nothing here depends on the rest of mlplat's stack.
"""

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from mlplat.components.model_service import ModelService, ModelServiceArgs
from mlplat.components.pods import Resources
from mlplat.components.storage import ArtifactStore, ArtifactStoreArgs, BucketGrant

config = pulumi.Config()
aws_provider = aws.Provider(
    "aws",
    region=pulumi.Config("aws").require("region"),
    default_tags=aws.ProviderDefaultTagsArgs(tags={"team": "fraud", "project": "fraud-scorer"}),
)
cluster = k8s.Provider("existing-cluster", kubeconfig=config.require_secret("kubeconfig"))

# The service's IRSA role exists already (the team's cluster, the team's IAM): grant it read on its models.
reader = aws.iam.Role.get(
    "fraud-scorer-reader",
    config.require("readerRoleArn").rsplit("/", 1)[-1],
    opts=pulumi.ResourceOptions(provider=aws_provider),
)
store = ArtifactStore(
    "fraud-artifacts",
    ArtifactStoreArgs(protect=True, grants=[BucketGrant("fraud-scorer", reader.name, "models/")]),
    opts=pulumi.ResourceOptions(provider=aws_provider),
)

namespace = k8s.core.v1.Namespace(
    "fraud", metadata=k8s.meta.v1.ObjectMetaArgs(name="fraud"), opts=pulumi.ResourceOptions(provider=cluster)
)
service = ModelService(
    "fraud-scorer",
    ModelServiceArgs(
        namespace=namespace.metadata.name,
        image=config.require("image"),
        model_uri=config.require("modelUri"),
        tracking_uri=config.get("trackingUri"),
        service_account_role_arn=config.require("readerRoleArn"),
        min_replicas=2,
        max_replicas=6,
        resources=Resources(cpu="1", memory="2Gi"),
        ingress=False,
    ),
    opts=pulumi.ResourceOptions(providers=[cluster]),
)

pulumi.export("bucket", store.bucket_name)
pulumi.export("services", service.service_names)
