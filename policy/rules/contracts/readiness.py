"""Every awaited resource can become ready: Pulumi waits for Deployments (available), Services (endpoints),
Ingresses (a load balancer address), Jobs (completion) and Helm releases (their pods), up to a timeout."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from mlplat.policy.framework import Resource, Violation
from mlplat.policy.rules.contracts import tables
from mlplat.policy.rules.contracts.graph import (
    Index,
    K8sObject,
    Pods,
    as_map,
    get,
    index_of,
    known,
    selector_matches,
    why_not_admitted,
)
from mlplat.policy.rules.contracts.references import storage_classes, walk

Found = Iterator[tuple[Resource, Violation]]
ECR_HOST = ".dkr.ecr."
LONG_RUNNING = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"})
LBC_CHART = "aws-load-balancer-controller"


def _ecr_repositories(stack: Sequence[Resource]) -> dict[str, Resource]:
    return {
        str(r.inputs["name"]): r
        for r in stack
        if r.type == "aws:ecr/repository:Repository" and known(r.inputs.get("name"))
    }


def split_image(image: str) -> tuple[str, str, str]:
    """``host/path:tag`` -> (host, path, tag); Docker Hub images get host docker.io."""
    ref = image.split("@", 1)[0]
    tag = ""
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        ref, tag = ref.rsplit(":", 1)
    first = ref.split("/", 1)[0]
    if "/" in ref and ("." in first or ":" in first or first == "localhost"):
        host, path = ref.split("/", 1)
    else:
        host, path = "docker.io", ref
    return host, path, tag


def images_come_from_somewhere(stack: Sequence[Resource]) -> Found:
    """A container image is in an ECR repository the stack creates (an image in the stack's own registry that names
    no such repository never pulls), or in a registry declared external; a workload whose image the stack builds
    depends on that build."""
    index = index_of(stack)
    repos = _ecr_repositories(stack)
    builds = {
        str(tag): r
        for r in stack
        if r.type.startswith("docker")
        for tag in [*(r.inputs.get("tags") or []), r.inputs.get("imageName")]
        if isinstance(tag, str)
    }
    hosts = {
        split_image(str(c.get("image")))[0]
        for p in index.pods
        for c in p.containers()
        if isinstance(c.get("image"), str) and split_image(str(c.get("image")))[1] in repos
    }
    for pods in index.pods:
        for c in pods.containers():
            image = c.get("image")
            if not isinstance(image, str) or not known(image):
                continue
            host, path, _ = split_image(image)
            who = f"{pods.owner} container {c.get('name')!r}"
            if ECR_HOST in host:
                if path in repos:
                    build = builds.get(image)
                    if build is not None and build.urn not in index.depends(pods.res):
                        yield (
                            pods.res,
                            Violation(
                                f"{who} → image {image} built by {build.name}: the workload does "
                                "not depend on the build, so it can start before the push",
                                "pass the build's image reference (its output) as the image",
                            ),
                        )
                elif repos and (host in hosts or not hosts):
                    yield (
                        pods.res,
                        Violation(
                            f"{who} → image {image}: the stack's registry has no repository {path!r}; repositories: "
                            f"{', '.join(sorted(repos))}",
                            "add the repository to registry.repositories, or name one of them",
                        ),
                    )
            elif host not in tables.EXTERNAL_REGISTRIES:
                yield (
                    pods.res,
                    Violation(
                        f"{who} → image {image}: registry {host} is neither one the stack populates nor a declared "
                        f"external one ({', '.join(sorted(tables.EXTERNAL_REGISTRIES))})",
                        "push the image to the stack's ECR registry, or add the registry to EXTERNAL_REGISTRIES in "
                        "mlplat/policy/rules/contracts/tables.py",
                    ),
                )


def _awaited_services(index: Index) -> Iterator[K8sObject]:
    for svc in index.of_kind("Service"):
        spec = as_map(get(svc.body, "spec"))
        if svc.skip_await or spec.get("type") == "ExternalName" or spec.get("clusterIP") == "None":
            continue
        if as_map(spec.get("selector")):
            yield svc


def services_get_endpoints(stack: Sequence[Resource]) -> Found:
    """An awaited Service (Pulumi waits for ready endpoints) selects pods of a long-running workload that is awaited
    too: pods nobody waits for (``pulumi.com/skipAwait``) or Job pods may never be ready endpoints."""
    index = index_of(stack)
    for svc in _awaited_services(index):
        selector = as_map(get(svc.body, "spec", "selector"))
        pods = [p for p in index.pods if p.namespace == svc.namespace and selector_matches(selector, p.labels)]
        serving = [p for p in pods if p.kind in LONG_RUNNING]
        if pods and not serving:
            yield (
                svc.res,
                Violation(
                    f"{svc.ref} → {', '.join(p.owner for p in pods)}: only Job pods, which end; "
                    "Pulumi waits for ready endpoints until it times out",
                    "annotate the Service pulumi.com/skipAwait: 'true', or make it headless",
                ),
            )
            continue
        unawaited = [p for p in serving if p.obj is not None and p.obj.skip_await]
        if serving and len(unawaited) == len(serving):
            yield (
                svc.res,
                Violation(
                    f"{svc.ref} → {', '.join(p.owner for p in unawaited)}: the workload is not awaited "
                    "(pulumi.com/skipAwait) because its pods may not turn ready, but the Service is: `pulumi up` "
                    "waits for "
                    "its endpoints until it times out",
                    "annotate the Service pulumi.com/skipAwait: 'true' as well",
                ),
            )


def _runs_pods(index: Index) -> Iterator[tuple[Resource, str, list[Pods]]]:
    """(resource, who, its pods) of everything Pulumi waits on that needs pods to run: awaited workloads and Jobs,
    and Helm releases (Helm waits for their pods)."""
    for pods in index.pods:
        if pods.from_chart or pods.obj is None or pods.obj.skip_await:
            continue
        if pods.kind in LONG_RUNNING or pods.kind == "Job":
            yield pods.res, pods.owner, [pods]
    for rel in index.releases:
        if str(rel.res.inputs.get("skipAwait")).lower() == "true":
            continue
        yield rel.res, rel.ref, [p for p in index.pods if p.res is rel.res]


def _controller(index: Index) -> list[Resource]:
    return [r.res for r in index.release_of(LBC_CHART)]


def ordered_after_what_they_need(stack: Sequence[Resource]) -> Found:
    """What Pulumi awaits starts only after what it needs: pods after node capacity (a node group that admits them
    and the networking add-ons), volumes after the EBS CSI driver, Services and Ingresses after the AWS Load
    Balancer Controller (its webhook rejects Services until it runs; it alone gives an ALB Ingress an address),
    custom resources after the release that installs their CRDs."""
    index = index_of(stack)
    fix = "pass the cluster's capacity (Cluster.capacity) in depends_on"
    network = [index.addons[a] for a in tables.NETWORK_ADDONS if a in index.addons]
    if index.pools:
        for res, who, pods in _runs_pods(index):
            deps = index.depends(res)
            hosts = [
                p
                for p in index.pools
                if any(why_not_admitted(q, p, t) is None for q in pods or [] for t in p.instance_types)
            ]
            missing = []
            if not any(p.res.urn in deps for p in (hosts or index.pools)):
                missing.append("node group " + " or ".join(p.name for p in (hosts or index.pools)))
            missing += [f"add-on {a.inputs.get('addonName')}" for a in network if a.urn not in deps]
            if missing:
                yield (
                    res,
                    Violation(
                        f"{who} → {', '.join(missing)}: not among its dependencies, so Pulumi may start "
                        "waiting for its pods before there is a node to run them",
                        fix,
                    ),
                )
    ebs = index.addons.get("aws-ebs-csi-driver")
    named, _ = storage_classes(index)
    if named:
        for rel in index.releases:
            if any(isinstance(v, str) and v for _, v in walk(rel.values, "storageClassName")) and (
                ebs is None or ebs.urn not in index.depends(rel.res)
            ):
                yield (
                    rel.res,
                    Violation(
                        f"{rel.ref} → add-on aws-ebs-csi-driver: its volumes need the EBS CSI driver "
                        + ("running first" if ebs else "and the stack installs none"),
                        fix + " (it includes aws-ebs-csi-driver)",
                    ),
                )
    controllers = _controller(index)
    for obj in index.of_kind("Service", "Ingress"):
        if controllers and not any(c.urn in index.depends(obj.res) for c in controllers):
            served = "gives the Ingress its ALB" if obj.kind == "Ingress" else "rejects Services until it runs"
            yield (
                obj.res,
                Violation(
                    f"{obj.ref} → {', '.join(c.name for c in controllers)}: not among its "
                    f"dependencies; the AWS Load Balancer Controller {served}",
                    "pass the controller's Release in depends_on",
                ),
            )
    providers = {g: r.res for r in index.releases if r.facts for g in r.facts.crd_groups}
    for obj in index.objects:
        group = obj.res.type.split(":")[1].split("/")[0]
        crd = providers.get(group)
        if crd is not None and crd.urn not in index.depends(obj.res):
            yield (
                obj.res,
                Violation(
                    f"{obj.ref} → {crd.name}: its CRD ({group}) comes with that release, which it does not depend on",
                    "pass the release in depends_on",
                ),
            )


def jobs_do_not_block(stack: Sequence[Resource]) -> Found:
    """A Job either does not hold ``pulumi up`` (``pulumi.com/skipAwait: 'true'``) or says it is meant to
    (``mlplat.io/await-completion: 'true'``): Pulumi otherwise waits for it to complete."""
    for job in index_of(stack).of_kind("Job"):
        meant = str(job.annotations.get(tables.AWAIT_COMPLETION, "")).lower() == "true"
        if not job.skip_await and not meant:
            yield (
                job.res,
                Violation(
                    f"{job.ref} → `pulumi up`: Pulumi waits for the Job to complete (a training run "
                    "of hours, or one waiting for a spot GPU) before the update can finish",
                    "annotate it pulumi.com/skipAwait: 'true', or mlplat.io/await-completion: "
                    "'true' if the update must wait for it",
                ),
            )
