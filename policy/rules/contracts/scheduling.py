"""Every pod can be scheduled: some node pool admits it, its requests fit that pool's smallest node after the
kubelet's reservations and the DaemonSets running there, and GPU pods land where a device plugin runs.

Node allocatable comes from :func:`mlplat.components.capacity.allocatable` (the AL2023 nodeadm formula); the
DaemonSets are those the render runs on each pool: the EKS add-ons', the charts' (declared in
:mod:`mlplat.policy.rules.contracts.tables`) and DaemonSet objects, each placed by its own tolerations and affinity.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

from mlplat.components.capacity import MIB, UnknownInstanceTypeError, allocatable
from mlplat.policy.framework import Resource, Violation
from mlplat.policy.rules.contracts.graph import GPU, Index, NodePool, Pods, index_of, why_not_admitted

Found = Iterator[tuple[Resource, Violation]]


def _hosts(pods: Pods, pools: Sequence[NodePool]) -> dict[str, list[str]]:
    """Pool name -> the instance types of that pool whose nodes admit the pods."""
    found: dict[str, list[str]] = {}
    for pool in pools:
        types = [t for t in pool.instance_types if why_not_admitted(pods, pool, t) is None]
        if types:
            found[pool.name] = types
    return found


def _workloads(index: Index) -> Iterator[Pods]:
    return (p for p in index.pods if not p.daemonset)


def _shape(cpu: int, mem: int, gpus: int) -> str:
    text = f"cpu {cpu}m, memory {math.ceil(mem / MIB)}Mi"
    return text + (f", {gpus} GPU" + ("s" if gpus > 1 else "") if gpus else "")


def pods_have_a_pool(stack: Sequence[Resource]) -> Found:
    """Some node pool's labels, affinity and taints admit each workload's pods (Deployments, Jobs, CronJobs, the
    pods of Helm releases): otherwise they stay Pending."""
    index = index_of(stack)
    if not index.pools:
        return  # nodes the render cannot see (a team's own cluster)
    for pods in _workloads(index):
        if _hosts(pods, index.pools):
            continue
        reasons = "; ".join(f"{p.name}: {why_not_admitted(pods, p, p.instance_types[0])}" for p in index.pools)
        yield (
            pods.res,
            Violation(
                f"{pods.owner} → node pools: none admits its pods ({reasons})",
                "give the pods the nodeSelector/tolerations of a pool (GPU pods: workload=gpu and the nvidia.com/gpu "
                "toleration), or add a pool with those labels",
            ),
        )


def pods_fit(stack: Sequence[Resource]) -> Found:
    """A workload's requests fit every instance type of at least one pool that admits it, after the AL2023 kubelet
    reservations, the eviction threshold and the DaemonSets that run on that pool."""
    index = index_of(stack)
    if not index.pools:
        return
    for pods in _workloads(index):
        if not pods.requests_known:
            continue
        cpu, mem, gpus = pods.requests() or (0, 0, 0)
        hosts = _hosts(pods, index.pools)
        failures: list[str] = []
        for pool in index.pools:
            types = hosts.get(pool.name)
            if not types:
                continue
            try:
                have = {t: allocatable(t, index.daemonsets_on(pool, t)) for t in types}
            except UnknownInstanceTypeError as exc:
                failures.append(str(UnknownInstanceTypeError(exc.name, pool.name)))
                continue
            short = {t: a for t, a in have.items() if cpu > a[0] or mem > a[1] * MIB or gpus > min(a[2], pool.gpus(t))}
            if not short:
                failures = []
                break
            name, (a_cpu, a_mem, a_gpus) = min(short.items(), key=lambda kv: (kv[1][2], kv[1][0], kv[1][1]))
            over = [
                w for w, bad in (("cpu", cpu > a_cpu), ("memory", mem > a_mem * MIB), ("gpus", gpus > a_gpus)) if bad
            ]
            daemonsets = ", ".join(d.name for d in index.daemonsets_on(pool, name)) or "none"
            fit_cpu, fit_mem = min(a[0] for a in have.values()), min(a[1] for a in have.values())
            verb = "does" if len(over) == 1 else "do"
            failures.append(
                f"node pool {pool.name} ({name}): {' and '.join(over)} {verb} not fit; {name} has "
                f"cpu {a_cpu}m, memory {a_mem}Mi, {a_gpus} GPU(s) allocatable after kubelet reservations "
                f"and DaemonSets ({daemonsets}); the largest request that fits the pool is cpu "
                f"{max(fit_cpu, 0)}m, memory {max(fit_mem, 0)}Mi"
            )
        if failures:
            yield (
                pods.res,
                Violation(
                    f"{pods.owner} ({_shape(cpu, mem, gpus)}) → " + "; ".join(failures),
                    "lower the requests to fit, or give the pool a larger instance type (every "
                    "type it lists must fit: the autoscaler may launch any)",
                ),
            )


def gpu_pods_have_a_device_plugin(stack: Sequence[Resource]) -> Found:
    """A pod requesting nvidia.com/gpu is admitted by a pool whose nodes have GPUs and run a device plugin (which
    must tolerate that pool's taints), or the nodes never advertise a GPU."""
    index = index_of(stack)
    if not index.pools:
        return
    plugins = [p for p in index.pods if p.daemonset and p.group is not None and p.group.gpu_device_plugin]
    plugins += [
        p
        for p in index.pods
        if p.daemonset and p.group is None and any("device-plugin" in str(c.get("image", "")) for c in p.containers())
    ]
    for pods in _workloads(index):
        _, _, gpus = pods.requests() or (0, 0, 0)
        if not gpus:
            continue
        reasons = []
        for pool in index.pools:
            types = [t for t in pool.instance_types if why_not_admitted(pods, pool, t) is None]
            if not types:
                continue
            if not all(pool.gpus(t) for t in types):
                reasons.append(
                    f"node pool {pool.name}: {', '.join(t for t in types if not pool.gpus(t))} has no "
                    f"NVIDIA GPU with ami {pool.ami_type}"
                )
                continue
            running = [p for p in plugins if all(why_not_admitted(p, pool, t) is None for t in types)]
            if running:
                reasons = []
                break
            why = "; ".join(f"{p.owner}: {why_not_admitted(p, pool, types[0])}" for p in plugins) or "none installed"
            reasons.append(f"node pool {pool.name}: no NVIDIA device plugin runs there ({why})")
        if reasons:
            yield (
                pods.res,
                Violation(
                    f"{pods.owner} ({GPU} {gpus}) → " + "; ".join(reasons),
                    "run the NVIDIA device plugin on the GPU pool (tolerate its taints, an affinity "
                    "on its labels) and use an NVIDIA AMI",
                ),
            )
