"""Stack config: every workload's requests must fit the smallest node of a pool that can host it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from support.config import config, problems

from mlplat.components.capacity import INSTANCE_TYPES
from mlplat.components.cluster import default_node_pools
from mlplat.infra.config import ENVIRONMENTS, load, preset
from mlplat.infra.stacks import load_stack

ROOT = Path(__file__).resolve().parents[2]
JOB = {"config": {"epochs": 1, "registry": {"model_name": "digits"}}}

OLD_DEV = (
    "mlplat:trainingJobs.digits.resources: cpu '2' does not fit on t3.large (pool 'cpu'), which has 1.75 CPU "
    "and 6.5 GiB allocatable after kubelet reservations and DaemonSets; the largest request that fits is "
    "cpu '1750m', memory '6717Mi'"
)
OLD_PRODUCTION = (
    "mlplat:trainingJobs.digits.resources: cpu '4' and memory '16Gi' do not fit on g5.xlarge "
    "(pool 'gpu'), which has 3.74 CPU, 13.7 GiB and 1 GPU allocatable after kubelet reservations and "
    "DaemonSets; the largest request that fits is cpu '3740m', memory '14042Mi', gpus 1"
)


@pytest.mark.parametrize("stack", ["dev", "production"])
def test_shipped_stacks_fit_their_nodes(stack: str) -> None:
    load(load_stack(ROOT, stack).config)


def test_old_dev_training_request_fails_with_the_largest_that_fits() -> None:
    assert problems("dev", trainingJobs={"digits": {**JOB, "resources": {"cpu": "2", "memory": "4Gi", "gpus": 0}}}) == [
        OLD_DEV
    ]


def test_old_production_training_request_fails_with_the_largest_that_fits() -> None:
    assert problems(
        "production", trainingJobs={"digits": {**JOB, "resources": {"cpu": "4", "memory": "16Gi", "gpus": 1}}}
    ) == [OLD_PRODUCTION]


def test_new_requests_pass() -> None:
    load(config("dev", trainingJobs={"digits": {**JOB, "resources": {"cpu": "1500m", "memory": "4Gi", "gpus": 0}}}))
    load(config("production", trainingJobs={"digits": {**JOB, "resources": {"cpu": "3", "memory": "12Gi", "gpus": 1}}}))


def test_services_and_tracking_are_checked_one_line_each() -> None:
    found = problems(
        "dev",
        tracking={"resources": {"cpu": "1800m", "memory": "1Gi"}},
        services={
            "digits": {
                "modelUri": "models:/digits@champion",
                "resources": {"cpu": "1", "memory": "7Gi"},
                "canary": {"modelUri": "models:/digits@challenger"},
            }
        },
    )
    assert [p.split(": ", 1)[0] for p in found] == ["mlplat:tracking.resources", "mlplat:services.digits.resources"]
    assert found[1].startswith("mlplat:services.digits.resources: memory '7Gi' does not fit on t3.large")
    # Disabled tracking runs no pods, so its requests do not matter.
    load(config("dev", tracking={"enabled": False, "resources": {"cpu": "1800m", "memory": "1Gi"}}))


def test_gpu_job_without_a_gpu_pool() -> None:
    # The stack's nodeGroups replace the preset's whole: listing only dev's CPU pool drops the GPU pool.
    cpu = preset("dev")["mlplat:cluster"]["nodeGroups"]["cpu"]
    found = problems(
        "dev",
        cluster={"nodeGroups": {"cpu": cpu}},
        trainingJobs={"digits": {**JOB, "resources": {"cpu": "1", "memory": "1Gi", "gpus": 1}}},
    )
    assert found == [
        "mlplat:trainingJobs.digits.resources: no node pool can host this pod: a GPU pod (gpus 1) runs only on a "
        "pool labelled workload=gpu whose taints it tolerates (nvidia.com/gpu=true:NoSchedule), with an NVIDIA "
        "AMI; pools: 'cpu': no label workload=gpu"
    ]


def test_unknown_instance_type_is_refused_at_its_key_naming_what_is_allowed() -> None:
    # the config accepts only the capacity table's types (each priced too); the component names how to add one
    (problem,) = problems(
        "dev",
        cluster={"nodeGroups": {"cpu": {"instanceTypes": ["m7a.large"]}}},
        tracking={"enabled": False},
        services={"digits": {"modelUri": "models:/digits@champion"}},
    )
    assert problem.startswith(
        "mlplat:cluster.nodeGroups.cpu.instanceTypes: ['m7a.large'] is not in mlplat's "
        "capacity and price tables, so neither the fit of pods nor the cost could be checked; "
        "allowed: m5.large, m5.xlarge, "
    )
    assert problem.endswith(", p4d.24xlarge, p5.48xlarge")


def _types_in_stack_files() -> set[str]:
    types: set[str] = set()
    for path in ROOT.glob("Pulumi.*.yaml"):
        groups = (yaml.safe_load(path.read_text())["config"].get("mlplat:cluster") or {}).get("nodeGroups") or {}
        types.update(t for group in groups.values() for t in group.get("instanceTypes", []))
    return types


def test_every_instance_type_the_repo_uses_is_in_the_table() -> None:
    used = {
        t
        for env in ENVIRONMENTS
        for group in preset(env)["mlplat:cluster"]["nodeGroups"].values()
        for t in group["instanceTypes"]
    }
    used |= {t for pool in default_node_pools() for t in pool.instance_types}
    used |= _types_in_stack_files()
    for path in (ROOT / "examples").rglob("*"):
        if path.suffix in (".py", ".yaml", ".yml"):
            used |= set(re.findall(r"\b(?:[cgmprt]\d[a-z]*)\.\d*x?large\b|\bt3a?\.medium\b", path.read_text()))
    assert used and used <= set(INSTANCE_TYPES), sorted(used - set(INSTANCE_TYPES))
