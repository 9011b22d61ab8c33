"""Resource options a component hands its children."""

from __future__ import annotations

import pulumi


def child_options(parent: pulumi.Resource, opts: pulumi.ResourceOptions | None) -> pulumi.ResourceOptions:
    """Options for a child of ``parent``: parented to it, and waiting for whatever the component waits for.

    Pulumi does not pass a component's ``depends_on`` on to its children (the SDK keeps it on the component
    alone), so a component that must wait for something (the Load Balancer Controller's webhook before any
    Service, node capacity before any pod) carries that ordering down to every resource it creates.
    """
    return pulumi.ResourceOptions(parent=parent, depends_on=opts.depends_on if opts is not None else None)
