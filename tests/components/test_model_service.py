"""ModelService: hardened pods, probes that match the server, autoscaling, canary routing, GPU placement."""

from __future__ import annotations

import json
from collections.abc import Callable

import pulumi
import pytest
from support.secrets import CreatedSecrets, record_secrets, tracking_args, unresolved

from mlplat.components.model_service import Canary, ModelService, ModelServiceArgs
from mlplat.components.pods import Resources
from mlplat.components.tracking import Tracking
from mlplat.infra.engine import Render

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
Svc = Callable[..., Render]
PodOf = Callable[[dict], dict]


@pytest.fixture
def service(on_cluster: Callable[..., Render]) -> Callable[..., Render]:
    def _render(**kwargs: object) -> Render:
        args = {
            "namespace": "serving",
            "image": "123.dkr.ecr/serving@sha256:abc",
            "model_uri": "models:/digits@champion",
            **kwargs,
        }
        return on_cluster(lambda opts: ModelService("digits", ModelServiceArgs(**args), opts=opts))  # type: ignore[arg-type]

    return _render


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container["env"]}


def test_pods_are_non_root_read_only_with_probes_and_resources(service: Svc, pod_of: PodOf) -> None:
    stack = service()
    (container,) = pod_of(stack.one(DEPLOYMENT).inputs)["containers"]
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False and security["capabilities"] == {"drop": ["ALL"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["resources"]["requests"] == {"cpu": "500m", "memory": "1Gi"}
    assert env_of(container)["MLPLAT_SERVING_MODEL_URI"] == "models:/digits@champion"
    # The trainer registers torch.export programs: pickles, which run code on load, stay refused.
    assert env_of(container)["MLPLAT_SERVING_ALLOW_PICKLE"] == "false"
    trusting = service(allow_pickle=True)
    (container,) = pod_of(trusting.one(DEPLOYMENT).inputs)["containers"]
    assert env_of(container)["MLPLAT_SERVING_ALLOW_PICKLE"] == "true"


def test_drain_and_grace_period_match_the_server(service: Svc, pod_of: PodOf) -> None:
    stack = service(drain_seconds=12, graceful_timeout_seconds=20)
    spec = pod_of(stack.one(DEPLOYMENT).inputs)
    (container,) = spec["containers"]
    assert container["lifecycle"]["preStop"] == {"sleep": {"seconds": 12}}
    assert env_of(container)["MLPLAT_SERVING_GRACEFUL_TIMEOUT_S"] == "20"
    assert env_of(container)["MLPLAT_SERVING_DRAIN_DELAY_S"] == "0"
    assert spec["terminationGracePeriodSeconds"] >= 12 + 20


def test_hpa_pdb_and_zone_spread(service: Svc, pod_of: PodOf) -> None:
    stack = service(min_replicas=3, max_replicas=12)
    hpa = stack.one("kubernetes:autoscaling/v2:HorizontalPodAutoscaler").inputs["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 12)
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "digits-stable"}
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    assert stack.one("kubernetes:policy/v1:PodDisruptionBudget").inputs["spec"]["maxUnavailable"] == 1
    keys = {c["topologyKey"] for c in pod_of(stack.one(DEPLOYMENT).inputs)["topologySpreadConstraints"]}
    assert "topology.kubernetes.io/zone" in keys
    assert stack.one(DEPLOYMENT).options["ignore_changes"] == ["spec.replicas"]


def test_canary_ingress_splits_by_the_configured_weight(service: Svc, pod_of: PodOf) -> None:
    stack = service(canary=Canary(model_uri="models:/digits@challenger", weight=15))
    ingress = stack.one("kubernetes:networking.k8s.io/v1:Ingress").inputs
    action = json.loads(ingress["metadata"]["annotations"]["alb.ingress.kubernetes.io/actions.digits-split"])
    weights = {t["serviceName"]: t["weight"] for t in action["forwardConfig"]["targetGroups"]}
    assert weights == {"digits-stable": 85, "digits-canary": 15}
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "digits-split", "port": {"name": "use-annotation"}}
    services = {s.name for s in stack.by_type("kubernetes:core/v1:Service")}
    assert services == {"digits-stable", "digits-canary"}
    canary = stack.one(DEPLOYMENT, "digits-canary")
    assert env_of(pod_of(canary.inputs)["containers"][0])["MLPLAT_SERVING_MODEL_URI"] == "models:/digits@challenger"


def test_without_canary_all_traffic_goes_to_stable(service: Svc, pod_of: PodOf) -> None:
    ingress = service().one("kubernetes:networking.k8s.io/v1:Ingress").inputs
    action = json.loads(ingress["metadata"]["annotations"]["alb.ingress.kubernetes.io/actions.digits-split"])
    assert action["forwardConfig"]["targetGroups"] == [
        {"serviceName": "digits-stable", "servicePort": "http", "weight": 100}
    ]


def test_every_alb_action_target_names_a_port_its_service_has(service: Svc) -> None:
    # The controller reads a JSON string servicePort as a port *name* (IntOrString), a number as a port number:
    # "80" (a string) matched no port of these Services, so no ALB was ever built.
    stack = service(canary=Canary(model_uri="models:/digits@challenger", weight=15))
    ports = {s.name: s.inputs["spec"]["ports"] for s in stack.by_type("kubernetes:core/v1:Service")}
    ingress = stack.one("kubernetes:networking.k8s.io/v1:Ingress").inputs
    action = json.loads(ingress["metadata"]["annotations"]["alb.ingress.kubernetes.io/actions.digits-split"])
    for target in action["forwardConfig"]["targetGroups"]:
        port = target["servicePort"]
        key = "name" if isinstance(port, str) else "port"
        assert [p for p in ports[target["serviceName"]] if p.get(key) == port], (target, ports)


def test_rollouts_are_awaited_unless_the_first_deploy_says_otherwise(service: Svc) -> None:
    skip = {"pulumi.com/skipAwait": "true"}
    awaited = service()
    for type_ in (DEPLOYMENT, "kubernetes:core/v1:Service"):
        assert "annotations" not in awaited.one(type_, "digits-stable").inputs["metadata"]
    first = service(await_ready=False, canary=Canary(model_uri="models:/digits@challenger"))
    for type_ in (DEPLOYMENT, "kubernetes:core/v1:Service"):
        for record in first.by_type(type_):
            assert record.inputs["metadata"]["annotations"] == skip, record.name


def test_every_child_waits_for_what_the_component_waits_for(on_cluster: Callable[..., Render]) -> None:
    import pulumi
    import pulumi_kubernetes as k8s

    def build(opts: pulumi.ResourceOptions) -> None:
        gate = k8s.core.v1.ConfigMap("controller-ready", opts=opts)
        ModelService(
            "digits",
            ModelServiceArgs(namespace="serving", image="i:1", model_uri="models:/d@champion"),
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[gate])),
        )

    stack = on_cluster(build)
    gate = stack.one("kubernetes:core/v1:ConfigMap").urn
    children = [r for r in stack.resources if r.type.startswith("kubernetes:") and r.urn != gate]
    assert len(children) >= 6
    for child in children:
        assert gate in child.options["depends_on"], child.name


