"""Entry point Pulumi runs for the policy pack: serve mlplat's policies (see ``mlplat_policies``)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mlplat_policies import PACK_NAME, build_policies
from pulumi_policy import EnforcementLevel, PolicyPack

PolicyPack(
    name=PACK_NAME,
    policies=build_policies(),
    enforcement_level=EnforcementLevel.ADVISORY,
    description="mlplat guardrails: the rules of `mlplat check`, stricter in production",
)
