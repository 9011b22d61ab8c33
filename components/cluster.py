"""The platform's Kubernetes: EKS via pulumi-eks, managed add-ons, node pools that scale from zero, IRSA.

The control plane is a ``pulumi_eks.Cluster`` (private subnets, API access entries, envelope-encrypted
secrets, control-plane logs, an OIDC provider, no default node group). Everything around it is created
here so it can be seen and tested: EKS managed add-ons with pinned versions (vpc-cni and ebs-csi with
their IRSA roles), managed node groups with their own launch templates, cluster-autoscaler wired for
scale from zero, aws-node-termination-handler in queue mode, and the NVIDIA device plugin.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Self

import pulumi
import pulumi_aws as aws
import pulumi_eks as eks
import pulumi_kubernetes as k8s
from pydantic import AliasChoices, Field, field_validator

from mlplat.components import cluster_system as system
from mlplat.components.iam import rotated_key, service_trust_policy
from mlplat.components.irsa import create_service_account_role
from mlplat.components.node_groups import (
    NodePool,
    NodePoolArgs,
    NodePoolDeps,
    Taint,
    create_node_pool,
    k8s_minor,
    pool_name_problem,
)
from mlplat.components.options import checked_when_known, component_args
from mlplat.components.spec import Problem, Spec, StrInput, StrInputs, raise_problems
from mlplat.components.subnets import public_source_problem

__all__ = [
    "DEFAULT_VERSION",
    "STORAGE_CLASS",
    "AddonVersions",
    "Cluster",
    "ClusterArgs",
    "ClusterSpec",
    "ClusterWiring",
    "default_node_pools",
]

LOG_TYPES: tuple[str, ...] = ("api", "audit", "authenticator", "controllerManager", "scheduler")
REQUIRED_LOG_TYPES: tuple[str, ...] = ("api", "audit", "authenticator")
CLUSTER_ADMIN_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
# Only what a node itself needs: join the cluster and pull images. The CNI's policy goes to vpc-cni's IRSA
# role, not to every node (and so not to every pod that could reach the node's credentials).
NODE_POLICIES: tuple[str, ...] = (
    "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
    "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryPullOnly",
)
CNI_POLICY = "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy"
EBS_CSI_POLICY = "arn:aws:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy"
VPC_CNI_CONFIGURATION: Mapping[str, Any] = {"enableNetworkPolicy": "true"}
_ROLE_ARN = re.compile(r"arn:aws[\w-]*:iam::\d{12}:role/[\w+=,.@/-]+")
# The Kubernetes version of a new cluster: in EKS standard support until 2027-03-27 (see k8s_versions). 1.36 is on
# EKS too, but no cluster-autoscaler release for it exists yet (chart 9.59.0 ships 1.35.0), and its minor must match.
DEFAULT_VERSION = "1.35"
# The StorageClass that PersistentVolumeClaims name (monitoring's Prometheus volumes): gp3, encrypted, the default.
STORAGE_CLASS = "gp3"


class AddonVersions(Spec):
    """Pinned versions of the EKS managed add-ons (``aws eks describe-addon-versions`` lists them).

    Defaults for Kubernetes 1.35, checked 2026-11-29: coredns and kube-proxy from the EKS user guide's
    per-version tables (managing-coredns, managing-kube-proxy); vpc-cni, ebs-csi and metrics-server as published
    for 1.35 clusters (see the module's version notes; confirm with ``describe-addon-versions`` on upgrade).
    """

    vpc_cni: str = "v1.21.1-eksbuild.8"
    """``vpc-cni`` (pod networking), runs with its own IRSA role."""
    coredns: str = "v1.14.3-eksbuild.3"
    """``coredns`` (cluster DNS)."""
    kube_proxy: str = "v1.35.3-eksbuild.13"
    """``kube-proxy``; its minor must match the cluster's."""
    aws_ebs_csi_driver: str = "v1.55.0-eksbuild.2"
    """``aws-ebs-csi-driver`` (persistent volumes), runs with its own IRSA role."""
    metrics_server: str = "v0.8.1-eksbuild.5"
    """``metrics-server`` (resource metrics for the HorizontalPodAutoscaler)."""


def default_node_pools() -> list[NodePoolArgs]:
    """A small on-demand CPU pool for system and serving pods, and a spot GPU pool that rests at zero.

    The pools of a :class:`ClusterSpec` that names none; the stack config's environments name theirs in their
    presets (``infra/presets/<environment>.yaml``).
    """
    return [
        NodePoolArgs(
            name="cpu",
            instance_types=["m6i.xlarge", "m6a.xlarge", "m5.xlarge"],
            min_size=2,
            max_size=6,
            labels={"workload": "general"},
        ),
        NodePoolArgs(
            name="gpu",
            instance_types=["g5.xlarge", "g6.xlarge", "g4dn.xlarge"],
            capacity_type="SPOT",
            min_size=0,
            max_size=4,
            disk_size_gib=100,
            labels={"workload": "gpu"},
            taints=[Taint("nvidia.com/gpu", "true", "NoSchedule")],
            ami_type="AL2023_x86_64_NVIDIA",
        ),
    ]


def _default_pools() -> dict[str, NodePoolArgs]:
    return {pool.name: pool for pool in default_node_pools()}


def _not_one_string(value: Any) -> Any:
    # A list of names given as one string: pydantic refuses it anyway; say why a list is meant.
    if isinstance(value, str | bytes):
        raise ValueError(
            f"{value!r} is a single string, which would be read as one name per letter; give a list, e.g. [{value!r}]"
        )
    return value


class ClusterSpec(Spec):
    """What a cluster is: version, API access, logs, node pools, add-ons and system charts (``mlplat:cluster``).

    Where it runs (the VPC, subnets, region, name) is :class:`ClusterWiring`; :class:`ClusterArgs` is both.
    """

    version: str = DEFAULT_VERSION
    """Kubernetes minor version of the control plane (``1.35``); pick one in EKS standard support
    (:func:`mlplat.components.k8s_versions.support_status`), extended support costs 6x the control plane."""
    endpoint_public_access: bool = False
    """Expose the API endpoint publicly (it is always reachable privately)."""
    public_access_cidrs: list[str] = []
    """Source CIDRs allowed to the public endpoint; required when it is public, since EKS would otherwise admit
    0.0.0.0/0."""
    admin_role_arns: list[StrInput] = []
    """IAM roles granted cluster-admin through EKS access entries (ARNs, or outputs of the roles: those are checked
    once known)."""
    log_types: list[str] = list(REQUIRED_LOG_TYPES)
    """Control-plane log types sent to CloudWatch; api, audit and authenticator are required."""
    deletion_protection: bool = True
    """Refuse to delete the EKS cluster."""
    node_pools: dict[str, NodePoolArgs] = Field(
        default_factory=_default_pools,
        validation_alias=AliasChoices("nodeGroups", "node_pools"),
        serialization_alias="nodeGroups",
    )
    """The managed node groups by name; at least one must be untainted for system pods. The stack file's
    ``nodeGroups`` map: each key is its pool's name (the entry leaves ``name`` out). A Python caller may give a
    list of :class:`NodePoolArgs` instead, keyed here by their names. Default: :func:`default_node_pools`."""
    addon_versions: AddonVersions = Field(
        default_factory=AddonVersions,
        validation_alias=AliasChoices("addons", "addon_versions"),
        serialization_alias="addons",
    )
    """Pinned EKS add-on versions."""
    charts: system.ChartVersions = Field(default_factory=system.ChartVersions)
    """Pinned Helm chart versions of the autoscaler, termination handler and device plugin."""

    _one_string = field_validator("public_access_cidrs", "admin_role_arns", "log_types", mode="before")(_not_one_string)

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if k8s_minor(value) is None:
            raise ValueError(f"{value!r} is not a Kubernetes minor version such as '1.35'")
        return value

    @field_validator("public_access_cidrs")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        problems = []
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=True)
            except ValueError as exc:
                problems.append(f"{cidr!r} is not a CIDR such as 52.94.0.0/22 ({exc})")
                continue
            unroutable = public_source_problem(cidr)
            if unroutable:
                problems.append(unroutable)
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @field_validator("admin_role_arns")
    @classmethod
    def _admin_roles(cls, value: list[Any]) -> list[Any]:
        # Plain ARNs now; an Output when it resolves (Cluster, _check_known_admin_role_arn).
        bad = [arn for arn in value if isinstance(arn, str) and not _ROLE_ARN.fullmatch(arn)]
        if bad:
            raise ValueError(f"{bad} are not IAM role ARNs (arn:aws:iam::<12-digit account>:role/<name>)")
        return value

    @field_validator("log_types")
    @classmethod
    def _log_types(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(LOG_TYPES))
        if unknown:
            raise ValueError(f"{unknown} are not control-plane log types; allowed: {', '.join(LOG_TYPES)}")
        missing = [t for t in REQUIRED_LOG_TYPES if t not in value]
        if missing:
            raise ValueError(f"{value} must include {', '.join(REQUIRED_LOG_TYPES)}; missing {', '.join(missing)}")
        return value

    @field_validator("node_pools", mode="before")
    @classmethod
    def _pools_by_name(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return _keyed_pools(cls.__name__, value)
        _not_one_string(value)
        if isinstance(value, Sequence):  # a list of pools: keyed by their names
            names = [str(p.get("name") if isinstance(p, Mapping) else getattr(p, "name", None)) for p in value]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"node_pools repeat the names {duplicates}")
            return dict(zip(names, value, strict=True))
        return value

    def _consistent(self) -> Self:
        problems: list[Problem] = []
        if self.endpoint_public_access and not self.public_access_cidrs:
            problems.append(
                (
                    (),
                    "endpointPublicAccess is true but publicAccessCidrs is empty, which EKS reads as "
                    "0.0.0.0/0; list the CIDRs that may reach the API, or keep the endpoint private",
                )
            )
        if not self.endpoint_public_access and self.public_access_cidrs:
            problems.append(
                (
                    (),
                    f"publicAccessCidrs {self.public_access_cidrs} is set but endpointPublicAccess is "
                    "false; set it to true or drop the CIDRs",
                )
            )
        if not self.node_pools:
            problems.append((("nodeGroups",), "{} lists no pool; the cluster needs at least one for system pods"))
        elif all(pool.taints for pool in self.node_pools.values()):
            problems.append(
                (
                    ("nodeGroups",),
                    "every node pool is tainted, so coredns and the autoscaler cannot "
                    "schedule; leave at least one pool without taints",
                )
            )
        for name, pool in self.node_pools.items():
            problems += [(("nodeGroups", name, *loc), message) for loc, message in self._version_skew(pool)]
        if problems:
            raise_problems(type(self).__name__, problems)
        return self

    def _version_skew(self, pool: NodePoolArgs) -> list[Problem]:
        """A pool's version against the control plane's: the kubelet may lag by 3 minors, never lead."""
        control = k8s_minor(self.version)
        version = pool.version or self.version
        node = k8s_minor(version)
        problems: list[Problem] = []
        if control is not None and node is not None and node > control:
            problems.append(
                (
                    ("version",),
                    f"{version!r} is newer than the control plane's {self.version!r} "
                    "(mlplat:cluster.version); upgrade the control plane first",
                )
            )
        elif control is not None and node is not None and control - node > 3:
            problems.append(
                (
                    ("version",),
                    f"{version!r} is more than 3 minors behind the control plane's "
                    f"{self.version!r}, beyond the kubelet skew Kubernetes supports",
                )
            )
        if pool.release_version is not None and not pool.release_version.startswith(f"{version}."):
            whose = "the pool's version" if pool.version else "the cluster's version"
            problems.append(
                (
                    ("releaseVersion",),
                    f"{pool.release_version!r} is not a release of Kubernetes "
                    f"{version} ({whose}); expected {version}.<patch>-<date>",
                )
            )
        return problems


