"""References resolve: every name one rendered object uses to find another exists, with the right shape."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from mlplat.policy.framework import Resource, Violation
from mlplat.policy.rules.contracts import tables
from mlplat.policy.rules.contracts.graph import (
    Index,
    K8sObject,
    Pods,
    as_list,
    as_map,
    get,
    index_of,
    known,
    selector_matches,
)

Found = Iterator[tuple[Resource, Violation]]
ALB_ACTION = "alb.ingress.kubernetes.io/actions."
USE_ANNOTATION = "use-annotation"
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"


def walk(values: Any, key: str, path: str = "values") -> Iterator[tuple[str, Any]]:
    """``(dotted path, value)`` of every ``key`` anywhere in Helm values."""
    if isinstance(values, Mapping):
        for k, v in values.items():
            here = f"{path}.{k}"
            if k == key:
                yield here, v
            yield from walk(v, key, here)
    elif isinstance(values, list):
        for i, v in enumerate(values):
            yield from walk(v, key, f"{path}[{i}]")


def _names(items: Sequence[str], empty: str = "none") -> str:
    return ", ".join(sorted(items)) if items else empty


# --- namespaces ---------------------------------------------------------------------------------------


def namespaces_exist(stack: Sequence[Resource]) -> Found:
    """Every namespaced object and Helm release names a namespace the render creates (or a built-in one)."""
    index = index_of(stack)
    have = index.namespaces()
    fix = "create the Namespace in the stack (and pass its metadata.name, so the object depends on it)"
    for obj in index.objects:
        if obj.namespace is not None and obj.namespace not in have:
            yield (
                obj.res,
                Violation(
                    f"{obj.ref} → Namespace {obj.namespace}: no such namespace; namespaces: {_names(list(have))}", fix
                ),
            )
    for rel in index.releases:
        if rel.namespace not in have:
            yield (
                rel.res,
                Violation(
                    f"{rel.ref} → Namespace {rel.namespace}: no such namespace; namespaces: {_names(list(have))}",
                    fix + ", or set createNamespace on the release",
                ),
            )


# --- storage classes -----------------------------------------------------------------------------------


def storage_classes(index: Index) -> tuple[dict[str, bool], list[str]]:
    """(name -> is default) of the StorageClasses the render creates by name, and those Pulumi auto-names."""
    named: dict[str, bool] = {}
    auto: list[str] = []
    for obj in index.of_kind("StorageClass"):
        default = str(obj.annotations.get(DEFAULT_CLASS_ANNOTATION, "")).lower() == "true"
        if obj.name:
            named[obj.name] = default
        else:
            auto.append(f"{obj.res.name}-<auto>")
    for eks in index.eks:
        classes = eks.inputs.get("storageClasses")
        if isinstance(classes, str):
            # pulumi-eks creates one class of that EBS type without metadata: the provider auto-names it.
            auto.append(f"{classes}-<auto> ({eks.name} storageClasses {classes!r})")
        for key, spec in as_map(classes).items():
            name = get(spec, "metadata", "name")
            if known(name):
                named[str(name)] = bool(as_map(spec).get("default"))
            else:
                auto.append(f"{key}-<auto> ({eks.name} storageClasses[{key!r}] has no metadata.name)")
        version = str(eks.inputs.get("version") or "")
        minor = version.split(".")[1] if version.count(".") == 1 and version.split(".")[1].isdigit() else ""
        if minor and int(minor) < tables.EKS_DEFAULT_GP2_BEFORE:
            named.setdefault("gp2", True)
    return named, auto


def _claims(index: Index) -> Iterator[tuple[Resource, str, str | None]]:
    """(resource, who, class name or None for the default) of every volume claim the render makes or asks for."""
    for obj in index.of_kind("PersistentVolumeClaim"):
        yield obj.res, obj.ref, _class_of(get(obj.body, "spec"))
    for obj in index.of_kind("StatefulSet"):
        for t in as_list(get(obj.body, "spec", "volumeClaimTemplates")):
            yield obj.res, f"{obj.ref} volumeClaimTemplate {get(t, 'metadata', 'name')}", _class_of(get(t, "spec"))
    for rel in index.releases:
        for path, value in walk(rel.values, "storageClassName"):
            if isinstance(value, str) and value:
                yield rel.res, f"{rel.ref} {path}", value


def _class_of(spec: Any) -> str | None:
    name = as_map(spec).get("storageClassName")
    return str(name) if known(name) else None


def storage_classes_exist(stack: Sequence[Resource]) -> Found:
    """PVCs, volumeClaimTemplates and Helm values name StorageClasses that exist under exactly that name."""
    index = index_of(stack)
    named, auto = storage_classes(index)
    for res, who, name in _claims(index):
        if name == "":
            continue  # explicitly no class: a pre-provisioned volume
        if name is None:
            if not any(named.values()):
                yield (
                    res,
                    Violation(
                        f"{who} → the default StorageClass: none is marked default; StorageClasses: "
                        f"{_names(list(named) + auto)}",
                        "name a StorageClass in storageClassName, or mark one default",
                    ),
                )
            continue
        if name not in named:
            yield (
                res,
                Violation(
                    f"{who} → StorageClass {name}: no such StorageClass; StorageClasses: {_names(list(named) + auto)}",
                    "create the StorageClass with metadata.name set to exactly that name (pulumi-eks "
                    "storageClasses: metadata {name}), or name an existing one",
                ),
            )


# --- Secrets and ConfigMaps ------------------------------------------------------------------------------


def _pod_refs(pods: Pods, kind: str) -> Iterator[tuple[str, str | None, str]]:
    """(name, key or None, where) of every Secret (``kind`` Secret) or ConfigMap a pod spec reads (not optional)."""
    key_ref, env_from, vol_key, vol_name = (
        ("secretKeyRef", "secretRef", "secret", "secretName")
        if kind == "Secret"
        else ("configMapKeyRef", "configMapRef", "configMap", "name")
    )
    for c in pods.containers():
        cname = c.get("name", "?")
        for env in as_list(c.get("env")):
            ref = get(env, "valueFrom", key_ref)
            if isinstance(ref, Mapping) and not ref.get("optional") and known(ref.get("name")):
                yield str(ref["name"]), str(ref.get("key")), f"container {cname!r} env {get(env, 'name')}"
        for src in as_list(c.get("envFrom")):
            ref = get(src, env_from)
            if isinstance(ref, Mapping) and not ref.get("optional") and known(ref.get("name")):
                yield str(ref["name"]), None, f"container {cname!r} envFrom"
    for vol in as_list(pods.spec.get("volumes")):
        ref = get(vol, vol_key)
        if isinstance(ref, Mapping) and not ref.get("optional") and known(ref.get(vol_name)):
            for item in as_list(ref.get("items")) or [{}]:
                yield str(ref[vol_name]), get(item, "key"), f"volume {get(vol, 'name')}"
        for source in as_list(get(vol, "projected", "sources")):
            ref = get(source, vol_key)
            if isinstance(ref, Mapping) and not ref.get("optional") and known(ref.get("name")):
                yield str(ref["name"]), None, f"volume {get(vol, 'name')}"


def _keys(obj: K8sObject) -> set[str] | None:
    """The keys of a Secret or ConfigMap, or None when the render masks them."""
    keys: set[str] = set()
    for field in ("data", "stringData", "binaryData"):
        value = obj.body.get(field)
        if value is None:
            continue
        if not isinstance(value, Mapping):
            return None  # a secret: masked as a whole
        keys |= {str(k) for k in value}
    return keys


def _config_sources_exist(stack: Sequence[Resource], kind: str) -> Found:
    index = index_of(stack)
    for pods in index.pods:
        for name, key, where in _pod_refs(pods, kind):
            target = index.find(kind, pods.namespace, name)
            if target is None:
                have = [o.name for o in index.of_kind(kind) if o.namespace == pods.namespace and o.name]
                yield (
                    pods.res,
                    Violation(
                        f"{pods.owner} {where} → {kind} {pods.namespace}/{name}: no such {kind}; "
                        f"{kind}s in {pods.namespace}: {_names(have)}",
                        f"create the {kind} in that namespace with that exact name, or fix the reference",
                    ),
                )
                continue
            keys = _keys(target)
            if key and keys is not None and key not in keys:
                yield (
                    pods.res,
                    Violation(
                        f"{pods.owner} {where} → {kind} {pods.namespace}/{name} key {key!r}: no "
                        f"such key; keys: {_names(list(keys))}",
                        "add the key or fix the reference",
                    ),
                )
    if kind != "Secret":
        return
    for rel in index.releases:
        for name_path, key_paths in rel.facts.secret_refs if rel.facts else ():
            name = get(rel.values, *name_path)
            if not isinstance(name, str):
                continue
            target = index.find("Secret", rel.namespace, name)
            where = "values." + ".".join(name_path)
            if target is None:
                yield (
                    rel.res,
                    Violation(
                        f"{rel.ref} {where} → Secret {rel.namespace}/{name}: no such Secret",
                        "create the Secret in the release's namespace (and depend on it)",
                    ),
                )
                continue
            keys = _keys(target)
            for key_path in key_paths:
                key = get(rel.values, *key_path)
                if isinstance(key, str) and keys is not None and key not in keys:
                    yield (
                        rel.res,
                        Violation(
                            f"{rel.ref} values.{'.'.join(key_path)} → Secret {rel.namespace}/{name} "
                            f"key {key!r}: no such key; keys: {_names(list(keys))}",
                            "add the key to the Secret or fix the values",
                        ),
                    )


def secrets_exist(stack: Sequence[Resource]) -> Found:
    """Secrets named in env, envFrom, volumes and chart values exist in the pod's namespace, with the keys read."""
    return _config_sources_exist(stack, "Secret")


