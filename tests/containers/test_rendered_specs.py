"""The production render's container specs, run in the images CI builds: tracking (its init containers and the
server, against PostgreSQL over TLS with artifacts in S3), a TrainingJob's pod (one short epoch, logged to that
tracking server, a model registered) and the ModelService (the model loaded by alias, ready by its rendered probe,
V2 inference, a clean drain on SIGTERM).

Command, args, env, ports, probes, mounts and securityContext come from the render (tests/support/containers.py
translates them to ``docker run --read-only --network host --user ...``); only what cannot exist here is
substituted, as that module lists. The last tests break one rendered detail each and check that the run fails.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from sklearn.datasets import load_digits
from support.containers import (
    Cluster,
    Completed,
    ContainerFailed,
    LocalKubelet,
    LocalServices,
    Pod,
    Probe,
    RenderedStack,
    Running,
    kubelet,
)

from mlplat.contracts.exit_codes import EXIT_CONFIG_INVALID, EXIT_OK
from mlplat.contracts.training_config import TrainingConfig

CONTROLLER_UID = "metadata.labels['batch.kubernetes.io/controller-uid']"
JOB_NAME = "metadata.labels['batch.kubernetes.io/job-name']"


def workload(cluster: Cluster, kinds: tuple[str, ...], component: str, **labels: str) -> Pod:
    """The one workload of these kinds whose pods carry ``app.kubernetes.io/component`` (and ``labels``)."""
    wanted = {"app.kubernetes.io/component": component, **labels}
    found = [
        pod
        for kind in kinds
        for obj in cluster.find(kind)
        if wanted.items()
        <= (pod := cluster.pod(kind, obj["metadata"]["namespace"], obj["metadata"]["name"])).labels.items()
    ]
    assert len(found) == 1, f"expected one {kinds} for {wanted}, found {[p.name for p in found]}"
    return found[0]


def env_value(pod: Pod, container: str, name: str) -> str:
    values = [e["value"] for e in pod.container(container).get("env", []) if e["name"] == name and "value" in e]
    assert values, f"{pod.name}/{container} sets no {name}"
    return str(values[0])


def ingress_host(cluster: Cluster, namespace: str, region: str) -> str:
    """The Host header the tracking Ingress delivers: its rule's host, else the name AWS gives the ALB."""
    (ingress,) = cluster.find("Ingress", namespace)
    hosts = [rule["host"] for rule in ingress["spec"].get("rules", []) if rule.get("host")]
    if hosts:
        return str(hosts[0])
    scheme = ingress["metadata"].get("annotations", {}).get("alb.ingress.kubernetes.io/scheme", "internal")
    prefix = "internal-" if scheme == "internal" else ""
    return f"{prefix}k8s-{namespace}-{ingress['metadata']['name']}-4f2a9c1e7b-1234567890.{region}.elb.amazonaws.com"


def credentials(production: RenderedStack, namespace: str, identity: str) -> tuple[str, str]:
    """The rendered MLflow user ``identity``'s name and password (a Secret of the tracking namespace)."""
    found = [
        (d["username"], d["password"])
        for (ns, _), d in production.created.items()
        if ns == namespace and d.get("username") == identity and "password" in d
    ]
    assert found, f"the render has no MLflow user {identity!r} in namespace {namespace}"
    return found[0]


def basic_auth(pod: Pod) -> bool:
    """Whether the tracking server runs MLflow's basic-auth app (then every API call needs a user)."""
    return "basic-auth" in pod.spec["containers"][0].get("args", [])


def api_key(kubelet_: LocalKubelet, pod: Pod) -> str:
    (value,) = [v for (ns, _, key), v in kubelet_.secrets.items() if ns == pod.namespace and key == "api-key"]
    return value


class Tracking:
    """The running tracking pod, spoken to as the ALB forwards requests (with the Host header it got), as the
    pipeline's MLflow user when the server runs the basic-auth app (the ML pipeline promotes models as it)."""

    def __init__(self, running: Running, host: str, auth: tuple[str, str] | None) -> None:
        self.running = running
        self.host = host
        self.http = httpx.Client(base_url=running.url("http"), headers={"Host": host}, auth=auth, timeout=30)

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        response = self.http.get(f"/api/2.0/mlflow/{path}", params=params)
        assert response.status_code == 200, f"GET {path}: {response.status_code} {response.text[:500]}"
        body: dict[str, Any] = response.json()
        return body

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post(f"/api/2.0/mlflow/{path}", json=body)
        assert response.status_code == 200, f"POST {path}: {response.status_code} {response.text[:500]}"
        answer: dict[str, Any] = response.json()
        return answer


