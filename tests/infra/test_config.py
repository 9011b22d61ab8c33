"""Stack config: the environment presets, how a stack file overrides them, and errors that name the key and value."""

from __future__ import annotations

import copy
import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi
import pytest

from mlplat.components.cluster import ClusterSpec
from mlplat.components.node_groups import NodePoolArgs
from mlplat.infra.config import ENVIRONMENTS, SECTIONS, ConfigError, StackConfig, load, preset
from mlplat.infra.engine import Render
from mlplat.infra.program import build
from mlplat.infra.stacks import load_stack

BASE = {"aws:region": "us-east-1"}


def problems(values: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load({**BASE, **{k: json.dumps(v) if isinstance(v, dict) else v for k, v in values.items()}})
    return caught.value.problems


def test_environment_defaults_differ_only_through_config() -> None:
    dev = load({**BASE, "mlplat:environment": "dev"})
    prod = load({**BASE, "mlplat:environment": "production"})
    staging = load({**BASE, "mlplat:environment": "staging"})
    assert (dev.network.nat, prod.network.nat, staging.network.nat) == ("single", "per_az", "single")
    assert not dev.network.interface_endpoints and prod.network.interface_endpoints
    assert dev.artifacts.force_destroy and not dev.artifacts.protect
    assert prod.artifacts.protect and not prod.artifacts.force_destroy


def test_stack_values_override_environment_defaults() -> None:
    cfg = load({**BASE, "mlplat:environment": "dev", "mlplat:network": json.dumps({"nat": "per_az", "azCount": 2})})
    assert cfg.network.nat == "per_az" and cfg.network.az_count == 2
    assert cfg.network.flow_log_retention_days == 7  # still dev's default


def test_unknown_environment_lists_the_allowed_ones() -> None:
    assert problems({"mlplat:environment": "prod"}) == [
        "mlplat:environment: 'prod' is not an environment; allowed: dev, staging, production"
    ]


def test_missing_region_says_how_to_set_it() -> None:
    with pytest.raises(ConfigError, match=r"aws:region: missing; set it with `pulumi config set aws:region"):
        load({"mlplat:environment": "dev"})


def test_bad_cidr_names_key_and_value() -> None:
    (problem,) = problems({"mlplat:environment": "dev", "mlplat:network": {"cidr": "10.0.0.0/33"}})
    assert problem.startswith("mlplat:network.cidr: '10.0.0.0/33' is not an IPv4 network")
    (problem,) = problems({"mlplat:environment": "dev", "mlplat:network": {"cidr": "8.8.0.0/16"}})
    assert "not a private (RFC 1918) range" in problem


def test_too_few_azs() -> None:
    (problem,) = problems({"mlplat:environment": "dev", "mlplat:network": {"azCount": 1}})
    assert problem == "mlplat:network.azCount: Input should be greater than or equal to 2 (got 1)"


def test_vpc_too_small_for_the_subnets() -> None:
    (problem,) = problems({"mlplat:environment": "dev", "mlplat:network": {"cidr": "10.0.0.0/24"}})
    assert "AWS subnets must be /28 or larger" in problem


def test_typo_in_a_key_lists_the_allowed_keys() -> None:
    (problem,) = problems({"mlplat:environment": "dev", "mlplat:network": {"natt": "single"}})
    assert problem.startswith("mlplat:network.natt: unknown key; allowed: cidr, azCount,")
    (problem,) = problems({"mlplat:environment": "dev", "mlplat:netwrk": {}})
    assert problem.startswith("mlplat:netwrk: unknown key; allowed: mlplat:alarms, mlplat:artifacts,")


def test_min_greater_than_max_style_contradictions() -> None:
    (problem,) = problems(
        {
            "mlplat:environment": "production",
            "mlplat:artifacts": {"noncurrentToGlacierDays": 400, "noncurrentExpireDays": 100},
        }
    )
    assert "noncurrentExpireDays (100) must be greater than noncurrentToGlacierDays (400)" in problem


def test_retention_must_be_a_cloudwatch_value() -> None:
    (problem,) = problems({"mlplat:environment": "dev", "mlplat:network": {"flowLogRetentionDays": 10}})
    assert problem.startswith("mlplat:network.flowLogRetentionDays: 10 is not a CloudWatch Logs retention period")


def test_every_problem_is_reported_at_once() -> None:
    found = problems(
        {
            "mlplat:environment": "dev",
            "mlplat:network": {"azCount": 9, "nat": "triple"},
            "mlplat:registry": {"repositories": ["Serving"]},
        }
    )
    assert len(found) == 3
    assert any(p.startswith("mlplat:network.nat:") and "'single'" in p for p in found)
    assert any(p.startswith("mlplat:registry.repositories:") and "'Serving'" in p for p in found)


def test_invalid_json_value() -> None:
    with pytest.raises(ConfigError, match=r"mlplat:network: .* is not valid JSON"):
        load({**BASE, "mlplat:environment": "dev", "mlplat:network": "{cidr: 10"})


def test_default_tags_are_plan_time_constants() -> None:
    tags = load({**BASE, "mlplat:environment": "staging"}).tags
    assert tags == {
        "project": "mlplat",
        "environment": "staging",
        "owner": "ml-platform",
        "cost-center": "ml",
        "managed-by": "pulumi",
    }


# -- presets: the environment defaults, visible and overridable key by key ------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def pool(env: str, name: str, **changes: object) -> dict[str, object]:
    """A pool of the env's preset with some fields changed, as a stack file would spell it out."""
    return {**preset(env)["mlplat:cluster"]["nodeGroups"][name], **changes}


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_each_environment_has_a_preset_of_known_keys_that_loads_alone(env: str) -> None:
    defaults = preset(env)
    assert set(defaults) <= {f"mlplat:{key}" for key in SECTIONS}, sorted(defaults)
    cfg = load({**BASE, "mlplat:environment": env})
    assert list(cfg.cluster.node_pools) == list(defaults["mlplat:cluster"]["nodeGroups"])
    assert cfg.network.flow_log_retention_days == defaults["mlplat:network"]["flowLogRetentionDays"]


def test_the_presets_ship_in_the_package() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "mlplat.infra.presets" in setuptools["packages"]
    assert setuptools["package-data"]["mlplat.infra.presets"] == ["*.yaml"]
    assert sorted(p.stem for p in (ROOT / "infra" / "presets").glob("*.yaml")) == sorted(ENVIRONMENTS)


def test_a_stack_can_drop_a_preset_pool() -> None:
    cfg = load(
        {**BASE, "mlplat:environment": "dev", "mlplat:cluster": json.dumps({"nodeGroups": {"cpu": pool("dev", "cpu")}})}
    )
    assert list(cfg.cluster.node_pools) == ["cpu"]
    assert [p.name for p in cfg.cluster.node_pools.values()] == ["cpu"]  # each pool's name is its key
    assert load({**BASE, "mlplat:environment": "dev"}).cluster.node_pools.keys() == {"cpu", "gpu"}
    # The same for the component's own default pools: a ClusterSpec that lists one pool has only that one.
    only_cpu = ClusterSpec(node_pools=[NodePoolArgs(name="cpu", instance_types=["m6i.xlarge"])])
    assert list(only_cpu.node_pools) == ["cpu"] and list(ClusterSpec().node_pools) == ["cpu", "gpu"]


def test_a_pool_is_named_by_its_key() -> None:
    (problem,) = problems(
        {
            "mlplat:environment": "dev",
            "mlplat:cluster": {"nodeGroups": {"cpu": {**pool("dev", "cpu"), "name": "general"}}},
        }
    )
    assert problem == (
        "mlplat:cluster.nodeGroups.cpu.name: 'general' is not the pool's key 'cpu': a pool in "
        "nodeGroups is named by its key; leave name out"
    )


def test_a_pool_with_only_max_size_one_takes_its_own_field_defaults() -> None:
    # Under dev's preset, whose cpu pool has desiredSize 2: none of it leaks into the stack's pool.
    cfg = load(
        {
            **BASE,
            "mlplat:environment": "dev",
            "mlplat:cluster": json.dumps({"nodeGroups": {"cpu": {"instanceTypes": ["t3.large"], "maxSize": 1}}}),
        }
    )
    (args,) = cfg.cluster.node_pools.values()
    assert (args.min_size, args.desired_size, args.initial_size, args.max_size) == (1, None, 1, 1)
    # The component's own defaults are the same ones: no hidden desiredSize 2 either.
    alone = NodePoolArgs(name="cpu", instance_types=["t3.large"], max_size=1)
    assert (alone.min_size, alone.desired_size, alone.initial_size) == (1, None, 1)
    assert (dict(args.labels), list(args.taints), args.capacity_type) == ({}, [], "ON_DEMAND")
    # Without the required key, the error names it, and nothing the user never set.
    assert problems({"mlplat:environment": "dev", "mlplat:cluster": {"nodeGroups": {"cpu": {"maxSize": 1}}}}) == [
        "mlplat:cluster.nodeGroups.cpu.instanceTypes: required"
    ]


def test_a_size_that_contradicts_a_default_says_which_key_to_set() -> None:
    (problem,) = problems(
        {
            "mlplat:environment": "dev",
            "mlplat:cluster": {"nodeGroups": {"cpu": {"instanceTypes": ["t3.large"], "minSize": 4}}},
        }
    )
    assert problem == (
        "mlplat:cluster.nodeGroups.cpu: minSize (4) is greater than maxSize (3, the default); set maxSize to 4 or more"
    )
    (problem,) = problems(
        {
            "mlplat:environment": "dev",
            "mlplat:cluster": {"nodeGroups": {"cpu": {"instanceTypes": ["t3.large"], "minSize": 0, "desiredSize": 5}}},
        }
    )
    assert problem == (
        "mlplat:cluster.nodeGroups.cpu: desiredSize (5) must lie between minSize (0) and maxSize "
        "(3, the default); set maxSize to 5 or more"
    )


def test_errors_repeat_values_with_underscores_and_punctuation_verbatim() -> None:
    found = problems(
        {
            "mlplat:environment": "dev",
            "mlplat:cluster": {
                "adminRoleArns": ["arn:aws:iam::12345:role/ml_admin"],
                "nodeGroups": {"cpu": pool("dev", "cpu", labels={"team_name": "data_science!"})},
            },
        }
    )
    assert found == [
        "mlplat:cluster.adminRoleArns: ['arn:aws:iam::12345:role/ml_admin'] are not IAM role ARNs "
        "(arn:aws:iam::<12-digit account>:role/<name>)",
        "mlplat:cluster.nodeGroups.cpu.labels.team_name: 'data_science!' is not a Kubernetes label value: at most 63 "
        "letters, digits, '-', '_' and '.', starting and ending with a letter or digit (or empty)",
    ]
    # A Python caller gets the same words from the component's args (one schema).
    with pytest.raises(ValueError, match=r"labels\.team_name\n  'data_science!' is not a Kubernetes label value"):
        NodePoolArgs(name="cpu", instance_types=["t3.large"], labels={"team_name": "data_science!"})
    (problem,) = problems(
        {
            "mlplat:environment": "dev",
            "mlplat:cluster": {"nodeGroups": {"cpu": pool("dev", "cpu"), "gpu_pool": pool("dev", "gpu")}},
        }
    )
    assert problem.startswith("mlplat:cluster.nodeGroups.gpu_pool: 'gpu_pool' is not a node pool name")


def test_pool_errors_name_the_stack_files_keys() -> None:
    (problem,) = problems(
        {
            "mlplat:environment": "dev",
            "mlplat:cluster": {
                "nodeGroups": {"cpu": pool("dev", "cpu"), "gpu": pool("dev", "gpu", amiType="AL2023_x86_64_STANDARD")}
            },
        }
    )
    assert problem == (
        "mlplat:cluster.nodeGroups.gpu: instanceTypes ['g4dn.xlarge', 'g5.xlarge', 'g6.xlarge'] have "
        "NVIDIA GPUs but amiType 'AL2023_x86_64_STANDARD' has no driver; set amiType: "
        "AL2023_x86_64_NVIDIA"
    )
    (problem,) = problems(
        {"mlplat:environment": "dev", "mlplat:cluster": {"nodeGroups": {"cpu": pool("dev", "cpu", maxsize=3)}}}
    )
    assert problem.startswith(
        "mlplat:cluster.nodeGroups.cpu.maxsize: unknown key; allowed: instanceTypes, "
        "capacityType, minSize, maxSize, desiredSize,"
    )


def test_a_key_spelled_in_snake_case_still_overrides_the_preset() -> None:
    cfg = load({**BASE, "mlplat:environment": "dev", "mlplat:network": json.dumps({"flow_log_retention_days": 30})})
    assert cfg.network.flow_log_retention_days == 30 and cfg.network.nat == "single"


def _merge_every_mapping(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """The rule before presets: every mapping, node pools included, merged key by key."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        old = merged.get(key)
        merged[key] = _merge_every_mapping(old, value) if isinstance(value, dict) and isinstance(old, dict) else value
    return merged


@pytest.mark.parametrize("stack", ["dev", "production"])
def test_the_shipped_stacks_render_as_under_the_old_merge_rule(
    stack: str, request: pytest.FixtureRequest, render_program: Callable[..., Render]
) -> None:
    files = load_stack(ROOT, stack)
    raw = {
        key.partition(":")[2] if key.startswith("mlplat:") else "region": json.loads(value)
        if value[:1] in "{["
        else value
        for key, value in files.config.items()
    }
    defaults = {key.partition(":")[2]: value for key, value in preset(stack).items()}
    old = StackConfig.model_validate(_merge_every_mapping(defaults, raw))

    def program() -> None:  # the stack program (mlplat.infra.program.main) with the old rule's config
        for key, value in build(old).items():
            pulumi.export(key, value)

    before = render_program(program, config=files.config, stack=stack).to_json()
    now: Render = request.getfixturevalue(f"{stack}_stack")
    assert before == now.to_json()