def test_gpu_variant_tolerates_the_taint_and_requests_gpus(service: Svc, pod_of: PodOf) -> None:
    spec = pod_of(service(resources=Resources(cpu="4", memory="16Gi", gpus=1)).one(DEPLOYMENT).inputs)
    assert spec["nodeSelector"] == {"workload": "gpu"}
    assert spec["tolerations"] == [
        {"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Equal", "value": "true"}
    ]
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert env_of(spec["containers"][0])["MLPLAT_SERVING_DEVICE"] == "cuda"


def test_irsa_role_is_annotated_on_the_service_account(service: Svc, pod_of: PodOf) -> None:
    stack = service(service_account_role_arn="arn:aws:iam::123456789012:role/serving")
    sa = stack.one("kubernetes:core/v1:ServiceAccount").inputs
    assert sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/serving"}
    assert pod_of(stack.one(DEPLOYMENT).inputs)["serviceAccountName"] == "digits"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_replicas": 5, "max_replicas": 2}, r"min_replicas \(5\) must be >= 1 and <= max_replicas \(2\)"),
        ({"target_cpu_utilization": 0}, "target_cpu_utilization=0"),
    ],
)
def test_bad_args_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelServiceArgs(namespace="n", image="i", model_uri="models:/d@champion", **kwargs)
    with pytest.raises(ValueError, match="between 0 and 100"):
        Canary(model_uri="models:/d@challenger", weight=120)


