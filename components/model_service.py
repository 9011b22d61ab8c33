"""ModelService: a registered model served by ``mlplat serve`` on the cluster, with autoscaling and canary."""

from __future__ import annotations

import json
from typing import Any, Self

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random
from pydantic import Field, ValidationInfo, field_validator

from mlplat.components.options import checked_when_known, child_options, component_args
from mlplat.components.pods import (
    Resources,
    container_security_context,
    env_vars,
    gpu_placement,
    http_probe,
    pod_security_context,
    scratch_volume,
    service_account,
)
from mlplat.components.spec import AnyInput, Spec, StrInput, StrInputs
from mlplat.components.tracking import tracking_credentials_env
from mlplat.components.validation import (
    SSL_POLICY,
    DerivedName,
    check_certificate_arn,
    check_model_uri,
    check_name,
    checked_as,
)
from mlplat.contracts import http
from mlplat.contracts.serving_env import serving_env

__all__ = ["Canary", "ModelService", "ModelServiceArgs", "ModelServiceSpec"]

PORT = http.SERVING_PORT
SERVICE_PORT = 80
SERVICE_PORT_NAME = "http"
LIVE_PATH = http.LIVE_PATH
READY_PATH = http.READY_PATH
API_KEY_SECRET_KEY = "api-key"
"""The key, in the API key Secret, that holds the bearer token (``MLPLAT_SERVING_API_KEY``)."""
ALB_IDLE_TIMEOUT_S = 60
"""The ALB's default idle timeout; the server keeps idle connections open longer, so the ALB closes them first."""
ALB = "alb.ingress.kubernetes.io/"
ALB_ACTION_PREFIX = f"{ALB}actions."
SPLIT_SUFFIX = "-split"
PUBLIC_WITHOUT_TLS = "mlplat.io/public-without-tls"
PUBLIC_WITHOUT_AUTH = "mlplat.io/public-without-auth"
"""Ingress annotations that record an opt-out of TLS or of the API key on an internet-facing ALB; ``mlplat
check`` (rule ``public-endpoint-protected``) flags them."""
SKIP_AWAIT = {"pulumi.com/skipAwait": "true"}
"""pulumi-kubernetes waits for a Deployment to become available and for a Service to have only ready endpoints
unless an object carries this annotation (provider/pkg/metadata/annotations.go, ``AnnotationSkipAwait``)."""


class Canary(Spec):
    """A second version that takes ``weight`` percent of the traffic."""

    model_uri: StrInput
    """The candidate model, e.g. ``models:/digits@challenger`` (an output is checked once known)."""
    weight: int = 10
    """Percentage of requests routed to the canary (0..100); the stable version gets the rest."""
    image: StrInput | None = None
    """The server image for the canary; default: the stable image."""
    replicas: int = Field(default=1, le=20)
    """Canary replicas (fixed; the canary is not autoscaled; 1 to 20)."""

    @field_validator("model_uri")
    @classmethod
    def _model_uri(cls, value: Any) -> Any:
        if not isinstance(value, pulumi.Output):  # an Output: checked once known (ModelService)
            checked_as("Canary.model_uri", check_model_uri)(value)
        return value

    @field_validator("weight")
    @classmethod
    def _weight(cls, value: int) -> int:
        if not 0 <= value <= 100:
            raise ValueError(f"Canary.weight={value}: must be a percentage between 0 and 100")
        return value

    @field_validator("replicas")
    @classmethod
    def _replicas(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"Canary.replicas={value}: must be at least 1")
        return value


