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
    assert sorted(r.inputs["name"] for r in repos) == [
        "mlplat-production/serving",
        "mlplat-production/tracking",
        "mlplat-production/training",
    ]
    for repo in repos:
        assert repo.inputs["imageTagMutability"] == "IMMUTABLE"
        assert repo.inputs["imageScanningConfiguration"] == {"scanOnPush": True}
        assert repo.inputs["encryptionConfigurations"][0]["encryptionType"] == "KMS"


def test_lifecycle_keeps_n_tagged_and_expires_untagged(production_stack: Render, dev_stack: Render) -> None:
    for stack, keep in ((production_stack, 50), (dev_stack, 10)):
        policies = stack.by_type("aws:ecr/lifecyclePolicy:LifecyclePolicy")
        assert len(policies) == 3
        rules = {r["selection"]["tagStatus"]: r for r in json.loads(policies[0].inputs["policy"])["rules"]}
        assert rules["tagged"]["selection"]["countNumber"] == keep
        assert rules["untagged"]["selection"]["countType"] == "sinceImagePushed"


def test_no_image_build_unless_switched_on(production_stack: Render) -> None:
    assert production_stack.by_type("docker:index/image:Image") == []


def test_image_build_pushes_to_the_repository_with_ecr_credentials(render_program: Callable[..., Render]) -> None:
    def program() -> None:
        reg = ContainerRegistry(
            "reg",
            ContainerRegistryArgs(
                repositories=["serving"],
                builds={
                    "serving": ImageBuild(
                        context=".", dockerfile="serving/Dockerfile", tag="1.2.3", build_args={"BASE": "cuda"}
                    )
                },
            ),
        )
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


def test_training_has_a_cuda_build_beside_the_cpu_one(render_program: Callable[..., Render]) -> None:
    def program() -> None:
        reg = ContainerRegistry(
            "reg",
            ContainerRegistryArgs(
                builds={"training": ImageBuild(context=".", dockerfile="training/Dockerfile", tag="1.2.3")},
                default_tag="1.2.3",
            ),
        )
        pulumi.export("cpu", reg.image_uris["training"])
        pulumi.export("cuda", reg.cuda_image_uris["training"])
        pulumi.export("serving", reg.image_uris["serving"])
        pulumi.export("variants", sorted(reg.cuda_image_uris))

    stack = render_program(program)
    images = {i.name: i.inputs for i in stack.by_type("docker:index/image:Image")}
    assert sorted(images) == ["reg-training-cuda-image", "reg-training-image"]
    cuda = images["reg-training-cuda-image"]
    assert cuda["imageName"].endswith("/training:1.2.3-cuda")
    assert cuda["build"]["args"]["BASE_IMAGE"].startswith("nvidia/cuda:")
    assert "/whl/cu" in cuda["build"]["args"]["TORCH_INDEX_URL"]
    assert images["reg-training-image"]["build"].get("args", {}) == {}
    assert stack.outputs["variants"] == ["training"]
    assert stack.outputs["serving"].endswith("/serving:1.2.3")


def test_without_a_build_the_cuda_variant_is_the_pushed_tag_or_a_given_uri(
    render_program: Callable[..., Render],
) -> None:
    def program() -> None:
        tagged = ContainerRegistry("tagged", ContainerRegistryArgs(name_prefix="a", default_tag="2.0.0"))
        given = ContainerRegistry(
            "given", ContainerRegistryArgs(name_prefix="b", cuda_images={"training": "example/train:9-cuda"})
        )
        pulumi.export("tagged", tagged.cuda_image_uris["training"])
        pulumi.export("given", given.cuda_image_uris["training"])

    outputs = render_program(program).outputs
    assert outputs["tagged"].endswith("/a/training:2.0.0-cuda")
    assert outputs["given"] == "example/train:9-cuda"
