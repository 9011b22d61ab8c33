"""TrainingJob: ``mlplat train`` as a Kubernetes Job on the spot GPU pool, single- or multi-node (torchrun)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

import pulumi
import pulumi_kubernetes as k8s
import yaml
from pydantic import Field, field_validator, model_validator

from mlplat.components.cluster_system import SPOT_POD_GRACE_SECONDS
from mlplat.components.options import child_options, component_args
from mlplat.components.pods import (
    Resources,
    container_security_context,
    env_vars,
    gpu_placement,
    pod_security_context,
    scratch_volume,
    service_account,
)
from mlplat.components.spec import Spec, StrInput
from mlplat.components.tracking import tracking_credentials_env
from mlplat.components.validation import (
    CRONJOB_NAME_MAX,
    DerivedName,
    InvalidValue,
    check_name,
    check_schedule,
)
from mlplat.contracts.exit_codes import EXIT_PREEMPTED  # the trainer's contract; a light import (no torch)

__all__ = ["TrainingJob", "TrainingJobArgs", "TrainingJobSpec"]

ATTEMPT_ENV = "MLPLAT_ATTEMPT_ID"
"""The trainer's attempt id (``mlplat.training.lineage.ATTEMPT_ENV``; not imported: that module loads torch)."""
JOB_NAME_ENV = "MLPLAT_JOB_NAME"
CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"
"""Set by the Job controller on every pod of one Job run (retries included); a CronJob's next run is a new Job."""
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"

RENDEZVOUS_PORT = 29500
CONFIG_DIR = "/etc/mlplat"
CONTAINER = "trainer"


class TrainingJobSpec(Spec):
    """What a user decides about a :class:`TrainingJob` (``MlPlatformArgs.training_jobs``); :class:`TrainingJobArgs`
    adds the wiring: the namespace, the image, the checkpoint location, the MLflow credentials and the IRSA role."""

    config: dict[str, Any] = {}
    """The trainer's config (the YAML ``mlplat train --config`` reads), as a mapping."""
    tracking_uri: StrInput | None = None
    """MLflow tracking URI. In MlPlatform, None means the platform's own MLflow (as its ``trainer`` identity); a
    URI of another server is used as given, without the platform's credentials, and the model the job registers
    is not created in the platform's registry."""
    nodes: int = Field(default=1, le=64)
    """Pods (1 = single-node; more = torchrun across an Indexed Job with a headless Service; at most 64)."""
    processes_per_node: int = Field(default=1, le=8)
    """torchrun processes per pod (usually the GPUs per node; at most 8)."""
    resources: Resources = Resources(cpu="2", memory="8Gi", gpus=1)
    """Requests and limits per pod; ``gpus > 0`` schedules on the tainted GPU pool."""
    backoff_limit: int = Field(default=3, ge=0, le=20)
    """Failures (other than spot preemptions, which are not counted) before the Job fails (0 to 20)."""
    active_deadline_seconds: int = 24 * 3600
    """Wall-clock limit for the whole Job, retries included."""
    ttl_seconds_after_finished: int = 24 * 3600
    """Delete the finished Job (and its pods) after this long."""
    schedule: str | None = None
    """A cron schedule: make a CronJob for scheduled retraining instead of a one-off Job. Checked as the API server
    does (5 fields, each in its range, or a descriptor such as ``@daily``)."""
    env: dict[str, str] = {}
    """Extra environment variables for the trainer."""

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                check_schedule(value)
            except InvalidValue as exc:
                raise exc.of("TrainingJobArgs.schedule") from None
        return value

    @model_validator(mode="after")
    def _counts(self) -> Self:
        if self.nodes < 1 or self.processes_per_node < 1:
            raise ValueError(
                f"TrainingJobArgs: nodes ({self.nodes}) and processes_per_node "
                f"({self.processes_per_node}) must be at least 1"
            )
        return self


class TrainingJobArgs(TrainingJobSpec):
    """Arguments of :class:`TrainingJob`: its :class:`TrainingJobSpec` and what it is wired to."""

    namespace: StrInput
    """The Kubernetes namespace (must exist)."""
    image: StrInput
    """The ``mlplat.training`` image (``training/Dockerfile``)."""
    checkpoint_uri: StrInput | None = None
    """Where checkpoints go, e.g. ``s3://bucket/checkpoints/digits``; overrides the config's. The job's lineage:
    it holds the current attempt's checkpoints (``attempt.json`` names the attempt)."""
    tracking_credentials_secret: StrInput | None = None
    """A ``kubernetes.io/basic-auth`` Secret in ``namespace`` (keys ``username`` and ``password``) with the MLflow
    identity the trainer logs and registers as (``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``);
    MlPlatform passes the Tracking's ``trainer`` (:meth:`~mlplat.components.tracking.Tracking.client_credentials`).
    None: no credentials."""
    service_account_role_arn: StrInput | None = None
    """IAM role (IRSA) with write access to the checkpoint prefix."""
    image_cuda: bool | None = None
    """Whether ``image`` is a CUDA build of the trainer (``training/Dockerfile`` with a CUDA base and torch wheel
    index). None: read it from the tag (a tag ending in ``-cuda``, as mlplat's registry tags CUDA builds). A job
    that requests GPUs refuses an image that is not a CUDA build, since CPU torch would leave the GPU idle (or,
    with ``runtime.device: cuda``, fail at start)."""


