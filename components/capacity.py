"""Will a workload's pods ever fit on the nodes of the pools that can host them? Checked at config time.

A node's allocatable resources are its capacity minus what the kubelet reserves, minus the hard eviction
threshold; the DaemonSets that run on every node take their requests out of what is left. A pod whose
requests exceed that on the smallest instance type a pool may launch never schedules there (the
cluster-autoscaler may launch any of the pool's types, and scales from zero from a template node), and an
awaited Job then fails ``pulumi up`` after its timeout. :func:`check_fits` says so before anything is
created, with the largest request that fits.

Facts, each with its source (checked 2026-11-29):

* Instance types (:data:`INSTANCE_TYPES`): vCPUs, memory and GPUs from the Amazon EC2 Instance Types Guide,
  https://docs.aws.amazon.com/ec2/latest/instancetypes/ (gp.html general purpose, co.html compute
  optimized, mo.html memory optimized, ac.html accelerated computing), the same numbers as
  ``aws ec2 describe-instance-types``. Max pods: nodeadm's ``ENIs * (IPv4 per ENI - 1) + 2`` (``CalcMaxPods``)
  over awslabs/amazon-eks-ami ``nodeadm/internal/kubelet/instance-info.jsonl`` at commit
  81fec2e895854f599974fe4d3d72f61c0a9aaffa; p3, since dropped from that file, from the eni-max-pods table
  ``templates/shared/runtime/eni-max-pods.txt`` at commit 2377b69aaeb8d751af1a265c2bfbeb94e6f6da90. (Managed
  node groups cap the kubelet's ``maxPods`` at 110 below 30 vCPUs, but kubeReserved is still computed from
  nodeadm's own value; pod counts are not checked here.)
* Kubelet reservations: awslabs/amazon-eks-ami ``nodeadm/internal/kubelet/config.go`` at commit
  81fec2e895854f599974fe4d3d72f61c0a9aaffa (``withDefaultReservedResources``, ``getCPUMillicoresToReserve``,
  ``getMemoryMebibytesToReserve`` and ``evictionHard``); see :func:`kube_reserved_cpu_millis`.
* Node memory capacity: the kubelet reports the kernel's MemTotal, which is below the instance's nominal
  memory; like Karpenter (``VM_MEMORY_OVERHEAD_PERCENT``, default 0.075, aws/karpenter-provider-aws
  settings) we subtract 7.5% of it (:data:`VM_MEMORY_OVERHEAD_PERCENT`).
* DaemonSet requests (:data:`DAEMONSETS`): each entry names its manifest or chart at the version mlplat pins.

An instance type missing from the table is an error naming it (:class:`UnknownInstanceTypeError`): add a
line to :data:`INSTANCE_TYPES`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from mlplat.components.node_groups import NodePoolArgs
from mlplat.components.pods import gpu_placement

if TYPE_CHECKING:
    from mlplat.components.platform import MlPlatformArgs

MIB = 1024 * 1024


@dataclass(frozen=True)
class InstanceType:
    """What an EC2 instance type gives a node: vCPUs, memory (MiB), max pods (EKS ENI table), NVIDIA GPUs."""

    name: str
    vcpus: int
    memory_mib: int
    max_pods: int
    gpus: int = 0


def _family(family: str, sizes: Mapping[str, tuple[int, ...]]) -> dict[str, InstanceType]:
    """``{size: (vCPUs, memory GiB, max pods[, GPUs])}`` -> table entries ``<family>.<size>``."""
    table: dict[str, InstanceType] = {}
    for size, (vcpus, gib, max_pods, *gpus) in sizes.items():
        name = f"{family}.{size}"
        table[name] = InstanceType(name, vcpus, gib * 1024, max_pods, gpus[0] if gpus else 0)
    return table


# Standard x86 sizes: (vCPUs, memory GiB, max pods).
_M = {"large": (2, 8, 29), "xlarge": (4, 16, 58), "2xlarge": (8, 32, 58), "4xlarge": (16, 64, 234)}
_C = {"large": (2, 4, 29), "xlarge": (4, 8, 58), "2xlarge": (8, 16, 58), "4xlarge": (16, 32, 234)}
_R = {"large": (2, 16, 29), "xlarge": (4, 32, 58), "2xlarge": (8, 64, 58), "4xlarge": (16, 128, 234)}
_T = {"medium": (2, 4, 17), "large": (2, 8, 35), "xlarge": (4, 16, 58), "2xlarge": (8, 32, 58)}

INSTANCE_TYPES: dict[str, InstanceType] = {
    **{k: v for fam in ("m5", "m6i", "m6a", "m7i") for k, v in _family(fam, _M).items()},
    **{k: v for fam in ("c5", "c6i", "c6a") for k, v in _family(fam, _C).items()},
    **_family("r6i", _R),
    **{k: v for fam in ("t3", "t3a") for k, v in _family(fam, _T).items()},
    # GPU types: (vCPUs, memory GiB, max pods, NVIDIA GPUs).
    **_family(
        "g4dn",
        {
            "xlarge": (4, 16, 29, 1),
            "2xlarge": (8, 32, 29, 1),
            "4xlarge": (16, 64, 29, 1),
            "8xlarge": (32, 128, 58, 1),
            "12xlarge": (48, 192, 234, 4),
        },
    ),
    **_family(
        "g5",
        {
            "xlarge": (4, 16, 58, 1),
            "2xlarge": (8, 32, 58, 1),
            "4xlarge": (16, 64, 234, 1),
            "8xlarge": (32, 128, 234, 1),
            "12xlarge": (48, 192, 737, 4),
        },
    ),
    **_family(
        "g6",
        {
            "xlarge": (4, 16, 58, 1),
            "2xlarge": (8, 32, 58, 1),
            "4xlarge": (16, 64, 234, 1),
            "8xlarge": (32, 128, 234, 1),
            "12xlarge": (48, 192, 234, 4),
        },
    ),
    **_family(
        "g6e",
        {
            "xlarge": (4, 32, 58, 1),
            "2xlarge": (8, 64, 58, 1),
            "4xlarge": (16, 128, 234, 1),
            "8xlarge": (32, 256, 234, 1),
            "12xlarge": (48, 384, 292, 4),
        },
    ),
    **_family("p3", {"2xlarge": (8, 61, 58, 1), "8xlarge": (32, 244, 234, 4), "16xlarge": (64, 488, 234, 8)}),
    **_family("p4d", {"24xlarge": (96, 1152, 737, 8)}),
    **_family("p5", {"48xlarge": (192, 2048, 100, 8)}),
}
"""Instance types mlplat can check, by name. Add a type with its vCPUs, memory and GPUs from
``aws ec2 describe-instance-types --instance-types <type>`` and its max pods from the EKS table."""


class UnknownInstanceTypeError(ValueError):
    """An instance type that is not in :data:`INSTANCE_TYPES`, so its allocatable resources are unknown."""

    def __init__(self, name: str, pool: str | None = None) -> None:
        self.name = name
        where = f" (pool {pool!r})" if pool else ""
        super().__init__(
            f"instance type {name!r}{where} is not in mlplat's capacity table, so the fit of pods on it cannot be "
            f"checked; add it to INSTANCE_TYPES in mlplat/components/capacity.py with its vCPUs, memory and GPUs "
            f"(`aws ec2 describe-instance-types --instance-types {name}`) and its max pods (the EKS eni-max-pods "
            "table: ENIs * (IPv4 addresses per ENI - 1) + 2)"
        )


def instance_type(name: str, pool: str | None = None) -> InstanceType:
    """The table entry for ``name``; :class:`UnknownInstanceTypeError` (naming it and how to add it) if absent."""
    try:
        return INSTANCE_TYPES[name]
    except KeyError:
        raise UnknownInstanceTypeError(name, pool) from None


# --- Kubelet reservations (AL2023 nodeadm) -------------------------------------------------------------------

EVICTION_HARD_MEMORY_MIB = 100
"""``evictionHard: {memory.available: 100Mi}`` in nodeadm's default kubelet config (config.go)."""