def config_maps_exist(stack: Sequence[Resource]) -> Found:
    """ConfigMaps named in env, envFrom and volumes exist in the pod's namespace, with the keys read."""
    return _config_sources_exist(stack, "ConfigMap")


# --- ServiceAccounts and IRSA --------------------------------------------------------------------------


def _service_accounts(index: Index) -> dict[tuple[str, str], tuple[Resource, str, Any]]:
    """(namespace, name) -> (resource, who, role ARN annotation) of every ServiceAccount the render creates."""
    found: dict[tuple[str, str], tuple[Resource, str, Any]] = {}
    for obj in index.of_kind("ServiceAccount"):
        if obj.name and obj.namespace:
            found[(obj.namespace, obj.name)] = (obj.res, obj.ref, obj.annotations.get(tables.IRSA_ANNOTATION))
    for rel in index.releases:
        if rel.facts is not None:
            for name, arn in rel.facts.service_accounts(rel.values, rel.name):
                found[(rel.namespace, name)] = (rel.res, f"{rel.ref} ServiceAccount {rel.namespace}/{name}", arn)
    return found


def service_accounts_exist(stack: Sequence[Resource]) -> Found:
    """A pod's serviceAccountName exists in its namespace (created by the stack or a chart), or is ``default``."""
    index = index_of(stack)
    have = _service_accounts(index)
    for pods in index.pods:
        if pods.from_chart:
            continue
        name = pods.spec.get("serviceAccountName") or pods.spec.get("serviceAccount")
        if not known(name) or name == tables.DEFAULT_SERVICE_ACCOUNT:
            continue
        if (pods.namespace, str(name)) not in have:
            there = [n for ns, n in have if ns == pods.namespace]
            yield (
                pods.res,
                Violation(
                    f"{pods.owner} → ServiceAccount {pods.namespace}/{name}: no such ServiceAccount; "
                    f"ServiceAccounts in {pods.namespace}: {_names(there, 'default only')}",
                    "create the ServiceAccount in the pod's namespace, or name an existing one",
                ),
            )


