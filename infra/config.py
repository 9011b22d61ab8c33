"""The stack's typed config: one schema for every stack, validated with errors that name the key.

Keys live in the ``mlplat:`` namespace of ``Pulumi.<stack>.yaml`` (camelCase, as Pulumi config is written);
``aws:region`` comes from the AWS provider's namespace.

**Environment defaults** live in one documented preset per environment, ``infra/presets/<environment>.yaml``
(shipped in the package; :func:`preset`), written like a stack file. :func:`load` lays the stack file over it:

* sections (objects with a fixed set of keys: ``network``, ``tracking.database``, ...) merge key by key;
* a map of named entries (a ``dict`` field: ``cluster.nodeGroups``, ``services``, ``trainingJobs``, ``labels``,
  ``images``) given in the stack file replaces the preset's whole, so a stack can drop or rename a pool;
* a key set in neither takes its field default below (the component's own for a node pool): generic values,
  never another environment's or another pool's.

We chose presets over spelling every default in each stack file so that an environment without a stack file in
this repository (staging) still has its defaults, and the shipped stack files stay short; the components take
explicit knobs and never look at the environment name.

Errors name the key as the stack file spells it (pydantic aliases, camelCase) from the error's location and repeat
the user's value verbatim; messages are never rewritten after the fact.
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
import ipaddress
import json
import re
import types
from collections.abc import Mapping
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import InitErrorDetails, PydanticCustomError

from mlplat.components.capacity import INSTANCE_TYPES, Workload, check_workloads
from mlplat.components.cluster import ClusterSpec
from mlplat.components.model_service import ModelServiceSpec
from mlplat.components.network import NetworkSpec
from mlplat.components.registry import ContainerRegistrySpec
from mlplat.components.spec import PROBLEM, Problem, key_of, raise_problems
from mlplat.components.storage import ArtifactStoreSpec
from mlplat.infra.config_workloads import (
    AlarmsConfig,
    MonitoringConfig,
    TrackingConfig,
    TrainingJobConfig,
)

Environment = Literal["dev", "staging", "production"]
ENVIRONMENTS: tuple[str, ...] = ("dev", "staging", "production")
NAMESPACE = "mlplat"

REGIONS: tuple[str, ...] = ("us-east-1",)
"""The regions ``aws:region`` may name: those the price table (review/prices.json) prices in full, so ``mlplat cost``
and ``mlplat diff`` never leave a stack's resources out (tests check each against the table). No other commercial
region could be sourced in full when the table was dated; add one here with its prices."""

NODE_INSTANCE_TYPES: tuple[str, ...] = tuple(INSTANCE_TYPES)
"""The instance types a node pool may list: mlplat's capacity table (the fit of pods is checked against it), each
priced in every region of the price table (tests check it)."""

IAM_ROLE_ARN = re.compile(r"arn:aws[\w-]*:iam::\d{12}:role/[\w+=,.@/-]+")


class ConfigError(ValueError):
    """Invalid stack config: one line per problem, each naming the key, the bad value and what is allowed."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid stack config:\n  " + "\n  ".join(problems))


class _Section(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


# The components' own (mlplat.components.spec): a problem whose message already shows the user's value, at the
# location it names (so no ``(got ...)`` is added).
_raise = raise_problems


class RegistryConfig(ContainerRegistrySpec):
    """``mlplat:registry``: the ECR repositories' settings (:class:`ContainerRegistrySpec`) and two of this stack
    program's own: whether it builds the images, and the tag the workloads run (:mod:`mlplat.infra.images`, which
    computes the component's ``builds`` and ``default_tag`` from them)."""

    build_images: bool = False
    """Build and push each repository's image from this repository's Dockerfiles on ``pulumi up``."""
    image_tag: str | None = None
    """The tag the workloads run (``<repo>:<imageTag>``), pinned in the stack file. Usually unset: the tag is then
    ``MLPLAT_IMAGE_TAG`` (which wins over this key; the deploy workflow sets it to the commit whose images it
    pushed) or the commit checked out; see :mod:`mlplat.infra.images`."""

    @staticmethod
    def check_tag(value: str) -> str:
        """A Docker tag that stays one with ``-cuda`` appended (128 characters at most), and never ``latest``:
        the repositories' tags are immutable, so a tag names one build."""
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,122}", value):
            raise ValueError(
                f"{value!r} is not an image tag: 1-123 letters, digits, '_', '.' and '-', not starting "
                "with '.' or '-' (e.g. the commit the images were built from)"
            )
        if value == "latest":
            raise ValueError(
                "'latest' is not an image tag here: tags are immutable, each names one build "
                "(e.g. the commit the images were built from)"
            )
        return value

    @field_validator("image_tag")
    @classmethod
    def _tag(cls, value: str | None) -> str | None:
        return None if value is None else cls.check_tag(value)


