"""The environment the components give their containers is read by the software in them.

pydantic-settings ignores a variable it has no field for and MLflow ignores one it never looks up, so a renamed
field or a typo in a component would silently fall back to a default on the cluster. Each variable a rendered
workload sets must be a field of the server's settings (``MLPLAT_SERVING_*``), a name the trainer reads (other
``MLPLAT_*``), a name MLflow's own source reads (``MLFLOW_*``), or one of the few process-level variables listed
here with their reader.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import mlflow
import pytest

from mlplat.contracts import training_env
from mlplat.infra.engine import Render
from mlplat.serving.settings import ENV_PREFIX, ServingSettings

WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job")
# Read by the process, not by mlplat or MLflow settings: the reason each is set.
PROCESS_LEVEL = {
    "HOME": "Python and MLflow write caches under $HOME; pods run with a read-only root and HOME on the /tmp volume",
    "AWS_REGION": "boto3",
    "AWS_DEFAULT_REGION": "boto3",
    "PYTHONUNBUFFERED": "the interpreter: log lines reach the pod's log as they are written",
}
TRAINER_SOURCE = Path(__file__).resolve().parents[2] / "training"


def rendered_env(stack: Render) -> dict[str, set[str]]:
    """Variable name -> the workload/container pairs that set it, over the stack's workloads and init containers."""
    names: dict[str, set[str]] = {}
    for resource in stack.resources:
        if not resource.type.startswith("kubernetes:") or resource.type.rsplit(":", 1)[-1] not in WORKLOADS:
            continue
        spec = resource.inputs.get("spec", {})
        pod = spec.get("template", {}).get("spec", {})
        for container in [*pod.get("containers", []), *pod.get("initContainers", [])]:
            for env in container.get("env") or []:
                names.setdefault(env["name"], set()).add(f"{resource.name}/{container['name']}")
    return names


@functools.cache
def mlflow_source() -> str:
    """The text of MLflow's Python source: where it reads its environment (environment_variables, the CLI's click
    envvars, the auth app's config)."""
    root = Path(mlflow.__file__).parent
    return "\n".join(path.read_text(errors="replace") for path in root.rglob("*.py"))


@functools.cache
def trainer_source() -> str:
    """The trainer's Python source: the ``MLPLAT_*`` variables it reads are named there as string constants, or
    through :mod:`mlplat.contracts.training_env`'s constants."""
    return "\n".join(path.read_text() for path in TRAINER_SOURCE.glob("*.py"))


def trainer_reads(name: str) -> bool:
    """Whether the trainer reads variable `name`: a literal in its source, or a contract constant it uses."""
    constants = [key for key, value in vars(training_env).items() if value == name and key.isupper()]
    return f'"{name}"' in trainer_source() or any(re.search(rf"\b{key}\b", trainer_source()) for key in constants)


@pytest.mark.parametrize("stack_name", ["dev", "production"])
def test_every_variable_a_workload_sets_has_a_reader(stack_name: str, request: pytest.FixtureRequest) -> None:
    stack: Render = request.getfixturevalue(f"{stack_name}_stack")
    env = rendered_env(stack)
    serving_fields = {ENV_PREFIX + field.upper() for field in ServingSettings.model_fields}
    unread = []
    for name, where in sorted(env.items()):
        if name.startswith(ENV_PREFIX):
            known = name in serving_fields
        elif name.startswith("MLPLAT_"):
            known = trainer_reads(name)
        elif name.startswith("MLFLOW_"):
            known = f'"{name}"' in mlflow_source()
        else:
            known = name in PROCESS_LEVEL
        if not known:
            unread.append(f"{name} (set for {sorted(where)})")
    assert not unread, "variables nothing in the image reads: " + "; ".join(unread)
    assert {"MLPLAT_SERVING_MODEL_URI", "MLFLOW_TRACKING_URI", "MLFLOW_BACKEND_STORE_URI"} <= set(env), (
        "the render changed shape: this test no longer sees the workloads' environment"
    )


def test_the_check_catches_a_misspelt_variable() -> None:
    serving_fields = {ENV_PREFIX + field.upper() for field in ServingSettings.model_fields}
    assert "MLPLAT_SERVING_MAX_BATCH_SIZE" in serving_fields
    assert "MLPLAT_SERVING_MAX_BATCHSIZE" not in serving_fields
    assert '"MLFLOW_TRACKING_URI"' in mlflow_source()
    assert '"MLFLOW_TRACKING_URL"' not in mlflow_source()
    assert trainer_reads("MLPLAT_ATTEMPT_ID") and not trainer_reads("MLPLAT_ATTEMPT")
