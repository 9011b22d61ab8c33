"""The rule framework: what mlplat's rules (:mod:`mlplat.policy.rules`) see, return and are enforced at.

Rules are plain functions over resources, run offline (``mlplat check``, :mod:`mlplat.policy.check`) and in
CrossGuard (:mod:`mlplat.policy.pack`).

A rule looks at one resource (a :class:`ResourceRule`) or, where AWS splits a concept over several
resources (an S3 bucket and its public access block, encryption and policy), at the whole stack (a
:class:`StackRule`). Either way it yields :class:`Violation` s (the problem and the fix); the rule's
:class:`Levels` say whether a violation is mandatory (blocks the deployment) or advisory in the stack's
environment, production being stricter.

Resources are seen through :class:`Resource`: type, name, inputs in the SDK's wire form (camelCase keys, as
both the offline render and CrossGuard's ``props`` have them), the URNs they depend on, and their
provider's default tags. The offline engine's records and CrossGuard's policy arguments both convert to it,
so one set of functions serves ``mlplat check`` and ``pulumi preview --policy-pack policy``.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Enforcement = Literal["mandatory", "advisory"]
PRODUCTION = "production"
REQUIRED_TAGS: tuple[str, ...] = ("project", "environment", "owner", "cost-center")
# Pulumi's wire sentinel for a value not known until the update runs (e.g. a new bucket's ARN in a policy
# document during preview). Rules never report a violation on a value they cannot see.
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"


@dataclass(frozen=True)
class Resource:
    """What a rule sees of one resource, whichever engine produced it."""

    urn: str
    type: str
    name: str
    inputs: Mapping[str, Any]
    dependencies: frozenset[str] = frozenset()
    provider_default_tags: Mapping[str, str] = field(default_factory=dict)
    protect: bool = False

    @classmethod
    def from_record(cls, record: Mapping[str, Any], providers: Mapping[str, Mapping[str, Any]]) -> Resource:
        """From one resource of a render's JSON (``Render.to_json()["resources"][i]``)."""
        options = record.get("options") or {}
        provider = providers.get(options.get("provider") or "", {})
        return cls(
            urn=record["urn"],
            type=record["type"],
            name=record["name"],
            inputs=record.get("inputs") or {},
            dependencies=frozenset(options.get("depends_on") or ()),
            provider_default_tags=default_tags_of(provider),
            protect=bool(options.get("protect")),
        )


def default_tags_of(provider_inputs: Mapping[str, Any]) -> dict[str, str]:
    """The ``defaultTags.tags`` of an AWS provider's inputs (the engine may hand them JSON-encoded)."""
    default_tags: Any = provider_inputs.get("defaultTags") or {}
    if isinstance(default_tags, str):
        try:
            default_tags = json.loads(default_tags)
        except ValueError:
            return {}
    tags = default_tags.get("tags") if isinstance(default_tags, Mapping) else None
    return {str(k): str(v) for k, v in (tags or {}).items()}


def resources_from_render(document: Mapping[str, Any]) -> list[Resource]:
    """Every resource of a render's JSON form, with its provider's default tags resolved."""
    records = document.get("resources") or []
    providers = {r["urn"]: r.get("inputs") or {} for r in records if str(r["type"]).startswith("pulumi:providers:")}
    return [Resource.from_record(r, providers) for r in records]


def environment_of(document: Mapping[str, Any]) -> str:
    """The stack's environment: the AWS provider's ``environment`` default tag, else the stack name."""
    for record in document.get("resources") or []:
        if record["type"] == "pulumi:providers:aws":
            env = default_tags_of(record.get("inputs") or {}).get("environment")
            if env:
                return env
    return str(document.get("stack", ""))


@dataclass(frozen=True)
class Violation:
    """One problem a rule found: what is wrong and how to fix it."""

    problem: str
    fix: str


@dataclass(frozen=True)
class Levels:
    """A rule's enforcement outside production and in production."""

    default: Enforcement
    production: Enforcement

    def for_environment(self, environment: str) -> Enforcement:
        """The level that applies in ``environment`` (a strict one, by the policy in force, or not)."""
        return self.production if environment in current_policy().strict_environments else self.default


