"""Entry point Pulumi runs for the policy pack: serve mlplat's policies (see :mod:`mlplat.policy.pack`).

Pulumi runs this file with the project's virtualenv (PulumiPolicy.yaml), where mlplat is installed (editable), so
the pack imports the installed package like any other code.
"""

from __future__ import annotations

from pulumi_policy import EnforcementLevel, PolicyPack

from mlplat.policy.pack import PACK_NAME, build_policies

PolicyPack(
    name=PACK_NAME,
    policies=build_policies(),
    enforcement_level=EnforcementLevel.ADVISORY,
    description="mlplat guardrails: the rules of `mlplat check`, stricter in production",
)
