"""Stack config: defaults per environment and error messages that name the key, the value and the fix."""

from __future__ import annotations

import json

import pytest

from mlplat.infra.config import ConfigError, load

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
    (problem,) = problems({"mlplat:environment": "production",
                           "mlplat:artifacts": {"noncurrentToGlacierDays": 400, "noncurrentExpireDays": 100}})
    assert "noncurrentExpireDays (100) must be greater than noncurrentToGlacierDays (400)" in problem


def test_retention_must_be_a_cloudwatch_value() -> None:
    (problem,) = problems({"mlplat:environment": "dev", "mlplat:network": {"flowLogRetentionDays": 10}})
    assert problem.startswith("mlplat:network.flowLogRetentionDays: 10 is not a CloudWatch Logs retention period")


def test_every_problem_is_reported_at_once() -> None:
    found = problems({"mlplat:environment": "dev", "mlplat:network": {"azCount": 9, "nat": "triple"},
                      "mlplat:registry": {"repositories": ["Serving"]}})
    assert len(found) == 3
    assert any(p.startswith("mlplat:network.nat:") and "'single'" in p for p in found)
    assert any(p.startswith("mlplat:registry.repositories:") and "'Serving'" in p for p in found)


def test_invalid_json_value() -> None:
    with pytest.raises(ConfigError, match=r"mlplat:network: .* is not valid JSON"):
        load({**BASE, "mlplat:environment": "dev", "mlplat:network": "{cidr: 10"})


def test_default_tags_are_plan_time_constants() -> None:
    tags = load({**BASE, "mlplat:environment": "staging"}).tags
    assert tags == {"project": "mlplat", "environment": "staging", "owner": "ml-platform", "cost-center": "ml",
                    "managed-by": "pulumi"}