@pytest.fixture(scope="module")
def local_kubelet(
    production: RenderedStack,
    local_services: LocalServices,
    irsa_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LocalKubelet]:
    workdir = tmp_path_factory.mktemp("pods")
    workdir.chmod(0o755)
    with kubelet(
        production.cluster, workdir, secrets=production.secrets(local_services.endpoints), irsa_env=irsa_env
    ) as local:
        yield local


# -- tracking ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tracking_pod(production: RenderedStack) -> Pod:
    return workload(production.cluster, ("Deployment",), "tracking")


@pytest.fixture(scope="module")
def init_containers(local_kubelet: LocalKubelet, tracking_pod: Pod) -> dict[str, Completed]:
    """The tracking pod's init containers, run in order to completion as the kubelet runs them."""
    done: dict[str, Completed] = {}
    for container in tracking_pod.spec.get("initContainers", []):
        done[container["name"]] = result = local_kubelet.run_to_completion(tracking_pod, container["name"], init=True)
        if result.exit_code != 0:
            break  # the kubelet would not start the next one
    return done


@pytest.fixture(scope="module")
def tracking(
    local_kubelet: LocalKubelet, tracking_pod: Pod, init_containers: dict[str, Completed], production: RenderedStack
) -> Tracking:
    for name, result in init_containers.items():
        assert result.exit_code == 0, f"init container {name} exited {result.exit_code}:\n{result.logs}"
    (container,) = tracking_pod.spec["containers"]
    running = local_kubelet.start(tracking_pod, container["name"])
    local_kubelet.wait_started_and_ready(running)
    auth = credentials(production, tracking_pod.namespace, "pipeline") if basic_auth(tracking_pod) else None
    return Tracking(running, ingress_host(production.cluster, tracking_pod.namespace, production.region), auth)


def test_the_init_containers_migrate_postgres_over_tls(
    init_containers: dict[str, Completed], local_services: LocalServices, tracking_pod: Pod
) -> None:
    assert "db-upgrade" in init_containers, f"{tracking_pod.name} renders no db-upgrade init container"
    for name, result in init_containers.items():
        assert result.exit_code == 0, f"init container {name} exited {result.exit_code}:\n{result.logs}"
    postgres = local_services.postgres
    assert postgres.psql("SELECT version_num FROM alembic_version"), "no schema version recorded"
    tables = postgres.psql(
        "SELECT count(*) FROM information_schema.tables WHERE table_name IN "
        "('experiments', 'runs', 'registered_models', 'model_versions')"
    )
    assert tables == "4"
    # PostgreSQL accepts TCP only over TLS here (hostssl), so the containers connected encrypted, as to RDS.


def test_the_tracking_server_answers_the_ingress_host_and_its_users_only(
    tracking: Tracking, tracking_pod: Pod, production: RenderedStack
) -> None:
    assert tracking.get("experiments/search", max_results=1)["experiments"]
    search = "/api/2.0/mlflow/experiments/search?max_results=1"
    refused = tracking.http.get(search, headers={"Host": "attacker.example.com"})
    assert refused.status_code in (400, 403), "a Host outside --allowed-hosts was served"
    if basic_auth(tracking_pod):
        anonymous = httpx.get(tracking.running.url("http", search), headers={"Host": tracking.host}, timeout=30)
        assert anonymous.status_code == 401
    # The ALB's health check: the annotated path, without credentials, with the target's address as Host.
    (ingress,) = production.cluster.find("Ingress", tracking_pod.namespace)
    path = ingress["metadata"]["annotations"]["alb.ingress.kubernetes.io/healthcheck-path"]
    assert httpx.get(tracking.running.url("http", path), headers={"Host": "10.0.96.17:5000"}).status_code == 200
    # (The image's HEALTHCHECK probes MLflow's default port 5000, which the port substitution moves; a kubelet
    # never runs it anyway. The model server's follows MLPLAT_SERVING_PORT and is checked below.)


# -- training ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def training_pod(production: RenderedStack) -> Pod:
    return workload(production.cluster, ("Job", "CronJob"), "trainer")


def short_run(pod: Pod, cluster: Cluster) -> dict[tuple[str, str, str], str]:
    """The rendered training.yaml for one short epoch on CPU, whatever the gate (one epoch cannot pass it)."""
    (volume,) = [v for v in pod.spec["volumes"] if "configMap" in v]
    name = volume["configMap"]["name"]
    overrides = {}
    for key, text in cluster.get("ConfigMap", pod.namespace, name)["data"].items():
        config = yaml.safe_load(text)
        config["epochs"] = 1
        config.setdefault("runtime", {})["device"] = "cpu"  # the CPU build of the trainer (no GPU here)
        config.setdefault("gate", {}).update(min_accuracy=0.0, min_macro_f1=0.0)
        overrides[(pod.namespace, name, key)] = yaml.safe_dump(config)
    return overrides