def _trusted_subjects(policy: Any) -> list[str] | None:
    try:
        document = json.loads(policy) if isinstance(policy, str) else policy
    except ValueError:
        return None
    subjects: list[str] = []
    for stmt in as_list(as_map(document).get("Statement")):
        for operator in ("StringEquals", "StringLike"):
            for key, value in as_map(get(stmt, "Condition", operator)).items():
                if key.endswith(":sub"):
                    subjects += [str(v) for v in (value if isinstance(value, list) else [value])]
    return subjects


def irsa_roles_trust_their_service_accounts(stack: Sequence[Resource]) -> Found:
    """A ServiceAccount annotated with an IAM role (IRSA) is one that role's trust policy admits."""
    index = index_of(stack)
    roles = {
        str(r.inputs.get("name")): r for r in stack if r.type == "aws:iam/role:Role" and known(r.inputs.get("name"))
    }
    from fnmatch import fnmatchcase

    for (namespace, name), (res, who, arn) in _service_accounts(index).items():
        if not isinstance(arn, str) or not known(arn) or "/" not in arn:
            continue
        role = roles.get(arn.rsplit("/", 1)[-1])
        if role is None:
            continue  # a role the stack does not create: its trust policy is not ours to see
        subjects = _trusted_subjects(role.inputs.get("assumeRolePolicy"))
        subject = f"system:serviceaccount:{namespace}:{name}"
        if subjects is None or any(not known(s) for s in subjects):
            continue
        if not any(fnmatchcase(subject, s) for s in subjects):
            yield (
                res,
                Violation(
                    f"{who} → IAM role {role.name}: its trust policy admits {_names(subjects)}, not "
                    f"{subject}, so the pods get no AWS credentials",
                    "create the role for this namespace/ServiceAccount (Cluster.service_account_role), "
                    "or annotate the ServiceAccount the role trusts",
                ),
            )


