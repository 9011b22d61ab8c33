"""The base of every component's settings: one pydantic model per component, read by Python callers and by the
stack config alike.

A component's ``*Args`` is the only declaration of its settings (issue 21). Python callers write snake_case
(``NodePoolArgs(max_size=3)``); the stack file writes the camelCase alias Pulumi config uses
(``maxSize: 3``), and :mod:`mlplat.infra.config` composes its ``StackConfig`` from these same models, so an
error names the key as the stack file spells it (``cluster.nodeGroups.gpu.maxSize``) and repeats the value as
given. Each field is documented by the docstring under it (``use_attribute_docstrings``), which pydantic
keeps as the field's description.

Fields that take a value from another resource accept a ``pulumi.Output`` (:data:`StrInput` and friends); a
plain value is validated at construction, an Output when it resolves
(:func:`mlplat.components.options.checked_when_known`).

Fields a parent component wires (a cluster's VPC, a workload's namespace) are not part of a component's *spec*:
the spec holds what a user decides, and the ``*Args`` subclass adds the wiring. ``MlPlatform`` takes specs, so
there is nothing to fill in and no placeholder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Self

import pulumi
from pydantic import BaseModel, ConfigDict, PlainValidator
from pydantic.alias_generators import to_camel

__all__ = ["AnyInput", "Spec", "StrInput", "StrInputs"]


class Spec(BaseModel):
    """A component's settings: camelCase aliases, snake_case names, frozen, unknown keys refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        arbitrary_types_allowed=True,  # pulumi.Output in the fields that take another resource's value
        use_attribute_docstrings=True,
        validate_default=True,
    )

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` (snake_case names), validated again: the frozen model's ``dataclasses.replace``."""
        return type(self).model_validate({**dict(self), **changes})


def _str_input(value: Any) -> Any:
    if isinstance(value, str | pulumi.Output):
        return value
    raise ValueError(f"{value!r} is not a string or a pulumi.Output")


def _str_inputs(value: Any) -> Any:
    # A tuple or any other sequence (not a string) reads as a list, as the dataclass fields it replaces took them.
    if isinstance(value, pulumi.Output):
        return value
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_str_input(item) for item in value]
    raise ValueError(f"{value!r} is not a list of strings or a pulumi.Output")


StrInput = Annotated[str | pulumi.Output[str], PlainValidator(_str_input)]
"""A string, or a ``pulumi.Output`` of one (checked when it resolves)."""

StrInputs = Annotated[list[str | pulumi.Output[str]] | pulumi.Output[list[str]], PlainValidator(_str_inputs)]
"""A list of strings or Outputs, or an Output of a list."""

AnyInput = Annotated[Any, "any value or Output"]
"""A value passed through as given (a nested Pulumi input type, a dict with Outputs)."""
