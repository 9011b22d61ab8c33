"""Resource options a component hands its children."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

import pulumi
from pydantic import BaseModel

ArgsT = TypeVar("ArgsT")
T = TypeVar("T")


def checked_when_known(value: pulumi.Input[T], check: Callable[[T], object]) -> pulumi.Input[T]:
    """``value`` checked by ``check`` (which raises ``ValueError`` naming the field): a plain value now, an
    ``Output`` once it resolves. Returns what to use in its place: the plain value, or an Output that fails with
    ``check``'s error (and so fails the resource that takes it, and the update) when the value does not pass.
    An Output unknown at preview is not checked until it is known."""
    if isinstance(value, pulumi.Output):

        def passed(known: T) -> T:
            check(known)
            return known

        return value.apply(passed)
    check(value)  # type: ignore[arg-type]  # a plain T (Awaitables are not taken here)
    return value


def child_options(parent: pulumi.Resource, opts: pulumi.ResourceOptions | None) -> pulumi.ResourceOptions:
    """Options for a child of ``parent``: parented to it, and waiting for whatever the component waits for.

    Pulumi does not pass a component's ``depends_on`` on to its children (the SDK keeps it on the component
    alone), so a component that must wait for something (the Load Balancer Controller's webhook before any
    Service, node capacity before any pod) carries that ordering down to every resource it creates.
    """
    return pulumi.ResourceOptions(parent=parent, depends_on=opts.depends_on if opts is not None else None)


def component_args(component: str, args_type: type[ArgsT], args: ArgsT | None, fields: dict[str, Any]) -> ArgsT:
    """The component's args: the ``args`` object, or one built from keyword arguments, as Pulumi's SDKs allow
    (``ArtifactStore("models", protect=False)``); both at once is refused, and so is a field the args do not have.
    Components call it before registering themselves, so a bad call creates nothing."""
    if args is not None:
        if fields:
            raise TypeError(
                f"{component}: give an {args_type.__name__} or keyword arguments, not both "
                f"(keyword arguments {sorted(fields)})"
            )
        if not isinstance(args, args_type):
            raise TypeError(f"{component}: args must be a {args_type.__name__}, not {type(args).__name__}")
        return args
    known = (
        set(args_type.model_fields)
        if isinstance(args_type, type) and issubclass(args_type, BaseModel)
        else {f.name for f in dataclasses.fields(args_type)}  # type: ignore[arg-type]
    )
    unknown = sorted(set(fields) - known)
    if unknown:
        raise TypeError(
            f"{component}: {unknown} are not fields of {args_type.__name__}; its fields: {', '.join(sorted(known))}"
        )
    return args_type(**fields)