def test_model_uris_the_server_cannot_load_on_the_cluster_are_rejected() -> None:
    allowed = "use models:/<name>@<alias>, models:/<name>/<version>, runs:/<run id>/<path> or s3://<bucket>/<path>"
    with pytest.raises(ValueError) as caught:
        ModelServiceArgs(namespace="n", image="i", model_uri="digits-latest")
    assert f"ModelServiceArgs.model_uri='digits-latest': not a model URI; {allowed}" in str(caught.value)
    with pytest.raises(ValueError) as caught:
        Canary(model_uri="/models/digits")
    assert f"Canary.model_uri='/models/digits': not a model URI; {allowed}" in str(caught.value)
    for uri in ("models:/digits@champion", "models:/digits/3", "runs:/0a1b/model", "s3://bucket/models/digits"):
        assert ModelServiceArgs(namespace="n", image="i", model_uri=uri).model_uri == uri


# -- names: the component's name becomes Kubernetes names ---------------------------------------------------


def test_a_name_kubernetes_would_refuse_fails_at_construction_naming_the_rule(
    on_cluster: Callable[..., Render],
) -> None:
    from mlplat.infra.engine import ProgramError

    args = ModelServiceArgs(namespace="serving", image="i:1", model_uri="models:/scorer@champion")
    with pytest.raises(ProgramError) as caught:
        on_cluster(lambda opts: ModelService("Scorer_V2", args, opts=opts))
    assert (
        "ModelService name='Scorer_V2': not a DNS-1035 label (it names the Services <name>-stable and "
        "<name>-canary); use lowercase letters, digits and '-', starting with a letter and ending with a letter "
        "or digit, at most 49 characters: it names Kubernetes objects, and the strictest, ALB action annotation "
        "(key alb.ingress.kubernetes.io/<name part>) 'actions.Scorer_V2-split', may have at most 63; "
        "e.g. 'scorer-v2'"
    ) in str(caught.value)


def test_the_longest_derived_name_sets_the_length_limit(on_cluster: Callable[..., Render]) -> None:
    from mlplat.infra.engine import ProgramError

    def build(name: str, **kwargs: object) -> Render:
        args = ModelServiceArgs(namespace="serving", image="i:1", model_uri="models:/d@a", **kwargs)
        return on_cluster(lambda opts: ModelService(name, args, opts=opts))

    # With an Ingress, the annotation alb.ingress.kubernetes.io/actions.<name>-split caps the name at 49 characters.
    stack = build("s" * 49)
    assert (
        f"alb.ingress.kubernetes.io/actions.{'s' * 49}-split"
        in stack.one("kubernetes:networking.k8s.io/v1:Ingress").inputs["metadata"]["annotations"]
    )
    with pytest.raises(ProgramError, match=r"too long \(50 characters\); .*at most 49 characters"):
        build("s" * 50)
    # Without one, the Services <name>-stable and <name>-canary (DNS-1035 labels, 63 at most) cap it at 56.
    build("s" * 56, ingress=False)
    with pytest.raises(ProgramError, match=r"at most 56 characters: .*Service \(a DNS-1035 label\) 's{57}-stable'"):
        build("s" * 57, ingress=False)


# -- public services: TLS and an API key, or an explicit opt-out that mlplat check flags ---------------------

CERT = "arn:aws:acm:us-east-1:123456789012:certificate/0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d"
INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"


