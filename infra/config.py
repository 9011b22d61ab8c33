"""The stack's typed config: one schema for every stack, validated with errors that name the key.

Keys live in the ``mlplat:`` namespace of ``Pulumi.<stack>.yaml`` (camelCase, as Pulumi config is written);
``aws:region`` comes from the AWS provider's namespace. Per-environment defaults live in one table,
:data:`ENVIRONMENT_DEFAULTS`: the components take explicit knobs and never look at the environment name.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
from collections.abc import Mapping
from typing import Any, Literal

from mlplat.components.subnets import plan_subnets
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

Environment = Literal["dev", "staging", "production"]
ENVIRONMENTS: tuple[str, ...] = ("dev", "staging", "production")
NAMESPACE = "mlplat"

# What differs between environments, and nothing else. Stack files override any of it.
ENVIRONMENT_DEFAULTS: dict[str, dict[str, Any]] = {
    "dev": {
        "network": {"nat": "single", "interfaceEndpoints": False, "flowLogRetentionDays": 7},
        "artifacts": {"forceDestroy": True, "protect": False, "noncurrentExpireDays": 90},
        "registry": {"keepTaggedImages": 10, "forceDelete": True},
    },
    "staging": {
        "network": {"nat": "single", "interfaceEndpoints": True, "flowLogRetentionDays": 30},
        "artifacts": {"forceDestroy": False, "protect": True, "noncurrentExpireDays": 180},
        "registry": {"keepTaggedImages": 20, "forceDelete": False},
    },
    "production": {
        "network": {"nat": "per_az", "interfaceEndpoints": True, "flowLogRetentionDays": 90},
        "artifacts": {"forceDestroy": False, "protect": True, "noncurrentExpireDays": 365},
        "registry": {"keepTaggedImages": 50, "forceDelete": False},
    },
}

# CloudWatch Logs accepts only these retention periods.
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
                      2922, 3288, 3653)


class ConfigError(ValueError):
    """Invalid stack config: one line per problem, each naming the key, the bad value and what is allowed."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid stack config:\n  " + "\n  ".join(problems))


class _Section(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class SubnetCidrs(_Section):
    """Explicit subnet CIDRs per tier, one per AZ, in AZ order (overrides the computed layout)."""

    public: list[ipaddress.IPv4Network]
    private: list[ipaddress.IPv4Network]
    database: list[ipaddress.IPv4Network]


class SubnetNewbits(_Section):
    """Bits added to the VPC prefix for each tier's subnets (as Terraform's ``cidrsubnet``): /16 + 3 = /19."""

    private: int = Field(3, ge=1, le=12)
    public: int = Field(6, ge=1, le=12)
    database: int = Field(8, ge=1, le=12)


class NetworkConfig(_Section):
    """``mlplat:network``: the VPC."""

    cidr: ipaddress.IPv4Network = ipaddress.IPv4Network("10.0.0.0/16")
    az_count: int = Field(3, ge=2, le=6)
    availability_zones: list[str] | None = None
    nat: Literal["single", "per_az"] = "per_az"
    interface_endpoints: bool = True
    flow_log_retention_days: int = 90
    subnet_newbits: SubnetNewbits = SubnetNewbits()
    subnets: SubnetCidrs | None = None

    @field_validator("cidr", mode="before")
    @classmethod
    def _cidr(cls, value: Any) -> Any:
        try:
            net = ipaddress.IPv4Network(str(value), strict=True)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not an IPv4 network in CIDR form ({exc}); e.g. 10.0.0.0/16") from exc
        if not 16 <= net.prefixlen <= 24:
            raise ValueError(f"{value!r}: the VPC prefix must be between /16 and /24 (AWS allows /16 to /28, "
                             "and a /25 or smaller leaves no room for three tiers of subnets)")
        if not net.is_private:
            raise ValueError(f"{value!r} is not a private (RFC 1918) range; use e.g. 10.0.0.0/16")
        return net

    @field_validator("flow_log_retention_days")
    @classmethod
    def _retention(cls, value: int) -> int:
        if value not in LOG_RETENTION_DAYS:
            raise ValueError(f"{value} is not a CloudWatch Logs retention period; allowed: "
                             + ", ".join(map(str, LOG_RETENTION_DAYS)))
        return value

    @field_validator("availability_zones")
    @classmethod
    def _azs(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError(f"{value} lists an availability zone twice")
        return value

    @model_validator(mode="after")
    def _layout(self) -> NetworkConfig:
        if self.availability_zones is not None and len(self.availability_zones) != self.az_count:
            raise ValueError(f"availabilityZones lists {len(self.availability_zones)} zones but azCount is "
                             f"{self.az_count}; list exactly azCount zones or leave availabilityZones out")
        self.subnet_layout()  # raises with a specific message when the subnets do not fit or overlap
        return self

    def subnet_layout(self) -> dict[str, list[ipaddress.IPv4Network]]:
        """Each tier's subnet CIDRs, one per AZ (see :func:`mlplat.components.subnets.plan_subnets`)."""
        explicit = None if self.subnets is None else self.subnets.model_dump()
        return plan_subnets(self.cidr, self.az_count, self.subnet_newbits.model_dump(), explicit)


class ArtifactsConfig(_Section):
    """``mlplat:artifacts``: the S3 artifact bucket."""

    bucket_name: str | None = None
    force_destroy: bool = False
    protect: bool = True
    kms_key: bool = True
    noncurrent_to_glacier_days: int = Field(30, ge=1)
    noncurrent_expire_days: int = Field(365, ge=1)
    abort_multipart_days: int = Field(7, ge=1)

    @field_validator("bucket_name")
    @classmethod
    def _bucket_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", value):
            raise ValueError(f"{value!r} is not a valid S3 bucket name: 3-63 characters of a-z, 0-9, '.' and "
                             "'-', starting and ending with a letter or digit")
        return value

    @model_validator(mode="after")
    def _order(self) -> ArtifactsConfig:
        if self.noncurrent_expire_days <= self.noncurrent_to_glacier_days:
            raise ValueError(f"noncurrentExpireDays ({self.noncurrent_expire_days}) must be greater than "
                             f"noncurrentToGlacierDays ({self.noncurrent_to_glacier_days})")
        if self.force_destroy and self.protect:
            raise ValueError("forceDestroy=true contradicts protect=true; a protected bucket is never emptied")
        return self


class RegistryConfig(_Section):
    """``mlplat:registry``: ECR repositories and, optionally, image builds."""

    repositories: list[str] = ["serving", "training"]
    keep_tagged_images: int = Field(50, ge=1, le=1000)
    untagged_expire_days: int = Field(7, ge=1)
    force_delete: bool = False
    build_images: bool = False
    image_tag: str = "0.1.0"
    images: dict[str, str] = {}

    @field_validator("repositories")
    @classmethod
    def _repos(cls, value: list[str]) -> list[str]:
        for repo in value:
            if not re.fullmatch(r"[a-z0-9]+(?:[._-][a-z0-9]+)*", repo):
                raise ValueError(f"{repo!r} is not a valid ECR repository name (lowercase letters, digits, "
                                 "and . _ - between them)")
        if len(set(value)) != len(value):
            raise ValueError(f"{value} lists a repository twice")
        return value

    @model_validator(mode="after")
    def _images(self) -> RegistryConfig:
        unknown = set(self.images) - set(self.repositories)
        if unknown:
            raise ValueError(f"images names {sorted(unknown)}, which are not repositories; allowed: "
                             f"{self.repositories}")
        return self


class StackConfig(_Section):
    """The whole stack config, after environment defaults are applied."""

    environment: Environment
    region: str
    owner: str = "ml-platform"
    cost_center: str = "ml"
    network: NetworkConfig = NetworkConfig()
    artifacts: ArtifactsConfig = ArtifactsConfig()
    registry: RegistryConfig = RegistryConfig()

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z]{2}(-gov)?-[a-z]+-\d", value):
            raise ValueError(f"{value!r} is not an AWS region name such as us-east-1")
        return value

    @property
    def tags(self) -> dict[str, str]:
        """The default tags every AWS resource carries (known at plan time: no timestamps)."""
        return {
            "project": NAMESPACE,
            "environment": self.environment,
            "owner": self.owner,
            "cost-center": self.cost_center,
            "managed-by": "pulumi",
        }


# Top-level ``mlplat:`` keys (camelCase) the schema knows.
SECTIONS = {to_camel(name): name for name in StackConfig.model_fields if name != "region"}


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _parse(key: str, value: Any) -> Any:
    # Pulumi hands the program every config value as a string; objects and lists arrive JSON-encoded.
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError as exc:
            raise ConfigError([f"{key}: {value!r} is not valid JSON ({exc})"]) from exc
    return value


def _key_path(loc: tuple[int | str, ...]) -> str:
    head, *rest = [str(p) for p in loc] or ["?"]
    key = "aws:region" if head == "region" else f"{NAMESPACE}:{head}"
    return key + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in rest)