@dataclass(frozen=True)
class PolicyConfig:
    """An organisation's side of the rules: the tags every resource carries, and which environments are strict.

    mlplat's values are the defaults. ``mlplat check`` reads them from the stack config (``mlplat:policy``:
    ``requiredTags``, ``strictEnvironments``), the CrossGuard pack from its policy config (the same keys).
    """

    required_tags: tuple[str, ...] = REQUIRED_TAGS
    strict_environments: tuple[str, ...] = (PRODUCTION,)

    @classmethod
    def from_config(cls, values: Mapping[str, Any] | None, where: str = "mlplat:policy") -> PolicyConfig:
        """Read ``{"requiredTags": [...], "strictEnvironments": [...]}``; a bad entry is a ValueError naming it."""
        values = dict(values or {})
        unknown = sorted(set(values) - {"requiredTags", "strictEnvironments"})
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: requiredTags, strictEnvironments")
        fields: dict[str, tuple[str, ...]] = {}
        for key, field_name in (("requiredTags", "required_tags"), ("strictEnvironments", "strict_environments")):
            if key not in values:
                continue
            value = values[key]
            if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
                raise ValueError(f"{where}.{key}: {value!r} is not a list of names")
            fields[field_name] = tuple(value)
        return cls(**fields)


_POLICY: contextvars.ContextVar[PolicyConfig | None] = contextvars.ContextVar("mlplat_policy", default=None)
_MLPLAT_POLICY = PolicyConfig()


def current_policy() -> PolicyConfig:
    """The policy the rules judge by (set for a run by :func:`policy_in_force`; mlplat's by default)."""
    return _POLICY.get() or _MLPLAT_POLICY


@contextlib.contextmanager
def policy_in_force(policy: PolicyConfig | None) -> Iterator[None]:
    """Judge by ``policy`` (None: mlplat's defaults) inside the block."""
    token = _POLICY.set(policy)
    try:
        yield
    finally:
        _POLICY.reset(token)


MANDATORY = Levels("mandatory", "mandatory")
ADVISORY = Levels("advisory", "advisory")
STRICTER_IN_PRODUCTION = Levels("advisory", "mandatory")


@dataclass(frozen=True)
class Finding:
    """A violation of a rule by a resource, at the level that applies in the stack's environment."""

    rule: str
    enforcement: Enforcement
    urn: str
    resource: str
    type: str
    problem: str
    fix: str

    def to_json(self) -> dict[str, str]:
        """A plain dict for JSON output."""
        return {
            "rule": self.rule,
            "enforcement": self.enforcement,
            "urn": self.urn,
            "resource": self.resource,
            "type": self.type,
            "problem": self.problem,
            "fix": self.fix,
        }


ResourceCheck = Callable[[Resource], Iterable[Violation]]
StackCheck = Callable[[Sequence[Resource]], Iterable[tuple[Resource, Violation]]]


@dataclass(frozen=True)
class ResourceRule:
    """A rule over single resources of the listed types (every type when ``types`` is empty)."""

    id: str
    description: str
    levels: Levels
    types: frozenset[str]
    check: ResourceCheck

    def applies_to(self, type_: str) -> bool:
        """Whether the rule looks at resources of ``type_``."""
        return not self.types or type_ in self.types


@dataclass(frozen=True)
class StackRule:
    """A rule over the whole stack, for concepts AWS spreads over several resources."""

    id: str
    description: str
    levels: Levels
    check: StackCheck


Rule = ResourceRule | StackRule


# ----------------------------------------------------------------------------------------------------------
# Reading inputs: the helpers the rules share


def get(value: Any, *path: str | int) -> Any:
    """``value[path[0]][path[1]]...``, or None where any step is missing."""
    for step in path:
        if isinstance(step, int):
            value = value[step] if isinstance(value, list) and step < len(value) else None
        else:
            value = value.get(step) if isinstance(value, Mapping) else None
        if value is None:
            return None
    return value


def as_list(value: Any) -> list[Any]:
    """``value`` as a list: [] for None, a one-item list for a single value."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def is_true(value: Any) -> bool:
    """True, or the string "true" (any case), as an input may carry it."""
    return value is True or (isinstance(value, str) and value.lower() == "true")


def is_false(value: Any) -> bool:
    """False, or the string "false" (any case); unset is neither true nor false."""
    return value is False or (isinstance(value, str) and value.lower() == "false")


def policy_document(value: Any) -> dict[str, Any]:
    """An IAM/bucket policy document, JSON-encoded or not, as a dict ({} when it is not one)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def linked(stack: Sequence[Resource], resource: Resource, types: frozenset[str]) -> list[Resource]:
    """The resources of ``types`` that ``resource`` depends on (how a companion names its target)."""
    return [r for r in stack if r.urn in resource.dependencies and r.type in types]