def derived_names(args: TrainingJobArgs) -> list[DerivedName]:
    """The Kubernetes names a :class:`TrainingJob` builds from its name, each with its length limit."""
    names = [DerivedName("label value batch.kubernetes.io/job-name")]
    if args.schedule is not None:
        # The CronJob controller names each run's Job <name>-<minutes since the epoch>: 11 more characters.
        names.append(DerivedName("CronJob (its runs' Jobs add 11 characters)", limit=CRONJOB_NAME_MAX))
    if args.nodes > 1:
        # The Indexed Job's last pod hostname must be a DNS-1123 label (Kubernetes' ValidateJob).
        names += [
            DerivedName("pod hostname", f"-{args.nodes - 1}"),
            DerivedName("rendezvous Service (a DNS-1035 label)"),
        ]
    return names


def _is_cuda_image(image: str) -> bool:
    """Whether an image reference names a CUDA build by mlplat's convention (its tag ends in ``-cuda``)."""
    reference = image.split("@", 1)[0]
    tag = reference.rsplit(":", 1)[1] if ":" in reference.rsplit("/", 1)[-1] else ""
    return tag.endswith("-cuda")


def _check_gpu_image(args: TrainingJobArgs) -> None:
    """Refuse a job that requests GPUs with an image that is (or may be) CPU-only torch."""
    if not args.resources.gpus:
        return
    cuda = args.image_cuda
    if cuda is None and isinstance(args.image, str):
        cuda = _is_cuda_image(args.image)
    if cuda is None:
        raise ValueError(
            "TrainingJobArgs.image_cuda: the job requests "
            f"{args.resources.gpus} GPU(s) and its image is only known at deploy time; "
            "set image_cuda=True for a CUDA build of training/Dockerfile"
        )
    if not cuda:
        raise ValueError(
            f"TrainingJobArgs.image: the job requests {args.resources.gpus} GPU(s) but {args.image!r} "
            "is not a CUDA build (CPU torch cannot use the GPU); build training/Dockerfile with "
            "--build-arg BASE_IMAGE=<a CUDA runtime image> --build-arg TORCH_INDEX_URL=<a CUDA wheel "
            "index>, tag it <version>-cuda, or set image_cuda=True if it is one"
        )


def _pod_failure_policy() -> k8s.batch.v1.PodFailurePolicyArgs:
    """Retry spot interruptions for free, fail fast on real errors.

    A node drain or spot reclaim (DisruptionTarget) and the trainer's own preemption exit are ignored (the
    pod is recreated without using up ``backoffLimit``); any other non-zero exit of the trainer fails the
    Job at once, since a bug or bad data will not fix itself on retry.
    """
    return k8s.batch.v1.PodFailurePolicyArgs(
        rules=[
            k8s.batch.v1.PodFailurePolicyRuleArgs(
                action="Ignore",
                on_pod_conditions=[
                    k8s.batch.v1.PodFailurePolicyOnPodConditionsPatternArgs(type="DisruptionTarget", status="True")
                ],
            ),
            k8s.batch.v1.PodFailurePolicyRuleArgs(
                action="Ignore",
                on_exit_codes=k8s.batch.v1.PodFailurePolicyOnExitCodesRequirementArgs(
                    container_name=CONTAINER, operator="In", values=[EXIT_PREEMPTED]
                ),
            ),
            k8s.batch.v1.PodFailurePolicyRuleArgs(
                action="FailJob",
                on_exit_codes=k8s.batch.v1.PodFailurePolicyOnExitCodesRequirementArgs(
                    container_name=CONTAINER, operator="NotIn", values=[0, EXIT_PREEMPTED]
                ),
            ),
        ]
    )


def _trainer_command(nodes: int, processes_per_node: int) -> list[str]:
    """The container command: ``mlplat train``, which starts torchrun in-process for several processes.

    ``mlplat train --nproc-per-node`` (not a bare ``torchrun``, which always exits 1) maps the workers'
    outcome back to the trainer's exit codes, so the podFailurePolicy sees a preemption as one.
    """
    command = ["mlplat", "train", "--config", f"{CONFIG_DIR}/training.yaml"]
    if nodes > 1 or processes_per_node > 1:
        command += ["--nproc-per-node", str(processes_per_node)]
    return command