# --- Services, ports and selectors ---------------------------------------------------------------------


def _ports(service: K8sObject) -> list[Mapping[str, Any]]:
    return [p for p in as_list(get(service.body, "spec", "ports")) if isinstance(p, Mapping)]


def _ports_text(ports: Sequence[Mapping[str, Any]]) -> str:
    return ", ".join(f"{p['name']}({p.get('port')})" if p.get("name") else str(p.get("port")) for p in ports) or "none"


def _port_matches(ports: Sequence[Mapping[str, Any]], port: Any, by_name: bool) -> bool:
    if by_name:
        return any(p.get("name") == port for p in ports)
    return any(p.get("port") == port for p in ports)


def _service_port(
    index: Index, who: str, res: Resource, namespace: str, service: str, port: Any, by_name: bool, fix: str
) -> Iterator[tuple[Resource, Violation]]:
    target = index.find("Service", namespace, service)
    shown = f'port "{port}"' if by_name else f"port {port}"
    if target is None:
        have = [o.name for o in index.of_kind("Service") if o.namespace == namespace and o.name]
        yield (
            res,
            Violation(
                f"{who} → Service {namespace}/{service} {shown}: no such Service; Services in "
                f"{namespace}: {_names(have)}",
                "create the Service or fix the name",
            ),
        )
        return
    ports = _ports(target)
    if not _port_matches(ports, port, by_name):
        yield (
            res,
            Violation(f"{who} → Service {namespace}/{service} {shown}: no such port; ports: {_ports_text(ports)}", fix),
        )


def _backends(ingress: K8sObject) -> Iterator[Mapping[str, Any]]:
    default = get(ingress.body, "spec", "defaultBackend", "service")
    if isinstance(default, Mapping):
        yield default
    for rule in as_list(get(ingress.body, "spec", "rules")):
        for path in as_list(get(rule, "http", "paths")):
            service = get(path, "backend", "service")
            if isinstance(service, Mapping):
                yield service


def _alb_targets(action: Any) -> list[Mapping[str, Any]]:
    groups = get(action, "forwardConfig", "targetGroups") or as_map(action).get("targetGroups")
    return [g for g in as_list(groups) if isinstance(g, Mapping) and "serviceName" in g]


def service_ports_exist(stack: Sequence[Resource]) -> Found:
    """Ingress backends, ALB action annotations and ServiceMonitor endpoints name a Service port that exists (by
    number or by name), and a Service's named targetPort is a container port of the pods it selects."""
    index = index_of(stack)
    yield from _ingress_ports(index)
    yield from _monitor_ports(index)
    yield from _target_port_names(index)


def _ingress_ports(index: Index) -> Found:
    """Each Ingress backend names a port of its Service, directly or through its ALB action annotation."""
    for ing in index.of_kind("Ingress"):
        ns = ing.namespace or "default"
        for backend in _backends(ing):
            name, port = backend.get("name"), as_map(backend.get("port"))
            if not known(name):
                continue
            if port.get("name") == USE_ANNOTATION:
                yield from _alb_action_ports(index, ing, ns, name)
            elif "number" in port:
                yield from _service_port(
                    index,
                    ing.ref,
                    ing.res,
                    ns,
                    str(name),
                    port["number"],
                    False,
                    "use one of the Service's port numbers, or its port name",
                )
            elif known(port.get("name")):
                yield from _service_port(
                    index,
                    ing.ref,
                    ing.res,
                    ns,
                    str(name),
                    port["name"],
                    True,
                    "use one of the Service's port names, or its port number",
                )


def _alb_action_ports(index: Index, ing: K8sObject, ns: str, name: Any) -> Found:
    """A ``use-annotation`` backend: its ALB action annotation exists, is JSON, and forwards to Service ports."""
    key = ALB_ACTION + str(name)
    raw = ing.annotations.get(key)
    if raw is None:
        yield (
            ing.res,
            Violation(
                f"{ing.ref} backend {name} → annotation {key}: missing, so the ALB has no action for this path",
                f"add the {key} annotation",
            ),
        )
        return
    try:
        action = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError as exc:
        yield ing.res, Violation(f"{ing.ref} annotation {key}: not JSON ({exc})", "write valid JSON")
        return
    for target in _alb_targets(action):
        sport = target.get("servicePort")
        # The controller reads servicePort as an IntOrString: a JSON string is a port *name*.
        yield from _service_port(
            index,
            f"{ing.ref} action {name}",
            ing.res,
            ns,
            str(target["serviceName"]),
            sport,
            isinstance(sport, str),
            'name the Service\'s port (a JSON string is a port name, e.g. "http") or give its number as a JSON number',
        )


