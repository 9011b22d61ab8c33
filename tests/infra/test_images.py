"""The image tag the workloads run (mlplat.infra.images): MLPLAT_IMAGE_TAG, else registry.imageTag, else the commit
checked out, else a config error; and the images CI pushes for a stack, read from its render."""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mlplat.cli.app import app
from mlplat.components.registry import CUDA_BUILD_ARGS
from mlplat.infra import program
from mlplat.infra.config import ConfigError, RegistryConfig, load
from mlplat.infra.images import (
    IMAGE_TAG_ENV,
    checked_out_commit,
    images_to_push,
    needs_tag,
    resolve_image_tag,
    workload_images,
)
from mlplat.infra.synth import render_stack

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = {"serving/Dockerfile", "training/Dockerfile", "tracking/Dockerfile"}
runner = CliRunner()


def git_repo(path: Path) -> str:
    """A git work tree at ``path`` with one commit; returns that commit."""
    path.mkdir(parents=True, exist_ok=True)

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(path), *args], capture_output=True, text=True, check=True, timeout=60
        ).stdout.strip()

    git("init", "-q")
    (path / "README").write_text("x\n")
    git("add", "README")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "one")
    return git("rev-parse", "HEAD")


def test_the_environment_wins_then_the_stack_file_then_the_checkout(tmp_path: Path) -> None:
    commit = git_repo(tmp_path / "repo")
    pinned = RegistryConfig(image_tag="v1.4.2")
    assert resolve_image_tag(pinned, {IMAGE_TAG_ENV: "abc123"}, tmp_path / "repo") == "abc123"
    assert resolve_image_tag(pinned, {}, tmp_path / "repo") == "v1.4.2"
    assert resolve_image_tag(RegistryConfig(), {IMAGE_TAG_ENV: "  "}, tmp_path / "repo") == commit
    assert len(commit) == 40  # the full commit, as the workflows push ${GITHUB_SHA}


def test_only_the_top_of_a_work_tree_gives_its_commit(tmp_path: Path) -> None:
    """An install inside some other repository (a virtualenv in a team's project) must not deploy its commit."""
    git_repo(tmp_path / "repo")
    (tmp_path / "repo" / "venv").mkdir()
    assert checked_out_commit(tmp_path / "repo" / "venv") is None
    assert checked_out_commit(tmp_path) is None


def test_no_tag_anywhere_is_a_config_error_that_names_every_way_to_give_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_image_tag(RegistryConfig(), {}, tmp_path)
    (problem,) = caught.value.problems
    assert problem.startswith("mlplat:registry.imageTag: no image tag for the workloads")
    assert IMAGE_TAG_ENV in problem and "not a git work tree" in problem and "registry.images" in problem


