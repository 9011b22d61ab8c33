"""Runtime contracts the platform knows: how secrets reach URIs, MLflow's host allowlist, the controllers' IAM
policies against their pinned upstream ones, the instance tags controllers read, and what images carry.

What the render cannot show is not judged: a Secret's values are masked, so a URI built from a secret is checked
by how it travels (an env var from the Secret, never expanded into argv) rather than by its text.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from mlplat.components.node_groups import NODE_TEMPLATE, NTH_MANAGED_TAG
from mlplat.components.tracking import backend_store_uri
from mlplat.policy.framework import Resource, Violation
from mlplat.policy.rules.contracts import tables
from mlplat.policy.rules.contracts.graph import (
    ASG_TAG,
    GPU,
    LAUNCH_TEMPLATE,
    Index,
    Pods,
    action_matches,
    as_list,
    as_map,
    get,
    index_of,
    known,
    selector_matches,
)
from mlplat.policy.rules.contracts.readiness import split_image

Found = Iterator[tuple[Resource, Violation]]
# Up to the last '@' before the host, so that an unencoded '@' or '/' in the password shows as part of it.
_URI_WITH_PASSWORD = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://(?P<user>[^/@\s:?#]*):(?P<password>[^\s?#]*)@[^\s@/]+")
_USERINFO_OK = re.compile(r"([A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*")
_EXPANSION = re.compile(r"(?<!\$)\$\((?P<name>[A-Za-z_][A-Za-z0-9_.-]*)\)")
TRACKING_COMPONENT = "mlplat:tracking:Tracking"
ELB_SAMPLE_HOST = "internal-k8s-mlflow-0123456789.us-east-1.elb.amazonaws.com"
"""What a Host header looks like when traffic comes through an ALB without a host rule."""


def _strings(container: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(where, str(s)) for where in ("command", "args") for s in as_list(container.get(where))]


def secret_uris_stay_encoded(stack: Sequence[Resource]) -> Found:
    """A value built from a Secret reaches the container as an env var and is never expanded into its command or
    args with ``$(VAR)`` (Kubernetes substitutes the raw text into argv, visible in the pod spec and ``ps``); a URI
    with a password in plain text (env value, args, ConfigMap) percent-encodes it, or its parser splits it wrong."""
    index = index_of(stack)
    for pods in index.pods:
        for c in pods.containers():
            secret_vars = {
                str(e.get("name"))
                for e in as_list(c.get("env"))
                if isinstance(get(e, "valueFrom", "secretKeyRef"), Mapping)
            }
            who = f"{pods.owner} container {c.get('name')!r}"
            for where, text in _strings(c):
                for match in _EXPANSION.finditer(text):
                    if match["name"] in secret_vars:
                        yield (
                            pods.res,
                            Violation(
                                f"{who} {where} → env {match['name']} (from a Secret): expanded into argv as "
                                f"$({match['name']}), so the secret is in the pod spec and the process list, and "
                                "reaches "
                                "the parser as raw text",
                                "let the program read the variable itself (most CLIs take it as an env var), or "
                                "read it "
                                "in a wrapper script; never $(VAR) a secret into command/args",
                            ),
                        )
            literals = [
                (f"env {get(e, 'name')}", str(e.get("value")))
                for e in as_list(c.get("env"))
                if isinstance(e, Mapping) and isinstance(e.get("value"), str)
            ]
            for where, text in [*literals, *_strings(c)]:
                yield from _plain_uri(pods.res, f"{who} {where}", text)
    for cm in index.of_kind("ConfigMap"):
        for key, text in as_map(cm.body.get("data")).items():
            if isinstance(text, str):
                yield from _plain_uri(cm.res, f"{cm.ref} key {key}", text)


def _plain_uri(res: Resource, who: str, text: str) -> Iterator[tuple[Resource, Violation]]:
    for match in _URI_WITH_PASSWORD.finditer(text):
        password = match["password"]
        if not _USERINFO_OK.fullmatch(password) or not _USERINFO_OK.fullmatch(match["user"]):
            yield (
                res,
                Violation(
                    f"{who} → URI {match['user']}:***@…: the password is not percent-encoded, so a "
                    "reserved character in it ('@', '/', ':', '#', '%', …) breaks the URI",
                    "quote the user and password (urllib.parse.quote(p, safe='')) and pass the URI from a Secret",
                ),
            )
        else:
            yield (
                res,
                Violation(
                    f"{who} → URI {match['user']}:***@…: a password in plain text in the pod spec",
                    "keep the URI in a Secret and pass it with env valueFrom.secretKeyRef",
                ),
            )


# --- MLflow's allowed hosts ----------------------------------------------------------------------------


def _flag(args: Sequence[str], flag: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _mlflow_server(c: Mapping[str, Any]) -> bool:
    argv = [str(s) for s in as_list(c.get("command")) + as_list(c.get("args"))]
    return bool(argv) and argv[0].rsplit("/", 1)[-1] == "mlflow" and "server" in argv[1:]


def _allowed(entries: Sequence[str], host: str) -> bool:
    # mlflow/server/security_utils.py is_allowed_host_header: exact, or fnmatch for entries with '*'.
    return any(fnmatch.fnmatchcase(host, e) if "*" in e else host == e for e in entries)


def mlflow_allows_its_hosts(stack: Sequence[Resource]) -> Found:
    """An MLflow server's ``--allowed-hosts`` covers every Host header traffic arrives with: the in-cluster names of
    the Services that select it (with their ports) and the host of each Ingress routing to them (an ALB's DNS name
    when the Ingress has no host rule); MLflow answers any other Host with 403."""
    index = index_of(stack)
    for pods in index.pods:
        for c in pods.containers(init=False):
            if not _mlflow_server(c):
                continue
            argv = [str(s) for s in as_list(c.get("command")) + as_list(c.get("args"))]
            env = {str(get(e, "name")): get(e, "value") for e in as_list(c.get("env"))}
            raw = _flag(argv, "--allowed-hosts") or env.get("MLFLOW_SERVER_ALLOWED_HOSTS")
            if raw is not None and not known(raw):
                continue
            entries = [h.strip() for h in str(raw or "").split(",") if h.strip()]
            missing = [f"{host} (via {via})" for host, via in _hosts_for(index, pods) if not _allowed(entries, host)]
            if missing:
                shown = (
                    ", ".join(entries) if entries else "unset: MLflow's default allows only localhost and private IPs"
                )
                yield (
                    pods.res,
                    Violation(
                        f"{pods.owner} container {c.get('name')!r} --allowed-hosts ({shown}) → Host headers "
                        f"{', '.join(missing)}: refused with 403",
                        "add those hosts to --allowed-hosts (a '*' entry is matched with fnmatch)",
                    ),
                )


def _hosts_for(index: Index, pods: Pods) -> Iterator[tuple[str, str]]:
    services = [
        s
        for s in index.of_kind("Service")
        if s.namespace == pods.namespace
        and s.name
        and selector_matches(as_map(get(s.body, "spec", "selector")), pods.labels)
    ]
    for svc in services:
        names = [
            f"{svc.name}",
            f"{svc.name}.{svc.namespace}",
            f"{svc.name}.{svc.namespace}.svc",
            f"{svc.name}.{svc.namespace}.svc.cluster.local",
        ]
        for port in as_list(get(svc.body, "spec", "ports")):
            number = get(port, "port")
            if isinstance(number, float) and number.is_integer():
                number = int(number)  # CrossGuard hands numbers over as floats
            for name in names:
                yield (name if number == 80 else f"{name}:{number}"), svc.ref
    wanted = {s.name for s in services}
    for ing in index.of_kind("Ingress"):
        if ing.namespace != pods.namespace:
            continue
        default = get(ing.body, "spec", "defaultBackend", "service", "name")
        rules = [r for r in as_list(get(ing.body, "spec", "rules")) if isinstance(r, Mapping)]
        routed = [
            r
            for r in rules
            if any(get(p, "backend", "service", "name") in wanted for p in as_list(get(r, "http", "paths")))
        ]
        for rule in routed:
            host = rule.get("host")
            yield (str(host) if known(host) else ELB_SAMPLE_HOST), ing.ref
        if default in wanted:
            yield ELB_SAMPLE_HOST, ing.ref


# --- controllers' IAM policies -------------------------------------------------------------------------


def _statements(policy: Any) -> list[Mapping[str, Any]] | None:
    if not known(policy):
        return None
    try:
        document = json.loads(policy) if isinstance(policy, str) else policy
    except ValueError:
        return None
    return [s for s in as_list(as_map(document).get("Statement")) if isinstance(s, Mapping)]


def _list(value: Any) -> list[str]:
    return [str(v) for v in (value if isinstance(value, list) else [value] if value is not None else [])]


def _covers(granted: Mapping[str, Any], wanted: Mapping[str, Any], action: str) -> bool:
    if granted.get("Effect") != "Allow" or not any(action_matches(p, action) for p in _list(granted.get("Action"))):
        return False
    resources = _list(granted.get("Resource"))
    if (
        "*" not in resources
        and not wanted.get("ResourceOptional")
        and not set(_list(wanted.get("Resource"))) <= set(resources)
    ):
        return False
    condition = as_map(granted.get("Condition"))
    if not condition or wanted.get("ConditionOptional"):
        return True
    # A condition narrows the grant: it covers only if upstream states the very same condition.
    upstream = as_map(wanted.get("Condition"))
    return all(
        as_map(upstream.get(op)).get(key) == value
        for op, keys in condition.items()
        for key, value in as_map(keys).items()
    )


def controllers_have_their_upstream_policy(stack: Sequence[Resource]) -> Found:
    """The IAM role of each controller mlplat installs (AWS Load Balancer Controller, cluster-autoscaler,
    aws-node-termination-handler) grants every statement of the upstream policy for the pinned chart version."""
    index = index_of(stack)
    policies: dict[str, list[Resource]] = {}
    attached: set[str] = set()
    for r in stack:
        role = r.inputs.get("role")
        if r.type == "aws:iam/rolePolicy:RolePolicy" and isinstance(role, str):
            policies.setdefault(role, []).append(r)
        elif r.type == "aws:iam/rolePolicyAttachment:RolePolicyAttachment" and isinstance(role, str):
            attached.add(role)
    roles = {str(r.inputs.get("name")) for r in stack if r.type == "aws:iam/role:Role"}
    for rel in index.releases:
        facts = rel.facts
        wanted = facts.iam_actions.get(rel.version) if facts else None
        if facts is None or not wanted:
            continue
        for sa, arn in facts.service_accounts(rel.values, rel.name):
            if arn is None:
                yield (
                    rel.res,
                    Violation(
                        f"{rel.ref} ServiceAccount {rel.namespace}/{sa} → IAM role: none annotated, "
                        "so the controller has no AWS credentials",
                        "annotate the ServiceAccount with an IRSA role holding the upstream policy",
                    ),
                )
                continue
            if not known(arn) or "/" not in str(arn):
                continue
            role = str(arn).rsplit("/", 1)[-1]
            if role not in roles or role in attached:
                continue  # a role the stack does not create, or managed policies the render cannot show
            granted = []
            for p in policies.get(role, []):
                statements = _statements(p.inputs.get("policy"))
                if statements is None:
                    break
                granted += statements
            else:
                missing = [
                    a + ("" if w.get("Condition") or w.get("ConditionOptional") else " (unconditioned)")
                    for w in wanted
                    for a in _list(w.get("Action"))
                    if not any(_covers(g, w, a) for g in granted)
                ]
                if missing:
                    yield (
                        rel.res,
                        Violation(
                            f"{rel.ref} → IAM role {role}: grants less than the upstream policy of {rel.chart} "
                            f"{rel.version}; missing {', '.join(missing[:12])}"
                            + (f" and {len(missing) - 12} more" if len(missing) > 12 else ""),
                            "attach the upstream policy document unchanged (for the load balancer controller: "
                            "mlplat.components.load_balancer_controller.controller_policy())",
                        ),
                    )


# --- tags controllers read -----------------------------------------------------------------------------


def controllers_find_their_tags(stack: Sequence[Resource]) -> Found:
    """Tags a controller reads are where it reads them: aws-node-termination-handler (queue mode, checking its
    managed tag) drains only instances whose EC2 tags carry that tag, so each pool's launch template tags its
    instances; cluster-autoscaler sizes an empty pool from its Auto Scaling group's node-template tags, which must
    state the pool's labels and taints."""
    index = index_of(stack)
    for rel in index.release_of("aws-node-termination-handler"):
        values = rel.values
        if not values.get("enableSqsTerminationDraining") or values.get("checkTagBeforeDraining") is False:
            continue
        tag = str(values.get("managedTag") or NTH_MANAGED_TAG)
        for pool in index.pools:
            templates = [
                index.by_urn[u]
                for u in pool.res.dependencies
                if u in index.by_urn and index.by_urn[u].type == LAUNCH_TEMPLATE
            ]
            tagged = any(
                tag in as_map(spec.get("tags"))
                for lt in templates
                for spec in as_list(lt.inputs.get("tagSpecifications"))
                if isinstance(spec, Mapping) and spec.get("resourceType") == "instance"
            )
            if not tagged:
                where = f"launch template {templates[0].name}" if templates else "no launch template"
                yield (
                    pool.res,
                    Violation(
                        f"node pool {pool.name} ({where}) → {rel.ref} managedTag {tag!r}: its instances do not "
                        "carry the "
                        "tag, so the handler never drains them on a spot interruption",
                        f"add a tag specification for resourceType 'instance' with {tag}: 'true' to the launch "
                        "template",
                    ),
                )
    if not index.release_of("cluster-autoscaler"):
        return
    for pool in index.pools:
        if pool.min_size > 0:
            continue
        tags = {
            str(get(t.inputs, "tag", "key")): str(get(t.inputs, "tag", "value"))
            for t in stack
            if t.type == ASG_TAG and pool.res.urn in t.dependencies
        }
        want = {f"{NODE_TEMPLATE}/label/{k}": str(v) for k, v in as_map(pool.res.inputs.get("labels")).items()}
        want |= {f"{NODE_TEMPLATE}/taint/{t.key}": f"{t.value}:{t.effect}" for t in pool.taints}
        wrong = [f"{k}={v!r} (tag: {tags.get(k, 'missing')})" for k, v in want.items() if tags.get(k) != v]
        if wrong:
            yield (
                pool.res,
                Violation(
                    f"node pool {pool.name} (min 0) → cluster-autoscaler node-template tags: {', '.join(wrong)}; an "
                    "empty "
                    "pool is sized from these, so pods needing those labels or tolerating those taints never scale "
                    "it up",
                    "tag the Auto Scaling group with the node-template label/taint tags derived from the pool",
                ),
            )


