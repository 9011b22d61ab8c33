"""Tags: the policy's required tags on every taggable AWS resource."""

from __future__ import annotations

import functools
import importlib
import inspect
import re
from collections.abc import Iterator, Mapping

from mlplat.policy.framework import MANDATORY, Resource, ResourceRule, Rule, Violation, current_policy


@functools.cache
def is_taggable(type_: str) -> bool:
    """Whether an AWS resource type takes ``tags``, read from the installed pulumi-aws SDK's signature."""
    match = re.fullmatch(r"aws:([A-Za-z0-9]+)/[A-Za-z0-9]+:([A-Za-z0-9]+)", type_)
    if not match:
        return False
    module, cls_name = match.groups()
    try:
        mod = importlib.import_module("pulumi_aws" if module == "index" else f"pulumi_aws.{module}")
    except ImportError:
        return False
    cls = getattr(mod, cls_name, None)
    init = getattr(cls, "_internal_init", None)
    return init is not None and "tags" in inspect.signature(init).parameters


def required_tags(res: Resource) -> Iterator[Violation]:
    """The policy's required tags (mlplat's: project, environment, owner, cost-center) on every taggable AWS
    resource (own tags over defaults)."""
    if not res.type.startswith("aws:") or not is_taggable(res.type):
        return
    own = res.inputs.get("tags") or {}
    tags = {**res.provider_default_tags, **(own if isinstance(own, Mapping) else {})}
    missing = [t for t in current_policy().required_tags if not tags.get(t)]
    if missing:
        yield Violation(
            f"missing tag(s) {', '.join(missing)}",
            "set them once as the AWS provider's defaultTags (or on the resource's tags)",
        )


RULES: tuple[Rule, ...] = (
    ResourceRule(
        "required-tags",
        "taggable AWS resources carry project/environment/owner/cost-center",
        MANDATORY,
        frozenset(),
        required_tags,
    ),
)
"""The tag rules."""
