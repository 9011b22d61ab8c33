"""The render as a graph the contract rules query: Kubernetes objects by kind/namespace/name, pod templates,
Helm releases with what their charts create, node pools, and transitive dependencies.

Built once per check run (:func:`index_of` keeps the last one for the same stack object), so the ~20 contract
rules share one pass over the resources.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlplat.components.capacity import DaemonSet, cpu_millis, instance_type, memory_bytes
from mlplat.infra.pod_specs import POD_SPEC_PATHS
from mlplat.policy.framework import UNKNOWN, Resource
from mlplat.policy.rules.contracts import tables

K8S_PREFIX = "kubernetes:"
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
NODE_GROUP_TYPES = frozenset({"aws:eks/nodeGroup:NodeGroup", "eks:index:ManagedNodeGroup"})
EKS_CLUSTER = "eks:index:Cluster"
ADDON = "aws:eks/addon:Addon"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
ASG_TAG = "aws:autoscaling/tag:Tag"
CLUSTER_SCOPED = frozenset(
    {
        "Namespace",
        "StorageClass",
        "PriorityClass",
        "ClusterRole",
        "ClusterRoleBinding",
        "IngressClass",
        "CustomResourceDefinition",
        "PersistentVolume",
        "Node",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "CSIDriver",
        "RuntimeClass",
    }
)
_EFFECTS = {"NO_SCHEDULE": "NoSchedule", "NO_EXECUTE": "NoExecute", "PREFER_NO_SCHEDULE": "PreferNoSchedule"}
GPU = "nvidia.com/gpu"


def get(value: Any, *path: str) -> Any:
    """``value[path[0]][path[1]]...`` or None."""
    for step in path:
        value = value.get(step) if isinstance(value, Mapping) else None
    return value


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def known(value: Any) -> bool:
    """A value the render shows (not unknown until the update runs)."""
    return value is not None and value != UNKNOWN


@dataclass(frozen=True)
class K8sObject:
    """A Kubernetes object of the render (or one a chart creates, with ``res`` the release)."""

    res: Resource
    kind: str
    namespace: str | None
    name: str | None  # None: auto-named by Pulumi (``<resource name>-<random>``), so no one can name it
    body: Mapping[str, Any]

    @property
    def labels(self) -> Mapping[str, str]:
        return as_map(get(self.body, "metadata", "labels"))

    @property
    def annotations(self) -> Mapping[str, Any]:
        return as_map(get(self.body, "metadata", "annotations"))

    @property
    def ref(self) -> str:
        """``Kind namespace/name`` as findings name it."""
        name = self.name or f"{self.res.name}-<auto>"
        return f"{self.kind} {self.namespace}/{name}" if self.namespace else f"{self.kind} {name}"

    @property
    def skip_await(self) -> bool:
        return str(self.annotations.get(tables.SKIP_AWAIT, "")).lower() == "true"


@dataclass(frozen=True)
class Pods:
    """A pod template: of a workload object, or of a Helm release's pod group (``spec`` built from its values)."""

    owner: str  # how findings name it: ``Deployment serving/x``, ``Release monitoring/x (...) pods 'prometheus'``
    res: Resource
    kind: str
    namespace: str
    labels: Mapping[str, str]
    spec: Mapping[str, Any]
    obj: K8sObject | None = None
    daemonset: bool = False
    from_chart: bool = False
    requests_known: bool = True
    group: tables.PodGroup | None = None

    def containers(self, *, init: bool = True) -> list[Mapping[str, Any]]:
        kinds = ("initContainers", "containers") if init else ("containers",)
        return [c for k in kinds for c in as_list(self.spec.get(k)) if isinstance(c, Mapping)]

    @property
    def tolerations(self) -> list[Mapping[str, Any]]:
        return [t for t in as_list(self.spec.get("tolerations")) if isinstance(t, Mapping)]

    @property
    def node_selector(self) -> Mapping[str, str]:
        return as_map(self.spec.get("nodeSelector"))

    @property
    def affinity_terms(self) -> list[Mapping[str, Any]]:
        terms = get(
            self.spec, "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution", "nodeSelectorTerms"
        )
        return [t for t in as_list(terms) if isinstance(t, Mapping)]

    def requests(self) -> tuple[int, int, int] | None:
        """Effective pod requests (cpu millicores, memory bytes, GPUs): max(sum of containers, any init container)."""

        def one(c: Mapping[str, Any]) -> tuple[int, int, int]:
            req = as_map(get(c, "resources", "requests"))
            lim = as_map(get(c, "resources", "limits"))
            try:
                cpu = cpu_millis(str(req["cpu"])) if "cpu" in req else 0
                mem = memory_bytes(str(req["memory"])) if "memory" in req else 0
            except ValueError:
                return (0, 0, 0)
            gpus = req.get(GPU, lim.get(GPU, 0))
            try:
                return cpu, mem, int(float(gpus))  # CrossGuard hands numbers over as floats
            except (TypeError, ValueError):
                return cpu, mem, 0

        main = [one(c) for c in self.containers(init=False)]
        init = [one(c) for c in as_list(self.spec.get("initContainers")) if isinstance(c, Mapping)]
        totals = tuple(sum(m[i] for m in main) for i in range(3))
        return (
            max([totals[0], *(i[0] for i in init)]),
            max([totals[1], *(i[1] for i in init)]),
            max([totals[2], *(i[2] for i in init)]),
        )