# --- what images carry ---------------------------------------------------------------------------------


def _contents(image: str) -> tuple[frozenset[str], str] | None:
    host, path, tag = split_image(image)
    if ".dkr.ecr." in host:
        own = tables.OWN_IMAGES.get(path.rsplit("/", 1)[-1])
        if own is None:
            return None
        extra = {"cuda"} if tag.endswith(tables.CUDA_TAG_SUFFIX) else set()
        return own.provides | extra, own.source
    external = tables.EXTERNAL_IMAGES.get(f"{host}/{path}") or tables.EXTERNAL_IMAGES.get(path)
    if external is None:
        return None
    extra = tables.EXTERNAL_FULL_EXTRAS if tag.endswith(tables.EXTERNAL_FULL_SUFFIX) else frozenset()
    return external.provides | extra, external.source


def _driver() -> str:
    """The database driver the Tracking component's backend URI names (``postgresql+psycopg2`` -> psycopg2)."""
    scheme = urlsplit(backend_store_uri("x", "db.invalid")).scheme
    return scheme.split("+", 1)[1] if "+" in scheme else "psycopg"


def _requirements(pods: Pods, c: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(capability, why) a container needs from its image."""
    needs: list[tuple[str, str]] = []
    argv = [str(s) for s in as_list(c.get("command")) + as_list(c.get("args"))]
    text = " ".join(argv)
    env = {str(get(e, "name")): e for e in as_list(c.get("env")) if isinstance(e, Mapping)}
    if (argv and argv[0].rsplit("/", 1)[-1] == "mlflow") or "from mlflow" in text or "import mlflow" in text:
        needs.append(("mlflow", "runs mlflow"))
        for flag in ("--artifacts-destination", "--default-artifact-root"):
            value = _flag(argv, flag)
            if value and value.startswith("s3://"):
                needs.append(("boto3", f"{flag} s3://…"))
        if _flag(argv, "--app-name") == "basic-auth":  # mlflow.server.auth imports flask_wtf (mlflow's auth extra)
            needs.append(("Flask-WTF", "--app-name basic-auth"))
        backend = _flag(argv, "--backend-store-uri") or get(env.get("MLFLOW_BACKEND_STORE_URI"), "value")
        if isinstance(backend, str) and known(backend) and backend.startswith("postgresql"):
            scheme = backend.split(":", 1)[0]
            needs.append((scheme.split("+", 1)[1] if "+" in scheme else "psycopg", f"backend store {scheme}://"))
        elif "MLFLOW_BACKEND_STORE_URI" in env and TRACKING_COMPONENT in pods.res.urn:
            needs.append((_driver(), f"the Tracking component's backend store (postgresql+{_driver()}, from a Secret)"))
    resources = as_map(c.get("resources"))
    device = get(env.get("MLPLAT_SERVING_DEVICE"), "value")
    gpu = as_map(resources.get("requests")).get(GPU) or as_map(resources.get("limits")).get(GPU)
    if (gpu and argv[:1] == ["mlplat"]) or device == "cuda":
        needs.append(("cuda", "requests nvidia.com/gpu" if device != "cuda" else "MLPLAT_SERVING_DEVICE=cuda"))
    declared = pods.obj.annotations.get(tables.REQUIRES) if pods.obj is not None else None
    if isinstance(declared, str):
        needs += [(n.strip(), tables.REQUIRES) for n in declared.split(",") if n.strip()]
    return needs


def images_carry_what_workloads_need(stack: Sequence[Resource]) -> Found:
    """An image mlplat knows the contents of (its own Dockerfiles' repositories, known public images) carries what
    the container needs: ``mlflow server`` its backend store's driver and boto3 for S3 artifacts, a GPU trainer or
    server a CUDA build (tag ``-cuda``), anything a workload declares in ``mlplat.io/requires``."""
    index = index_of(stack)
    for pods in index.pods:
        for c in pods.containers():
            image = c.get("image")
            if not isinstance(image, str) or not known(image):
                continue
            contents = _contents(image)
            needs = _requirements(pods, c)
            if contents is None or not needs:
                continue
            provides, source = contents
            missing = [(n, why) for n, why in needs if n not in provides]
            if missing:
                yield (
                    pods.res,
                    Violation(
                        f"{pods.owner} container {c.get('name')!r} → image {image}: lacks "
                        f"{', '.join(f'{n} ({why})' for n, why in missing)}; it carries {', '.join(sorted(provides))} "
                        f"({source})",
                        "run an image that carries them (the platform's own build, e.g. the tracking "
                        "image from tracking/Dockerfile, or a -cuda build for GPU pods)",
                    ),
                )