def _keyed_pools(model: str, value: Mapping[Any, Any]) -> dict[Any, Any]:
    """The ``nodeGroups`` map with each entry's ``name`` taken from its key (names checked first, by key)."""
    problems: list[Problem] = [
        ((name,), problem) for name in value if isinstance(name, str) and (problem := pool_name_problem(name))
    ]
    if problems:
        raise_problems(model, problems)
    pools: dict[Any, Any] = {}
    for name, pool in value.items():
        given = pool.get("name", name) if isinstance(pool, Mapping) else getattr(pool, "name", name)
        if given != name:
            problems.append(
                (
                    (name, "name"),
                    f"{given!r} is not the pool's key {name!r}: a pool in nodeGroups is "
                    "named by its key; leave name out",
                )
            )
        pools[name] = {**pool, "name": name} if isinstance(pool, Mapping) else pool
    if problems:
        raise_problems(model, problems)
    return pools


class ClusterWiring(Spec):
    """Where a cluster runs: what a parent (``MlPlatform``) or a team's own program hands in from its network."""

    vpc_id: StrInput
    """The VPC (e.g. ``network.vpc_id``)."""
    private_subnet_ids: StrInputs
    """Subnets for the control-plane ENIs and the nodes (private, one per AZ)."""
    region: str
    """AWS region of the cluster (for the autoscaler and termination handler)."""
    cluster_name: str | None = None
    """The EKS cluster's name; default the component's name. Must match the subnets'
    ``kubernetes.io/cluster/<name>`` tags."""