def public(**kwargs: object) -> ModelServiceArgs:
    return ModelServiceArgs(namespace="n", image="i", model_uri="models:/d@champion", internal=False, **kwargs)


def test_an_internet_facing_service_without_tls_is_refused() -> None:
    with pytest.raises(ValueError) as caught:
        public()
    assert (
        "ModelServiceArgs.internal=False: an internet-facing ALB without certificate_arn serves plain HTTP, API keys "
        "and predictions in clear text; set certificate_arn to an ACM certificate "
        "(arn:aws:acm:<region>:<account id>:certificate/<id>), or allow_public_without_tls=True "
        "(flagged by mlplat check)"
    ) in str(caught.value)


def test_an_internet_facing_service_without_an_api_key_is_refused() -> None:
    with pytest.raises(ValueError) as caught:
        public(certificate_arn=CERT, generate_api_key=False)
    assert (
        "ModelServiceArgs.internal=False: an internet-facing ALB in front of servers that take requests without an "
        "API key lets anyone on the internet call the model; keep generate_api_key=True or set api_key_secret, or "
        "allow_public_without_auth=True (flagged by mlplat check)"
    ) in str(caught.value)
    assert public(certificate_arn=CERT, generate_api_key=False, api_key_secret="team-key").authenticated
    # Without an ALB, or behind an internal one, nothing is exposed to the internet.
    ModelServiceArgs(
        namespace="n", image="i", model_uri="models:/d@a", internal=False, ingress=False, generate_api_key=False
    )


@pytest.mark.parametrize(
    "arn", ["arn:aws:iam::123456789012:server-certificate/web", "arn:aws:acm:us-east-1:1234:certificate/abc", "my-cert"]
)
def test_a_certificate_arn_of_the_wrong_shape_is_refused(arn: str) -> None:
    with pytest.raises(ValueError) as caught:
        public(certificate_arn=arn)
    assert (
        f"ModelServiceArgs.certificate_arn={arn!r}: not an ACM certificate ARN; use "
        "arn:aws:acm:<region>:<account id>:certificate/<certificate id>, in the ALB's region"
    ) in str(caught.value)