def trained_config(pod: Pod, kubelet_: LocalKubelet) -> TrainingConfig:
    (text,) = [t for (ns, _, _), t in kubelet_.config_overrides.items() if ns == pod.namespace]
    return TrainingConfig.model_validate(yaml.safe_load(text))


@pytest.fixture(scope="module")
def job_identity() -> dict[str, str]:
    """What the Job controller puts in the pod's labels (the trainer reads them through fieldRefs)."""
    return {CONTROLLER_UID: str(uuid.uuid4()), JOB_NAME: f"mlplat-production-digits-{int(time.time()) // 60}"}


@pytest.fixture(scope="module")
def training_job(
    local_kubelet: LocalKubelet,
    training_pod: Pod,
    tracking: Tracking,
    production: RenderedStack,
    job_identity: dict[str, str],
) -> Completed:
    local_kubelet.field_refs.update(job_identity)
    local_kubelet.config_overrides.update(short_run(training_pod, production.cluster))
    (container,) = training_pod.spec["containers"]
    return local_kubelet.run_to_completion(training_pod, container["name"], drop_gpus=True)


def test_the_training_job_logs_to_tracking_and_registers_a_model(
    training_job: Completed,
    training_pod: Pod,
    local_kubelet: LocalKubelet,
    tracking: Tracking,
    tracking_pod: Pod,
    local_services: LocalServices,
    job_identity: dict[str, str],
) -> None:
    assert training_job.exit_code == EXIT_OK, training_job.logs
    config = trained_config(training_pod, local_kubelet)
    assert config.registry.model_name
    version = tracking.get("registered-models/alias", name=config.registry.model_name, alias=config.registry.alias)[
        "model_version"
    ]
    run = tracking.get("runs/get", run_id=version["run_id"])["run"]
    assert run["info"]["status"] == "FINISHED"
    assert run["data"].get("metrics"), "the run logged no metrics"
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert tags["mlplat.attempt"] == job_identity[CONTROLLER_UID]  # the fieldRef env reached the trainer
    assert tags["mlplat.device"] == "cpu"
    s3 = local_services.s3.client()
    # Checkpoints went to the rendered S3 prefix through the job's role (here: the local S3's credentials).
    bucket, _, prefix = config.checkpoint.uri.removeprefix("s3://").partition("/")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/").get("Contents", [])]
    assert any(re.fullmatch(rf"{re.escape(prefix)}/ckpt-\d+\.pt", k) for k in keys), keys
    record = json.loads(s3.get_object(Bucket=bucket, Key=f"{prefix}/attempt.json")["Body"].read())
    assert record["job_name"] == job_identity[JOB_NAME]
    # The model's files went through the tracking server (--serve-artifacts) to its rendered S3 destination.
    args = tracking_pod.spec["containers"][0]["args"]
    bucket, _, prefix = args[args.index("--artifacts-destination") + 1].removeprefix("s3://").partition("/")
    stored = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/").get("Contents", [])]
    assert any(key.endswith("MLmodel") for key in stored), stored


# -- serving -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def serving_pod(production: RenderedStack) -> Pod:
    return workload(production.cluster, ("Deployment",), "model-server", **{"mlplat.io/track": "stable"})


@pytest.fixture(scope="module")
def model_server(
    local_kubelet: LocalKubelet, serving_pod: Pod, training_job: Completed, training_pod: Pod, tracking: Tracking
) -> Running:
    """The stable ModelService pod, after the pipeline's promotion of the trained model to the alias it serves."""
    assert training_job.exit_code == EXIT_OK, training_job.logs
    (container,) = serving_pod.spec["containers"]
    name, _, alias = (
        env_value(serving_pod, container["name"], "MLPLAT_SERVING_MODEL_URI").removeprefix("models:/").partition("@")
    )
    config = trained_config(training_pod, local_kubelet)
    assert name == config.registry.model_name
    staged = tracking.get("registered-models/alias", name=name, alias=config.registry.alias)["model_version"]
    tracking.post("registered-models/alias", {"name": name, "alias": alias, "version": staged["version"]})
    running = local_kubelet.start(serving_pod, container["name"])
    local_kubelet.wait_started_and_ready(running)
    return running


def infer_body(rows: np.ndarray) -> dict[str, Any]:
    return {
        "inputs": [{"name": "input-0", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}]
    }