class ModelServiceSpec(Spec):
    """What a user decides about a :class:`ModelService` (``MlPlatformArgs.services``); :class:`ModelServiceArgs`
    adds the wiring: the namespace, the image, the MLflow credentials and the IRSA role."""

    model_uri: StrInput
    """The model to serve, e.g. ``models:/digits@champion``; an output (another resource's, a stack reference's)
    is checked once known, and a bad one fails the update with this field's message."""
    tracking_uri: StrInput | None = None
    """MLflow tracking URI for ``models:/`` and ``runs:/`` URIs. In MlPlatform, None means the platform's own
    MLflow (read as its read-only ``serving`` identity); a URI of another server is used as given, without the
    platform's credentials, and its models are not created in the platform's registry."""
    min_replicas: int = 2
    """HPA floor (at least 2 for a PDB that allows voluntary disruption without downtime)."""
    max_replicas: int = 10
    """HPA ceiling."""
    target_cpu_utilization: int = 70
    """HPA CPU target, percent of the request."""
    extra_metrics: list[AnyInput] = []
    """More HPA metrics (``autoscaling/v2`` MetricSpec), e.g. a Pods metric on request rate."""
    resources: Resources = Resources()
    """Requests and limits per pod; ``gpus > 0`` makes a GPU variant (node selector, toleration)."""
    canary: Canary | None = None
    """An optional canary version and its traffic weight."""
    max_batch_size: int = Field(default=32, ge=1, le=4096)
    """The server's batch size (``MLPLAT_SERVING_MAX_BATCH_SIZE``, 1 to 4096)."""
    drain_seconds: int = 10
    """preStop pause so load balancers deregister the pod before it gets SIGTERM."""
    graceful_timeout_seconds: int = 30
    """After SIGTERM, time the server gets to finish accepted requests."""
    allow_pickle: bool = False
    """Let the server load pickle-serialized MLflow models (``MLPLAT_SERVING_ALLOW_PICKLE``), which run code from
    the file when loaded. mlplat's trainer registers ``pt2`` (torch.export) programs, which need no such trust;
    turn it on only for a trusted registry of pickled models (a training job with
    ``registry.serialization_format: pickle``)."""
    ingress: bool = True
    """Create an ALB Ingress (AWS Load Balancer Controller) routing to the stable/canary split."""
    internal: bool = True
    """The ALB is internal (VPC only) rather than internet-facing. An internet-facing one needs TLS
    (``certificate_arn``) and an API key (``generate_api_key`` or ``api_key_secret``), or the explicit opt-outs
    below."""
    certificate_arn: StrInput | None = None
    """An ACM certificate (in the ALB's region, checked once known if an output) for the host names clients use:
    the ALB then listens on HTTPS 443 only (TLS 1.2/1.3, :data:`SSL_POLICY`), with no plain-HTTP listener a client
    could send its API key to. Internal ALBs may use one too."""
    allow_public_without_tls: bool = False
    """Let an internet-facing ALB serve plain HTTP on port 80 (no certificate). ``mlplat check`` flags it (rule
    ``public-endpoint-protected``; mandatory in production)."""
    allow_public_without_auth: bool = False
    """Let an internet-facing ALB reach servers that take requests without an API key. Flagged by ``mlplat check``
    as above."""
    await_ready: bool = True
    """``pulumi up`` waits for the pods to turn ready (a failed rollout fails the update). Turn it off for a first
    deploy, when the model the service serves is not registered yet: the server then starts unready and keeps
    retrying the load, and ``pulumi up`` does not wait for it."""
    env: dict[str, str] = {}
    """Extra environment variables for the server."""
    api_key_secret: StrInput | None = None
    """An existing Secret in the service's namespace whose ``api-key`` entry is the bearer token every caller must
    send (``Authorization: Bearer <key>``; health and metrics stay open)."""
    generate_api_key: bool = True
    """Without ``api_key_secret``, generate a random key into a Secret ``<name>-api-key`` (output ``api_key``, a
    Pulumi secret). Off and no secret: the server takes requests without a key."""
    network_policy: bool = True
    """A NetworkPolicy admitting only ``load_balancer_cidrs`` (the ALB), Prometheus (``monitoring_namespace``) and
    ``allowed_namespaces`` to the server's port. Enforced only where the cluster's network plugin enforces
    policies (VPC CNI: ``enableNetworkPolicy``)."""
    allowed_namespaces: tuple[str, ...] = ()
    """Namespaces whose pods may call the model servers (e.g. a batch-scoring pipeline)."""
    monitoring_namespace: StrInput | None = "monitoring"
    """Prometheus's namespace (it scrapes ``/metrics``); None: not admitted. MlPlatform with monitoring: its
    namespace."""
    load_balancer_cidrs: StrInputs = []
    """Where the ALB's own addresses lie. With target type ``ip`` the ALB connects to pod IPs from its ENIs in the
    subnets it was placed in (no namespace, no pod labels: an ``ipBlock`` is the only way a NetworkPolicy can name
    it); its health checks come from there too. Empty in MlPlatform: the VPC's CIDR."""

    @field_validator("model_uri", "certificate_arn")
    @classmethod
    def _checked(cls, value: Any, info: ValidationInfo) -> Any:
        check = {"model_uri": check_model_uri, "certificate_arn": check_certificate_arn}[str(info.field_name)]
        if not isinstance(value, pulumi.Output):  # an Output: checked once known (ModelService)
            checked_as(f"ModelServiceArgs.{info.field_name}", check)(value)
        return value

    def _consistent(self) -> Self:
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError(
                f"ModelServiceArgs: min_replicas ({self.min_replicas}) must be >= 1 and <= max_replicas "
                f"({self.max_replicas})"
            )
        if not 1 <= self.target_cpu_utilization <= 100:
            raise ValueError(f"ModelServiceArgs.target_cpu_utilization={self.target_cpu_utilization}: 1..100")
        if self.drain_seconds < 0 or self.graceful_timeout_seconds < 1:
            raise ValueError("ModelServiceArgs: drain_seconds must be >= 0 and graceful_timeout_seconds >= 1")
        if self.public and self.certificate_arn is None and not self.allow_public_without_tls:
            raise ValueError(
                "ModelServiceArgs.internal=False: an internet-facing ALB without certificate_arn serves plain HTTP, "
                "API keys and predictions in clear text; set certificate_arn to an ACM certificate "
                "(arn:aws:acm:<region>:<account id>:certificate/<id>), or allow_public_without_tls=True "
                "(flagged by mlplat check)"
            )
        if self.public and not self.authenticated and not self.allow_public_without_auth:
            raise ValueError(
                "ModelServiceArgs.internal=False: an internet-facing ALB in front of servers that take requests "
                "without an API key lets anyone on the internet call the model; keep generate_api_key=True or "
                "set api_key_secret, or allow_public_without_auth=True (flagged by mlplat check)"
            )
        return self

    @property
    def public(self) -> bool:
        """Whether the service is reachable from the internet (an internet-facing ALB)."""
        return self.ingress and not self.internal

    @property
    def authenticated(self) -> bool:
        """Whether the servers require an API key (given as a Secret, or generated)."""
        return self.api_key_secret is not None or self.generate_api_key