def _monitor_ports(index: Index) -> Found:
    """Each ServiceMonitor endpoint scrapes a port name every Service it selects has."""
    for sm in index.of_kind("ServiceMonitor"):
        services = _monitored(index, sm)
        for endpoint in as_list(get(sm.body, "spec", "endpoints")):
            scraped = get(endpoint, "port")
            if not isinstance(scraped, str):
                continue
            for who, ports in services:
                if not _port_matches(ports, scraped, True):
                    yield (
                        sm.res,
                        Violation(
                            f'{sm.ref} endpoint → {who} port "{scraped}": no such port; ports: {_ports_text(ports)}',
                            "scrape a port name the Service has",
                        ),
                    )


def _target_port_names(index: Index) -> Found:
    """A Service's named targetPort is a container port of every pod it selects."""
    for svc in index.of_kind("Service"):
        pods = _selected_pods(index, svc)
        if not pods:
            continue
        for svc_port in _ports(svc):
            wanted = svc_port.get("targetPort")
            if not (isinstance(wanted, str) and known(wanted)):
                continue
            for p in pods:
                names = _container_port_names(p)
                if wanted not in names:
                    shown = svc_port.get("name") or svc_port.get("port")
                    yield (
                        svc.res,
                        Violation(
                            f"{svc.ref} port {shown} → {p.owner} "
                            f'container port "{wanted}": no such port; container ports: '
                            f"{_names(names)}",
                            "name the container port, or target a number",
                        ),
                    )


def _selected_pods(index: Index, svc: K8sObject) -> list[Pods]:
    """The pods a Service selects among the stack's own (not a chart's)."""
    selector = as_map(get(svc.body, "spec", "selector"))
    return [
        p
        for p in index.pods
        if p.namespace == svc.namespace and not p.from_chart and selector and selector_matches(selector, p.labels)
    ]


def _container_port_names(pods: Pods) -> list[str]:
    return [
        str(cp.get("name"))
        for c in pods.containers(init=False)
        for cp in as_list(c.get("ports"))
        if isinstance(cp, Mapping) and cp.get("name")
    ]


def _monitored(index: Index, sm: K8sObject) -> list[tuple[str, list[Mapping[str, Any]]]]:
    """(who, ports) of the Services a ServiceMonitor selects: the stack's and those charts create."""
    selector = as_map(get(sm.body, "spec", "selector"))
    ns_selector = as_map(get(sm.body, "spec", "namespaceSelector"))
    names = [str(n) for n in as_list(ns_selector.get("matchNames"))]

    def in_scope(ns: str | None) -> bool:
        return bool(ns_selector.get("any")) or ns in (names or [sm.namespace])

    found = [
        (svc.ref, _ports(svc))
        for svc in index.of_kind("Service")
        if in_scope(svc.namespace) and selector_matches(selector, svc.labels)
    ]
    for rel in index.releases:
        for chart_svc in rel.facts.services if rel.facts else ():
            labels = {**chart_svc.labels, "app.kubernetes.io/instance": rel.name}
            if in_scope(rel.namespace) and selector_matches(selector, labels):
                found.append((f"{rel.ref} Service", [{"name": n, "port": p} for n, p in chart_svc.ports]))
    return found