def _rendezvous_env(name: str, nodes: int) -> dict[str, str]:
    """torchrun's multi-node settings (its ``PET_*`` variables): pod 0 of the Indexed Job is the master.

    Pods use the headless Service as their subdomain, so pod ``i`` resolves as ``<job>-<i>.<service>``;
    each pod's node rank is its ``JOB_COMPLETION_INDEX``.
    """
    if nodes == 1:
        return {}
    return {"PET_NNODES": str(nodes), "PET_MASTER_ADDR": f"{name}-0.{name}", "PET_MASTER_PORT": str(RENDEZVOUS_PORT)}


class TrainingJob(pulumi.ComponentResource):
    """A training run as a Kubernetes Job (or CronJob), safe on spot capacity.

    The trainer checkpoints to ``checkpoint_uri`` and exits with a dedicated code on SIGTERM (and when a
    tracking or store outage outlasts its retry budget); the Job's podFailurePolicy retries exactly those and
    fails fast on anything else. The pods get the Job's ``controller-uid`` as ``MLPLAT_ATTEMPT_ID``: retries of
    one Job run resume its checkpoints, a new Job (each CronJob run) starts a new attempt on the same prefix,
    and the CronJob's ``concurrencyPolicy: Forbid`` keeps two runs off that prefix at once. Multi-node runs
    use an Indexed Job with one pod per node and a headless Service for torchrun's rendezvous.

    """

    job_name: pulumi.Output[str]
    """The Job's (or, with a schedule, the CronJob's) name."""

    def __init__(
        self, name: str, args: TrainingJobArgs | None = None, opts: pulumi.ResourceOptions | None = None, **kwargs: Any
    ) -> None:
        args = component_args("TrainingJob", TrainingJobArgs, args, kwargs)
        super().__init__("mlplat:training:TrainingJob", name, None, opts)
        multi = args.nodes > 1
        check_name(
            "TrainingJob",
            name,
            derived_names(args),
            dns1035=multi,
            why="it names the rendezvous Service" if multi else "its pods take their hostnames from it",
        )
        _check_gpu_image(args)
        child = child_options(self, opts)
        labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/component": "trainer"}
        sa = service_account(f"{name}-sa", name, args.namespace, args.service_account_role_arn, child)

        config = dict(args.config)
        if args.resources.gpus:
            # A pod that holds a GPU must use it: with device 'cuda' the trainer fails at start when torch sees
            # no GPU (mlplat.training.distributed.select_device) instead of training on the CPU beside it.
            config["runtime"] = {**config.get("runtime", {}), "device": "cuda"}
        config_map = k8s.core.v1.ConfigMap(
            f"{name}-config",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=f"{name}-config", namespace=args.namespace, labels=labels),
            data=pulumi.Output.from_input(args.checkpoint_uri).apply(
                lambda uri: {"training.yaml": _config_yaml(config, uri)}
            ),
            opts=child,
        )
        multi_node = args.nodes > 1
        if multi_node:
            k8s.core.v1.Service(
                f"{name}-rendezvous",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=name, namespace=args.namespace, labels=labels),
                spec=k8s.core.v1.ServiceSpecArgs(
                    cluster_ip="None",
                    selector=labels,
                    # Pods must resolve each other before they are ready: rendezvous happens at start-up.
                    publish_not_ready_addresses=True,
                    ports=[k8s.core.v1.ServicePortArgs(name="rendezvous", port=RENDEZVOUS_PORT)],
                ),
                opts=child,
            )
        env: dict[str, pulumi.Input[str]] = {"PYTHONUNBUFFERED": "1", **_rendezvous_env(name, args.nodes), **args.env}
        if args.tracking_uri is not None:
            env["MLFLOW_TRACKING_URI"] = args.tracking_uri
        node_selector, tolerations = gpu_placement(args.resources.gpus)
        pod = k8s.core.v1.PodSpecArgs(
            restart_policy="Never",  # podFailurePolicy requires it; the Job controller makes new pods
            service_account_name=sa.metadata.name,
            security_context=pod_security_context(),
            subdomain=name if multi_node else None,
            node_selector=node_selector,
            tolerations=tolerations,
            # Time to finish the step and write the checkpoint, inside the spot warning once the handler drains.
            termination_grace_period_seconds=SPOT_POD_GRACE_SECONDS,
            containers=[
                k8s.core.v1.ContainerArgs(
                    name=CONTAINER,
                    image=args.image,
                    command=_trainer_command(args.nodes, args.processes_per_node),
                    env=[
                        *env_vars(env),
                        *_attempt_env(),
                        *(_completion_index_env() if multi_node else []),
                        *(
                            tracking_credentials_env(args.tracking_credentials_secret)
                            if args.tracking_credentials_secret is not None
                            else []
                        ),
                    ],
                    resources=args.resources.to_args(),
                    security_context=container_security_context(),
                    ports=[k8s.core.v1.ContainerPortArgs(name="rendezvous", container_port=RENDEZVOUS_PORT)]
                    if multi_node
                    else None,
                    volume_mounts=[
                        k8s.core.v1.VolumeMountArgs(name="config", mount_path=CONFIG_DIR, read_only=True),
                        k8s.core.v1.VolumeMountArgs(name="tmp", mount_path="/tmp"),
                        k8s.core.v1.VolumeMountArgs(name="shm", mount_path="/dev/shm"),
                    ],
                )
            ],
            volumes=[
                k8s.core.v1.VolumeArgs(
                    name="config", config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(name=config_map.metadata.name)
                ),
                scratch_volume("tmp", "20Gi"),
                # DataLoader workers and NCCL share tensors through /dev/shm; the default 64 MiB is too small.
                k8s.core.v1.VolumeArgs(
                    name="shm", empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(medium="Memory", size_limit="8Gi")
                ),
            ],
        )
        job_spec = k8s.batch.v1.JobSpecArgs(
            completions=args.nodes,
            parallelism=args.nodes,
            completion_mode="Indexed" if multi_node else "NonIndexed",
            backoff_limit=args.backoff_limit,
            active_deadline_seconds=args.active_deadline_seconds,
            ttl_seconds_after_finished=args.ttl_seconds_after_finished,
            pod_failure_policy=_pod_failure_policy(),
            template=k8s.core.v1.PodTemplateSpecArgs(metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels), spec=pod),
        )
        metadata = k8s.meta.v1.ObjectMetaArgs(name=name, namespace=args.namespace, labels=labels)
        if args.schedule is None:
            # pulumi-kubernetes waits for a Job to complete (provider/pkg/await/job.go) unless it is told not to:
            # a training run of hours, or one waiting for a spot GPU, must never hold `pulumi up`.
            metadata = k8s.meta.v1.ObjectMetaArgs(
                name=name, namespace=args.namespace, labels=labels, annotations={"pulumi.com/skipAwait": "true"}
            )
            job = k8s.batch.v1.Job(name, metadata=metadata, spec=job_spec, opts=child)
            self.job_name = job.metadata.name
        else:
            cron = k8s.batch.v1.CronJob(
                name,
                metadata=metadata,
                spec=k8s.batch.v1.CronJobSpecArgs(
                    schedule=args.schedule,
                    # One lineage, one run at a time: a new attempt retires the previous one's checkpoints.
                    concurrency_policy="Forbid",
                    successful_jobs_history_limit=3,
                    failed_jobs_history_limit=3,
                    job_template=k8s.batch.v1.JobTemplateSpecArgs(spec=job_spec),
                ),
                opts=child,
            )
            self.job_name = cron.metadata.name
        self.register_outputs({"job_name": self.job_name})