def test_a_public_service_with_a_certificate_and_a_key_listens_on_https_only(service: Svc, pod_of: PodOf) -> None:
    stack = service(internal=False, certificate_arn=CERT)
    annotations = stack.one(INGRESS).inputs["metadata"]["annotations"]
    assert annotations["alb.ingress.kubernetes.io/scheme"] == "internet-facing"
    assert annotations["alb.ingress.kubernetes.io/certificate-arn"] == CERT
    assert json.loads(annotations["alb.ingress.kubernetes.io/listen-ports"]) == [{"HTTPS": 443}]
    assert annotations["alb.ingress.kubernetes.io/ssl-redirect"] == "443"
    assert annotations["alb.ingress.kubernetes.io/ssl-policy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    assert not [k for k in annotations if k.startswith("mlplat.io/")]
    (container,) = pod_of(stack.one(DEPLOYMENT).inputs)["containers"]
    assert api_key_env(container)["valueFrom"]["secretKeyRef"] == {"name": "digits-api-key", "key": "api-key"}
    # An internal service keeps plain HTTP inside the VPC unless it is given a certificate too.
    internal = service().one(INGRESS).inputs["metadata"]["annotations"]
    assert json.loads(internal["alb.ingress.kubernetes.io/listen-ports"]) == [{"HTTP": 80}]
    assert "alb.ingress.kubernetes.io/certificate-arn" not in internal


def test_the_opt_outs_are_recorded_and_flagged_by_mlplat_check(service: Svc) -> None:
    from mlplat.policy.check import check_render

    opted_out = service(
        internal=False, allow_public_without_tls=True, generate_api_key=False, allow_public_without_auth=True
    )
    annotations = opted_out.one(INGRESS).inputs["metadata"]["annotations"]
    assert annotations["mlplat.io/public-without-tls"] == "true"
    assert annotations["mlplat.io/public-without-auth"] == "true"
    assert json.loads(annotations["alb.ingress.kubernetes.io/listen-ports"]) == [{"HTTP": 80}]
    findings = sorted(
        (f for f in check_render(opted_out.to_json(), "dev") if f.rule == "public-endpoint-protected"),
        key=lambda f: f.problem,
    )
    assert [(f.resource, f.enforcement) for f in findings] == [("digits", "advisory"), ("digits", "advisory")]
    assert findings[0].problem == (
        "internet-facing ALB in front of model servers that take requests without an API "
        "key (allow_public_without_auth)"
    )
    assert findings[1].problem == (
        "internet-facing ALB serves plain HTTP on port 80 (allow_public_without_tls): "
        "API keys and payloads cross the internet in clear text"
    )
    production = [f for f in check_render(opted_out.to_json(), "production") if f.rule == "public-endpoint-protected"]
    assert {f.enforcement for f in production} == {"mandatory"}
    protected = service(internal=False, certificate_arn=CERT)
    assert [f for f in check_render(protected.to_json(), "production") if f.rule == "public-endpoint-protected"] == []


def test_unready_servers_never_block_a_node_drain(service: Svc) -> None:
    pdb = service().one("kubernetes:policy/v1:PodDisruptionBudget").inputs["spec"]
    assert pdb["maxUnavailable"] == 1 and pdb["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


# -- access: API key from a Secret, NetworkPolicy, no API token in the pods ----------------------------------

SECRET = "kubernetes:core/v1:Secret"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"


def api_key_env(container: dict) -> dict:
    (variable,) = [e for e in container["env"] if e["name"] == "MLPLAT_SERVING_API_KEY"]
    return variable


def test_the_api_key_is_generated_into_a_secret_the_server_reads(service: Svc, pod_of: PodOf) -> None:
    stack = service()
    secret = stack.one(SECRET)
    assert secret.inputs["metadata"]["name"] == "digits-api-key"
    data = secret.inputs["stringData"]
    assert data == "[secret]" or data == {"api-key": "[secret]"}  # never the key itself
    (container,) = pod_of(stack.one(DEPLOYMENT).inputs)["containers"]
    variable = api_key_env(container)
    assert "value" not in variable
    assert variable["valueFrom"]["secretKeyRef"] == {"name": "digits-api-key", "key": "api-key"}


def test_a_given_api_key_secret_is_used_and_none_is_generated(service: Svc, pod_of: PodOf) -> None:
    stack = service(api_key_secret="team-key")
    assert stack.by_type(SECRET) == []
    (container,) = pod_of(stack.one(DEPLOYMENT).inputs)["containers"]
    assert api_key_env(container)["valueFrom"]["secretKeyRef"] == {"name": "team-key", "key": "api-key"}


def test_without_a_key_the_server_gets_none(service: Svc, pod_of: PodOf) -> None:
    stack = service(generate_api_key=False)
    (container,) = pod_of(stack.one(DEPLOYMENT).inputs)["containers"]
    assert all(e["name"] != "MLPLAT_SERVING_API_KEY" for e in container["env"])


def test_pods_mount_no_kubernetes_api_token_but_keep_irsa(service: Svc, pod_of: PodOf) -> None:
    stack = service(service_account_role_arn="arn:aws:iam::123456789012:role/serve")
    for deployment in stack.by_type(DEPLOYMENT):
        assert pod_of(deployment.inputs)["automountServiceAccountToken"] is False
    account = stack.one("kubernetes:core/v1:ServiceAccount")
    assert account.inputs["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith("role/serve")


def test_the_network_policy_admits_only_the_alb_prometheus_and_named_namespaces(service: Svc) -> None:
    stack = service(
        load_balancer_cidrs=["10.0.192.0/22"],
        allowed_namespaces=["pipelines"],
        canary=Canary(model_uri="models:/digits@challenger"),
    )
    policy = stack.one(NETWORK_POLICY).inputs
    spec = policy["spec"]
    assert policy["metadata"]["namespace"] == "serving"
    assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "digits"}}  # stable and canary
    assert spec["policyTypes"] == ["Ingress"]
    (rule,) = spec["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8080}]
    assert {"ipBlock": {"cidr": "10.0.192.0/22"}} in rule["from"]
    (namespaces,) = [peer["namespaceSelector"] for peer in rule["from"] if "namespaceSelector" in peer]
    assert namespaces == {
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["monitoring", "pipelines"]}
        ]
    }
    assert all("podSelector" not in peer for peer in rule["from"])  # no "any pod in this namespace" escape


