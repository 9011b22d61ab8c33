"""Kubernetes workloads: containers non-root, without privilege escalation, with requests, a memory limit and probes,
and pinned images (where each workload kind keeps its pod spec: :data:`mlplat.infra.pod_specs.POD_SPEC_PATHS`)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from mlplat.infra.pod_specs import POD_SPEC_PATHS
from mlplat.policy.framework import (
    MANDATORY,
    STRICTER_IN_PRODUCTION,
    Resource,
    ResourceRule,
    Rule,
    Violation,
    as_list,
    get,
    is_false,
    is_true,
)

K8S_WORKLOADS = frozenset(POD_SPEC_PATHS)
LONG_RUNNING = frozenset(
    {
        "kubernetes:apps/v1:Deployment",
        "kubernetes:apps/v1:StatefulSet",
        "kubernetes:apps/v1:DaemonSet",
        "kubernetes:apps/v1:ReplicaSet",
    }
)


def _pod_spec(res: Resource) -> Mapping[str, Any]:
    spec = get(res.inputs, *POD_SPEC_PATHS.get(res.type, ("spec",)))
    return spec if isinstance(spec, Mapping) else {}


def _containers(res: Resource, *, init: bool = True) -> list[Mapping[str, Any]]:
    spec = _pod_spec(res)
    kinds = ("initContainers", "containers") if init else ("containers",)
    return [c for kind in kinds for c in as_list(spec.get(kind)) if isinstance(c, Mapping)]


def _container_name(container: Mapping[str, Any]) -> str:
    return str(container.get("name", "?"))


def k8s_non_root(res: Resource) -> Iterator[Violation]:
    """Containers run as a non-root user."""
    pod = _pod_spec(res).get("securityContext") or {}
    pod_non_root = is_true(pod.get("runAsNonRoot")) or (isinstance(pod.get("runAsUser"), int) and pod["runAsUser"] > 0)
    for c in _containers(res):
        ctx = c.get("securityContext") or {}
        user = ctx.get("runAsUser")
        if is_false(ctx.get("runAsNonRoot")) or user == 0:
            non_root = False
        else:
            non_root = pod_non_root or is_true(ctx.get("runAsNonRoot")) or (isinstance(user, int) and user > 0)
        if not non_root:
            yield Violation(
                f"container {_container_name(c)!r} may run as root",
                "set securityContext.runAsNonRoot=true (pod or container) and a non-zero runAsUser",
            )


def k8s_no_privilege_escalation(res: Resource) -> Iterator[Violation]:
    """No privileged containers, no setuid escalation."""
    for c in _containers(res):
        ctx = c.get("securityContext") or {}
        if is_true(ctx.get("privileged")):
            yield Violation(
                f"container {_container_name(c)!r} is privileged",
                "remove securityContext.privileged; grant only the capabilities it needs",
            )
        elif not is_false(ctx.get("allowPrivilegeEscalation")):
            yield Violation(
                f"container {_container_name(c)!r} allows privilege escalation",
                "set securityContext.allowPrivilegeEscalation=false",
            )


def k8s_resources_set(res: Resource) -> Iterator[Violation]:
    """CPU and memory requests, and a memory limit, on every container."""
    for c in _containers(res):
        requests = get(c, "resources", "requests") or {}
        limits = get(c, "resources", "limits") or {}
        missing = [f"requests.{k}" for k in ("cpu", "memory") if k not in requests]
        missing += [] if "memory" in limits else ["limits.memory"]
        if missing:
            yield Violation(
                f"container {_container_name(c)!r} has no {', '.join(missing)}",
                "set resources.requests.cpu, resources.requests.memory and resources.limits.memory",
            )


def k8s_probes_set(res: Resource) -> Iterator[Violation]:
    """Readiness and liveness probes on long-running workloads (Jobs end by themselves)."""
    if res.type not in LONG_RUNNING:
        return
    for c in _containers(res, init=False):
        missing = [p for p in ("readinessProbe", "livenessProbe") if not c.get(p)]
        if missing:
            yield Violation(
                f"container {_container_name(c)!r} has no {' or '.join(missing)}",
                "add a readinessProbe (traffic) and a livenessProbe (restart when hung)",
            )


_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def image_is_pinned(image: str) -> bool:
    """An image reference names a tag other than ``latest``, or a digest."""
    if _DIGEST.search(image):
        return True
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return False  # no tag means latest
    return last.rsplit(":", 1)[1] != "latest"


def k8s_image_pinned(res: Resource) -> Iterator[Violation]:
    """Images by version tag or digest, never ``:latest``."""
    for c in _containers(res):
        image = c.get("image")
        if isinstance(image, str) and not image_is_pinned(image):
            yield Violation(
                f"container {_container_name(c)!r} uses {image!r}, which floats (latest)",
                "pin a version tag or a digest (image@sha256:...)",
            )


RULES: tuple[Rule, ...] = (
    ResourceRule("k8s-non-root", "Kubernetes containers run as non-root", MANDATORY, K8S_WORKLOADS, k8s_non_root),
    ResourceRule(
        "k8s-no-privilege-escalation",
        "Kubernetes containers cannot escalate privileges",
        MANDATORY,
        K8S_WORKLOADS,
        k8s_no_privilege_escalation,
    ),
    ResourceRule(
        "k8s-resources",
        "Kubernetes containers set requests and a memory limit",
        MANDATORY,
        K8S_WORKLOADS,
        k8s_resources_set,
    ),
    ResourceRule(
        "k8s-probes",
        "long-running Kubernetes containers have probes (mandatory in production)",
        STRICTER_IN_PRODUCTION,
        K8S_WORKLOADS,
        k8s_probes_set,
    ),
    ResourceRule(
        "k8s-image-pinned", "Kubernetes images are pinned (no :latest)", MANDATORY, K8S_WORKLOADS, k8s_image_pinned
    ),
)
"""The Kubernetes workload rules."""