@pytest.mark.parametrize("tag", ["latest", "-rc1", "has space", "a" * 124, "v1/2"])
def test_a_bad_tag_is_refused_from_either_source(tag: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_image_tag(RegistryConfig(), {IMAGE_TAG_ENV: tag}, tmp_path)
    assert caught.value.problems[0].startswith(f"{IMAGE_TAG_ENV}: ")
    with pytest.raises(ConfigError) as loaded:
        load({"aws:region": "us-east-1", "mlplat:environment": "dev", "mlplat:registry": json.dumps({"imageTag": tag})})
    assert loaded.value.problems[0].startswith("mlplat:registry.imageTag: ")


def test_a_stack_whose_images_all_come_from_elsewhere_needs_no_tag() -> None:
    elsewhere = {r: f"registry.example.com/{r}:9" for r in ("serving", "training", "tracking")}
    assert not needs_tag(RegistryConfig(images=elsewhere, cuda_images={"training": "registry.example.com/t:9-cuda"}))
    assert needs_tag(RegistryConfig(images=elsewhere))  # the trainer's CUDA build still comes from CI
    assert needs_tag(RegistryConfig(images=elsewhere, cuda_images={"training": "x"}, build_images=True))


def stack_images(stack: str) -> set[str]:
    return {image for _, image in workload_images(render_stack(stack, ROOT).to_json()) if ".dkr.ecr." in image}


def test_the_workloads_run_the_tag_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(IMAGE_TAG_ENV, "4e1d2c3b")
    ecr = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
    assert stack_images("dev") == {f"{ecr}/mlplat-dev/{r}:4e1d2c3b" for r in ("serving", "training", "tracking")}
    # Production's training job asks for a GPU: it runs the CUDA build of the same commit.
    assert stack_images("production") == {
        f"{ecr}/mlplat-production/serving:4e1d2c3b",
        f"{ecr}/mlplat-production/tracking:4e1d2c3b",
        f"{ecr}/mlplat-production/training:4e1d2c3b-cuda",
    }


def test_without_the_variable_a_checkout_deploys_its_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(IMAGE_TAG_ENV)
    commit = checked_out_commit(ROOT)
    assert commit is not None, "the tests run from a git checkout"
    assert {image.rpartition(":")[2] for image in stack_images("dev")} == {commit}


def test_a_program_outside_a_checkout_without_a_tag_fails_before_anything_is_created(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(IMAGE_TAG_ENV)
    monkeypatch.setattr(program, "REPO_ROOT", tmp_path)  # as from an unpacked tarball: no git work tree
    result = runner.invoke(app, ["synth", "dev"])
    assert result.exit_code == 2
    assert "stack 'dev': invalid stack config" in result.output
    assert "mlplat:registry.imageTag: no image tag for the workloads" in result.output


def test_a_pinned_image_tag_in_the_stack_file_is_deployed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(IMAGE_TAG_ENV)
    (tmp_path / "Pulumi.yaml").write_text(f"name: mlplat\nruntime: python\nmain: {ROOT / 'infra'}\n")
    stack = (
        (ROOT / "Pulumi.dev.yaml")
        .read_text()
        .replace(
            "    repositories: [serving, training, tracking]\n",
            "    repositories: [serving, training, tracking]\n    imageTag: release-2026.11.3\n",
        )
    )
    assert "imageTag" in stack
    (tmp_path / "Pulumi.pinned.yaml").write_text(stack)
    images = {image for _, image in workload_images(render_stack("pinned", tmp_path).to_json()) if ".dkr.ecr." in image}
    assert {image.rpartition(":")[2] for image in images} == {"release-2026.11.3"}


# -- what CI pushes ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def production(production_stack: Any) -> dict[str, Any]:
    document: dict[str, Any] = production_stack.to_json()
    return document


def _tag_of(document: dict[str, Any]) -> str:
    return next(image.rpartition(":")[2] for _, image in workload_images(document) if "/serving:" in image)


def test_ci_pushes_exactly_the_images_the_workloads_run(production: dict[str, Any]) -> None:
    pushed = images_to_push(production, _tag_of(production))
    assert {i.dockerfile for i in pushed} == DOCKERFILES
    running = {image.partition("/")[2] for _, image in workload_images(production) if ".dkr.ecr." in image}
    assert {f"{i.repository}:{i.tag}" for i in pushed} == running
    cuda = next(i for i in pushed if i.tag.endswith("-cuda"))
    assert (cuda.name, dict(cuda.build_args)) == ("training", dict(CUDA_BUILD_ARGS))
    assert all(not i.build_args for i in pushed if i is not cuda)


def _retag(document: dict[str, Any], repository: str, change: Callable[[str], str]) -> None:
    for record in document["resources"]:
        if record["type"] not in {"kubernetes:apps/v1:Deployment", "kubernetes:batch/v1:CronJob"}:
            continue
        spec = record["inputs"]["spec"]
        pod = (spec["jobTemplate"]["spec"] if "jobTemplate" in spec else spec)["template"]["spec"]
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            if f"/{repository}:" in container["image"]:
                container["image"] = change(container["image"])


def test_images_built_elsewhere_are_not_ci_s_to_push(production: dict[str, Any]) -> None:
    tag = _tag_of(production)
    document = copy.deepcopy(production)
    _retag(document, "tracking", lambda image: image.rpartition(":")[0] + ":v9")  # registry.images, another tag
    _retag(document, "serving", lambda image: image.rpartition(":")[0] + "@sha256:" + "0" * 64)  # pulumi up's build
    assert [i.ref for i in images_to_push(document, tag)] == [f"mlplat-production/training:{tag}-cuda"]
    _retag(document, "training", lambda image: image.replace(".dkr.ecr.", ".dkr.elsewhere."))  # another registry
    assert images_to_push(document, tag) == []


def test_mlplat_images_prints_the_tag_and_the_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(IMAGE_TAG_ENV, "9f8e7d6")
    result = runner.invoke(app, ["images", "production"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["tag"] == "9f8e7d6"
    assert {i["dockerfile"] for i in plan["images"]} == DOCKERFILES
    assert {i["ref"] for i in plan["images"]} == {
        "mlplat-production/serving:9f8e7d6",
        "mlplat-production/tracking:9f8e7d6",
        "mlplat-production/training:9f8e7d6-cuda",
    }