VM_MEMORY_OVERHEAD_PERCENT = Decimal("0.075")
"""Share of nominal memory the kubelet never sees (kernel, firmware); Karpenter's default for the same gap."""


def kube_reserved_cpu_millis(total_millis: int) -> int:
    """kubeReserved CPU (millicores) for a node with ``total_millis`` of CPU, as nodeadm computes it.

    Mirrors ``getCPUMillicoresToReserve`` / ``getResourceToReserveInRange`` in awslabs/amazon-eks-ami
    nodeadm/internal/kubelet/config.go (commit 81fec2e895854f599974fe4d3d72f61c0a9aaffa): 6% of the first
    core, 1% of the second, 0.5% of cores 3-4, 0.25% of the rest; Go integer division per range.
    """
    ranges = [0, 1000, 2000, 4000, total_millis]
    per_ten_thousand = [600, 100, 50, 25]
    reserved = 0
    for i, share in enumerate(per_ten_thousand):
        start, end = ranges[i], ranges[i + 1]
        if total_millis <= start:
            continue
        reserved += (min(total_millis, end) - start) * share // 10000
    return reserved


def kube_reserved_memory_mib(max_pods: int) -> int:
    """kubeReserved memory (MiB): ``11 * maxPods + 255`` (``getMemoryMebibytesToReserve``, same file).

    nodeadm computes it from its own max pods (the ENI formula), even when a managed node group caps the
    kubelet's ``maxPods`` at 110/250: the e2e case custom-max-pods-expression/kubelet-config-max-pods shows it.
    """
    return 11 * max_pods + 255


