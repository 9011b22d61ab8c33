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
from typing import Annotated, Any, NoReturn, Self

import pulumi
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    ModelWrapValidatorHandler,
    PlainValidator,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo
from pydantic_core import InitErrorDetails, PydanticCustomError

__all__ = ["PROBLEM", "AnyInput", "Problem", "Spec", "StrInput", "StrInputs", "key_of", "raise_problems"]

PROBLEM = "mlplat_problem"
"""The error type of a problem whose message already shows the user's value (the stack config adds no
``(got ...)`` to it)."""

Problem = tuple[tuple[str, ...], str]
"""Where a problem is, relative to the model being validated (camelCase keys as in the stack file), and what."""


def raise_problems(model: str, problems: Sequence[Problem]) -> NoReturn:
    """Raise every problem at once, each at its own location (``(("labels", "team"), "...")``).

    Raised inside a validator, pydantic prefixes each location with the field path above it, so the stack config
    names the key from locations (aliases) and never rewrites a message.
    """
    raise ValidationError.from_exception_data(
        model,
        [
            InitErrorDetails(type=PydanticCustomError(PROBLEM, "{problem}", {"problem": message}), loc=loc, input=None)
            for loc, message in problems
        ],
    )


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

    @model_validator(mode="wrap")
    @classmethod
    def _validated_once(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        # A model handed in as one was checked when it was made: pydantic would run its model validators again
        # (and warn twice) each time it is put into another model.
        return data if isinstance(data, cls) else handler(data)._consistent()

    def _consistent(self) -> Self:
        """The rules across fields, run once after the fields are valid; components override it."""
        return self

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


def key_of(name: str, info: FieldInfo) -> str:
    """The key a stack file writes for field `name`: the first choice of its ``validation_alias`` (a renamed key,
    ``cidr`` for ``cidr_block``, declared with ``serialization_alias`` to match and never with ``alias=``, which a
    type checker without pydantic's plugin would take as the keyword), else the generated camelCase alias."""
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    if isinstance(alias, str):
        return alias
    return info.alias or to_camel(name)