def _label_env(name: str, label: str) -> k8s.core.v1.EnvVarArgs:
    return k8s.core.v1.EnvVarArgs(
        name=name,
        value_from=k8s.core.v1.EnvVarSourceArgs(
            field_ref=k8s.core.v1.ObjectFieldSelectorArgs(field_path=f"metadata.labels['{label}']")
        ),
    )


def _attempt_env() -> list[k8s.core.v1.EnvVarArgs]:
    """The run's lineage through the downward API: every pod of one Job run (a preempted pod's replacement
    too) shares the Job's uid, so it resumes that run's checkpoints; the next scheduled run is a new Job, a
    new uid, and trains from scratch (mlplat.training.lineage)."""
    return [_label_env(ATTEMPT_ENV, CONTROLLER_UID_LABEL), _label_env(JOB_NAME_ENV, JOB_NAME_LABEL)]


def _completion_index_env() -> list[k8s.core.v1.EnvVarArgs]:
    # The Job controller also injects it; declaring it keeps the pod spec self-describing.
    return [
        k8s.core.v1.EnvVarArgs(
            name="JOB_COMPLETION_INDEX",
            value_from=k8s.core.v1.EnvVarSourceArgs(
                field_ref=k8s.core.v1.ObjectFieldSelectorArgs(
                    field_path="metadata.annotations['batch.kubernetes.io/job-completion-index']"
                )
            ),
        )
    ]


def _config_yaml(config: Mapping[str, Any], checkpoint_uri: str | None) -> str:
    document = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in config.items()}
    if checkpoint_uri:
        document["checkpoint"] = {**document.get("checkpoint", {}), "uri": checkpoint_uri}
    return yaml.safe_dump(document, sort_keys=True)
