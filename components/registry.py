"""ECR repositories for the platform's images, and (optionally) building and pushing them."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from mlplat.components.options import component_args
from mlplat.components.validation import check_list_of_names

__all__ = ["ContainerRegistry", "ContainerRegistryArgs", "ImageBuild"]


@dataclass(frozen=True)
class ImageBuild:
    """How to build one repository's image.

    Attributes:
        context: The Docker build context (a folder).
        dockerfile: The Dockerfile, relative to the working directory of ``pulumi up``.
        tag: The image tag; tags are immutable, so change it for every release.
        build_args: ``--build-arg`` values (e.g. a CUDA base image).
        platform: Target platform of the cluster's nodes.
    """

    context: str
    dockerfile: str
    tag: str
    build_args: Mapping[str, str] = field(default_factory=dict)
    platform: str = "linux/amd64"


CUDA_TAG_SUFFIX = "-cuda"
CUDA_BUILD_ARGS: Mapping[str, str] = {
    # The NVIDIA AL2023 AMI's driver (570 series) runs CUDA 12.x user space; the torch wheels must match it.
    "BASE_IMAGE": "nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04",
    "TORCH_INDEX_URL": "https://download.pytorch.org/whl/cu126",
}
"""Build arguments of ``training/Dockerfile`` for a CUDA build (its header documents them)."""


@dataclass(frozen=True)
class ContainerRegistryArgs:
    """Arguments of :class:`ContainerRegistry`.

    Attributes:
        repositories: Short names of the repositories (``serving``, ``training``, ``tracking``: the images of
            ``serving/Dockerfile``, ``training/Dockerfile`` and ``tracking/Dockerfile``).
        name_prefix: Repository names are ``<name_prefix>/<short name>``.
        keep_tagged_images: Keep at most this many tagged images per repository.
        untagged_expire_days: Delete untagged images after this many days.
        kms_key_arn: Encrypt with this KMS key; default: the AWS-managed ECR key (still KMS).
        force_delete: Let ``pulumi destroy`` delete repositories that still hold images (dev only).
        builds: Per repository, build and push the image with the Docker provider.
        images: Per repository, an image URI built elsewhere (used when there is no build).
        default_tag: For repositories with neither a build nor an image: run ``<repository url>:<tag>``,
            the tag CI pushes (tags are immutable, so a release is a config change).
        cuda_repositories: Repositories that also hold a CUDA build, tagged ``<tag>-cuda`` (GPU workloads run
            it; the CPU build stays small for CPU pods). A build of such a repository is built twice.
        cuda_build_args: The ``--build-arg`` values of a CUDA build (a CUDA base image, the CUDA torch wheels).
        cuda_images: Per repository, a CUDA image URI built elsewhere (used when there is no build).
    """

    repositories: Sequence[str] = ("serving", "training", "tracking")
    name_prefix: str = "mlplat"
    keep_tagged_images: int = 50
    untagged_expire_days: int = 7
    kms_key_arn: pulumi.Input[str] | None = None
    force_delete: bool = False
    builds: Mapping[str, ImageBuild] = field(default_factory=dict)
    images: Mapping[str, str] = field(default_factory=dict)
    default_tag: str | None = None
    cuda_repositories: Sequence[str] = ("training",)
    cuda_build_args: Mapping[str, str] = field(default_factory=lambda: dict(CUDA_BUILD_ARGS))
    cuda_images: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("repositories", "cuda_repositories"):
            check_list_of_names("ContainerRegistryArgs", name, getattr(self, name))
        unknown = (set(self.builds) | set(self.images) | set(self.cuda_images)) - set(self.repositories)
        if unknown:
            raise ValueError(
                f"ContainerRegistryArgs: builds/images name {sorted(unknown)}, which are not in repositories "
                f"{list(self.repositories)}"
            )
        if self.keep_tagged_images < 1 or self.untagged_expire_days < 1:
            raise ValueError("ContainerRegistryArgs: keep_tagged_images and untagged_expire_days must be >= 1")


def _lifecycle_policy(keep_tagged: int, untagged_days: int) -> str:
    """ECR lifecycle rules: expire untagged images after N days, keep the newest M tagged ones."""
    return json.dumps(
        {
            "rules": [
                {
                    "rulePriority": 1,
                    "description": f"Expire untagged images after {untagged_days} days",
                    "selection": {
                        "tagStatus": "untagged",
                        "countType": "sinceImagePushed",
                        "countUnit": "days",
                        "countNumber": untagged_days,
                    },
                    "action": {"type": "expire"},
                },
                {
                    "rulePriority": 2,
                    "description": f"Keep the newest {keep_tagged} tagged images",
                    "selection": {
                        "tagStatus": "tagged",
                        "tagPatternList": ["*"],
                        "countType": "imageCountMoreThan",
                        "countNumber": keep_tagged,
                    },
                    "action": {"type": "expire"},
                },
            ]
        },
        sort_keys=True,
    )


class ContainerRegistry(pulumi.ComponentResource):
    """ECR repositories with scan on push, immutable tags, KMS encryption and a lifecycle policy.

    With ``builds``, each image is built from its Dockerfile and pushed (ECR credentials from
    ``aws.ecr.get_authorization_token``); otherwise ``images`` gives URIs built elsewhere (e.g. by CI).

    ``repositories`` holds the ECR repository resources by short name.
    """

    repository_urls: dict[str, pulumi.Output[str]]
    """Short name -> the repository's URL."""
    image_uris: dict[str, pulumi.Output[str]]
    """Short name -> the image to run: the pushed digest, the configured URI, or ``<url>:<default_tag>``;
    otherwise no entry."""
    cuda_image_uris: dict[str, pulumi.Output[str]]
    """Short name -> the CUDA build, for ``cuda_repositories``, from the same sources as ``image_uris``."""

    def __init__(
        self, name: str, args: ContainerRegistryArgs | None = None, opts: pulumi.ResourceOptions | None = None,
        **kwargs: Any,
    ) -> None:
        args = component_args("ContainerRegistry", ContainerRegistryArgs, args, kwargs)
        super().__init__("mlplat:registry:ContainerRegistry", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.repositories: dict[str, aws.ecr.Repository] = {}
        self.repository_urls = {}
        self.image_uris = {}
        self.cuda_image_uris = {}

        for short in args.repositories:
            repo = aws.ecr.Repository(
                f"{name}-{short}",
                name=f"{args.name_prefix}/{short}",
                image_tag_mutability="IMMUTABLE",
                image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(scan_on_push=True),
                encryption_configurations=[
                    aws.ecr.RepositoryEncryptionConfigurationArgs(encryption_type="KMS", kms_key=args.kms_key_arn)
                ],
                force_delete=args.force_delete,
                tags={"Name": f"{args.name_prefix}/{short}"},
                opts=child,
            )
            aws.ecr.LifecyclePolicy(
                f"{name}-{short}-lifecycle",
                repository=repo.name,
                policy=_lifecycle_policy(args.keep_tagged_images, args.untagged_expire_days),
                opts=child,
            )
            self.repositories[short] = repo
            self.repository_urls[short] = repo.repository_url
            build = args.builds.get(short)
            if build is not None:
                self.image_uris[short] = self._build(f"{name}-{short}-image", repo, build)
            elif short in args.images:
                self.image_uris[short] = pulumi.Output.from_input(args.images[short])
            elif args.default_tag is not None:
                self.image_uris[short] = pulumi.Output.concat(repo.repository_url, ":", args.default_tag)
            if short in args.cuda_repositories:
                self._add_cuda_variant(name, short, repo, args)

        self.register_outputs({"repository_urls": self.repository_urls, "image_uris": self.image_uris,
                               "cuda_image_uris": self.cuda_image_uris})

    def _add_cuda_variant(self, name: str, short: str, repo: aws.ecr.Repository, args: ContainerRegistryArgs) -> None:
        build = args.builds.get(short)
        if build is not None:
            cuda = ImageBuild(context=build.context, dockerfile=build.dockerfile, tag=build.tag + CUDA_TAG_SUFFIX,
                              build_args={**build.build_args, **args.cuda_build_args}, platform=build.platform)
            self.cuda_image_uris[short] = self._build(f"{name}-{short}-cuda-image", repo, cuda)
        elif short in args.cuda_images:
            self.cuda_image_uris[short] = pulumi.Output.from_input(args.cuda_images[short])
        elif args.default_tag is not None:
            self.cuda_image_uris[short] = pulumi.Output.concat(repo.repository_url, ":", args.default_tag,
                                                               CUDA_TAG_SUFFIX)

    def _build(self, resource_name: str, repo: aws.ecr.Repository, build: ImageBuild) -> pulumi.Output[str]:
        # Imported here: only stacks that build images need the docker SDK (it adds ~50 ms to every render).
        import pulumi_docker as docker

        token = aws.ecr.get_authorization_token_output(
            registry_id=repo.registry_id, opts=pulumi.InvokeOutputOptions(parent=self)
        )
        image = docker.Image(
            resource_name,
            build=docker.DockerBuildArgs(
                context=build.context,
                dockerfile=build.dockerfile,
                platform=build.platform,
                args=dict(build.build_args),
            ),
            image_name=pulumi.Output.concat(repo.repository_url, ":", build.tag),
            registry=docker.RegistryArgs(
                server=repo.repository_url, username=token.user_name, password=token.password
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        return image.repo_digest