def _node_memory_capacity_mib(spec: InstanceType) -> int:
    """The memory capacity the kubelet reports: nominal memory less the VM overhead (rounded as Karpenter)."""
    return spec.memory_mib - math.ceil(spec.memory_mib * VM_MEMORY_OVERHEAD_PERCENT)


# --- DaemonSets on every node --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DaemonSet:
    """Per-node requests of a DaemonSet pod (max of the init containers and the sum of the containers)."""

    name: str
    cpu_millis: int
    memory_mib: int
    gpu_nodes_only: bool = False
    source: str = ""


DAEMONSETS: dict[str, DaemonSet] = {
    "aws-node": DaemonSet(
        "aws-node",
        50,
        0,
        source="aws/amazon-vpc-cni-k8s config/master/aws-k8s-cni.yaml at v1.21.1 (and v1.19.2): containers "
        "aws-node 25m + aws-eks-nodeagent 25m, init aws-vpc-cni-init 25m; no memory requests",
    ),
    "kube-proxy": DaemonSet(
        "kube-proxy",
        100,
        0,
        source="the EKS kube-proxy add-on's DaemonSet (kube-system/kube-proxy): requests cpu 100m, no memory; "
        "EKS does not publish the manifest: check `kubectl -n kube-system get ds kube-proxy -o yaml`",
    ),
    "ebs-csi-node": DaemonSet(
        "ebs-csi-node",
        30,
        120,
        source="kubernetes-sigs/aws-ebs-csi-driver deploy/kubernetes/base/node.yaml (the chart rendered) at v1.55.0 "
        "(and v1.38.1): ebs-plugin, node-driver-registrar, liveness-probe 10m/40Mi each; tolerates all taints",
    ),
    "nvidia-device-plugin": DaemonSet(
        "nvidia-device-plugin",
        0,
        0,
        gpu_nodes_only=True,
        source="NVIDIA/k8s-device-plugin chart 0.17.1 deployments/helm/nvidia-device-plugin/values.yaml: resources: {}",
    ),
    "node-exporter": DaemonSet(
        "node-exporter",
        0,
        0,
        source="kube-prometheus-stack 75.15.0 -> prometheus-node-exporter 4.47.3 values.yaml: resources: {} "
        "(kube-rbac-proxy off); tolerates NoSchedule taints",
    ),
}
"""The DaemonSets mlplat runs, with their default requests at the versions mlplat pins."""


def platform_daemonsets(*, monitoring: bool = True) -> tuple[DaemonSet, ...]:
    """The DaemonSets of an mlplat cluster: the add-ons, the device plugin, node-exporter with monitoring."""
    names = ["aws-node", "kube-proxy", "ebs-csi-node", "nvidia-device-plugin"]
    if monitoring:
        names.append("node-exporter")
    return tuple(DAEMONSETS[n] for n in names)


def allocatable(name: str, daemonsets: Iterable[DaemonSet] | None = None) -> tuple[int, int, int]:
    """What pods can request on a node of instance type ``name``: (cpu millicores, memory MiB, GPUs).

    Capacity less kubeReserved, the hard eviction threshold and the DaemonSets' requests (device-plugin-like
    ones only on GPU types). ``daemonsets`` defaults to :func:`platform_daemonsets`.
    """
    spec = instance_type(name)
    sets = platform_daemonsets() if daemonsets is None else tuple(daemonsets)
    here = [d for d in sets if spec.gpus or not d.gpu_nodes_only]
    total_cpu = spec.vcpus * 1000
    cpu = total_cpu - kube_reserved_cpu_millis(total_cpu) - sum(d.cpu_millis for d in here)
    memory = (
        _node_memory_capacity_mib(spec)
        - kube_reserved_memory_mib(spec.max_pods)
        - EVICTION_HARD_MEMORY_MIB
        - sum(d.memory_mib for d in here)
    )
    return cpu, memory, spec.gpus


# --- Kubernetes quantities -----------------------------------------------------------------------------------