class ModelServiceArgs(ModelServiceSpec):
    """Arguments of :class:`ModelService`: its :class:`ModelServiceSpec` and what it is wired to."""

    namespace: StrInput
    """The Kubernetes namespace (must exist)."""
    image: StrInput
    """The ``mlplat.serving`` image (``serving/Dockerfile``)."""
    tracking_credentials_secret: StrInput | None = None
    """A ``kubernetes.io/basic-auth`` Secret in ``namespace`` (keys ``username`` and ``password``) with the MLflow
    identity the server reads the registry as (``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``);
    MlPlatform passes the Tracking's read-only ``serving`` identity
    (:meth:`~mlplat.components.tracking.Tracking.client_credentials`). None: no credentials."""
    service_account_role_arn: StrInput | None = None
    """IAM role (IRSA) with read access to the model artifacts."""


def derived_names(args: ModelServiceArgs) -> list[DerivedName]:
    """The Kubernetes names a :class:`ModelService` builds from its name, each with its length limit."""
    names = [DerivedName("Service (a DNS-1035 label)", f"-{track}") for track in ("stable", "canary")] + [
        DerivedName("label value app.kubernetes.io/name")
    ]
    if args.ingress:
        names += [
            DerivedName("Ingress backend (a DNS-1035 label)", SPLIT_SUFFIX),
            # An annotation key's name part (after the prefix's '/') has at most 63 characters.
            DerivedName(
                f"ALB action annotation (key {ALB}<name part>)",
                SPLIT_SUFFIX,
                prefix=ALB_ACTION_PREFIX.removeprefix(ALB),
            ),
        ]
    return names


