"""Which image tag a stack's workloads run, and which images CI builds and pushes for it.

Images are tagged with the commit they are built from: the repositories' tags are immutable, so a tag names one
build, and a commit names the code of all three images (``serving/Dockerfile``, ``training/Dockerfile``,
``tracking/Dockerfile``). The deploy workflow builds and pushes ``<repository>:<commit>`` (and the trainer's
``<commit>-cuda`` when a GPU job runs it), then deploys with ``MLPLAT_IMAGE_TAG=<commit>``, so the workloads run
exactly the tags that were pushed.

The tag, first found wins (:func:`resolve_image_tag`):

1. ``MLPLAT_IMAGE_TAG``: what the deploy workflow pushed;
2. ``mlplat:registry.imageTag`` in the stack file: a pinned release;
3. the commit checked out, when the program runs from this repository's git work tree (``pulumi up`` or
   ``mlplat synth`` from a checkout, ``registry.buildImages`` included);
4. none: a config error that says how to give one.

:func:`images_to_push` reads the images from a render (what the workloads really run), not from the config, so
the workflow builds exactly what the stack deploys.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlplat.components.registry import CUDA_BUILD_ARGS, CUDA_TAG_SUFFIX
from mlplat.infra.config import ConfigError, RegistryConfig
from mlplat.infra.pod_specs import POD_SPEC_PATHS

IMAGE_TAG_ENV = "MLPLAT_IMAGE_TAG"
REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES: Mapping[str, str] = {
    "serving": "serving/Dockerfile",
    "training": "training/Dockerfile",
    "tracking": "tracking/Dockerfile",
}
"""Each repository's Dockerfile, relative to the repository root (the build context)."""
ECR_REPOSITORY = "aws:ecr/repository:Repository"
ECR_HOST = ".dkr.ecr."  # <account>.dkr.ecr.<region>.amazonaws.com: the stack's own registry


def checked_out_commit(repo: Path = REPO_ROOT) -> str | None:
    """The commit checked out in ``repo`` when ``repo`` is the top of a git work tree, else None.

    Only the top counts: an installed mlplat inside some other repository (a virtualenv in a team's project) must
    not deploy that repository's commit.
    """
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--show-toplevel", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = done.stdout.split()
    if done.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() != repo.resolve():
        return None
    return lines[1]


def needs_tag(registry: RegistryConfig) -> bool:
    """Whether any workload image comes from ``<repository>:<tag>`` (a build, or an image CI pushes)."""
    cuda = set(registry.cuda_repositories) & set(registry.repositories)
    return (
        registry.build_images
        or any(r not in registry.images for r in registry.repositories)
        or any(r not in registry.cuda_images for r in cuda)
    )


def resolve_image_tag(
    registry: RegistryConfig, environ: Mapping[str, str] | None = None, repo: Path = REPO_ROOT
) -> str:
    """The tag the workloads run: ``MLPLAT_IMAGE_TAG``, else ``registry.imageTag``, else the checked-out commit.

    Raises :class:`ConfigError` when none gives one, or ``MLPLAT_IMAGE_TAG`` is not a tag.
    """
    environ = os.environ if environ is None else environ
    given = environ.get(IMAGE_TAG_ENV, "").strip()
    if given:
        try:
            return RegistryConfig.check_tag(given)
        except ValueError as exc:
            raise ConfigError([f"{IMAGE_TAG_ENV}: {exc}"]) from None
    if registry.image_tag is not None:
        return registry.image_tag
    commit = checked_out_commit(repo)
    if commit is not None:
        return commit
    raise ConfigError(
        [
            f"mlplat:registry.imageTag: no image tag for the workloads: {repo} is not a git work tree, and neither "
            f"{IMAGE_TAG_ENV} (the deploy workflow sets it to the commit whose images it pushed) nor "
            "mlplat:registry.imageTag (a pinned release) is set; set one, or give every repository an image in "
            "registry.images / registry.cudaImages"
        ]
    )


@dataclass(frozen=True)
class ImageToPush:
    """One image CI builds from this repository and pushes for a stack."""

    repository: str  # the ECR repository name, e.g. mlplat-dev/serving
    name: str  # its short name: serving, training, tracking
    dockerfile: str  # relative to the repository root, which is the build context
    tag: str
    build_args: Mapping[str, str] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        """``<repository>:<tag>``: the image's name in the stack's registry, without the registry host."""
        return f"{self.repository}:{self.tag}"

    def to_json(self) -> dict[str, Any]:
        return {
            "repository": self.repository,
            "name": self.name,
            "dockerfile": self.dockerfile,
            "tag": self.tag,
            "buildArgs": dict(self.build_args),
            "ref": self.ref,
        }


def workload_images(document: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(resource name, image) of every container, init containers included, of the render's Kubernetes pods."""
    for record in document.get("resources", []):
        path = POD_SPEC_PATHS.get(record.get("type", ""))
        if path is None:
            continue
        spec: Any = record.get("inputs", {})
        for key in path:
            spec = spec.get(key, {}) if isinstance(spec, Mapping) else {}
        if not isinstance(spec, Mapping):
            continue
        for kind in ("initContainers", "containers"):
            for container in spec.get(kind) or []:
                if isinstance(container, Mapping) and isinstance(container.get("image"), str):
                    yield str(record.get("name", "?")), container["image"]


def images_to_push(
    document: Mapping[str, Any], tag: str, dockerfiles: Mapping[str, str] = DOCKERFILES
) -> list[ImageToPush]:
    """The images CI must push for a rendered stack: each workload image ``<stack repository>:<tag>`` (or
    ``:<tag>-cuda``), with the Dockerfile and build args that make it. Images by digest (built by ``pulumi up``),
    in other registries or at other tags (``registry.images``) are someone else's to build."""
    repositories = {
        str(r.get("inputs", {}).get("name")) for r in document.get("resources", []) if r.get("type") == ECR_REPOSITORY
    }
    found: dict[tuple[str, str], ImageToPush] = {}
    for resource, image in workload_images(document):
        if "@" in image:
            continue
        location, _, image_tag = image.rpartition(":")
        host, _, repository = location.partition("/")
        if ECR_HOST not in host or repository not in repositories or image_tag not in (tag, tag + CUDA_TAG_SUFFIX):
            continue
        name = repository.rpartition("/")[2]
        if name not in dockerfiles:
            raise ValueError(
                f"{resource} runs {image}, an image of the stack's repository {repository}, but no "
                f"Dockerfile builds {name!r}; Dockerfiles: {', '.join(sorted(dockerfiles))}"
            )
        args = CUDA_BUILD_ARGS if image_tag == tag + CUDA_TAG_SUFFIX else {}
        found[(repository, image_tag)] = ImageToPush(repository, name, dockerfiles[name], image_tag, dict(args))
    return [found[key] for key in sorted(found)]