GITHUB_HOSTED_RUNNER = re.compile(r"(ubuntu|windows|macos)-[\w.-]+")


class DeployConfig(_Section):
    """``mlplat:deploy``: where this stack's ``pulumi up`` runs (``.github/workflows/deploy-stack.yml``).

    ``runner`` is the job's ``runs-on`` labels. The Kubernetes half of ``pulumi up`` talks to the cluster's API
    endpoint, so the runner must reach it: a private endpoint needs a runner inside the VPC (a self-hosted
    runner, e.g. a CodeBuild-hosted or EC2 runner in the private subnets); GitHub-hosted runners come from
    changing public addresses that no ``publicAccessCidrs`` list can name.
    """

    runner: list[str] | None = None
    """Default: ``[self-hosted, linux, mlplat-<environment>]``."""
    pipeline_role_arn: str | None = None
    """The ML pipeline's IAM role (the bootstrap stack's ``pipelineRoleArn`` output). Given, it gets an EKS access
    entry with only what ``ml-pipeline.yml`` runs with kubectl (see :mod:`mlplat.components.pipeline_access`);
    unset, the pipeline cannot reach the cluster."""

    @field_validator("pipeline_role_arn")
    @classmethod
    def _pipeline_role(cls, value: str | None) -> str | None:
        if value is not None and not IAM_ROLE_ARN.fullmatch(value):
            raise ValueError(f"{value!r} is not an IAM role ARN (arn:aws:iam::<12-digit account>:role/<name>)")
        return value

    @field_validator("runner")
    @classmethod
    def _labels(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("an empty list names no runner; give runs-on labels such as [self-hosted, mlplat-dev]")
        return value

    def labels(self, environment: str) -> list[str]:
        return list(self.runner) if self.runner else ["self-hosted", "linux", f"mlplat-{environment}"]


class StackConfig(_Section):
    """The whole stack config, after environment defaults are applied."""

    environment: Environment
    region: str
    owner: str = "ml-platform"
    cost_center: str = "ml"
    network: NetworkSpec = NetworkSpec()
    artifacts: ArtifactStoreSpec = ArtifactStoreSpec()
    registry: RegistryConfig = RegistryConfig()
    cluster: ClusterSpec = Field(default_factory=ClusterSpec)  # built when a config lacks it, not at import
    tracking: TrackingConfig = TrackingConfig()
    services: dict[str, ModelServiceSpec] = {}
    training_jobs: dict[str, TrainingJobConfig] = {}
    monitoring: MonitoringConfig = MonitoringConfig()
    alarms: AlarmsConfig = AlarmsConfig()
    deploy: DeployConfig = DeployConfig()

    @field_validator("services", "training_jobs", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        for name in value if isinstance(value, dict) else ():
            # It names Kubernetes objects as mlplat-<environment>-<name>(-stable|-canary|-split): a DNS-1035 label
            # whose longest form (production, an ALB action annotation) must stay within 63 characters.
            if not re.fullmatch(r"[a-z]([a-z0-9-]{0,29}[a-z0-9])?", name):
                raise ValueError(
                    f"{name!r} is not a valid workload name (a lowercase letter, then lowercase "
                    "letters, digits and '-', at most 31 characters: it names Kubernetes objects)"
                )
        return value

    @model_validator(mode="after")
    def _production_api_not_public(self) -> StackConfig:
        # Environment policy belongs in config, not in the component: production's API is never world-open.
        if self.environment == "production" and self.cluster.endpoint_public_access:
            open_to_all = [c for c in self.cluster.public_access_cidrs if ipaddress.ip_network(c).prefixlen == 0]
            if open_to_all:
                raise ValueError(
                    f"{NAMESPACE}:cluster.publicAccessCidrs: {open_to_all} opens production's Kubernetes "
                    "API to the whole internet; list your VPN/office CIDRs or set "
                    "endpointPublicAccess: false"
                )
        return self

    @model_validator(mode="after")
    def _alerts_page_someone(self) -> StackConfig:
        mon = self.monitoring
        if mon.enabled and not (
            self.alarms.enabled or mon.sns_topic_arn or mon.receiver or mon.alerts_receiver_optional
        ):
            raise ValueError(
                f"{NAMESPACE}:monitoring: alerts would page no one (mlplat:alarms is disabled and no "
                "snsTopicArn or receiver is set); enable mlplat:alarms, set monitoring.snsTopicArn or "
                "monitoring.receiver, or set monitoring.alertsReceiverOptional: true"
            )
        return self

    @model_validator(mode="after")
    def _runner_reaches_the_api(self) -> StackConfig:
        hosted = [label for label in self.deploy.labels(self.environment) if GITHUB_HOSTED_RUNNER.fullmatch(label)]
        world_open = self.cluster.endpoint_public_access and any(
            ipaddress.ip_network(c).prefixlen == 0 for c in self.cluster.public_access_cidrs
        )
        if hosted and not world_open:
            where = (
                "private"
                if not self.cluster.endpoint_public_access
                else f"open only to {self.cluster.public_access_cidrs}"
            )
            raise ValueError(
                f"{NAMESPACE}:deploy.runner: {hosted} is a GitHub-hosted runner, which cannot reach this "
                f"stack's Kubernetes API ({where}); use a self-hosted runner inside the VPC, e.g. "
                f"[self-hosted, linux, mlplat-{self.environment}]"
            )
        return self

    @model_validator(mode="after")
    def _priced_instance_types(self) -> StackConfig:
        # Stack policy, not the component's rule: a pool lists only types the capacity and price tables know.
        problems: list[Problem] = []
        for name, pool in self.cluster.node_pools.items():
            unknown = [t for t in pool.instance_types if t not in NODE_INSTANCE_TYPES]
            if unknown:
                problems.append(
                    (
                        ("cluster", "nodeGroups", name, "instanceTypes"),
                        f"{unknown} {'is' if len(unknown) == 1 else 'are'} not in mlplat's capacity and "
                        "price tables, so neither the fit of pods nor the cost could be checked; allowed: "
                        + ", ".join(NODE_INSTANCE_TYPES),
                    )
                )
        if problems:
            _raise(type(self).__name__, problems)
        return self

    @model_validator(mode="after")
    def _workloads_fit_the_nodes(self) -> StackConfig:
        # Every pod must fit the smallest instance type of a pool that can host it, after the kubelet's
        # reservations and the DaemonSets (mlplat.components.capacity): else it stays Pending forever.
        workloads = (
            [Workload("tracking.resources", **self.tracking.resources.model_dump())] if self.tracking.enabled else []
        )
        workloads += [
            Workload(f"services.{name}.resources", **svc.resources.model_dump())  # the canary's too
            for name, svc in self.services.items()
        ]
        workloads += [
            Workload(f"trainingJobs.{name}.resources", **job.resources.model_dump())
            for name, job in self.training_jobs.items()
        ]
        pools = list(self.cluster.node_pools.values())  # validated once, as the cluster section loaded
        problems = check_workloads(workloads, pools, monitoring=self.monitoring.enabled)
        if problems:  # one line each, through load()'s error list
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [
                    InitErrorDetails(
                        type=PydanticCustomError("capacity", "{problem}", {"problem": f"{NAMESPACE}:{p}"}),
                        loc=(),
                        input=None,
                    )
                    for p in problems
                ],
            )
        return self

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if value not in REGIONS:
            raise ValueError(
                f"{value!r} is not a region mlplat's price table prices (review/prices.json), so "
                f"`mlplat cost` could not price the stack; allowed: {', '.join(REGIONS)}"
            )
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


PRESET_PACKAGE = "mlplat.infra"
PRESET_FOLDER = "presets"
"""Where the presets ship: ``infra/presets/<environment>.yaml`` (package data of ``mlplat.infra``)."""


def preset(environment: str) -> dict[str, Any]:
    """The environment's defaults, as a stack file's ``config:`` block (``{"mlplat:network": {...}, ...}``).

    A fresh copy each call: callers may change it.
    """
    if environment not in ENVIRONMENTS:
        raise ValueError(f"{environment!r} is not an environment; allowed: {', '.join(ENVIRONMENTS)}")
    return copy.deepcopy(_read_preset(environment))


@functools.cache
def _read_preset(environment: str) -> dict[str, Any]:
    resource = importlib.resources.files(PRESET_PACKAGE) / PRESET_FOLDER / f"{environment}.yaml"
    config: dict[str, Any] = yaml.safe_load(resource.read_text(encoding="utf-8"))["config"]
    return config


def _field(model: type[BaseModel], key: str) -> tuple[str, Any] | None:
    """(alias, annotation) of the field ``key`` names, by alias (``azCount``) or by name (``az_count``)."""
    for name, info in model.model_fields.items():
        alias = key_of(name, info)  # a renamed key (``cidr`` for ``cidr_block``) or the generated camelCase one
        if key in (alias, name):
            return alias, info.annotation
    return None


def _section_of(annotation: Any) -> type[BaseModel] | None:
    """The section a field holds (a model, optional or not), or None for scalars, lists and maps."""
    options = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    models = [o for o in options if isinstance(o, type) and issubclass(o, BaseModel)]
    return models[0] if len(models) == 1 else None


def _entry_of(annotation: Any) -> type[BaseModel] | None:
    """The model of each entry of a map of named entries (``dict[str, NodePoolArgs]``), or None."""
    if get_origin(annotation) is not dict:
        return None
    return _section_of(get_args(annotation)[1])


def _overlay(model: type[BaseModel], base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` (the stack file) laid over ``base`` (the preset), guided by the schema.

    Sections merge key by key; anything else the stack file sets (a scalar, a list, a map of named entries such as
    ``nodeGroups``) replaces the preset's value whole, so a stack can drop a pool the preset has.
    """
    merged = dict(base)
    for key, value in override.items():
        field = _field(model, key)
        if field is None:  # unknown: validation reports it, spelled as the user wrote it
            merged[key] = value
            continue
        alias, annotation = field
        section = _section_of(annotation)
        if section is not None and isinstance(value, Mapping) and isinstance(merged.get(alias), Mapping):
            merged[alias] = _overlay(section, merged[alias], value)
        else:
            merged[alias] = value
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
                problems.append(
                    f"{full_key}: unknown key; allowed: " + ", ".join(f"{NAMESPACE}:{k}" for k in sorted(SECTIONS))
                )
                continue
            raw[key] = _parse(full_key, value)
    if "region" not in raw:
        problems.append("aws:region: missing; set it with `pulumi config set aws:region us-east-1`")
    env = raw.get("environment")
    if env not in ENVIRONMENTS:
        problems.append(f"{NAMESPACE}:environment: {env!r} is not an environment; allowed: {', '.join(ENVIRONMENTS)}")
    if problems:
        raise ConfigError(problems)
    defaults = {key.partition(":")[2]: value for key, value in preset(str(env)).items()}
    merged = _overlay(StackConfig, defaults, raw)
    try:
        return StackConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError([_describe(err) for err in exc.errors()]) from None


def _describe(err: Any) -> str:
    loc = tuple(err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    if not loc:  # a whole-stack rule: its message names the keys itself
        return msg
    if err["type"] == "extra_forbidden":
        return f"{_key_path(loc)}: unknown key{_allowed_keys(loc[:-1])}"
    if err["type"] == "missing":
        return f"{_key_path(loc)}: required"
    if err["type"] == PROBLEM:  # the message shows the value itself
        return f"{_key_path(loc)}: {msg}"
    got = err.get("input")
    shown = "" if isinstance(got, dict | list) or msg.startswith(repr(got)) else f" (got {got!r})"
    return f"{_key_path(loc)}: {msg}{shown}"


def _allowed_keys(loc: tuple[int | str, ...]) -> str:
    model: type[BaseModel] | None = StackConfig
    parts = [str(p) for p in loc]
    while parts and model is not None:
        field = _field(model, parts.pop(0))
        if field is None:
            return ""
        entry = _entry_of(field[1])
        if entry is not None and parts:  # nodeGroups.<pool>: skip the entry's name
            parts.pop(0)
            model = entry
        else:
            model = _section_of(field[1])
    return (
        ""
        if model is None
        else "; allowed: " + ", ".join(key_of(name, info) for name, info in model.model_fields.items())
    )


def from_pulumi() -> StackConfig:
    """Read and validate the running stack's config (``pulumi up`` or the offline engine)."""
    from pulumi.runtime import config as runtime_config

    values: dict[str, Any] = dict(runtime_config.get_config_env())
    values.update(runtime_config.CONFIG.get())
    return load({k: v for k, v in values.items() if k.startswith(f"{NAMESPACE}:") or k == "aws:region"})
