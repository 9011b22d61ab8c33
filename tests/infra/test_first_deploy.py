"""scripts/first-deploy.sh: the first-deploy order, and every object it names exists in the stack's render."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from mlplat.infra.engine import Render


def dry_run(repo_root: Path, stack: str, temp: Path) -> list[str]:
    out = subprocess.run(
        ["bash", "scripts/first-deploy.sh", stack, "--dry-run"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TMPDIR": str(temp)},
    ).stdout
    return [line[2:] for line in out.splitlines() if line.startswith("+ ")]


@pytest.mark.parametrize("stack", ["dev", "production"])
def test_order_is_check_platform_model_services(repo_root: Path, stack: str, tmp_path: Path) -> None:
    before = (repo_root / f"Pulumi.{stack}.yaml").read_bytes()
    commands = dry_run(repo_root, stack, tmp_path)
    assert (repo_root / f"Pulumi.{stack}.yaml").read_bytes() == before
    assert list(tmp_path.iterdir()) == [], "the stack file's backup or the kubeconfig was left behind"
    index = {
        name: next(i for i, c in enumerate(commands) if re.search(pattern, c))
        for name, pattern in {
            "check": r"mlplat check",
            "open": r"endpointPublicAccess true",
            "no-await": r"awaitReady false",
            "build": r"buildImages true",
            "up": r"^pulumi up",
            "train": r"wait --for=condition=complete",
            "promote": r"mlplat promote digits --from staging --to champion",
            "ready": r"rollout status",
        }.items()
    }
    assert index["check"] < index["open"] < index["up"] < index["train"] < index["promote"] < index["ready"]
    assert index["no-await"] < index["up"] and index["build"] < index["up"]


def test_kubectl_names_exist_in_the_render(
    repo_root: Path, dev_stack: Render, production_stack: Render, tmp_path: Path
) -> None:
    for stack, render in (("dev", dev_stack), ("production", production_stack)):
        jobs = {
            (r.inputs["metadata"]["namespace"], r.inputs["metadata"]["name"], r.type.rsplit(":", 1)[1].lower())
            for r in render.resources
            if r.type in ("kubernetes:batch/v1:Job", "kubernetes:batch/v1:CronJob")
        }
        deployments = {
            (r.inputs["metadata"]["namespace"], r.inputs["metadata"]["name"])
            for r in render.by_type("kubernetes:apps/v1:Deployment")
        }
        services = {
            (r.inputs["metadata"]["namespace"], r.inputs["metadata"]["name"])
            for r in render.by_type("kubernetes:core/v1:Service")
        }
        for command in dry_run(repo_root, stack, tmp_path):
            words = command.split()
            if words[0] != "kubectl":
                continue
            namespace = words[words.index("-n") + 1]
            if "--from=cronjob/" in command:
                source = command.split("--from=cronjob/")[1].split()[0]
                assert (namespace, source, "cronjob") in jobs, (stack, command)
            elif "job/" in command and "create job" not in command:
                name = command.split("job/")[1].split()[0]
                assert (namespace, name, "job") in jobs or name.endswith("-first"), (stack, command, jobs)
            elif "deployment/" in command:
                assert (namespace, command.split("deployment/")[1].split()[0]) in deployments, (stack, command)
            elif "svc/" in command:
                assert (namespace, command.split("svc/")[1].split()[0]) in services, (stack, command)