def load(values: Mapping[str, Any]) -> StackConfig:
    """Validate raw stack config (``{"mlplat:network": "{...}", "aws:region": "us-east-1"}``).

    Raises :class:`ConfigError` listing every problem.
    """
    problems: list[str] = []
    raw: dict[str, Any] = {}
    for full_key, value in values.items():
        namespace, _, key = full_key.partition(":")
        if full_key == "aws:region":
            raw["region"] = value
        elif namespace == NAMESPACE:
            if key not in SECTIONS:
                problems.append(f"{full_key}: unknown key; allowed: "
                                + ", ".join(f"{NAMESPACE}:{k}" for k in sorted(SECTIONS)))
                continue
            raw[key] = _parse(full_key, value)
    if "region" not in raw:
        problems.append("aws:region: missing; set it with `pulumi config set aws:region us-east-1`")
    env = raw.get("environment")
    if env not in ENVIRONMENTS:
        problems.append(f"{NAMESPACE}:environment: {env!r} is not an environment; allowed: {', '.join(ENVIRONMENTS)}")
    if problems:
        raise ConfigError(problems)
    merged = _deep_merge(ENVIRONMENT_DEFAULTS[str(env)], raw)
    try:
        return StackConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError([_describe(err) for err in exc.errors()]) from None


def _describe(err: Any) -> str:
    loc = tuple(err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"{_key_path(loc)}: unknown key{_allowed_keys(loc[:-1])}"
    if err["type"] == "missing":
        return f"{_key_path(loc)}: required"
    got = err.get("input")
    shown = "" if isinstance(got, dict | list) or msg.startswith(repr(got)) else f" (got {got!r})"
    return f"{_key_path(loc)}: {msg}{shown}"


def _allowed_keys(loc: tuple[int | str, ...]) -> str:
    model: Any = StackConfig
    for part in loc:
        field = model.model_fields.get(to_snake(str(part)))
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return ""
        model = field.annotation
    return "; allowed: " + ", ".join(to_camel(name) for name in model.model_fields)


def to_snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def from_pulumi() -> StackConfig:
    """Read and validate the running stack's config (``pulumi up`` or the offline engine)."""
    from pulumi.runtime import config as runtime_config

    values: dict[str, Any] = dict(runtime_config.get_config_env())
    values.update(runtime_config.CONFIG.get())
    return load({k: v for k, v in values.items() if k.startswith(f"{NAMESPACE}:") or k == "aws:region"})
