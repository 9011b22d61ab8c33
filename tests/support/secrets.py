"""Secrets in an offline render: what a program creates (keys and values, which the engine's records mask) and
which Secret keys its pods read, so a test can check that every reference resolves."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pulumi

from mlplat.infra.engine import Render

SECRET = "kubernetes:core/v1:Secret"
WORKLOADS = ("kubernetes:apps/v1:Deployment", "kubernetes:batch/v1:Job", "kubernetes:batch/v1:CronJob")
_SECRET_SIG = "4dabf18193072939515e22adb298388d"  # Pulumi's wire signature of a secret value (pulumi.runtime.rpc)

CreatedSecrets = dict[tuple[str, str], dict[str, str]]
"""(namespace, name) -> key -> value, for every Secret a program registered."""


def _unwrap(value: Any) -> Any:
    if isinstance(value, Mapping):
        if _SECRET_SIG in value and "value" in value:
            return _unwrap(value["value"])
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


def record_secrets(into: CreatedSecrets) -> None:
    """Call inside a program: every Secret registered afterwards lands in ``into`` with its plain values."""

    def record(args: pulumi.ResourceTransformArgs) -> None:
        if args.type_ == SECRET:
            props = _unwrap(dict(args.props))
            metadata = props.get("metadata") or {}
            data = {**(props.get("data") or {}), **(props.get("stringData") or {})}
            into[(str(metadata.get("namespace", "default")), str(metadata["name"]))] = {
                str(k): str(v) for k, v in data.items()
            }

    pulumi.runtime.register_resource_transform(record)


@dataclass(frozen=True)
class SecretRef:
    """One Secret key a pod reads: ``key`` None means the whole Secret (a volume without items)."""

    owner: str
    namespace: str
    secret: str
    key: str | None
    where: str


def pod_spec(inputs: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = inputs["spec"]
    if "jobTemplate" in spec:
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def secret_refs(stack: Render) -> Iterator[SecretRef]:
    """Every Secret key read by the render's pods: env ``secretKeyRef``, secret volumes and projected sources."""
    for workload in (r for t in WORKLOADS for r in stack.by_type(t)):
        namespace = workload.inputs["metadata"].get("namespace", "default")
        pod = pod_spec(workload.inputs)
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            for env in container.get("env", []):
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    yield SecretRef(
                        workload.name, namespace, ref["name"], ref["key"], f"{container['name']} env {env['name']}"
                    )
        for volume in pod.get("volumes", []):
            sources = (
                [volume["secret"] | {"name": volume["secret"]["secretName"]}]
                if "secret" in volume
                else [s["secret"] for s in (volume.get("projected") or {}).get("sources", []) if "secret" in s]
            )
            for source in sources:
                for item in source.get("items") or [{"key": None}]:
                    yield SecretRef(workload.name, namespace, source["name"], item["key"], f"volume {volume['name']}")


def unresolved(stack: Render, created: CreatedSecrets) -> list[SecretRef]:
    """The references that name no Secret the render creates in the pod's namespace, or no key of it."""
    return [
        ref
        for ref in secret_refs(stack)
        if (ref.namespace, ref.secret) not in created
        or (ref.key is not None and ref.key not in created[(ref.namespace, ref.secret)])
    ]


def tracking_args(**changes: Any) -> Any:
    """The Tracking args the secret-resolution tests share: a standalone MLflow (wired by hand) with `changes`."""
    from mlplat.components.tracking import TrackingArgs

    wiring: dict[str, Any] = {
        "vpc_id": "vpc-1",
        "database_subnet_ids": ["subnet-a"],
        "client_security_group_ids": ["sg-nodes"],
        "artifacts_uri": "s3://art/mlflow",
        "image": "123.dkr.ecr/tracking:1",
    }
    return TrackingArgs(**{**wiring, **changes})