class ClusterArgs(ClusterSpec, ClusterWiring):
    """Arguments of :class:`Cluster`: its settings (:class:`ClusterSpec`) and where it runs (:class:`ClusterWiring`)."""

    @classmethod
    def of(cls, spec: ClusterSpec, wiring: ClusterWiring) -> ClusterArgs:
        """The args of a cluster with the settings of ``spec`` where ``wiring`` says. Both are validated models,
        and no rule of the cluster spans the two, so nothing is validated again."""
        values = {name: getattr(spec, name) for name in ClusterSpec.model_fields}
        values.update({name: getattr(wiring, name) for name in ClusterWiring.model_fields})
        fields_set = (spec.model_fields_set & set(ClusterSpec.model_fields)) | wiring.model_fields_set
        return cls.model_construct(fields_set, **values)


def _admin_role_arn_problem(arn: str) -> str | None:
    if not _ROLE_ARN.fullmatch(arn):
        return f"admin_role_arns: {arn!r} is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)"
    return None


def _check_known_admin_role_arn(arn: str) -> None:
    problem = _admin_role_arn_problem(arn)
    if problem:
        raise ValueError("ClusterArgs: " + problem)


class Cluster(pulumi.ComponentResource):
    """An EKS cluster for training and serving.

    Besides the outputs below: ``provider`` (a Kubernetes provider for this cluster, its kubeconfig secret),
    ``node_groups`` (pool name -> ``aws.eks.NodeGroup``) and ``capacity``. Use :meth:`service_account_role` to
    give a workload AWS permissions.

    ``capacity`` lists what must be running before pods can be: the node groups and the add-ons their pods need
    (vpc-cni, kube-proxy, coredns, aws-ebs-csi-driver for volumes). Pass it as ``depends_on`` to anything that
    waits for pods (Helm releases, Deployments Pulumi awaits, Services/Ingresses served by the load balancer
    controller), so their timeouts start when there is somewhere to run.
    """

    cluster_name: pulumi.Output[str]
    """The EKS cluster's name, known once the control plane and its OIDC provider exist."""
    endpoint: pulumi.Output[str]
    """The Kubernetes API server's URL."""
    kubeconfig: pulumi.Output[str]
    """A kubeconfig (JSON) for the cluster; a secret."""
    oidc_provider_arn: pulumi.Output[str]
    """The IAM OIDC provider of the cluster's service account tokens (IRSA)."""
    oidc_issuer: pulumi.Output[str]
    """The OIDC issuer, without ``https://``."""
    node_security_group_id: pulumi.Output[str]
    """The security group pulumi-eks creates for nodes."""
    cluster_security_group_id: pulumi.Output[str]
    """The EKS cluster security group (managed node groups carry it; pods share their node's)."""
    node_role_arn: pulumi.Output[str]
    """The IAM role of the nodes (join the cluster, pull images)."""
    secrets_key_arn: pulumi.Output[str]
    """The KMS key that envelope-encrypts Kubernetes secrets."""

    def __init__(
        self, name: str, args: ClusterArgs | None = None, opts: pulumi.ResourceOptions | None = None, **kwargs: Any
    ) -> None:
        args = component_args("Cluster", ClusterArgs, args, kwargs)
        super().__init__("mlplat:cluster:Cluster", name, None, opts)
        self._prefix = name
        child = pulumi.ResourceOptions(parent=self)
        cluster_name = args.cluster_name or name

        secrets_key = rotated_key(
            f"{name}-secrets", f"Envelope encryption of Kubernetes secrets in {cluster_name}", child
        )
        node_role = aws.iam.Role(
            f"{name}-node",
            assume_role_policy=service_trust_policy("ec2.amazonaws.com"),
            description=f"Node role of {cluster_name}: join the cluster, pull images",
            tags={"Name": f"{cluster_name}-node"},
            opts=child,
        )
        node_policies = [
            aws.iam.RolePolicyAttachment(
                f"{name}-node-{arn.rsplit('/', 1)[-1]}", role=node_role.name, policy_arn=arn, opts=child
            )
            for arn in NODE_POLICIES
        ]

        control_plane = eks.Cluster(
            f"{name}-eks",
            eks.ClusterArgs(
                name=cluster_name,
                version=args.version,
                vpc_id=args.vpc_id,
                private_subnet_ids=args.private_subnet_ids,
                endpoint_private_access=True,
                endpoint_public_access=args.endpoint_public_access,
                public_access_cidrs=list(args.public_access_cidrs) if args.endpoint_public_access else None,
                enabled_cluster_log_types=list(args.log_types),
                encryption_config_key_arn=secrets_key.arn,
                authentication_mode=eks.AuthenticationMode.API,
                access_entries={
                    f"admin-{i}": eks.AccessEntryArgs(
                        principal_arn=checked_when_known(arn, _check_known_admin_role_arn),
                        access_policies={
                            "cluster-admin": eks.AccessPolicyAssociationArgs(
                                policy_arn=CLUSTER_ADMIN_POLICY,
                                access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
                            )
                        },
                    )
                    for i, arn in enumerate(args.admin_role_arns)
                },
                create_oidc_provider=True,
                skip_default_node_group=True,
                # The add-ons below are EKS managed add-ons, pinned and visible, not pulumi-eks's defaults.
                bootstrap_self_managed_addons=False,
                use_default_vpc_cni=True,
                coredns_addon_options=eks.CoreDnsAddonOptionsArgs(enabled=False),
                kube_proxy_addon_options=eks.KubeProxyAddonOptionsArgs(enabled=False),
                storage_classes={
                    # pulumi-eks creates a k8s StorageClass whose metadata is this `metadata` (only an is-default
                    # annotation added); without a name the Kubernetes provider auto-names it gp3-<suffix>.
                    STORAGE_CLASS: eks.StorageClassArgs(
                        type="gp3",
                        default=True,
                        encrypted=True,
                        allow_volume_expansion=True,
                        volume_binding_mode="WaitForFirstConsumer",
                        metadata=k8s.meta.v1.ObjectMetaArgs(name=STORAGE_CLASS),
                    )
                },
                deletion_protection=args.deletion_protection,
                tags={"Name": cluster_name},
            ),
            opts=child,
        )
        self.control_plane = control_plane
        # The name is known up front; reading it through the component's outputs orders every dependant
        # (add-ons, node groups, IRSA roles) after the control plane exists.
        self.cluster_name = pulumi.Output.all(
            control_plane.oidc_provider_arn, control_plane.node_security_group_id
        ).apply(lambda _: cluster_name)
        self.oidc_provider_arn = control_plane.oidc_provider_arn
        self.oidc_issuer = control_plane.oidc_issuer
        self.node_security_group_id = control_plane.node_security_group_id
        self.cluster_security_group_id = control_plane.cluster_security_group_id
        self.kubeconfig = pulumi.Output.secret(control_plane.kubeconfig_json)
        self.endpoint = control_plane.kubeconfig.apply(_server_of)
        self.node_role_arn = node_role.arn
        self.secrets_key_arn = secrets_key.arn
        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=self.kubeconfig,
            enable_server_side_apply=True,
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["kubeconfig"]),
        )

        # Add-ons that must run before a node can become Ready (no CNI, no node network).
        cni_role = self._own_service_account_role("kube-system", "aws-node", managed_policy_arns=[CNI_POLICY])
        versions = args.addon_versions
        networking = [
            # The CNI's network policy agent enforces NetworkPolicies (the model servers' and MLflow's); without it
            # EKS accepts them and enforces nothing (EKS user guide, "Configure your cluster for network policies").
            self._addon("vpc-cni", versions.vpc_cni, role_arn=cni_role.arn, configuration=VPC_CNI_CONFIGURATION),
            self._addon("kube-proxy", versions.kube_proxy),
        ]

        deps = NodePoolDeps(
            cluster_name=self.cluster_name,
            cluster_version=args.version,
            node_role_arn=node_role.arn,
            subnet_ids=args.private_subnet_ids,
            security_group_ids=[control_plane.node_security_group_id],
        )
        pool_opts = pulumi.ResourceOptions(parent=self, depends_on=[*networking, *node_policies])
        self.pools: dict[str, NodePool] = {
            pool.name: create_node_pool(name, cluster_name, pool, deps, pool_opts) for pool in args.node_pools.values()
        }
        self.node_groups: dict[str, aws.eks.NodeGroup] = {k: p.node_group for k, p in self.pools.items()}
        all_groups = list(self.node_groups.values())

        # Add-ons whose pods need nodes (the managed add-on goes DEGRADED, and Pulumi waits, without them).
        ebs_role = self._own_service_account_role(
            "kube-system", "ebs-csi-controller-sa", managed_policy_arns=[EBS_CSI_POLICY]
        )
        after_nodes = [
            self._addon("coredns", versions.coredns, depends_on=all_groups),
            self._addon(
                "aws-ebs-csi-driver", versions.aws_ebs_csi_driver, role_arn=ebs_role.arn, depends_on=all_groups
            ),
            self._addon("metrics-server", versions.metrics_server, depends_on=all_groups),
        ]
        self.addons: dict[str, aws.eks.Addon] = {
            a_name: addon
            for a_name, addon in zip(
                ["vpc-cni", "kube-proxy", "coredns", "aws-ebs-csi-driver", "metrics-server"],
                [*networking, *after_nodes],
                strict=True,
            )
        }

        addons = self.addons
        self.capacity: list[pulumi.Resource] = [
            *all_groups,
            *(addons[a] for a in ("vpc-cni", "kube-proxy", "coredns", "aws-ebs-csi-driver")),
        ]
        k8s_opts = pulumi.ResourceOptions(parent=self, provider=self.provider, depends_on=self.capacity)
        self.autoscaler_role = self._own_service_account_role(
            system.SYSTEM_NAMESPACE, system.AUTOSCALER_SA, policy=system.autoscaler_policy(cluster_name)
        )
        self.autoscaler = system.release(
            f"{name}-cluster-autoscaler",
            args.charts.autoscaler(),
            system.autoscaler_values(cluster_name, args.region, self.autoscaler_role.arn),
            k8s_opts,
        )
        self.interruptions = system.interruption_queue(name, child)
        self.termination_handler_role = self._own_service_account_role(
            system.SYSTEM_NAMESPACE,
            system.NTH_SA,
            policy=system.termination_handler_policy(self.interruptions.queue.arn),
        )
        self.termination_handler = system.release(
            f"{name}-node-termination-handler",
            args.charts.termination_handler(),
            system.termination_handler_values(
                self.interruptions.queue.url, args.region, self.termination_handler_role.arn
            ),
            k8s_opts,
        )
        gpu_pools = [p for p in args.node_pools.values() if p.is_gpu]
        self.device_plugin: k8s.helm.v3.Release | None = None
        if gpu_pools:
            self.device_plugin = system.release(
                f"{name}-nvidia-device-plugin",
                args.charts.device_plugin(),
                system.device_plugin_values(gpu_pools),
                k8s_opts,
            )

        self.register_outputs(
            {
                "cluster_name": self.cluster_name,
                "endpoint": self.endpoint,
                "kubeconfig": self.kubeconfig,
                "oidc_provider_arn": self.oidc_provider_arn,
                "oidc_issuer": self.oidc_issuer,
                "node_security_group_id": self.node_security_group_id,
                "cluster_security_group_id": self.cluster_security_group_id,
                "node_role_arn": self.node_role_arn,
                "secrets_key_arn": self.secrets_key_arn,
            }
        )

    def _addon(
        self,
        addon: str,
        version: str,
        *,
        role_arn: pulumi.Input[str] | None = None,
        depends_on: Sequence[pulumi.Resource] = (),
        configuration: Mapping[str, Any] | None = None,
    ) -> aws.eks.Addon:
        return aws.eks.Addon(
            f"{self._prefix}-{addon}",
            cluster_name=self.cluster_name,
            addon_name=addon,
            addon_version=version,
            service_account_role_arn=role_arn,
            configuration_values=json.dumps(configuration, sort_keys=True) if configuration else None,
            # Take over what EKS or an earlier install left; afterwards keep manual tuning on upgrade.
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="PRESERVE",
            tags={"Name": f"{self._prefix}-{addon}"},
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(depends_on)),
        )

    def service_account_role(
        self,
        namespace: str,
        name: str,
        policy: pulumi.Input[str] | None = None,
        *,
        managed_policy_arns: Sequence[str] = (),
        opts: pulumi.ResourceOptions | None = None,
    ) -> aws.iam.Role:
        """An IAM role that exactly the service account ``namespace/name`` of this cluster can assume (IRSA).

        ``policy`` is an inline policy document (JSON); ``managed_policy_arns`` are attached as well.
        Annotate the service account with ``eks.amazonaws.com/role-arn: <role.arn>``.

        The role (``<cluster>-irsa-<namespace>-<name>``) and its policies belong to the caller: they are created
        with ``opts`` (give ``parent=`` your component), not as children of the cluster, whose outputs are
        registered already. They carry an alias to the cluster as parent, where earlier versions put them.
        """
        own = pulumi.ResourceOptions(aliases=[pulumi.Alias(parent=self)])
        return self._role(namespace, name, policy, managed_policy_arns, pulumi.ResourceOptions.merge(own, opts))

    def _own_service_account_role(
        self,
        namespace: str,
        name: str,
        policy: pulumi.Input[str] | None = None,
        *,
        managed_policy_arns: Sequence[str] = (),
    ) -> aws.iam.Role:
        """An IRSA role the cluster itself needs (add-ons, autoscaler), created in the constructor as its child."""
        return self._role(namespace, name, policy, managed_policy_arns, pulumi.ResourceOptions(parent=self))

    def _role(
        self,
        namespace: str,
        name: str,
        policy: pulumi.Input[str] | None,
        managed_policy_arns: Sequence[str],
        opts: pulumi.ResourceOptions,
    ) -> aws.iam.Role:
        return create_service_account_role(
            f"{self._prefix}-irsa-{namespace}-{name}",
            oidc_provider_arn=self.oidc_provider_arn,
            oidc_issuer=self.oidc_issuer,
            namespace=namespace,
            service_account=name,
            policy=policy,
            managed_policy_arns=managed_policy_arns,
            opts=opts,
        )


def _server_of(kubeconfig: Any) -> str:
    config: Mapping[str, Any] = json.loads(kubeconfig) if isinstance(kubeconfig, str) else kubeconfig
    return str(config["clusters"][0]["cluster"]["server"])
