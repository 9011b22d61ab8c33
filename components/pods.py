"""Building blocks of hardened pod specs, shared by every workload component.

Each workload (MLflow, model servers, training jobs) runs non-root with a read-only root filesystem, no
privilege escalation, all capabilities dropped and the runtime's seccomp profile, with explicit resources.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from pydantic import Field, ValidationInfo, field_validator

from mlplat.components.spec import Spec
from mlplat.components.validation import InvalidValue, check_cpu, check_gpus, check_memory

# The node-group contract of mlplat's Cluster: GPU nodes carry this label and taint.
GPU_NODE_LABEL = {"workload": "gpu"}
GPU_TAINT_KEY = "nvidia.com/gpu"
GPU_RESOURCE = "nvidia.com/gpu"
NON_ROOT_UID = 10001
MAX_GPUS_PER_POD = 8
"""The most GPUs one pod may request: the largest GPU instance types have 8."""


class Resources(Spec):
    """CPU and memory requests (limits: memory = request, CPU unlimited to avoid CFS throttling)."""

    cpu: str = "500m"
    """CPU request, e.g. ``"500m"`` or ``"2"`` (a Kubernetes quantity in cores or millicores, above 0)."""
    memory: str = "1Gi"
    """Memory request and limit, e.g. ``"1Gi"`` (a Kubernetes quantity in whole bytes, above 0:
    ``Ki``/``Mi``/``Gi``/``Ti`` or ``k``/``M``/``G``/``T``; ``2GB`` and ``500m`` are refused)."""
    gpus: int = Field(default=0, le=MAX_GPUS_PER_POD)
    """``nvidia.com/gpu`` count (0 for CPU workloads, at most 8); GPUs are requested and limited alike."""

    @field_validator("cpu", "memory", "gpus", mode="before")
    @classmethod
    def _quantity(cls, value: Any, info: ValidationInfo) -> Any:
        # Quantities the API server would refuse (or read as nonsense: 2GB, "2 cores", 500m of memory) fail here.
        check = {"cpu": check_cpu, "memory": check_memory, "gpus": check_gpus}[str(info.field_name)]
        try:
            check(value)
        except InvalidValue as exc:
            raise exc.of(f"Resources.{info.field_name}") from None
        return value

    def to_args(self) -> k8s.core.v1.ResourceRequirementsArgs:
        requests = {"cpu": self.cpu, "memory": self.memory}
        limits = {"memory": self.memory}
        if self.gpus:
            requests[GPU_RESOURCE] = str(self.gpus)
            limits[GPU_RESOURCE] = str(self.gpus)
        return k8s.core.v1.ResourceRequirementsArgs(requests=requests, limits=limits)


def container_security_context() -> k8s.core.v1.SecurityContextArgs:
    """Non-root, read-only root filesystem, no privilege escalation, no capabilities."""
    return k8s.core.v1.SecurityContextArgs(
        run_as_non_root=True,
        run_as_user=NON_ROOT_UID,
        run_as_group=NON_ROOT_UID,
        allow_privilege_escalation=False,
        read_only_root_filesystem=True,
        capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"]),
        seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
    )


def pod_security_context() -> k8s.core.v1.PodSecurityContextArgs:
    return k8s.core.v1.PodSecurityContextArgs(
        run_as_non_root=True,
        run_as_user=NON_ROOT_UID,
        run_as_group=NON_ROOT_UID,
        fs_group=NON_ROOT_UID,
        seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
    )


def http_probe(
    path: str, port: int | str, *, period: int = 10, failures: int = 3, initial_delay: int = 0
) -> k8s.core.v1.ProbeArgs:
    return k8s.core.v1.ProbeArgs(
        http_get=k8s.core.v1.HTTPGetActionArgs(path=path, port=port),
        period_seconds=period,
        failure_threshold=failures,
        initial_delay_seconds=initial_delay,
        timeout_seconds=2,
    )


def scratch_volume(name: str = "tmp", size: str = "1Gi") -> k8s.core.v1.VolumeArgs:
    """A writable emptyDir for a read-only root filesystem (mount it at /tmp)."""
    return k8s.core.v1.VolumeArgs(name=name, empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(size_limit=size))


def gpu_placement(gpus: int) -> tuple[dict[str, str] | None, list[k8s.core.v1.TolerationArgs] | None]:
    """(nodeSelector, tolerations) that put a pod needing ``gpus`` GPUs on the tainted GPU pool."""
    if not gpus:
        return None, None
    return dict(GPU_NODE_LABEL), [
        k8s.core.v1.TolerationArgs(key=GPU_TAINT_KEY, operator="Equal", value="true", effect="NoSchedule")
    ]


def env_vars(values: Mapping[str, pulumi.Input[str]]) -> list[k8s.core.v1.EnvVarArgs]:
    return [k8s.core.v1.EnvVarArgs(name=k, value=v) for k, v in sorted(values.items())]


def service_account(
    resource_name: str,
    name: str,
    namespace: pulumi.Input[str],
    role_arn: pulumi.Input[str] | None,
    opts: pulumi.ResourceOptions,
) -> k8s.core.v1.ServiceAccount:
    """A ServiceAccount, annotated for IRSA when ``role_arn`` is given (pods then get that role's credentials)."""
    annotations = {"eks.amazonaws.com/role-arn": role_arn} if role_arn is not None else None
    return k8s.core.v1.ServiceAccount(
        resource_name,
        metadata=k8s.meta.v1.ObjectMetaArgs(name=name, namespace=namespace, annotations=annotations),
        automount_service_account_token=True,
        opts=opts,
    )
