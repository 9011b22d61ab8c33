"""The Kubernetes objects of an offline render, as the cluster would get them (masked secrets left out)."""

from __future__ import annotations

from typing import Any

from mlplat.infra.engine import MASK, Render

NOT_MANIFESTS = {"kubernetes:helm.sh/v3:Release"}  # Helm releases are Pulumi's, not Kubernetes objects
# Custom resources of the Prometheus Operator: kubernetes-validate has only the built-in kinds' schemas, so
# their shape is asserted in tests/components/test_monitoring.py and test_monitoring_rules.py instead.
CUSTOM_RESOURCES = "kubernetes:monitoring.coreos.com/"


def manifests(stack: Render) -> list[dict[str, Any]]:
    """The Kubernetes objects of a render; masked secrets dropped (their shape is the cluster's business)."""
    found = []
    for record in stack.resources:
        if (
            record.custom
            and record.type.startswith("kubernetes:")
            and record.type not in NOT_MANIFESTS
            and not record.type.startswith(CUSTOM_RESOURCES)
        ):
            found.append(_unmask(record.inputs))
    return found


def _unmask(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _unmask(v) for k, v in value.items() if v != MASK}
    if isinstance(value, list):
        return [_unmask(v) for v in value]
    return value
