"""This repository's stack program: typed config in, one :class:`MlPlatform` out.

``infra/__main__.py`` (what ``pulumi up`` runs) and the offline engine both call :func:`build`.
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from mlplat.components.platform import MlPlatform, MlPlatformArgs
from mlplat.components.registry import ContainerRegistryArgs, ContainerRegistrySpec, ImageBuild
from mlplat.infra.config import StackConfig, from_pulumi
from mlplat.infra.images import DOCKERFILES, REPO_ROOT, needs_tag, resolve_image_tag


def platform_args(cfg: StackConfig) -> MlPlatformArgs:
    """The platform's component args from the stack config."""
    reg = cfg.registry
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
        network=cfg.network,
        cluster=cfg.cluster,
        artifacts=cfg.artifacts,
        registry=ContainerRegistryArgs.model_validate(
            {
                **{
                    name: getattr(reg, name) for name in ContainerRegistrySpec.model_fields
                },  # the settings, then wiring
                "name_prefix": f"mlplat-{cfg.environment}",
                "builds": builds,
                "default_tag": tag,
            }
        ),
        tracking=cfg.tracking if cfg.tracking.enabled else None,
        services=cfg.services,
        training_jobs=cfg.training_jobs,
        monitoring=cfg.monitoring if cfg.monitoring.enabled else None,
        alarms=cfg.alarms if cfg.alarms.enabled else None,
        pipeline_role_arn=cfg.deploy.pipeline_role_arn,
    )


def build(cfg: StackConfig) -> dict[str, pulumi.Output[object]]:
    """Create the stack's resources from ``cfg`` and return the stack outputs."""
    provider = aws.Provider("aws", region=cfg.region, default_tags=aws.ProviderDefaultTagsArgs(tags=cfg.tags))
    platform = MlPlatform(
        f"mlplat-{cfg.environment}", platform_args(cfg), opts=pulumi.ResourceOptions(providers=[provider])
    )
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