_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}
_QUANTITY = re.compile(r"(?P<number>\+?(\d+(\.\d*)?|\.\d+))(?P<suffix>[eE][+-]?\d+|Ki|Mi|Gi|Ti|Pi|Ei|[mkMGTPE])?")


def parse_quantity(text: str) -> Decimal:
    """A Kubernetes quantity (``500m``, ``1.5``, ``4Gi``, ``2G``, ``1e3``) in base units (cores, bytes)."""
    match = _QUANTITY.fullmatch(str(text).strip())
    if match is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. 500m, 2, 1.5, 512Mi, 4Gi, 2G)")
    try:
        number = Decimal(match["number"])
    except InvalidOperation:  # pragma: no cover - the pattern only admits decimals
        raise ValueError(f"{text!r} is not a Kubernetes quantity") from None
    suffix = match["suffix"] or ""
    if suffix[:1] in ("e", "E") and len(suffix) > 1:
        return number * Decimal(10) ** int(suffix[1:])
    return number * _SUFFIXES[suffix]


def cpu_millis(text: str) -> int:
    """A CPU quantity in millicores, rounded up as the API server does (``1.5`` -> 1500, ``100m`` -> 100)."""
    return math.ceil(parse_quantity(text) * 1000)


def memory_bytes(text: str) -> int:
    """A memory quantity in bytes, rounded up (``4Gi`` -> 4294967296, ``1G`` -> 1000000000)."""
    return math.ceil(parse_quantity(text))


# --- Which pools host a pod, and does it fit -----------------------------------------------------------------


