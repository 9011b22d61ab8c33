"""mlplat's rules, one module per domain, assembled into :data:`RULES` (the order ``mlplat check`` and the pack use).

Policy rules look at resources of one kind: :mod:`.storage` (S3), :mod:`.database` (RDS), :mod:`.cluster` (EKS
and its nodes), :mod:`.network` (security groups), :mod:`.registry` (ECR), :mod:`.workloads` (Kubernetes pods),
:mod:`.endpoints` (internet-facing load balancers) and :mod:`.tags`. Contract rules (:mod:`.contracts`) check what
resources promise each other across the whole render.
"""

from __future__ import annotations

from mlplat.policy.framework import Rule
from mlplat.policy.rules import cluster, database, endpoints, network, registry, storage, tags, workloads
from mlplat.policy.rules.contracts import CONTRACT_RULES

POLICY_RULES: tuple[Rule, ...] = (
    *storage.RULES,
    *database.RULES,
    *cluster.RULES,
    *network.RULES,
    *registry.RULES,
    *workloads.RULES,
    *endpoints.RULES,
    *tags.RULES,
)
"""The per-resource policy rules (and the S3/security-group stack rules that stand in for one resource)."""

RULES: tuple[Rule, ...] = POLICY_RULES + CONTRACT_RULES
"""Every rule ``mlplat check`` and the CrossGuard pack run."""

RULES_BY_ID: dict[str, Rule] = {rule.id: rule for rule in RULES}
