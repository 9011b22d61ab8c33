"""mlplat's rules (:mod:`mlplat.policy.rules`) as CrossGuard policies.

Each rule becomes a ``ResourceValidationPolicy`` or a ``StackValidationPolicy`` that converts CrossGuard's
arguments into :class:`mlplat.policy.framework.Resource` and runs the very function ``mlplat check`` runs.

CrossGuard fixes a policy's enforcement level when the pack loads, but mlplat's levels depend on the stack's
environment, known only from the resources. So a rule whose level differs between environments is served
as two policies, ``mlplat-<rule>`` (mandatory) and ``mlplat-<rule>-advisory``, and each reports only where
its level is the one that applies. The environment is the AWS provider's ``environment`` default tag, else
``$MLPLAT_ENVIRONMENT``, else production (the strictest). Which environments are strict, and which tags are
required, is each policy's config (:data:`CONFIG_SCHEMA`; mlplat's values by default).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyConfigSchema,
    PolicyProviderResource,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import (
    UNKNOWN_ARCHIVE_VALUE,
    UNKNOWN_ARRAY_VALUE,
    UNKNOWN_ASSET_VALUE,
    UNKNOWN_BOOLEAN_VALUE,
    UNKNOWN_NUMBER_VALUE,
    UNKNOWN_OBJECT_VALUE,
    UNKNOWN_STRING_VALUE,
    _DictProxy,
    _ListProxy,
)

from mlplat.policy.framework import (
    PRODUCTION,
    UNKNOWN,
    Enforcement,
    PolicyConfig,
    Resource,
    ResourceRule,
    Rule,
    StackRule,
    default_tags_of,
    policy_in_force,
)
from mlplat.policy.rules import RULES

PACK_NAME = "mlplat"
ENVIRONMENT_VARIABLE = "MLPLAT_ENVIRONMENT"
_UNKNOWNS = frozenset(
    {
        UNKNOWN_ARCHIVE_VALUE,
        UNKNOWN_ARRAY_VALUE,
        UNKNOWN_ASSET_VALUE,
        UNKNOWN_BOOLEAN_VALUE,
        UNKNOWN_NUMBER_VALUE,
        UNKNOWN_OBJECT_VALUE,
        UNKNOWN_STRING_VALUE,
    }
)
_LEVELS = {"mandatory": EnforcementLevel.MANDATORY, "advisory": EnforcementLevel.ADVISORY}
_NAMES = {"type": "array", "items": {"type": "string", "minLength": 1}}
CONFIG_SCHEMA = PolicyConfigSchema(
    properties={
        "requiredTags": {**_NAMES, "description": "Tags every taggable AWS resource carries (mlplat-required-tags)"},
        "strictEnvironments": {
            **_NAMES,
            "description": "Environments where every rule is mandatory (default: production)",
        },
    }
)
"""Each policy's config (``pulumi preview --policy-pack policy --policy-pack-config FILE``), as ``mlplat:policy``."""


def plain(value: Any) -> Any:
    """CrossGuard's props as plain dicts and lists; values unknown during preview become ``UNKNOWN``.

    CrossGuard wraps props in proxies that raise on reading an unknown value; the rules want plain data
    and decide for themselves what an unknown means.
    """
    if isinstance(value, _DictProxy | _ListProxy):
        value = value["__target"]
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [plain(v) for v in value]
    if isinstance(value, str) and value in _UNKNOWNS:
        return UNKNOWN
    return value


def _provider_tags(provider: PolicyProviderResource | None) -> dict[str, str]:
    if provider is None or not provider.resource_type.startswith("pulumi:providers:aws"):
        return {}
    return default_tags_of(plain(provider.props))


def environment(tags: Mapping[str, str]) -> str:
    """The environment whose levels apply: the ``environment`` tag, else the variable, else production."""
    return tags.get("environment") or os.environ.get(ENVIRONMENT_VARIABLE) or PRODUCTION


def resource_from_args(args: ResourceValidationArgs) -> Resource:
    """A resource being validated, as the rules see it."""
    return Resource(
        urn=args.urn,
        type=args.resource_type,
        name=args.name,
        inputs=plain(args.props),
        provider_default_tags=_provider_tags(args.provider),
    )


def resource_from_stack(res: PolicyResource) -> Resource:
    """A resource of the stack (its outputs, which include its inputs), as the rules see it."""
    deps = {d.urn for d in res.dependencies}
    deps |= {d.urn for group in res.property_dependencies.values() for d in group}
    return Resource(
        urn=res.urn,
        type=res.resource_type,
        name=res.name,
        inputs=plain(res.props),
        dependencies=frozenset(deps),
        provider_default_tags=_provider_tags(res.provider),
    )


def _message(problem: str, fix: str) -> str:
    return f"{problem}. Fix: {fix}"


def _resource_validator(rule: ResourceRule, level: Enforcement) -> Callable[..., None]:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        if not rule.applies_to(args.resource_type):
            return
        res = resource_from_args(args)
        with policy_in_force(PolicyConfig.from_config(args.get_config(), where=policy_name(rule, level))):
            if rule.levels.for_environment(environment(res.provider_default_tags)) != level:
                return
            for violation in rule.check(res):
                report_violation(_message(violation.problem, violation.fix), None)

    return validate


def _stack_validator(rule: StackRule, level: Enforcement) -> Callable[..., None]:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        resources = [resource_from_stack(r) for r in args.resources]
        tags: Mapping[str, str] = next(
            (r.provider_default_tags for r in resources if r.provider_default_tags.get("environment")), {}
        )
        with policy_in_force(PolicyConfig.from_config(args.get_config(), where=policy_name(rule, level))):
            if rule.levels.for_environment(environment(tags)) != level:
                return
            for res, violation in rule.check(resources):
                report_violation(_message(f"{res.name}: {violation.problem}", violation.fix), res.urn)

    return validate


def policy_name(rule: Rule, level: Enforcement) -> str:
    """``mlplat-<rule>``, with ``-advisory`` for the advisory half of an environment-dependent rule."""
    split = rule.levels.default != rule.levels.production
    return f"{PACK_NAME}-{rule.id}" + ("-advisory" if split and level == "advisory" else "")


def build_policies(rules: Sequence[Rule] = RULES) -> list[Policy]:
    """One policy per rule and level it can take."""
    policies: list[Policy] = []
    for rule in rules:
        for level in sorted({rule.levels.default, rule.levels.production}):
            name, description = policy_name(rule, level), f"{rule.description} ({level} where it applies)"
            if isinstance(rule, ResourceRule):
                policies.append(
                    ResourceValidationPolicy(
                        name=name,
                        description=description,
                        validate=_resource_validator(rule, level),
                        enforcement_level=_LEVELS[level],
                        config_schema=CONFIG_SCHEMA,
                    )
                )
            else:
                policies.append(
                    StackValidationPolicy(
                        name=name,
                        description=description,
                        validate=_stack_validator(rule, level),
                        enforcement_level=_LEVELS[level],
                        config_schema=CONFIG_SCHEMA,
                    )
                )
    return policies