def _attr(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def _placement(gpus: int) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The pod's nodeSelector and tolerations, as mlplat's workloads set them (``pods.gpu_placement``)."""
    selector, tolerations = gpu_placement(gpus)
    plain = [{k: str(_attr(t, k) or "") for k in ("key", "operator", "value", "effect")} for t in tolerations or []]
    return dict(selector or {}), plain


def _tolerates(tolerations: Sequence[Mapping[str, str]], key: str, value: str, effect: str) -> bool:
    for t in tolerations:
        if t["effect"] not in ("", effect):
            continue
        if t["operator"] == "Exists" and t["key"] in ("", key):
            return True
        if t["operator"] in ("Equal", "") and t["key"] == key and t["value"] == value:
            return True
    return False


def _why_not_hosted(
    pool: NodePoolArgs, selector: Mapping[str, str], tolerations: Sequence[Mapping[str, str]]
) -> str | None:
    """None when the pool's nodes admit the pod; else the reason, for the error."""
    missing = {k: v for k, v in selector.items() if pool.labels.get(k) != v}
    if missing:
        return "no label " + ", ".join(f"{k}={v}" for k, v in missing.items())
    blocking = [
        str(t)
        for t in pool.taints
        if t.effect in ("NoSchedule", "NoExecute") and not _tolerates(tolerations, t.key, t.value, t.effect)
    ]
    if blocking:
        return "taint " + ", ".join(blocking) + " not tolerated"
    return None


def _cpu_text(millis: int) -> str:
    return f"{math.floor(millis / 10) / 100:.2f}"  # floor: never overstate what is there


def _gib_text(mib: int) -> str:
    return f"{math.floor(mib / 1024 * 10) / 10:.1f}"


def _gpus_text(n: int) -> str:
    return f"{n} GPU" if n == 1 else f"{n} GPUs"


def check_fits(
    workload: str,
    cpu: str,
    memory: str,
    gpus: int,
    pools: Sequence[NodePoolArgs],
    daemonsets: Iterable[DaemonSet] | None = None,
) -> list[str]:
    """Problems (empty: none) with a pod requesting ``cpu``/``memory``/``gpus`` on the pools that can host it.

    The pools that can host it are those whose labels match the pod's nodeSelector and whose NoSchedule /
    NoExecute taints it tolerates (a GPU pod: the ``workload=gpu`` pool(s) and the ``nvidia.com/gpu`` taint;
    a CPU pod: untainted pools). The pod must fit every instance type of at least one of them, because the
    autoscaler may launch any listed type; otherwise each such pool gets a line naming its smallest type that
    is too small, what that type has allocatable, and the largest request that fits the whole pool.
    ``workload`` prefixes each line (e.g. ``trainingJobs.digits.resources``).
    """
    try:
        want_cpu, want_mem = cpu_millis(cpu), memory_bytes(memory)
    except ValueError as exc:
        return [f"{workload}: {exc}"]
    selector, tolerations = _placement(gpus)
    sets = platform_daemonsets() if daemonsets is None else tuple(daemonsets)
    hosts = [p for p in pools if _why_not_hosted(p, selector, tolerations) is None]
    if not hosts:
        reasons = "; ".join(f"{p.name!r}: {_why_not_hosted(p, selector, tolerations)}" for p in pools) or "none"
        if gpus:
            need = (
                f"a GPU pod (gpus {gpus}) runs only on a pool labelled "
                + ", ".join(f"{k}={v}" for k, v in selector.items())
                + " whose taints it tolerates (nvidia.com/gpu=true:NoSchedule), with an NVIDIA AMI"
            )
        else:
            need = "a CPU pod has no nodeSelector and no tolerations, so it runs only on an untainted pool"
        return [f"{workload}: no node pool can host this pod: {need}; pools: {reasons}"]

    failures: list[str] = []
    for pool in hosts:
        try:
            types = {t: allocatable(t, sets) for t in pool.instance_types}
        except UnknownInstanceTypeError as exc:
            failures.append(f"{workload}: {UnknownInstanceTypeError(exc.name, pool.name)}")
            continue
        too_small = {t: a for t, a in types.items() if want_cpu > a[0] or want_mem > a[1] * MIB or gpus > a[2]}
        if not too_small:
            return []  # fits every type of this pool
        name, (has_cpu, has_mem, has_gpus) = min(too_small.items(), key=lambda kv: (kv[1][2], kv[1][0], kv[1][1]))
        over = []
        if want_cpu > has_cpu:
            over.append(f"cpu {cpu!r}")
        if want_mem > has_mem * MIB:
            over.append(f"memory {memory!r}")
        if gpus > has_gpus:
            over.append(f"gpus {gpus}")
        verb = "does" if len(over) == 1 else "do"
        has = f"{_cpu_text(has_cpu)} CPU and {_gib_text(has_mem)} GiB"
        if gpus:
            has = f"{_cpu_text(has_cpu)} CPU, {_gib_text(has_mem)} GiB and {_gpus_text(has_gpus)}"
        fit_cpu = min(a[0] for a in types.values())
        fit_mem = min(a[1] for a in types.values())
        fit_gpus = min(a[2] for a in types.values())
        largest = f"cpu '{max(fit_cpu, 0)}m', memory '{max(fit_mem, 0)}Mi'"
        if gpus:
            largest += f", gpus {fit_gpus}"
        failures.append(
            f"{workload}: {' and '.join(over)} {verb} not fit on {name} (pool {pool.name!r}), which has "
            f"{has} allocatable after kubelet reservations and DaemonSets; the largest request that "
            f"fits is {largest}"
        )
    return failures


# --- Whole platforms -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """A pod shape to check: ``key`` names it in errors (``trainingJobs.digits.resources``)."""

    key: str
    cpu: str
    memory: str
    gpus: int = 0


def check_workloads(
    workloads: Iterable[Workload], pools: Sequence[NodePoolArgs], *, monitoring: bool = True
) -> list[str]:
    """:func:`check_fits` for each workload against ``pools``, with the DaemonSets of an mlplat cluster."""
    sets = platform_daemonsets(monitoring=monitoring)
    problems: list[str] = []
    for w in workloads:
        problems.extend(check_fits(w.key, w.cpu, w.memory, w.gpus, pools, sets))
    return problems


def _platform_workloads(args: MlPlatformArgs) -> list[Workload]:
    """The pod shapes of an :class:`~mlplat.components.platform.MlPlatformArgs`, keyed by its field names.

    A service's canary runs with the service's resources, so one check covers both versions.
    """
    found: list[Workload] = []
    if args.tracking is not None:
        r = args.tracking.resources
        found.append(Workload("tracking.resources", r.cpu, r.memory, r.gpus))
    for name, svc in args.services.items():
        r = svc.resources
        found.append(Workload(f"services.{name}.resources", r.cpu, r.memory, r.gpus))
    for name, job in args.training_jobs.items():
        r = job.resources
        found.append(Workload(f"training_jobs.{name}.resources", r.cpu, r.memory, r.gpus))
    return found


def check_workload_capacity(platform_args: MlPlatformArgs) -> list[str]:
    """Every workload of a platform against its cluster's node pools: one line per pod that cannot fit.

    For :class:`~mlplat.components.platform.MlPlatform` (raise on a non-empty result); the stack config runs
    the same check with camelCase keys.
    """
    return check_workloads(
        _platform_workloads(platform_args),
        list(platform_args.cluster.node_pools.values()),
        monitoring=platform_args.monitoring is not None,
    )