@dataclass(frozen=True)
class Release:
    """A Helm release and the facts mlplat declares about its chart."""

    res: Resource
    chart: str
    version: str
    namespace: str
    name: str
    values: Mapping[str, Any]
    facts: tables.ChartFacts | None

    @property
    def ref(self) -> str:
        return f"Release {self.namespace}/{self.name} ({self.chart} {self.version})"


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str

    def __str__(self) -> str:
        return f"{self.key}={self.value}:{self.effect}" if self.value else f"{self.key}:{self.effect}"


@dataclass(frozen=True)
class NodePool:
    """A managed node group: the labels and taints its nodes get, the instance types it may launch."""

    res: Resource
    name: str
    labels: Mapping[str, str]
    taints: tuple[Taint, ...]
    instance_types: tuple[str, ...]
    ami_type: str
    min_size: int

    def type_labels(self, type_: str) -> dict[str, str]:
        return {**self.labels, "node.kubernetes.io/instance-type": type_, "beta.kubernetes.io/instance-type": type_}

    def gpus(self, type_: str) -> int:
        try:
            return instance_type(type_).gpus if "NVIDIA" in self.ami_type else 0
        except ValueError:
            return 0


def _pool(res: Resource) -> NodePool:
    i = res.inputs
    name = str(i.get("nodeGroupName") or res.name)
    ami = str(i.get("amiType") or "AL2023_x86_64_STANDARD")
    labels = {str(k): str(v) for k, v in as_map(i.get("labels")).items()}
    labels.update(
        {
            "eks.amazonaws.com/nodegroup": name,
            "eks.amazonaws.com/capacityType": str(i.get("capacityType") or "ON_DEMAND"),
            "kubernetes.io/arch": "arm64" if "ARM" in ami else "amd64",
            "kubernetes.io/os": "linux",
        }
    )
    taints = tuple(
        Taint(
            str(t.get("key", "")), str(t.get("value") or ""), _EFFECTS.get(str(t.get("effect")), str(t.get("effect")))
        )
        for t in as_list(i.get("taints"))
        if isinstance(t, Mapping)
    )
    types = tuple(str(t) for t in as_list(i.get("instanceTypes"))) or ("t3.medium",)  # EKS's default
    scaling = as_map(i.get("scalingConfig"))
    return NodePool(res, name, labels, taints, types, ami, int(scaling.get("minSize") or 0))


def tolerates(tolerations: Sequence[Mapping[str, Any]], taint: Taint) -> bool:
    """Whether the tolerations admit ``taint`` (Kubernetes' ToleratesTaint)."""
    for t in tolerations:
        effect = str(t.get("effect") or "")
        if effect and effect != taint.effect:
            continue
        key, op = str(t.get("key") or ""), str(t.get("operator") or "Equal")
        if op == "Exists" and key in ("", taint.key):
            return True
        if op == "Equal" and key == taint.key and str(t.get("value") or "") == taint.value:
            return True
    return False


