"""What the offline engine renders for Kubernetes validates against the cluster version's schemas, and the
Dockerfiles pass hadolint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
from support.manifests import manifests

from mlplat.infra.engine import Render
from mlplat.infra.synth import render_stack

REPO = Path(__file__).resolve().parents[2]


def cluster_version(stack: Render) -> str:
    return str(stack.one("eks:index:Cluster").inputs["version"])


@pytest.mark.parametrize("stack_name", ["dev", "production"])
def test_rendered_manifests_validate_against_the_clusters_kubernetes_schemas(stack_name: str) -> None:
    stack = render_stack(stack_name, REPO)
    version = cluster_version(stack)
    objects = manifests(stack)
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "Namespace", "Secret", "ServiceAccount"} <= kinds
    for manifest in objects:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            name = manifest["metadata"].get("name")
            pytest.fail(
                f"{manifest['kind']} {name} is not valid Kubernetes {version}: {exc.message} at "
                f"{'.'.join(map(str, exc.path))}"
            )


def test_the_validator_catches_a_misspelt_field() -> None:
    # The check above means something only if a wrong manifest fails it.
    bad = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "replica": 2,
            "selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": []}},
        },
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, "1.32", strict=True)


def test_the_dockerfiles_pass_hadolint() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    dockerfiles = [REPO / "serving" / "Dockerfile", REPO / "training" / "Dockerfile", REPO / "tracking" / "Dockerfile"]
    completed = subprocess.run(
        [str(hadolint), *map(str, dockerfiles)], capture_output=True, text=True, check=False, timeout=60
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    broken = subprocess.run(
        [str(hadolint), "-"],
        input="FROM python\nRUN cd /tmp && pip install x\n",
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert broken.returncode != 0  # and it does flag a Dockerfile with problems
