"""ECR repositories for the platform's images, and (optionally) building and pushing them."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

import pulumi
import pulumi_aws as aws
from pydantic import Field, InstanceOf, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from mlplat.components.options import component_args
from mlplat.components.spec import PROBLEM, Spec, StrInput
from mlplat.components.validation import check_list_of_names

__all__ = ["ContainerRegistry", "ContainerRegistryArgs", "ContainerRegistrySpec", "ImageBuild"]

_REPOSITORY_NAME = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")


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


class ContainerRegistrySpec(Spec):
    """The registry's settings (``mlplat:registry``); :class:`ContainerRegistryArgs` adds what the stack program
    computes (the name prefix, the builds, the default tag)."""

    repositories: list[str] = ["serving", "training", "tracking"]
    """Short names of the repositories (``serving``, ``training``, ``tracking``: the images of
    ``serving/Dockerfile``, ``training/Dockerfile`` and ``tracking/Dockerfile``)."""
    keep_tagged_images: int = Field(default=50, ge=1, le=1000)
    """Keep at most this many tagged images per repository."""
    untagged_expire_days: int = Field(default=7, ge=1)
    """Delete untagged images after this many days."""
    kms_key_arn: StrInput | None = None
    """Encrypt with this KMS key; default: the AWS-managed ECR key (still KMS)."""
    force_delete: bool = False
    """Let ``pulumi destroy`` delete repositories that still hold images (dev only)."""
    images: dict[str, str] = {}
    """Per repository, an image URI built elsewhere (used when there is no build)."""
    cuda_repositories: list[str] = ["training"]
    """Repositories that also hold a CUDA build, tagged ``<tag>-cuda`` (GPU workloads run it; the CPU build stays
    small for CPU pods). A build of such a repository is built twice."""
    cuda_build_args: dict[str, str] = dict(CUDA_BUILD_ARGS)
    """The ``--build-arg`` values of a CUDA build (a CUDA base image, the CUDA torch wheels)."""
    cuda_images: dict[str, str] = {}
    """Per repository, a CUDA image URI built elsewhere (used when there is no build); default
    ``<repository url>:<tag>-cuda``."""

    @field_validator("repositories", "cuda_repositories", mode="before")
    @classmethod
    def _not_one_string(cls, value: Any, info: ValidationInfo) -> Any:
        try:
            check_list_of_names("ContainerRegistryArgs", str(info.field_name), value)
        except ValueError as exc:  # its message shows the value: the stack config adds no "(got ...)"
            raise PydanticCustomError(PROBLEM, "{problem}", {"problem": str(exc)}) from None
        return value

    @field_validator("repositories")
    @classmethod
    def _repos(cls, value: list[str]) -> list[str]:
        for repo in value:
            if not _REPOSITORY_NAME.fullmatch(repo):
                raise ValueError(
                    f"{repo!r} is not a valid ECR repository name (lowercase letters, digits, and . _ - between them)"
                )
        if len(set(value)) != len(value):
            raise ValueError(f"{value} lists a repository twice")
        return value

    @model_validator(mode="after")
    def _images(self) -> Self:
        for key, images in (("images", self.images), ("cudaImages", self.cuda_images)):
            unknown = set(images) - set(self.repositories)
            if unknown:
                raise ValueError(f"{key} names {sorted(unknown)}, which are not in repositories {self.repositories}")
        return self


class ContainerRegistryArgs(ContainerRegistrySpec):
    """Arguments of :class:`ContainerRegistry`: its settings (:class:`ContainerRegistrySpec`) and what the stack
    program computes."""

    name_prefix: str = "mlplat"
    """Repository names are ``<name_prefix>/<short name>``."""
    builds: dict[str, InstanceOf[ImageBuild]] = {}
    """Per repository, build and push the image with the Docker provider."""
    default_tag: str | None = None
    """For repositories with neither a build nor an image: run ``<repository url>:<tag>``, the tag CI pushes (tags
    are immutable, so a release is a config change)."""

    @model_validator(mode="after")
    def _builds(self) -> Self:
        unknown = set(self.builds) - set(self.repositories)
        if unknown:
            raise ValueError(f"builds names {sorted(unknown)}, which are not in repositories {self.repositories}")
        return self


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
        self,
        name: str,
        args: ContainerRegistryArgs | None = None,
        opts: pulumi.ResourceOptions | None = None,
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

        self.register_outputs(
            {
                "repository_urls": self.repository_urls,
                "image_uris": self.image_uris,
                "cuda_image_uris": self.cuda_image_uris,
            }
        )

    def _add_cuda_variant(self, name: str, short: str, repo: aws.ecr.Repository, args: ContainerRegistryArgs) -> None:
        build = args.builds.get(short)
        if build is not None:
            cuda = ImageBuild(
                context=build.context,
                dockerfile=build.dockerfile,
                tag=build.tag + CUDA_TAG_SUFFIX,
                build_args={**build.build_args, **args.cuda_build_args},
                platform=build.platform,
            )
            self.cuda_image_uris[short] = self._build(f"{name}-{short}-cuda-image", repo, cuda)
        elif short in args.cuda_images:
            self.cuda_image_uris[short] = pulumi.Output.from_input(args.cuda_images[short])
        elif args.default_tag is not None:
            self.cuda_image_uris[short] = pulumi.Output.concat(
                repo.repository_url, ":", args.default_tag, CUDA_TAG_SUFFIX
            )

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
            registry=docker.RegistryArgs(server=repo.repository_url, username=token.user_name, password=token.password),
            opts=pulumi.ResourceOptions(parent=self),
        )
        return image.repo_digest