def _expression(expr: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, op = str(expr.get("key")), str(expr.get("operator"))
    values = [str(v) for v in as_list(expr.get("values"))]
    present = key in labels
    if op == "In":
        return present and labels[key] in values
    if op == "NotIn":
        return not present or labels[key] not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt") and present and values:
        try:
            a, b = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return a > b if op == "Gt" else a < b
    return False


def why_not_admitted(pods: Pods, pool: NodePool, type_: str) -> str | None:
    """None when a node of ``pool`` (instance type ``type_``) admits the pods; else why not."""
    labels = pool.type_labels(type_)
    missing = {k: v for k, v in pods.node_selector.items() if labels.get(k) != str(v)}
    if missing:
        return "no label " + ", ".join(f"{k}={v}" for k, v in missing.items())
    terms = pods.affinity_terms
    if terms and not any(
        all(_expression(e, labels) for e in as_list(t.get("matchExpressions")) if isinstance(e, Mapping)) for t in terms
    ):
        return "required node affinity matches no label"
    blocking = [
        str(t) for t in pool.taints if t.effect in ("NoSchedule", "NoExecute") and not tolerates(pods.tolerations, t)
    ]
    if blocking:
        return "taint " + ", ".join(blocking) + " not tolerated"
    return None


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A LabelSelector (``matchLabels`` / ``matchExpressions``) or a plain map against ``labels``."""
    if "matchLabels" in selector or "matchExpressions" in selector:
        plain = as_map(selector.get("matchLabels"))
        exprs = [e for e in as_list(selector.get("matchExpressions")) if isinstance(e, Mapping)]
    else:
        plain, exprs = selector, []
    if not plain and not exprs:
        return False
    return all(labels.get(k) == str(v) for k, v in plain.items()) and all(_expression(e, labels) for e in exprs)


def _meta_name(body: Mapping[str, Any]) -> str | None:
    name = get(body, "metadata", "name")
    return str(name) if known(name) and isinstance(name, str) else None


@dataclass
class Index:
    """One pass over a stack's resources, for the contract rules."""

    stack: Sequence[Resource]
    by_urn: dict[str, Resource] = field(default_factory=dict)
    objects: list[K8sObject] = field(default_factory=list)
    named: dict[tuple[str, str | None, str], K8sObject] = field(default_factory=dict)
    pods: list[Pods] = field(default_factory=list)
    releases: list[Release] = field(default_factory=list)
    pools: list[NodePool] = field(default_factory=list)
    addons: dict[str, Resource] = field(default_factory=dict)
    eks: list[Resource] = field(default_factory=list)
    _closure: dict[str, frozenset[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for res in self.stack:
            self.by_urn[res.urn] = res
            if res.type == HELM_RELEASE:
                self._release(res)
            elif res.type.startswith(K8S_PREFIX) and not res.type.startswith("kubernetes:helm"):
                self._object(res)
            elif res.type in NODE_GROUP_TYPES:
                self.pools.append(_pool(res))
            elif res.type == ADDON:
                self.addons[str(res.inputs.get("addonName"))] = res
            elif res.type == EKS_CLUSTER:
                self.eks.append(res)

    def _object(self, res: Resource) -> None:
        kind = res.type.rsplit(":", 1)[-1]
        if res.type.startswith("pulumi:") or kind in ("Provider",) or res.type.endswith("List"):
            return
        body = res.inputs
        ns: str | None = None
        if kind not in CLUSTER_SCOPED:
            raw = get(body, "metadata", "namespace")
            ns = str(raw) if known(raw) else "default"
        obj = K8sObject(res, kind, ns, _meta_name(body), body)
        self.objects.append(obj)
        if obj.name:
            self.named[(kind, ns, obj.name)] = obj
        path = POD_SPEC_PATHS.get(res.type)
        if path is not None:
            spec = as_map(get(body, *path))
            labels = as_map(get(body, *path[:-1], "metadata", "labels"))
            self.pods.append(
                Pods(obj.ref, res, kind, ns or "default", labels, spec, obj, daemonset=kind == "DaemonSet")
            )

    def _release(self, res: Resource) -> None:
        i = res.inputs
        chart = tables.chart_name(str(i.get("chart") or ""))
        ns = str(i.get("namespace")) if known(i.get("namespace")) else "default"
        name = str(i.get("name")) if known(i.get("name")) else f"{res.name}-<auto>"
        values = as_map(i.get("values"))
        rel = Release(res, chart, str(i.get("version") or ""), ns, name, values, tables.CHARTS.get(chart))
        self.releases.append(rel)
        if rel.facts is None:
            return
        for group in rel.facts.pods:
            spec: dict[str, Any] = {}
            base = as_map(get(values, *group.path)) if group.path else values
            for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName"):
                if key in base:
                    spec[key] = base[key]
            spec.setdefault("tolerations", list(group.default_tolerations))
            if group.default_affinity is not None:
                spec.setdefault("affinity", group.default_affinity)
            resources = as_map(base.get("resources"))
            spec["containers"] = [{"name": group.name, "resources": resources}]
            self.pods.append(
                Pods(
                    f"{rel.ref} pods {group.name!r}",
                    res,
                    "Release",
                    ns,
                    {},
                    spec,
                    daemonset=group.daemonset is not None,
                    from_chart=True,
                    requests_known=bool(as_map(resources.get("requests"))),
                    group=group,
                )
            )

    # --- lookups -------------------------------------------------------------------------------------

    def find(self, kind: str, namespace: str | None, name: str) -> K8sObject | None:
        return self.named.get((kind, namespace, name))

    def of_kind(self, *kinds: str) -> Iterator[K8sObject]:
        return (o for o in self.objects if o.kind in kinds)

    def release_of(self, chart: str) -> list[Release]:
        return [r for r in self.releases if r.chart == chart]

    def depends(self, res: Resource) -> frozenset[str]:
        """URNs ``res`` depends on, directly or through other resources of the stack."""
        done = self._closure.get(res.urn)
        if done is not None:
            return done
        seen: set[str] = set()
        stack = list(res.dependencies)
        while stack:
            urn = stack.pop()
            if urn in seen:
                continue
            seen.add(urn)
            cached = self._closure.get(urn)
            if cached is not None:
                seen |= cached
                continue
            dep = self.by_urn.get(urn)
            if dep is not None:
                stack.extend(dep.dependencies)
        result = frozenset(seen)
        self._closure[res.urn] = result
        return result

    def namespaces(self) -> set[str]:
        names = set(tables.BUILTIN_NAMESPACES)
        names |= {o.name for o in self.of_kind("Namespace") if o.name}
        names |= {r.namespace for r in self.releases if str(r.res.inputs.get("createNamespace")).lower() == "true"}
        return names

    def daemonsets_on(self, pool: NodePool, type_: str) -> list[DaemonSet]:
        """The DaemonSets whose pods run on a node of ``pool`` (of type ``type_``), with their requests."""
        found = [ds for addon, ds in tables.ADDON_DAEMONSETS.items() if addon in self.addons]
        for pods in self.pods:
            if not pods.daemonset or why_not_admitted(pods, pool, type_) is not None:
                continue
            if pods.group is not None:
                if pods.group.daemonset is not None:
                    ds = pods.group.daemonset
                    found.append(DaemonSet(ds.name, ds.cpu_millis, ds.memory_mib, source=ds.source))
            else:
                cpu, mem, _ = pods.requests() or (0, 0, 0)
                found.append(DaemonSet(pods.owner, cpu, -(-mem // (1024 * 1024))))
        return found


_LAST: list[Index] = []


def index_of(stack: Sequence[Resource]) -> Index:
    """The :class:`Index` of ``stack``, built once per stack object (every contract rule of a run shares it)."""
    if _LAST and _LAST[0].stack is stack:
        return _LAST[0]
    index = Index(stack)
    _LAST[:] = [index]
    return index


def action_matches(pattern: str, action: str) -> bool:
    """An IAM action pattern (``ec2:Describe*``) against an action, case-insensitively."""
    return fnmatch.fnmatchcase(action.lower(), pattern.lower())