def test_the_model_service_loads_the_model_by_alias_and_answers_v2(
    model_server: Running, serving_pod: Pod, local_kubelet: LocalKubelet, tracking: Tracking
) -> None:
    model_uri = env_value(serving_pod, "server", "MLPLAT_SERVING_MODEL_URI")
    name, _, alias = model_uri.removeprefix("models:/").partition("@")
    expected = tracking.get("registered-models/alias", name=name, alias=alias)["model_version"]["version"]
    rows = load_digits().data[:4].astype(np.float32)
    headers = {"Authorization": f"Bearer {api_key(local_kubelet, serving_pod)}"}
    with httpx.Client(base_url=model_server.url("http"), timeout=30) as http:
        assert http.post(f"/v2/models/{name}/infer", json=infer_body(rows)).status_code == 401  # the API key holds
        answer = http.post(f"/v2/models/{name}/infer", json=infer_body(rows), headers=headers)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["model_name"] == name and str(result["model_version"]) == str(expected)
    (output,) = result["outputs"]
    assert output["shape"][0] == len(rows)
    assert model_server.probes["livenessProbe"].ok()


def test_the_model_service_drains_on_sigterm_and_exits_0_within_its_grace_period(
    model_server: Running, serving_pod: Pod, local_kubelet: LocalKubelet
) -> None:
    assert model_server.wait_healthy() == "healthy"  # the image's own HEALTHCHECK, under the rendered env
    container = serving_pod.container("server")
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    # The kubelet runs the preStop sleep before SIGTERM, all within the grace period: what is left is the
    # server's own time to drain, after which SIGKILL (docker stop's timeout) ends it with 137.
    budget = serving_pod.termination_grace_s - int(pre_stop)
    name = env_value(serving_pod, "server", "MLPLAT_SERVING_MODEL_URI").removeprefix("models:/").partition("@")[0]
    body = infer_body(load_digits().data[:1].astype(np.float32))
    headers = {"Authorization": f"Bearer {api_key(local_kubelet, serving_pod)}"}
    outcomes: list[tuple[float, int | str]] = []
    stop_sending = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=model_server.url("http"), timeout=30, headers=headers) as http:
            while not stop_sending.is_set():
                try:
                    outcome: int | str = http.post(f"/v2/models/{name}/infer", json=body).status_code
                except httpx.TransportError as error:
                    outcome = type(error).__name__
                outcomes.append((time.monotonic(), outcome))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    sigterm_at = time.monotonic()
    exit_code, took = model_server.stop(budget)
    stop_sending.set()
    for thread in threads:
        thread.join(30)
    assert exit_code == 0, f"exit {exit_code} after SIGTERM:\n{model_server.logs()}"
    assert took < budget
    before = [o for t, o in outcomes if t < sigterm_at]
    assert before and set(before) == {200}, sorted(set(map(str, before)))
    statuses = {o for _, o in outcomes if isinstance(o, int)}
    assert statuses == {200}, f"a request was answered with an error during the drain: {statuses}"
    assert not model_server.probes["readinessProbe"].ok()


# -- a broken rendered detail fails the run ------------------------------------------------------------------------


def _broken(pod: Pod) -> Pod:
    return Pod(pod.namespace, pod.name + "-broken", dict(pod.labels), copy.deepcopy(pod.spec))


def test_a_renamed_env_var_fails_the_init_container(
    local_kubelet: LocalKubelet, tracking_pod: Pod, init_containers: dict[str, Completed]
) -> None:
    pod = _broken(tracking_pod)
    container = pod.spec["initContainers"][0]
    for item in container["env"]:
        if item["name"] == "MLFLOW_BACKEND_STORE_URI":
            item["name"] = "MLFLOW_BACKEND_URI"
    assert local_kubelet.run_to_completion(pod, container["name"], init=True).exit_code != 0


def test_a_moved_config_mount_fails_the_training_job(
    local_kubelet: LocalKubelet,
    training_pod: Pod,
    job_identity: dict[str, str],
    production: RenderedStack,
    tracking: Tracking,
) -> None:
    local_kubelet.field_refs.update(job_identity)
    local_kubelet.config_overrides.update(short_run(training_pod, production.cluster))
    pod = _broken(training_pod)
    (container,) = pod.spec["containers"]
    for mount in container["volumeMounts"]:
        if mount["mountPath"] == "/etc/mlplat":
            mount["mountPath"] = "/etc/mlplat-config"
    done = local_kubelet.run_to_completion(pod, container["name"], drop_gpus=True, timeout_s=120)
    assert done.exit_code == EXIT_CONFIG_INVALID, done.logs


def test_a_port_the_server_does_not_listen_on_fails_its_probes(
    local_kubelet: LocalKubelet, serving_pod: Pod, model_server: Running
) -> None:
    pod = _broken(serving_pod)
    (container,) = pod.spec["containers"]
    container["ports"][0]["containerPort"] = 8081  # the probes follow the port; MLPLAT_SERVING_PORT stays 8080
    running = local_kubelet.start(pod, container["name"])
    probe = running.probes["startupProbe"]
    running.probes["startupProbe"] = Probe(probe.url, probe.headers, probe.timeout_s, 20.0)  # not the full 300 s
    with pytest.raises(ContainerFailed, match=r"did not pass|exited"):
        running.wait_until("startupProbe")