class ModelService(pulumi.ComponentResource):
    """One model behind a Service per version, autoscaled, disruption-budgeted and spread across AZs.

    Each version (``stable``, optional ``canary``) is a Deployment with its own ClusterIP Service; an ALB
    Ingress forwards to both with weighted target groups, so moving traffic is a config change
    (``canary.weight``) and a stack update. Pods stop gracefully: a preStop pause of ``drain_seconds`` lets
    the ALB deregister them, then SIGTERM makes the server refuse new work and finish what it accepted;
    terminationGracePeriodSeconds covers both.

    Access: TLS at the ALB with ``certificate_arn`` (required, with an API key, for an internet-facing one unless
    explicitly waived), a bearer API key from a Secret (given, or generated), a NetworkPolicy that admits only the ALB,
    Prometheus and named namespaces, and no Kubernetes API token in the pods (the server never calls the API;
    IRSA still works: the EKS webhook mounts its own projected token for AWS).

    The name becomes Kubernetes object names (``<name>-stable``, ``<name>-canary``, the ALB action
    ``<name>-split``): a DNS-1035 label short enough for the longest (:func:`derived_names`), checked here.

    Besides the outputs below: ``deployments`` (version -> Deployment) and ``service_account``.
    """

    service_names: dict[str, pulumi.Output[str]]
    """Version (``stable``, ``canary``) -> the name of its ClusterIP Service."""
    ingress_hostname: pulumi.Output[str] | None
    """The ALB's host name ("" until the controller provisions it); None without an Ingress."""
    api_key: pulumi.Output[str] | None
    """The generated API key, a secret; None when it comes from ``api_key_secret`` or is off."""

    def __init__(
        self, name: str, args: ModelServiceArgs | None = None, opts: pulumi.ResourceOptions | None = None, **kwargs: Any
    ) -> None:
        args = component_args("ModelService", ModelServiceArgs, args, kwargs)
        super().__init__("mlplat:serving:ModelService", name, None, opts)
        check_name(
            "ModelService",
            name,
            derived_names(args),
            dns1035=True,
            why="it names the Services <name>-stable and <name>-canary",
        )
        self._service = name
        self._spec = args
        child = child_options(self, opts)
        self.service_account = service_account(f"{name}-sa", name, args.namespace, args.service_account_role_arn, child)
        self.service_names = {}
        self.deployments: dict[str, k8s.apps.v1.Deployment] = {}
        self.api_key = None
        self._api_key_secret: pulumi.Input[str] | None = args.api_key_secret
        if args.api_key_secret is None and args.generate_api_key:
            key = random.RandomPassword(f"{name}-api-key", length=40, special=False, opts=child)
            secret = k8s.core.v1.Secret(
                f"{name}-api-key",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=f"{name}-api-key", namespace=args.namespace, labels={"app.kubernetes.io/name": name}
                ),
                type="Opaque",
                string_data={API_KEY_SECRET_KEY: key.result},
                opts=child,
            )
            self.api_key = pulumi.Output.secret(key.result)
            self._api_key_secret = secret.metadata.name
        if args.network_policy:
            self._network_policy(child)

        versions: list[tuple[str, pulumi.Input[str], pulumi.Input[str], int | None]] = [
            (
                "stable",
                checked_when_known(args.model_uri, checked_as("ModelServiceArgs.model_uri", check_model_uri)),
                args.image,
                None,
            )
        ]
        if args.canary is not None:
            canary_uri = checked_when_known(args.canary.model_uri, checked_as("Canary.model_uri", check_model_uri))
            versions.append(("canary", canary_uri, args.canary.image or args.image, args.canary.replicas))
        for track, model_uri, image, fixed_replicas in versions:
            self._add_version(track, model_uri, image, fixed_replicas, child)

        self.ingress_hostname = None
        if args.ingress:
            self.ingress_hostname = self._ingress(child)
        self.register_outputs(
            {"service_names": self.service_names, "ingress_hostname": self.ingress_hostname, "api_key": self.api_key}
        )

    def _network_policy(self, child: pulumi.ResourceOptions) -> None:
        """Only the ALB (by address), Prometheus and the named namespaces reach the servers' port."""
        args, name = self._spec, self._service
        port = [k8s.networking.v1.NetworkPolicyPortArgs(protocol="TCP", port=PORT)]
        sources: list[k8s.networking.v1.NetworkPolicyPeerArgs] = [
            k8s.networking.v1.NetworkPolicyPeerArgs(ip_block=k8s.networking.v1.IPBlockArgs(cidr=cidr))
            for cidr in args.load_balancer_cidrs
        ]
        namespaces: list[pulumi.Input[str]] = [
            *([args.monitoring_namespace] if args.monitoring_namespace else []),
            *args.allowed_namespaces,
        ]
        if namespaces:
            values: pulumi.Input[list[str]] = (
                pulumi.Output.all(*namespaces).apply(lambda known: sorted(set(known)))
                if any(isinstance(n, pulumi.Output) for n in namespaces)
                else sorted(set(map(str, namespaces)))
            )
            sources.append(
                k8s.networking.v1.NetworkPolicyPeerArgs(
                    namespace_selector=k8s.meta.v1.LabelSelectorArgs(
                        match_expressions=[
                            k8s.meta.v1.LabelSelectorRequirementArgs(
                                key="kubernetes.io/metadata.name", operator="In", values=values
                            )
                        ]
                    )
                )
            )
        k8s.networking.v1.NetworkPolicy(
            name,
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=name, namespace=args.namespace, labels={"app.kubernetes.io/name": name}
            ),
            spec=k8s.networking.v1.NetworkPolicySpecArgs(
                pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels={"app.kubernetes.io/name": name}),
                policy_types=["Ingress"],
                # No source at all still selects the pods: then nothing may connect (deny all), never "allow all".
                ingress=[k8s.networking.v1.NetworkPolicyIngressRuleArgs(from_=sources, ports=port)] if sources else [],
            ),
            opts=child,
        )

    def _labels(self, track: str) -> dict[str, str]:
        return {
            "app.kubernetes.io/name": self._service,
            "app.kubernetes.io/component": "model-server",
            "mlplat.io/track": track,
        }

    def _add_version(
        self,
        track: str,
        model_uri: pulumi.Input[str],
        image: pulumi.Input[str],
        fixed_replicas: int | None,
        child: pulumi.ResourceOptions,
    ) -> None:
        args, name = self._spec, f"{self._service}-{track}"
        labels = self._labels(track)
        metadata = k8s.meta.v1.ObjectMetaArgs(name=name, namespace=args.namespace, labels=labels)
        awaited = (
            metadata
            if args.await_ready
            else k8s.meta.v1.ObjectMetaArgs(
                name=name, namespace=args.namespace, labels=labels, annotations=dict(SKIP_AWAIT)
            )
        )
        node_selector, tolerations = gpu_placement(args.resources.gpus)
        # Named through the contracts (serving_env): a setting the server does not have is an error here, not a
        # variable the server would silently ignore.
        env: dict[str, pulumi.Input[str]] = {
            serving_env("model_uri"): model_uri,
            serving_env("host"): "0.0.0.0",
            serving_env("port"): str(PORT),
            serving_env("max_batch_size"): str(args.max_batch_size),
            # The preStop pause already drained the load balancer; after SIGTERM just finish in-flight work.
            serving_env("drain_delay_s"): "0",
            serving_env("graceful_timeout_s"): str(args.graceful_timeout_seconds),
            serving_env("device"): "cuda" if args.resources.gpus else "cpu",
            serving_env("allow_pickle"): "true" if args.allow_pickle else "false",
            **args.env,
        }
        if args.ingress:  # the ALB reuses idle connections for up to its idle timeout: the server must outlast it
            env.setdefault(serving_env("keepalive_timeout_s"), str(ALB_IDLE_TIMEOUT_S + 5))
        if args.tracking_uri is not None:
            env["MLFLOW_TRACKING_URI"] = args.tracking_uri
        variables = env_vars(env)
        if args.tracking_credentials_secret is not None:
            variables = [*variables, *tracking_credentials_env(args.tracking_credentials_secret)]
        if self._api_key_secret is not None:
            variables = [
                *variables,
                k8s.core.v1.EnvVarArgs(
                    name=serving_env("api_key"),
                    value_from=k8s.core.v1.EnvVarSourceArgs(
                        secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(
                            name=self._api_key_secret, key=API_KEY_SECRET_KEY
                        )
                    ),
                ),
            ]
        container = k8s.core.v1.ContainerArgs(
            name="server",
            image=image,
            ports=[k8s.core.v1.ContainerPortArgs(name="http", container_port=PORT)],
            env=variables,
            resources=args.resources.to_args(),
            security_context=container_security_context(),
            startup_probe=http_probe(LIVE_PATH, "http", period=5, failures=60),
            liveness_probe=http_probe(LIVE_PATH, "http", period=10, failures=3),
            readiness_probe=http_probe(READY_PATH, "http", period=5, failures=2),
            lifecycle=k8s.core.v1.LifecycleArgs(
                pre_stop=k8s.core.v1.LifecycleHandlerArgs(sleep=k8s.core.v1.SleepActionArgs(seconds=args.drain_seconds))
            )
            if args.drain_seconds
            else None,
            volume_mounts=[k8s.core.v1.VolumeMountArgs(name="tmp", mount_path="/tmp")],
        )
        selector = k8s.meta.v1.LabelSelectorArgs(match_labels=labels)
        spread = [
            k8s.core.v1.TopologySpreadConstraintArgs(
                max_skew=1, topology_key=key, when_unsatisfiable="ScheduleAnyway", label_selector=selector
            )
            for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
        ]
        deployment = k8s.apps.v1.Deployment(
            name,
            metadata=awaited,
            spec=k8s.apps.v1.DeploymentSpecArgs(
                replicas=fixed_replicas or args.min_replicas,
                selector=selector,
                strategy=k8s.apps.v1.DeploymentStrategyArgs(
                    type="RollingUpdate",
                    rolling_update=k8s.apps.v1.RollingUpdateDeploymentArgs(max_surge="25%", max_unavailable=0),
                ),
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels),
                    spec=k8s.core.v1.PodSpecArgs(
                        service_account_name=self.service_account.metadata.name,
                        # The server never calls the Kubernetes API: no token in the pod. IRSA is unaffected (the
                        # EKS pod identity webhook mounts its own projected token, audience sts.amazonaws.com).
                        automount_service_account_token=False,
                        security_context=pod_security_context(),
                        containers=[container],
                        volumes=[scratch_volume()],
                        node_selector=node_selector,
                        tolerations=tolerations,
                        topology_spread_constraints=spread,
                        termination_grace_period_seconds=args.drain_seconds + args.graceful_timeout_seconds + 5,
                    ),
                ),
            ),
            # The HPA owns the replica count of the stable version: don't fight it on every update.
            opts=pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(ignore_changes=["spec.replicas"] if fixed_replicas is None else [])
            ),
        )
        service = k8s.core.v1.Service(
            name,
            metadata=awaited,
            spec=k8s.core.v1.ServiceSpecArgs(
                type="ClusterIP",
                selector=labels,
                ports=[k8s.core.v1.ServicePortArgs(name=SERVICE_PORT_NAME, port=SERVICE_PORT, target_port="http")],
            ),
            opts=child,
        )
        if fixed_replicas is None:
            metrics = [
                k8s.autoscaling.v2.MetricSpecArgs(
                    type="Resource",
                    resource=k8s.autoscaling.v2.ResourceMetricSourceArgs(
                        name="cpu",
                        target=k8s.autoscaling.v2.MetricTargetArgs(
                            type="Utilization", average_utilization=args.target_cpu_utilization
                        ),
                    ),
                ),
                *args.extra_metrics,
            ]
            k8s.autoscaling.v2.HorizontalPodAutoscaler(
                name,
                metadata=metadata,
                spec=k8s.autoscaling.v2.HorizontalPodAutoscalerSpecArgs(
                    scale_target_ref=k8s.autoscaling.v2.CrossVersionObjectReferenceArgs(
                        api_version="apps/v1", kind="Deployment", name=name
                    ),
                    min_replicas=args.min_replicas,
                    max_replicas=args.max_replicas,
                    metrics=metrics,
                ),
                opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[deployment])),
            )
        k8s.policy.v1.PodDisruptionBudget(
            name,
            metadata=metadata,
            # A server waiting for its model is unready; with the default policy a PDB counts it as disrupted
            # already and blocks every node drain (cluster upgrades, spot reclaims) until the model appears.
            spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
                max_unavailable=1, selector=selector, unhealthy_pod_eviction_policy="AlwaysAllow"
            ),
            opts=child,
        )
        self.deployments[track] = deployment
        self.service_names[track] = service.metadata.name

    def _ingress(self, child: pulumi.ResourceOptions) -> pulumi.Output[str]:
        args, name = self._spec, self._service
        stable_weight = 100 - (args.canary.weight if args.canary else 0)
        # The controller reads servicePort as an IntOrString: a JSON string is a port *name*, a number a port
        # number (aws-load-balancer-controller v2.13, pkg/ingress/config_types.go TargetGroupTuple). Name it.
        targets = [{"serviceName": f"{name}-stable", "servicePort": SERVICE_PORT_NAME, "weight": stable_weight}]
        if args.canary is not None:
            targets.append(
                {"serviceName": f"{name}-canary", "servicePort": SERVICE_PORT_NAME, "weight": args.canary.weight}
            )
        action = f"{name}{SPLIT_SUFFIX}"
        annotations: dict[str, pulumi.Input[str]] = {
            f"{ALB}scheme": "internal" if args.internal else "internet-facing",
            f"{ALB}target-type": "ip",
            f"{ALB}healthcheck-path": READY_PATH,
            f"{ALB}listen-ports": json.dumps([{"HTTP": 80}]),
            f"{ALB_ACTION_PREFIX}{action}": json.dumps(
                {"type": "forward", "forwardConfig": {"targetGroups": targets}}, sort_keys=True
            ),
        }
        if args.certificate_arn is not None:
            # HTTPS only (aws-load-balancer-controller v2.13, docs/guide/ingress/annotations.md): no HTTP listener,
            # so a client never sends its key in clear text only to be redirected afterwards; ssl-redirect turns
            # any HTTP listener added later (listen-ports are merged across an IngressGroup) into a redirect.
            annotations.update(
                {
                    f"{ALB}certificate-arn": checked_when_known(
                        args.certificate_arn, checked_as("ModelServiceArgs.certificate_arn", check_certificate_arn)
                    ),
                    f"{ALB}listen-ports": json.dumps([{"HTTPS": 443}]),
                    f"{ALB}ssl-policy": SSL_POLICY,
                    f"{ALB}ssl-redirect": "443",
                }
            )
        elif args.public:
            annotations[PUBLIC_WITHOUT_TLS] = "true"  # allow_public_without_tls: mlplat check flags it
        if args.public and self._api_key_secret is None:
            annotations[PUBLIC_WITHOUT_AUTH] = "true"  # allow_public_without_auth: mlplat check flags it
        ingress = k8s.networking.v1.Ingress(
            name,
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=name, namespace=args.namespace, annotations=annotations, labels={"app.kubernetes.io/name": name}
            ),
            spec=k8s.networking.v1.IngressSpecArgs(
                ingress_class_name="alb",
                rules=[
                    k8s.networking.v1.IngressRuleArgs(
                        http=k8s.networking.v1.HTTPIngressRuleValueArgs(
                            paths=[
                                k8s.networking.v1.HTTPIngressPathArgs(
                                    path="/",
                                    path_type="Prefix",
                                    backend=k8s.networking.v1.IngressBackendArgs(
                                        service=k8s.networking.v1.IngressServiceBackendArgs(
                                            name=action,
                                            port=k8s.networking.v1.ServiceBackendPortArgs(name="use-annotation"),
                                        )
                                    ),
                                )
                            ]
                        )
                    )
                ],
            ),
            opts=pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(depends_on=list(self.deployments.values()))
            ),
        )
        return ingress.status.apply(
            lambda s: (
                (s.load_balancer.ingress[0].hostname if s and s.load_balancer and s.load_balancer.ingress else "") or ""
            )
        )
