"""This repository's stack program: typed config in, one :class:`MlPlatform` out.

``infra/__main__.py`` (what ``pulumi up`` runs) and the offline engine both call :func:`build`.
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from mlplat.components.network import NetworkArgs
from mlplat.components.platform import PLATFORM, MlPlatform, MlPlatformArgs
from mlplat.components.registry import ContainerRegistryArgs, ImageBuild
from mlplat.components.storage import ArtifactStoreArgs
from mlplat.infra.config import StackConfig, from_pulumi
from mlplat.infra.images import DOCKERFILES, REPO_ROOT, needs_tag, resolve_image_tag


def platform_args(cfg: StackConfig) -> MlPlatformArgs:
    """The platform's component args from the stack config."""
    net, art, reg = cfg.network, cfg.artifacts, cfg.registry
    # The tag the workloads run: what the deploy workflow pushed (MLPLAT_IMAGE_TAG), a pinned imageTag, or the
    # commit checked out; never a constant that no build produces.
    tag = resolve_image_tag(reg, repo=REPO_ROOT) if needs_tag(reg) else None
    builds = {
        repo: ImageBuild(context=str(REPO_ROOT), dockerfile=str(REPO_ROOT / DOCKERFILES[repo]), tag=str(tag))
        for repo in reg.repositories
        if reg.build_images and repo in DOCKERFILES
    }
    return MlPlatformArgs(
        region=cfg.region,
        network=NetworkArgs(
            cidr_block=str(net.cidr),
            az_count=net.az_count,
            availability_zones=net.availability_zones,
            nat=net.nat,
            subnet_newbits=net.subnet_newbits.model_dump(),
            subnet_cidrs=None if net.subnets is None
            else {tier: [str(c) for c in cidrs] for tier, cidrs in net.subnets.model_dump().items()},
            interface_endpoints=net.interface_endpoints,
            flow_log_retention_days=net.flow_log_retention_days,
        ),
        cluster=cfg.cluster.to_args(PLATFORM, PLATFORM, cfg.region, cluster_name=PLATFORM),
        artifacts=ArtifactStoreArgs(
            bucket_name=art.bucket_name,
            create_kms_key=art.kms_key,
            force_destroy=art.force_destroy,
            protect=art.protect,
            noncurrent_to_glacier_days=art.noncurrent_to_glacier_days,
            noncurrent_expire_days=art.noncurrent_expire_days,
            abort_multipart_days=art.abort_multipart_days,
        ),
        registry=ContainerRegistryArgs(
            repositories=reg.repositories,
            name_prefix=f"mlplat-{cfg.environment}",
            keep_tagged_images=reg.keep_tagged_images,
            untagged_expire_days=reg.untagged_expire_days,
            force_delete=reg.force_delete,
            builds=builds,
            images=reg.images,
            cuda_images=reg.cuda_images,
            default_tag=tag,
        ),
        tracking=cfg.tracking.to_args(),
        services={name: svc.to_args() for name, svc in cfg.services.items()},
        training_jobs={name: job.to_args() for name, job in cfg.training_jobs.items()},
        monitoring=cfg.monitoring.to_args(),
        alarms=cfg.alarms.to_args(),
        pipeline_role_arn=cfg.deploy.pipeline_role_arn,
    )


def build(cfg: StackConfig) -> dict[str, pulumi.Output[object]]:
    """Create the stack's resources from ``cfg`` and return the stack outputs."""
    provider = aws.Provider("aws", region=cfg.region, default_tags=aws.ProviderDefaultTagsArgs(tags=cfg.tags))
    platform = MlPlatform(f"mlplat-{cfg.environment}", platform_args(cfg),
                          opts=pulumi.ResourceOptions(providers=[provider]))
    network, cluster = platform.network, platform.cluster
    outputs: dict[str, pulumi.Output[object]] = {
        "vpcId": network.vpc_id,
        "privateSubnetIds": network.private_subnet_ids,
        "databaseSubnetIds": network.database_subnet_ids,
        "artifactBucket": platform.artifacts.bucket_name,
        "repositoryUrls": pulumi.Output.from_input(platform.registry.repository_urls),
        "clusterName": cluster.cluster_name,
        "clusterEndpoint": cluster.endpoint,
        "kubeconfig": cluster.kubeconfig,
        "oidcProviderArn": cluster.oidc_provider_arn,
        "nodeSecurityGroupId": cluster.node_security_group_id,
        "serviceEndpoints": pulumi.Output.from_input(platform.service_endpoints),
    }
    if platform.tracking is not None:
        outputs["trackingUri"] = platform.tracking.uri
    return outputs


def main() -> None:
    """Read the stack's config, build it, export its outputs."""
    for key, value in build(from_pulumi()).items():
        pulumi.export(key, value)