def test_a_network_policy_with_no_sources_denies_all_instead_of_allowing_all(service: Svc) -> None:
    spec = service(monitoring_namespace=None).one(NETWORK_POLICY).inputs["spec"]
    assert spec["policyTypes"] == ["Ingress"] and not spec.get("ingress")
    assert service(network_policy=False).by_type(NETWORK_POLICY) == []


def test_behind_the_alb_idle_connections_outlast_its_idle_timeout(service: Svc, pod_of: PodOf) -> None:
    (container,) = pod_of(service().one(DEPLOYMENT).inputs)["containers"]
    assert env_of(container)["MLPLAT_SERVING_KEEPALIVE_TIMEOUT_S"] == "65"
    (container,) = pod_of(service(ingress=False).one(DEPLOYMENT).inputs)["containers"]
    assert "MLPLAT_SERVING_KEEPALIVE_TIMEOUT_S" not in env_of(container)


# -- MLflow credentials (issue 18, item 5) ----------------------------------------------------------------------


def test_model_servers_read_mlflow_as_the_read_only_serving_identity(
    on_cluster: Callable[..., Render], pod_of: PodOf
) -> None:
    created: CreatedSecrets = {}

    def build(opts: pulumi.ResourceOptions) -> None:
        record_secrets(created)
        tracking = Tracking(
            "tracking",
            tracking_args(),
            opts=opts,
        )
        ModelService(
            "digits",
            ModelServiceArgs(
                namespace="serving",
                image="123.dkr.ecr/serving:1",
                model_uri="models:/digits@champion",
                canary=Canary(model_uri="models:/digits@challenger"),
                tracking_uri=tracking.uri,
                tracking_credentials_secret=tracking.client_credentials("serving", "serving"),
            ),
            opts=opts,
        )

    stack = on_cluster(build)
    servers = [r for r in stack.by_type(DEPLOYMENT) if r.name.startswith("digits-")]
    assert {r.name for r in servers} == {"digits-stable", "digits-canary"}
    for deployment in servers:
        (server,) = pod_of(deployment.inputs)["containers"]
        refs = {
            e["name"]: e["valueFrom"]["secretKeyRef"] for e in server["env"] if "secretKeyRef" in e.get("valueFrom", {})
        }
        assert refs == {
            "MLFLOW_TRACKING_USERNAME": {"name": "mlflow-serving", "key": "username"},
            "MLFLOW_TRACKING_PASSWORD": {"name": "mlflow-serving", "key": "password"},
            "MLPLAT_SERVING_API_KEY": {"name": "digits-api-key", "key": "api-key"},
        }
    assert unresolved(stack, created) == []  # every Secret key the servers' and MLflow's pods read is rendered
    # The servers send the reader's credentials, which MLflow's bootstrap holds to no grant (READ only).
    assert created[("serving", "mlflow-serving")] == created[("mlflow", "mlflow-user-serving")]
    assert created[("serving", "mlflow-serving")]["username"] == "serving"
    bootstrap = pod_of(stack.one(DEPLOYMENT, "tracking-server").inputs)["initContainers"][1]
    assert "--reader=serving" in bootstrap["command"] and "--writer=serving" not in bootstrap["command"]


def test_without_credentials_the_server_sends_none(service: Svc, pod_of: PodOf) -> None:
    (server,) = pod_of(service().one(DEPLOYMENT).inputs)["containers"]
    assert not {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} & set(env_of(server))
