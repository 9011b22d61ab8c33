"""This repository's stack program: typed config in, the platform's components out.

``infra/__main__.py`` (what ``pulumi up`` runs) and the offline engine both call :func:`build`.
"""

from __future__ import annotations

from pathlib import Path

import pulumi
import pulumi_aws as aws
from mlplat.components.cluster import Cluster
from mlplat.components.network import Network, NetworkArgs
from mlplat.components.registry import ContainerRegistry, ContainerRegistryArgs, ImageBuild
from mlplat.components.storage import ArtifactStore, ArtifactStoreArgs
from mlplat.infra.config import StackConfig, from_pulumi

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = {"serving": "serving/Dockerfile", "training": "training/Dockerfile"}


def build(cfg: StackConfig) -> dict[str, pulumi.Output[object]]:
    """Create the stack's resources from ``cfg`` and return the stack outputs."""
    prefix = f"mlplat-{cfg.environment}"
    provider = aws.Provider(
        "aws",
        region=cfg.region,
        default_tags=aws.ProviderDefaultTagsArgs(tags=cfg.tags),
    )
    opts = pulumi.ResourceOptions(providers=[provider])
    net = cfg.network
    network = Network(
        prefix,
        NetworkArgs(
            cidr_block=str(net.cidr),
            az_count=net.az_count,
            availability_zones=net.availability_zones,
            nat=net.nat,
            subnet_newbits=net.subnet_newbits.model_dump(),
            subnet_cidrs=None if net.subnets is None else {k: [str(c) for c in v]
                                                           for k, v in net.subnets.model_dump().items()},
            interface_endpoints=net.interface_endpoints,
            flow_log_retention_days=net.flow_log_retention_days,
            cluster_name=prefix,
            region=cfg.region,
        ),
        opts=opts,
    )
    cluster = Cluster(
        prefix,
        cfg.cluster.to_args(network.vpc_id, network.private_subnet_ids, cfg.region, cluster_name=prefix),
        opts=opts,
    )
    art = cfg.artifacts
    artifacts = ArtifactStore(
        f"{prefix}-artifacts",
        ArtifactStoreArgs(
            bucket_name=art.bucket_name,
            create_kms_key=art.kms_key,
            force_destroy=art.force_destroy,
            protect=art.protect,
            noncurrent_to_glacier_days=art.noncurrent_to_glacier_days,
            noncurrent_expire_days=art.noncurrent_expire_days,
            abort_multipart_days=art.abort_multipart_days,
        ),
        opts=opts,
    )
    reg = cfg.registry
    builds = {
        repo: ImageBuild(context=str(REPO_ROOT), dockerfile=str(REPO_ROOT / DOCKERFILES[repo]), tag=reg.image_tag)
        for repo in reg.repositories
        if reg.build_images and repo in DOCKERFILES
    }
    registry = ContainerRegistry(
        f"{prefix}-registry",
        ContainerRegistryArgs(
            repositories=reg.repositories,
            name_prefix=prefix,
            keep_tagged_images=reg.keep_tagged_images,
            untagged_expire_days=reg.untagged_expire_days,
            force_delete=reg.force_delete,
            builds=builds,
            images=reg.images,
        ),
        opts=opts,
    )
    return {
        "vpcId": network.vpc_id,
        "privateSubnetIds": network.private_subnet_ids,
        "databaseSubnetIds": network.database_subnet_ids,
        "artifactBucket": artifacts.bucket_name,
        "repositoryUrls": pulumi.Output.from_input(registry.repository_urls),
        "clusterName": cluster.cluster_name,
        "clusterEndpoint": cluster.endpoint,
        "kubeconfig": cluster.kubeconfig,
        "oidcProviderArn": cluster.oidc_provider_arn,
        "nodeSecurityGroupId": cluster.node_security_group_id,
    }


def main() -> None:
    """Read the stack's config, build it, export its outputs."""
    for key, value in build(from_pulumi()).items():
        pulumi.export(key, value)
