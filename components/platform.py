"""MlPlatform: the whole platform — network, cluster, storage, registry, tracking, serving, training — in one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pulumi
import pulumi_kubernetes as k8s

from mlplat.components.alarms import PlatformAlarms, PlatformAlarmsArgs, PlatformAlarmsSpec
from mlplat.components.capacity import check_workload_capacity
from mlplat.components.cluster import Cluster, ClusterArgs, ClusterSpec, ClusterWiring
from mlplat.components.load_balancer_controller import install_load_balancer_controller
from mlplat.components.model_service import ModelService, ModelServiceArgs, ModelServiceSpec
from mlplat.components.monitoring import (
    ALERTMANAGER_SERVICE_ACCOUNT,
    Monitoring,
    MonitoringArgs,
    MonitoringSpec,
    alertmanager_policy,
)
from mlplat.components.network import Network, NetworkArgs, NetworkSpec
from mlplat.components.options import component_args
from mlplat.components.pipeline_access import PipelineAccess, PipelineAccessArgs
from mlplat.components.registry import ContainerRegistry, ContainerRegistryArgs
from mlplat.components.spec import Spec
from mlplat.components.storage import ArtifactStore, ArtifactStoreArgs, ArtifactStoreSpec, BucketGrant
from mlplat.components.tracking import SERVING, TRAINER, Tracking, TrackingArgs, TrackingSpec, registered_model_of
from mlplat.components.training_job import TrainingJob, TrainingJobArgs, TrainingJobSpec

__all__ = ["MlPlatform", "MlPlatformArgs"]

MLFLOW_PREFIX = "mlflow"
SERVING_NAMESPACE = "serving"
TRAINING_NAMESPACE = "training"

ArgsT = TypeVar("ArgsT", bound=Spec)


@dataclass(frozen=True)
class MlPlatformArgs:
    """Arguments of :class:`MlPlatform`: each component's spec, what a user decides; the platform wires the rest.

    A spec has no field for what comes from another component: the cluster's VPC and subnets, the tracking
    database's subnets and clients, each workload's namespace, image, IRSA role and checkpoint location are
    the platform's to give, so there is nothing to fill in. The platform builds each component's ``*Args`` from
    its spec and that wiring.

    Attributes:
        region: The AWS region (the provider's).
        network: The VPC (a :class:`NetworkSpec`; the platform sets ``cluster_name`` and ``region`` unless a
            :class:`NetworkArgs` given here sets them).
        cluster: The EKS cluster's settings (a :class:`ClusterSpec`); the platform wires its VPC, private subnets,
            region and name (the platform's, unless a :class:`ClusterArgs` given here names it).
        artifacts: The artifact bucket (a :class:`ArtifactStoreSpec`; the platform adds its workloads' grants to
            those of an :class:`ArtifactStoreArgs` given here).
        registry: The ECR repositories; ``images``, ``builds`` or ``default_tag`` must give ``serving`` and
            ``training`` images (and a CUDA ``training`` build for GPU jobs) when services or training jobs are
            declared, and a ``tracking`` image (``tracking/Dockerfile``) unless ``tracking.image`` names one.
        tracking: MLflow and its database (the platform wires its VPC, database subnets, clients, artifact
            location and IRSA role, and its image unless ``image`` names one). With ``auth`` (the default) the training
            jobs get the ``trainer`` identity's credentials and the services the read-only ``serving`` one (Secrets
            ``mlflow-trainer``/``mlflow-serving`` in their namespaces), and the models they name are created up
            front so that no other identity can own them.
        services: Model services by name (the platform wires their namespace, image, IRSA role and, unless
            ``tracking_uri`` names another MLflow, the platform's MLflow and its read-only credentials).
        training_jobs: Training jobs by name (the platform wires their namespace, image (the CUDA build for GPU
            jobs), checkpoint location, IRSA role and, unless ``tracking_uri`` names another MLflow, the platform's
            MLflow and its ``trainer`` credentials).
        load_balancer_controller: Install the AWS Load Balancer Controller (needed by ALB Ingresses).
        monitoring: Prometheus, Grafana and Alertmanager with mlplat's rules and dashboard; every service
            gets a ServiceMonitor (the platform wires ``model_services``). None: no in-cluster monitoring.
        alarms: CloudWatch alarms for RDS, the NAT gateways and the EKS control plane (the platform wires the
            database, the NAT gateways and the cluster). None: no alarms. Alertmanager pages the alarms'
            SNS topic too (through an IRSA role that may publish only there) unless ``monitoring`` names a topic
            or receiver of its own.
        pipeline_role_arn: The ML pipeline's IAM role (the bootstrap's ``pipelineRoleArn``): given, it gets an EKS
            access entry with only what ``.github/workflows/ml-pipeline.yml`` runs with kubectl (restart and watch
            the services' canary Deployments, read their pods, port-forward to Prometheus); see
            :mod:`mlplat.components.pipeline_access`. None: the pipeline has no access to the cluster.
    """

    region: str
    network: NetworkSpec
    cluster: ClusterSpec
    artifacts: ArtifactStoreSpec = field(default_factory=ArtifactStoreSpec)
    registry: ContainerRegistryArgs = field(default_factory=ContainerRegistryArgs)
    tracking: TrackingSpec | None = None
    services: Mapping[str, ModelServiceSpec] = field(default_factory=dict)
    training_jobs: Mapping[str, TrainingJobSpec] = field(default_factory=dict)
    load_balancer_controller: bool = True
    monitoring: MonitoringSpec | None = None
    alarms: PlatformAlarmsSpec | None = None
    pipeline_role_arn: pulumi.Input[str] | None = None


def _checkpoints(job: str) -> str:
    """The prefix of a training job's checkpoints in the artifact bucket."""
    return f"checkpoints/{job}"


def _wired(args_type: type[ArgsT], spec_type: type[Spec], spec: Spec, **wiring: Any) -> ArgsT:
    """The component's args: ``spec``'s settings (the fields of ``spec_type``, so a stack config's subclass of the
    spec passes only them) with the ``wiring`` the platform gives; validated once, as the args."""
    settings = {name: getattr(spec, name) for name in spec_type.model_fields}
    return args_type.model_validate({**settings, **wiring})


def platform_models(args: MlPlatformArgs) -> list[str]:
    """The registered models the platform's MLflow holds: those its services serve and its training jobs register."""
    # A URI known only at deploy time (an Output) names no model here: its model is not created up front.
    names = [
        registered_model_of(uri)
        for svc in args.services.values()
        if svc.tracking_uri is None
        for uri in (svc.model_uri, *([svc.canary.model_uri] if svc.canary else []))
        if isinstance(uri, str)
    ]
    for job in args.training_jobs.values():
        registry = job.config.get("registry")
        if job.tracking_uri is None and isinstance(registry, Mapping):
            names.append(registry.get("model_name"))
    return list(dict.fromkeys(n for n in names if isinstance(n, str) and n))


class MlPlatform(pulumi.ComponentResource):
    """Every mlplat component, wired together.

    Network -> Cluster (in the private subnets) -> Kubernetes workloads through the cluster's provider;
    the artifact bucket is shared: MLflow writes under ``mlflow/`` and serving reads it, each training job
    checkpoints under ``checkpoints/<job>/``; every workload gets its own IRSA role scoped to its prefix.

    Its components: ``network``, ``cluster``, ``artifacts``, ``registry``, ``tracking``, ``alarms``, ``monitoring``
    (the last three None when not configured). The workloads' IRSA roles and MLflow credential Secrets are the
    platform's own children (created with the caller's options of :meth:`Cluster.service_account_role` and
    :meth:`Tracking.client_credentials`), and the bucket grants are declared with the store.
    """

    service_endpoints: dict[str, pulumi.Output[str]]
    """Service name -> its ALB's host name (empty until the controller provisions it); services with an Ingress."""

    def __init__(
        self, name: str, args: MlPlatformArgs | None = None, opts: pulumi.ResourceOptions | None = None, **kwargs: Any
    ) -> None:
        args = component_args("MlPlatform", MlPlatformArgs, args, kwargs)
        super().__init__("mlplat:platform:MlPlatform", name, None, opts)
        # A pod that fits no node of the pools that may host it stays Pending, and Pulumi's await fails later.
        problems = check_workload_capacity(args)
        if problems:
            raise ValueError("MlPlatformArgs: " + "; ".join(problems))
        child = pulumi.ResourceOptions(parent=self)
        # The cluster's name: the platform's, unless a ClusterArgs given here names it.
        cluster_name = getattr(args.cluster, "cluster_name", None) or name
        # The subnets' kubernetes.io/cluster/<name> tags must name the cluster that uses them.
        network = dict(args.network)  # a NetworkSpec, or NetworkArgs whose own cluster_name/region are kept
        wiring = {"cluster_name": cluster_name, "region": args.region}
        self.network = Network(
            name,
            NetworkArgs.model_validate(
                {**network, **{key: value for key, value in wiring.items() if network.get(key) is None}}
            ),
            opts=child,
        )
        self.cluster = Cluster(
            name,
            ClusterArgs.of(
                args.cluster,
                ClusterWiring(
                    vpc_id=self.network.vpc_id,
                    private_subnet_ids=self.network.private_subnet_ids,
                    region=args.region,
                    cluster_name=cluster_name,
                ),
            ),
            opts=child,
        )
        # Every workload's IRSA role, then the store with their grants, so that the store owns the policies.
        tracking_role = (
            None
            if args.tracking is None
            else self.cluster.service_account_role(args.tracking.namespace, "mlflow", opts=child)
        )
        service_roles = {
            svc: self.cluster.service_account_role(SERVING_NAMESPACE, f"{name}-{svc}", opts=child)
            for svc in args.services
        }
        job_roles = {
            job: self.cluster.service_account_role(TRAINING_NAMESPACE, f"{name}-{job}", opts=child)
            for job in args.training_jobs
        }
        grants = [
            *([] if tracking_role is None else [BucketGrant("mlflow", tracking_role.name, MLFLOW_PREFIX, write=True)]),
            *(BucketGrant(f"serve-{svc}", role.name, MLFLOW_PREFIX) for svc, role in service_roles.items()),
            *(BucketGrant(f"train-{job}", role.name, _checkpoints(job), write=True) for job, role in job_roles.items()),
        ]
        artifacts = dict(args.artifacts)
        self.artifacts = ArtifactStore(
            f"{name}-artifacts",
            ArtifactStoreArgs.model_validate({**artifacts, "grants": [*artifacts.get("grants", ()), *grants]}),
            opts=child,
        )
        self.registry = ContainerRegistry(f"{name}-registry", args.registry, opts=child)
        on_cluster = pulumi.ResourceOptions(parent=self, providers=[self.cluster.provider])
        # Pods need nodes and their add-ons; every Service needs the Load Balancer Controller's webhook, which
        # rejects Services (failurePolicy: Fail) until the controller runs. Workloads wait for both.
        ready: list[pulumi.Resource] = list(self.cluster.capacity)
        if args.load_balancer_controller:
            ready.append(
                install_load_balancer_controller(name, self.cluster, args.region, self.network.vpc_id, on_cluster)
            )
        workloads = pulumi.ResourceOptions.merge(on_cluster, pulumi.ResourceOptions(depends_on=ready))

        self.tracking: Tracking | None = None
        tracking_uri: pulumi.Input[str] | None = None
        if args.tracking is not None:
            assert tracking_role is not None
            spec = args.tracking
            tracking = _wired(
                TrackingArgs,
                TrackingSpec,
                spec,
                vpc_id=self.network.vpc_id,
                database_subnet_ids=self.network.database_subnet_ids,
                # Managed node groups carry the EKS cluster security group; pods share their node's.
                client_security_group_ids=[self.cluster.cluster_security_group_id, self.cluster.node_security_group_id],
                artifacts_uri=self.artifacts.uri(MLFLOW_PREFIX),
                service_account_role_arn=tracking_role.arn,
                image=spec.image or self._image("tracking", "tracking"),
                # MLflow's clients (NetworkPolicy): the model servers and the trainer, plus any the caller named.
                allowed_namespaces=sorted({SERVING_NAMESPACE, TRAINING_NAMESPACE, *spec.allowed_namespaces}),
                # The internal ALB's ENIs lie in the private subnets, as do pods (VPC CNI): the VPC CIDR.
                load_balancer_cidrs=list(spec.load_balancer_cidrs) or [self.network.vpc_cidr],
                # Created up front, so that only the trainer and the pipeline ever hold write access to them.
                auth=None
                if spec.auth is None
                else spec.auth.replace(
                    registered_models=list(dict.fromkeys([*spec.auth.registered_models, *platform_models(args)]))
                ),
            )
            self.tracking = Tracking(f"{name}-tracking", tracking, opts=workloads)
            tracking_uri = self.tracking.uri

        self.service_endpoints = {}
        self._serving_namespace: pulumi.Output[str] | None = None
        if args.services:
            namespace = self._serving_namespace = self._namespace(SERVING_NAMESPACE, on_cluster)
            image = self._image("serving", "services")
            # read-only: resolve aliases, download models
            reader = self._tracking_credentials(SERVING, namespace, workloads)
            for svc, svc_args in args.services.items():
                role = service_roles[svc]
                own_mlflow = svc_args.tracking_uri is None
                service = ModelService(
                    f"{name}-{svc}",
                    _wired(
                        ModelServiceArgs,
                        ModelServiceSpec,
                        svc_args,
                        namespace=namespace,
                        image=image,
                        tracking_uri=tracking_uri if own_mlflow else svc_args.tracking_uri,
                        service_account_role_arn=role.arn,
                        # Only with the platform's MLflow: another server knows nothing of its users.
                        tracking_credentials_secret=reader if own_mlflow else None,
                        # The ALB (target type ip) reaches pods from its ENIs: an ipBlock, not a namespace.
                        load_balancer_cidrs=list(svc_args.load_balancer_cidrs) or [self.network.vpc_cidr],
                        monitoring_namespace=args.monitoring.namespace
                        if args.monitoring is not None
                        else svc_args.monitoring_namespace,
                    ),
                    opts=workloads,
                )
                if service.ingress_hostname is not None:
                    self.service_endpoints[svc] = service.ingress_hostname
        self.alarms: PlatformAlarms | None = None
        if args.alarms is not None:
            self.alarms = PlatformAlarms(
                f"{name}-alarms",
                _wired(
                    PlatformAlarmsArgs,
                    PlatformAlarmsSpec,
                    args.alarms,
                    database_identifier=self.tracking.database.identifier if self.tracking else None,
                    cluster_name=self.cluster.cluster_name,
                    nat_gateway_ids=[n.id for n in self.network.nat_gateways],
                ),
                opts=child,
            )
        self.monitoring: Monitoring | None = None
        if args.monitoring is not None:
            self.monitoring = Monitoring(f"{name}-monitoring", self._monitoring_args(args), opts=workloads)
        if args.training_jobs:
            namespace = self._namespace(TRAINING_NAMESPACE, on_cluster)
            writer = self._tracking_credentials(TRAINER, namespace, workloads)  # logs runs, registers, sets the alias
            for job, job_args in args.training_jobs.items():
                # One prefix per job: the job's lineage. Each run of the job (a Job, or each CronJob run) is a new
                # attempt identified by its Job's uid, which retires the previous run's checkpoints there.
                prefix = _checkpoints(job)
                role = job_roles[job]
                gpu = job_args.resources.gpus > 0
                own_mlflow = job_args.tracking_uri is None
                TrainingJob(
                    f"{name}-{job}",
                    _wired(
                        TrainingJobArgs,
                        TrainingJobSpec,
                        job_args,
                        namespace=namespace,
                        # The platform picks the image: GPU jobs the CUDA build of the trainer, CPU jobs the CPU build.
                        image=self._image("training", "training_jobs", cuda=gpu),
                        image_cuda=gpu,
                        tracking_uri=tracking_uri if own_mlflow else job_args.tracking_uri,
                        checkpoint_uri=self.artifacts.uri(prefix),
                        service_account_role_arn=role.arn,
                        # Only with the platform's MLflow: another server knows nothing of its users.
                        tracking_credentials_secret=writer if own_mlflow else None,
                    ),
                    opts=workloads,
                )
        if args.pipeline_role_arn is not None:
            PipelineAccess(
                f"{name}-pipeline",
                PipelineAccessArgs(
                    cluster_name=self.cluster.cluster_name,
                    role_arn=args.pipeline_role_arn,
                    service_namespace=self._serving_namespace,
                    canary_deployments=[
                        f"{name}-{svc}-canary" for svc, svc_args in args.services.items() if svc_args.canary is not None
                    ],
                    monitoring_namespace=self.monitoring.namespace if self.monitoring is not None else None,
                ),
                opts=on_cluster,
            )
        self.register_outputs({"service_endpoints": self.service_endpoints})

    def _tracking_credentials(
        self, identity: str, namespace: pulumi.Output[str], opts: pulumi.ResourceOptions
    ) -> pulumi.Output[str] | None:
        """The Secret with ``identity``'s MLflow credentials in ``namespace``; None without MLflow or its auth."""
        if self.tracking is None or not self.tracking.passwords:
            return None
        return self.tracking.client_credentials(identity, namespace, opts=opts)

    def _monitoring_args(self, args: MlPlatformArgs) -> MonitoringArgs:
        """The monitoring args with every service scraped and, by default, alerts paging the alarm topic."""
        spec = args.monitoring
        assert spec is not None
        topic, role_arn = spec.sns_topic_arn, spec.alertmanager_role_arn
        if topic is None and self.alarms is not None:
            topic = self.alarms.topic.arn
        # A topic the caller configured keeps the role the caller configured.
        if topic is not None and role_arn is None:
            role_arn = self.cluster.service_account_role(
                spec.namespace,
                ALERTMANAGER_SERVICE_ACCOUNT,
                alertmanager_policy(topic),
                opts=pulumi.ResourceOptions(parent=self),
            ).arn
        return _wired(
            MonitoringArgs,
            MonitoringSpec,
            spec,
            sns_topic_arn=topic,
            alertmanager_role_arn=role_arn,
            # The Namespace's own output, so each ServiceMonitor waits for the namespace it is created in.
            model_services={
                f"{self._name}-{svc}": self._serving_namespace for svc in args.services if self._serving_namespace
            },
        )

    def _namespace(self, namespace: str, opts: pulumi.ResourceOptions) -> pulumi.Output[str]:
        ns = k8s.core.v1.Namespace(
            f"{self._name}-{namespace}",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=namespace,
                # Enforce the restricted Pod Security Standard: our pods already meet it.
                labels={"pod-security.kubernetes.io/enforce": "restricted"},
            ),
            opts=opts,
        )
        return ns.metadata.name

    def _image(self, repository: str, field_name: str, *, cuda: bool = False) -> pulumi.Output[str]:
        image = (self.registry.cuda_image_uris if cuda else self.registry.image_uris).get(repository)
        if image is None:
            which = "cuda_images" if cuda else "images"
            raise ValueError(
                f"MlPlatformArgs.{field_name} needs a {'CUDA ' if cuda else ''}{repository!r} image: set registry "
                f"{which}[{repository!r}] (an image built elsewhere), registry builds[{repository!r}] or a "
                f"default_tag{' (with ' + repr(repository) + ' in cuda_repositories)' if cuda else ''}"
            )
        return image