def selectors_match(stack: Sequence[Resource]) -> Found:
    """Services and PodDisruptionBudgets select pods the render creates; HPAs target a workload that exists;
    ServiceMonitors select Services (the stack's, or a chart's declared ones)."""
    index = index_of(stack)
    for svc in index.of_kind("Service"):
        selector = as_map(get(svc.body, "spec", "selector"))
        if not selector:
            continue
        if not any(p.namespace == svc.namespace and selector_matches(selector, p.labels) for p in index.pods):
            yield (
                svc.res,
                Violation(
                    f"{svc.ref} → pods {_labels(selector)}: no workload in {svc.namespace} has pods "
                    "with these labels, so the Service has no endpoints",
                    "make the selector equal the workload's pod template labels",
                ),
            )
    for pdb in index.of_kind("PodDisruptionBudget"):
        selector = as_map(get(pdb.body, "spec", "selector"))
        if selector and not any(
            p.namespace == pdb.namespace and selector_matches(selector, p.labels) for p in index.pods
        ):
            yield (
                pdb.res,
                Violation(
                    f"{pdb.ref} → pods {_labels(selector)}: no workload in {pdb.namespace} has pods "
                    "with these labels, so the budget protects nothing",
                    "make the selector equal the workload's pod template labels",
                ),
            )
    for hpa in index.of_kind("HorizontalPodAutoscaler"):
        ref = as_map(get(hpa.body, "spec", "scaleTargetRef"))
        kind, name = ref.get("kind"), ref.get("name")
        if known(kind) and known(name) and index.find(str(kind), hpa.namespace, str(name)) is None:
            yield (
                hpa.res,
                Violation(
                    f"{hpa.ref} → {kind} {hpa.namespace}/{name}: no such {kind}",
                    "point scaleTargetRef at the workload's kind and exact name",
                ),
            )
    for sm in index.of_kind("ServiceMonitor"):
        if not _monitored(index, sm):
            selector = as_map(get(sm.body, "spec", "selector"))
            yield (
                sm.res,
                Violation(
                    f"{sm.ref} → Services {_labels(selector)}: no Service in scope has these labels, "
                    "so nothing is scraped",
                    "match the Service's labels (and namespace)",
                ),
            )


def _labels(selector: Mapping[str, Any]) -> str:
    plain: Mapping[str, Any] = as_map(selector.get("matchLabels")) if "matchLabels" in selector else selector
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(plain.items())) + "}"


# --- priority classes, ingress classes, chart facts ----------------------------------------------------


def priority_classes_exist(stack: Sequence[Resource]) -> Found:
    """Pods and chart values name PriorityClasses that exist (built-in ``system-*`` or created by the stack)."""
    index = index_of(stack)
    have = set(tables.BUILTIN_PRIORITY_CLASSES) | {o.name for o in index.of_kind("PriorityClass") if o.name}
    fix = "create the PriorityClass, or use system-cluster-critical / system-node-critical"
    for pods in index.pods:
        name = pods.spec.get("priorityClassName")
        if pods.from_chart or not isinstance(name, str) or name in have:
            continue
        yield (
            pods.res,
            Violation(
                f"{pods.owner} → PriorityClass {name}: no such PriorityClass; PriorityClasses: {_names(list(have))}",
                fix,
            ),
        )
    for rel in index.releases:
        for path, name in walk(rel.values, "priorityClassName"):
            if isinstance(name, str) and name and name not in have:
                yield (
                    rel.res,
                    Violation(
                        f"{rel.ref} {path} → PriorityClass {name}: no such PriorityClass; "
                        f"PriorityClasses: {_names(list(have))}",
                        fix,
                    ),
                )


def ingress_classes_exist(stack: Sequence[Resource]) -> Found:
    """An Ingress's class is an IngressClass the stack or a chart it installs creates."""
    index = index_of(stack)
    have = {o.name: o.ref for o in index.of_kind("IngressClass") if o.name}
    for rel in index.releases:
        if rel.facts is not None and rel.facts.ingress_class:
            name = as_map(rel.values).get("ingressClass") or rel.facts.ingress_class
            if as_map(rel.values).get("createIngressClassResource", True) is not False:
                have[str(name)] = rel.ref
    for ing in index.of_kind("Ingress"):
        name = get(ing.body, "spec", "ingressClassName") or ing.annotations.get("kubernetes.io/ingress.class")
        if known(name) and name not in have:
            yield (
                ing.res,
                Violation(
                    f"{ing.ref} → IngressClass {name}: no such IngressClass, so no controller "
                    f"serves it; IngressClasses: {_names(list(have))}",
                    "install the controller for that class (the AWS Load Balancer Controller "
                    "creates 'alb') or use an existing class",
                ),
            )


def chart_facts_declared(stack: Sequence[Resource]) -> Found:
    """A chart whose objects the rules read is at a version whose facts mlplat declares (tables.CHARTS)."""
    for rel in index_of(stack).releases:
        if rel.facts is not None and rel.version not in rel.facts.versions:
            yield (
                rel.res,
                Violation(
                    f"{rel.ref}: mlplat declares what this chart creates for versions {', '.join(rel.facts.versions)} "
                    f"only; the contract rules read those facts ({rel.facts.source})",
                    f"check the chart's templates at {rel.version} and add it to CHARTS in "
                    "mlplat/policy/rules/contracts/tables.py",
                ),
            )
