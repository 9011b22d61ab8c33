"""ContainerRegistry: repository controls, lifecycle rules, and image builds when switched on."""

from __future__ import annotations

import json
from collections.abc import Callable

import pulumi
import pytest

from mlplat.components.registry import ContainerRegistry, ContainerRegistryArgs, ImageBuild
from mlplat.infra.engine import MASK, Render

REPO = "aws:ecr/repository:Repository"


def test_repositories_scan_on_push_with_immutable_tags_and_kms(production_stack: Render) -> None:
    repos = production_stack.by_type(REPO)
    assert sorted(r.inputs["name"] for r in repos) == ["mlplat-production/serving", "mlplat-production/training"]
    for repo in repos:
        assert repo.inputs["imageTagMutability"] == "IMMUTABLE"
        assert repo.inputs["imageScanningConfiguration"] == {"scanOnPush": True}
        assert repo.inputs["encryptionConfigurations"][0]["encryptionType"] == "KMS"


def test_lifecycle_keeps_n_tagged_and_expires_untagged(production_stack: Render, dev_stack: Render) -> None:
    for stack, keep in ((production_stack, 50), (dev_stack, 10)):
        policies = stack.by_type("aws:ecr/lifecyclePolicy:LifecyclePolicy")
        assert len(policies) == 2
        rules = {r["selection"]["tagStatus"]: r for r in json.loads(policies[0].inputs["policy"])["rules"]}
        assert rules["tagged"]["selection"]["countNumber"] == keep
        assert rules["untagged"]["selection"]["countType"] == "sinceImagePushed"


def test_no_image_build_unless_switched_on(production_stack: Render) -> None:
    assert production_stack.by_type("docker:index/image:Image") == []


def test_image_build_pushes_to_the_repository_with_ecr_credentials(render_program: Callable[..., Render]) -> None:
    def program() -> None:
        reg = ContainerRegistry("reg", ContainerRegistryArgs(
            repositories=["serving"],
            builds={"serving": ImageBuild(context=".", dockerfile="serving/Dockerfile", tag="1.2.3",
                                          build_args={"BASE": "cuda"})},
        ))
        pulumi.export("uri", reg.image_uris["serving"])

    stack = render_program(program)
    image = stack.one("docker:index/image:Image")
    url = stack.one(REPO).inputs["name"]
    assert image.inputs["imageName"].endswith(f".amazonaws.com/{url}:1.2.3")
    assert image.inputs["build"]["args"] == {"BASE": "cuda"}
    assert image.inputs["registry"]["password"] == MASK
    assert image.inputs["registry"]["server"].endswith(url)
    assert "@sha256:" in stack.outputs["uri"]
    assert "aws:ecr/getAuthorizationToken:getAuthorizationToken" in stack.invokes


def test_configured_image_uris_pass_through(render_program: Callable[..., Render]) -> None:
    def program() -> None:
        reg = ContainerRegistry("reg", ContainerRegistryArgs(images={"serving": "example/serving:1.0"}))
        pulumi.export("uri", reg.image_uris["serving"])

    assert render_program(program).outputs["uri"] == "example/serving:1.0"


def test_builds_for_unknown_repositories_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"\['web'\].*not in repositories"):
        ContainerRegistryArgs(images={"web": "x"})
