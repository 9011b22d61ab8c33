"""Contract rules (mlplat.policy.rules.contracts): each rule passes on the shipped stacks and catches a broken render
with the exact message; every first-deploy defect, re-introduced into a render, is caught through
`mlplat check --render`."""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mlplat.cli.app import app
from mlplat.infra.engine import Render
from mlplat.infra.synth import render_stack
from mlplat.policy.check import check_resources, to_github
from mlplat.policy.framework import environment_of, resources_from_render
from mlplat.policy.rules import RULES
from mlplat.policy.rules.contracts import CONTRACT_RULES, tables

ROOT = Path(__file__).resolve().parents[2]
Doc = dict[str, Any]
DEP = "kubernetes:apps/v1:Deployment"
TRACKING = "mlplat-production-tracking-server"


def contract_findings(document: Doc) -> list[tuple[str, str, str]]:
    found = check_resources(resources_from_render(document), environment_of(document), CONTRACT_RULES)
    return [(f.rule, f.resource, f.problem) for f in found]


def res(document: Doc, type_: str, name: str) -> Doc:
    return next(r for r in document["resources"] if r["type"] == type_ and r["name"] == name)


def pod_spec(record: Doc) -> Doc:
    spec = record["inputs"]["spec"]
    return (spec["jobTemplate"]["spec"] if "jobTemplate" in spec else spec)["template"]["spec"]


@pytest.fixture(scope="module")
def production(production_stack: Render) -> Doc:
    return production_stack.to_json()


@pytest.fixture(scope="module")
def dev(dev_stack: Render) -> Doc:
    return dev_stack.to_json()


# --- the shipped stacks pass -------------------------------------------------------------------------------


def test_shipped_dev_and_production_keep_every_contract(dev: Doc, production: Doc) -> None:
    assert contract_findings(dev) == []
    assert contract_findings(production) == []


def test_shipped_team_example_and_bootstrap_keep_every_contract() -> None:
    assert contract_findings(render_stack("dev", ROOT / "examples" / "team-stack").to_json()) == []
    assert contract_findings(render_stack("account", ROOT / "bootstrap").to_json()) == []


def test_contract_rules_are_registered_stack_rules_with_documented_ids() -> None:
    readme = (ROOT / "README.md").read_text()
    guardrails = readme.split("## Guardrails", 1)[1].split("\n## ", 1)[0]
    ids = [r.id for r in CONTRACT_RULES]
    assert len(set(ids)) == len(ids) and all(i.startswith("contract-") for i in ids)
    assert set(ids) <= {r.id for r in RULES}
    for rule_id in ids:
        assert re.search(rf"^\| `{re.escape(rule_id)}` \| [^|]+ \|$", guardrails, re.M), rule_id


# --- one breaking render per rule (and per first-deploy defect) ------------------------------------------


def _ingress_action(d: Doc, port: object) -> None:
    ingress = res(d, "kubernetes:networking.k8s.io/v1:Ingress", "mlplat-production-digits")
    key = "alb.ingress.kubernetes.io/actions.mlplat-production-digits-split"
    action = json.loads(ingress["inputs"]["metadata"]["annotations"][key])
    for target in action["forwardConfig"]["targetGroups"]:
        target["servicePort"] = port
    ingress["inputs"]["metadata"]["annotations"][key] = json.dumps(action)


def _unnamed_storage_class(d: Doc) -> None:
    del res(d, "eks:index:Cluster", "mlplat-production-eks")["inputs"]["storageClasses"]["gp3"]["metadata"]


def _oversized_training(d: Doc) -> None:
    pod_spec(res(d, "kubernetes:batch/v1:CronJob", "mlplat-production-digits"))["containers"][0]["resources"][
        "requests"
    ]["cpu"] = "4"


def _secret_in_argv(d: Doc) -> None:
    pod_spec(res(d, DEP, TRACKING))["containers"][0]["args"] += ["--backend-store-uri", "$(MLFLOW_BACKEND_STORE_URI)"]


def _plain_password(d: Doc) -> None:
    env = pod_spec(res(d, DEP, TRACKING))["containers"][0]["env"]
    env[0] = {"name": "MLFLOW_BACKEND_STORE_URI", "value": "postgresql+psycopg2://mlflow:p@ss/w0rd@db:5432/mlflow"}


def _no_elb_host(d: Doc) -> None:
    args = pod_spec(res(d, DEP, TRACKING))["containers"][0]["args"]
    i = args.index("--allowed-hosts")
    args[i + 1] = ",".join(h for h in args[i + 1].split(",") if "elb" not in h)


def _condensed_lbc_policy(d: Doc) -> None:
    record = res(d, "aws:iam/rolePolicy:RolePolicy", "mlplat-production-irsa-kube-system-aws-load-balancer-controller")
    document = json.loads(record["inputs"]["policy"])
    document["Statement"] = [
        s
        for s in document["Statement"]
        if not ("ec2:AuthorizeSecurityGroupIngress" in s["Action"] and "Condition" not in s)
    ]
    record["inputs"]["policy"] = json.dumps(document)


def _untagged_instances(d: Doc) -> None:
    template = res(d, "aws:ec2/launchTemplate:LaunchTemplate", "mlplat-production-gpu")
    template["inputs"]["tagSpecifications"][0]["tags"].pop("aws-node-termination-handler/managed")


def _awaited_job(d: Doc) -> None:
    res(d, "kubernetes:batch/v1:Job", "mlplat-dev-digits")["inputs"]["metadata"].pop("annotations")


def _no_capacity_dependency(d: Doc) -> None:
    res(d, DEP, TRACKING)["options"]["depends_on"] = []  # the platform passing the component no depends_on


def _official_mlflow_image(d: Doc) -> None:
    spec = pod_spec(res(d, DEP, TRACKING))
    for c in spec["containers"] + spec["initContainers"]:
        c["image"] = "ghcr.io/mlflow/mlflow:v3.17.2"


def _service_before_controller(d: Doc) -> None:
    service = res(d, "kubernetes:core/v1:Service", TRACKING)
    service["options"]["depends_on"] = [u for u in service["options"]["depends_on"] if u.endswith("::" + TRACKING)]
    res(d, DEP, TRACKING)["options"]["depends_on"] = [u for u in service["options"]["depends_on"] if "aws:eks/" in u]


def _wrong_namespace(d: Doc) -> None:
    config = res(d, "kubernetes:core/v1:ConfigMap", "mlplat-production-digits-config")
    config["inputs"]["metadata"]["namespace"] = "train"


def _missing_secret(d: Doc) -> None:
    pod_spec(res(d, DEP, TRACKING))["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"] = "mlflow-db"


def _missing_config_key(d: Doc) -> None:
    volume = pod_spec(res(d, "kubernetes:batch/v1:CronJob", "mlplat-production-digits"))["volumes"][0]
    volume["configMap"]["items"] = [{"key": "train.yaml", "path": "training.yaml"}]


def _missing_service_account(d: Doc) -> None:
    pod_spec(res(d, DEP, TRACKING))["serviceAccountName"] = "tracking"


def _alertmanager_sa_renamed(d: Doc) -> None:
    values = res(d, "kubernetes:helm.sh/v3:Release", "mlplat-production-monitoring-stack")["inputs"]["values"]
    values["alertmanager"]["serviceAccount"]["name"] = "alertmanager"


def _service_monitor_port(d: Doc) -> None:
    monitor = res(d, "kubernetes:monitoring.coreos.com/v1:ServiceMonitor", "mlplat-production-digits")
    monitor["inputs"]["spec"]["endpoints"][0]["port"] = "metrics"


def _service_selects_nothing(d: Doc) -> None:
    service = res(d, "kubernetes:core/v1:Service", TRACKING)
    service["inputs"]["spec"]["selector"]["app.kubernetes.io/component"] = "server"


def _missing_priority_class(d: Doc) -> None:
    values = res(d, "kubernetes:helm.sh/v3:Release", "mlplat-production-cluster-autoscaler")["inputs"]["values"]
    values["priorityClassName"] = "platform-critical"


def _nginx_ingress(d: Doc) -> None:
    res(d, "kubernetes:networking.k8s.io/v1:Ingress", "mlplat-production-tracking-ingress")["inputs"]["spec"][
        "ingressClassName"
    ] = "nginx"


def _unknown_chart_version(d: Doc) -> None:
    res(d, "kubernetes:helm.sh/v3:Release", "mlplat-production-nvidia-device-plugin")["inputs"]["version"] = "0.18.0"


def _no_pool_label(d: Doc) -> None:
    pod_spec(res(d, "kubernetes:batch/v1:CronJob", "mlplat-production-digits"))["nodeSelector"] = {"workload": "a100"}


def _plugin_without_toleration(d: Doc) -> None:
    res(d, "kubernetes:helm.sh/v3:Release", "mlplat-production-nvidia-device-plugin")["inputs"]["values"][
        "tolerations"
    ] = []


def _unknown_repository(d: Doc) -> None:
    spec = pod_spec(res(d, DEP, TRACKING))
    for c in spec["containers"] + spec["initContainers"]:
        c["image"] = c["image"].replace("/tracking:", "/mlflow:")


def _service_awaited_alone(d: Doc) -> None:
    res(d, DEP, TRACKING)["inputs"]["metadata"]["annotations"] = {"pulumi.com/skipAwait": "true"}


def _asg_taint_missing(d: Doc) -> None:
    d["resources"] = [r for r in d["resources"] if r["name"] != "mlplat-production-gpu-asg-taint-nvidia-com-gpu"]


def _cpu_trainer_image(d: Doc) -> None:
    container = pod_spec(res(d, "kubernetes:batch/v1:CronJob", "mlplat-production-digits"))["containers"][0]
    container["image"] = container["image"].removesuffix("-cuda")


BREAKS: dict[str, tuple[str, Callable[[Doc], None]]] = {
    # the first-deploy issue's defects
    "alb-action-port-as-string-number": ("production", lambda d: _ingress_action(d, "80")),
    "storage-class-auto-named": ("production", _unnamed_storage_class),
    "training-requests-exceed-node": ("production", _oversized_training),
    "backend-uri-expanded-into-argv": ("production", _secret_in_argv),
    "allowed-hosts-miss-the-alb": ("production", _no_elb_host),
    "condensed-lb-controller-policy": ("production", _condensed_lbc_policy),
    "instances-lack-nth-tag": ("production", _untagged_instances),
    "job-holds-pulumi-up": ("dev", _awaited_job),
    "workload-before-capacity": ("production", _no_capacity_dependency),
    "official-mlflow-image": ("production", _official_mlflow_image),
    "service-before-lb-controller": ("production", _service_before_controller),
    # the other rules
    "alb-action-port-number": ("production", lambda d: _ingress_action(d, 8080)),
    "plain-password-in-uri": ("production", _plain_password),
    "namespace-typo": ("production", _wrong_namespace),
    "secret-renamed": ("production", _missing_secret),
    "config-key-missing": ("production", _missing_config_key),
    "service-account-missing": ("production", _missing_service_account),
    "irsa-trusts-another-account": ("production", _alertmanager_sa_renamed),
    "service-monitor-port": ("production", _service_monitor_port),
    "service-selects-nothing": ("production", _service_selects_nothing),
    "priority-class-missing": ("production", _missing_priority_class),
    "ingress-class-without-controller": ("production", _nginx_ingress),
    "chart-version-without-facts": ("production", _unknown_chart_version),
    "no-pool-admits": ("production", _no_pool_label),
    "device-plugin-not-on-gpu-pool": ("production", _plugin_without_toleration),
    "image-repository-missing": ("production", _unknown_repository),
    "service-awaited-pods-not": ("production", _service_awaited_alone),
    "autoscaler-taint-tag-missing": ("production", _asg_taint_missing),
    "gpu-job-cpu-image": ("production", _cpu_trainer_image),
}


def broken(name: str, dev: Doc, production: Doc) -> Doc:
    base, mutate = BREAKS[name]
    document = copy.deepcopy(dev if base == "dev" else production)
    mutate(document)
    return document


EXPECTED: dict[str, list[tuple[str, str, str]]] = {
    "alb-action-port-as-string-number": [
        (
            "contract-ref-service-port",
            "mlplat-production-digits",
            "Ingress serving/mlplat-production-digits action mlplat-production-digits-split → Service servin"
            'g/mlplat-production-digits-canary port "80": no such port; ports: http(80)',
        ),
        (
            "contract-ref-service-port",
            "mlplat-production-digits",
            "Ingress serving/mlplat-production-digits action mlplat-production-digits-split → Service servin"
            'g/mlplat-production-digits-stable port "80": no such port; ports: http(80)',
        ),
    ],
    "storage-class-auto-named": [
        (
            "contract-ref-storage-class",
            "mlplat-production-monitoring-stack",
            "Release monitoring/kube-prometheus-stack (kube-prometheus-stack 75.15.0) values.prometheus.prom"
            "etheusSpec.storageSpec.volumeClaimTemplate.spec.storageClassName → StorageClass gp3: no such St"
            "orageClass; StorageClasses: gp3-<auto> (mlplat-production-eks storageClasses['gp3'] has no meta"
            "data.name)",
        ),
    ],
    "training-requests-exceed-node": [
        (
            "contract-sched-fits",
            "mlplat-production-digits",
            "CronJob training/mlplat-production-digits (cpu 4000m, memory 12288Mi, 1 GPU) → node pool mlplat"
            "-production-gpu (g5.xlarge): cpu does not fit; g5.xlarge has cpu 3740m, memory 14042Mi, 1 GPU(s"
            ") allocatable after kubelet reservations and DaemonSets (aws-node, kube-proxy, ebs-csi-node, nv"
            "idia-device-plugin, node-exporter); the largest request that fits the pool is cpu 3740m, memory"
            " 14042Mi",
        ),
    ],
    "backend-uri-expanded-into-argv": [
        (
            "contract-rt-secret-uri",
            "mlplat-production-tracking-server",
            "Deployment mlflow/mlflow container 'mlflow' args → env MLFLOW_BACKEND_STORE_URI (from a Secret)"
            ": expanded into argv as $(MLFLOW_BACKEND_STORE_URI), so the secret is in the pod spec and the p"
            "rocess list, and reaches the parser as raw text",
        ),
    ],
    "allowed-hosts-miss-the-alb": [
        (
            "contract-rt-allowed-hosts",
            "mlplat-production-tracking-server",
            "Deployment mlflow/mlflow container 'mlflow' --allowed-hosts (mlflow, mlflow:5000, mlflow.mlflow"
            ", mlflow.mlflow:5000, mlflow.mlflow.svc, mlflow.mlflow.svc:5000, mlflow.mlflow.svc.cluster.loca"
            "l, mlflow.mlflow.svc.cluster.local:5000) → Host headers internal-k8s-mlflow-0123456789.us-east-"
            "1.elb.amazonaws.com (via Ingress mlflow/mlflow): refused with 403",
        ),
    ],
    "condensed-lb-controller-policy": [
        (
            "contract-rt-controller-iam",
            "mlplat-production-aws-load-balancer-controller",
            "Release kube-system/aws-load-balancer-controller (aws-load-balancer-controller 1.13.0) → IAM ro"
            "le mlplat-production-irsa-kube-system-aws-load-balancer-co-f61aee28: grants less than the upstr"
            "eam policy of aws-load-balancer-controller 1.13.0; missing ec2:AuthorizeSecurityGroupIngress (u"
            "nconditioned), ec2:RevokeSecurityGroupIngress (unconditioned)",
        ),
    ],
    "instances-lack-nth-tag": [
        (
            "contract-rt-instance-tags",
            "mlplat-production-gpu",
            "node pool mlplat-production-gpu (launch template mlplat-production-gpu) → Release kube-system/a"
            "ws-node-termination-handler (aws-node-termination-handler 0.27.6) managedTag 'aws-node-terminat"
            "ion-handler/managed': its instances do not carry the tag, so the handler never drains them on a"
            " spot interruption",
        ),
    ],
    "job-holds-pulumi-up": [
        (
            "contract-ready-job",
            "mlplat-dev-digits",
            "Job training/mlplat-dev-digits → `pulumi up`: Pulumi waits for the Job to complete (a training "
            "run of hours, or one waiting for a spot GPU) before the update can finish",
        ),
    ],
    "workload-before-capacity": [
        (
            "contract-ready-order",
            "mlplat-production-tracking-server",
            "Deployment mlflow/mlflow → node group mlplat-production-cpu, add-on vpc-cni, add-on kube-proxy,"
            " add-on coredns: not among its dependencies, so Pulumi may start waiting for its pods before th"
            "ere is a node to run them",
        ),
    ],
    "official-mlflow-image": [
        (
            "contract-rt-image-contents",
            "mlplat-production-tracking-server",
            "Deployment mlflow/mlflow container 'db-upgrade' → image ghcr.io/mlflow/mlflow:v3.17.2: lacks psy"
            "copg2 (the Tracking component's backend store (postgresql+psycopg2, from a Secret)); it carries "
            "mlflow (mlflow/mlflow docker/Dockerfile: `pip install mlflow==$VERSION` only)",
        ),
        (
            "contract-rt-image-contents",
            "mlplat-production-tracking-server",
            "Deployment mlflow/mlflow container 'mlflow' → image ghcr.io/mlflow/mlflow:v3.17.2: lacks boto3 ("
            "--artifacts-destination s3://…), Flask-WTF (--app-name basic-auth), psycopg2 (the Tracking compo"
            "nent's backend store (postgresql+psycopg2, from a Secret)); it carries mlflow (mlflow/mlflow doc"
            "ker/Dockerfile: `pip install mlflow==$VERSION` only)",
        ),
    ],
    "service-before-lb-controller": [
        (
            "contract-ready-order",
            "mlplat-production-tracking-server",
            "Deployment mlflow/mlflow → node group mlplat-production-cpu, add-on vpc-cni, add-on kube-proxy,"
            " add-on coredns: not among its dependencies, so Pulumi may start waiting for its pods before th"
            "ere is a node to run them",
        ),
        (
            "contract-ready-order",
            "mlplat-production-tracking-server",
            "Service mlflow/mlflow → mlplat-production-aws-load-balancer-controller: not among its dependenc"
            "ies; the AWS Load Balancer Controller rejects Services until it runs",
        ),
    ],
    "alb-action-port-number": [
        (
            "contract-ref-service-port",
            "mlplat-production-digits",
            "Ingress serving/mlplat-production-digits action mlplat-production-digits-split → Service servin"
            "g/mlplat-production-digits-canary port 8080: no such port; ports: http(80)",
        ),
        (
            "contract-ref-service-port",
            "mlplat-production-digits",
            "Ingress serving/mlplat-production-digits action mlplat-production-digits-split → Service servin"
            "g/mlplat-production-digits-stable port 8080: no such port; ports: http(80)",
        ),
    ],
    "plain-password-in-uri": [
        (
            "contract-rt-secret-uri",
            "mlplat-production-tracking-server",
            "Deployment mlflow/mlflow container 'mlflow' env MLFLOW_BACKEND_STORE_URI → URI mlflow:***@…: th"
            "e password is not percent-encoded, so a reserved character in it ('@', '/', ':', '#', '%', …) b"
            "reaks the URI",
        ),
    ],
    "namespace-typo": [
        (
            "contract-ref-configmap",
            "mlplat-production-digits",
            "CronJob training/mlplat-production-digits volume config → ConfigMap training/mlplat-production-"
            "digits-config: no such ConfigMap; ConfigMaps in training: none",
        ),
        (
            "contract-ref-namespace",
            "mlplat-production-digits-config",
            "ConfigMap train/mlplat-production-digits-config → Namespace train: no such namespace; namespace"
            "s: default, kube-node-lease, kube-public, kube-system, mlflow, monitoring, serving, training",
        ),
    ],
    "secret-renamed": [
        (
            "contract-ref-secret",
            "mlplat-production-tracking-server",
            "Deployment mlflow/mlflow container 'mlflow' env MLFLOW_BACKEND_STORE_URI → Secret mlflow/mlflow"
            "-db: no such Secret; Secrets in mlflow: mlflow-auth, mlflow-backend, mlflow-user-pipeline, "
            "mlflow-user-serving, mlflow-user-trainer",
        ),
    ],
    "config-key-missing": [
        (
            "contract-ref-configmap",
            "mlplat-production-digits",
            "CronJob training/mlplat-production-digits volume config → ConfigMap training/mlplat-production-"
            "digits-config key 'train.yaml': no such key; keys: training.yaml",
        ),
    ],
    "service-account-missing": [
        (
            "contract-ref-service-account",
            "mlplat-production-tracking-server",
            "Deployment mlflow/mlflow → ServiceAccount mlflow/tracking: no such ServiceAccount; ServiceAccou"
            "nts in mlflow: mlflow",
        ),
    ],
    "irsa-trusts-another-account": [
        (
            "contract-ref-irsa",
            "mlplat-production-monitoring-stack",
            "Release monitoring/kube-prometheus-stack (kube-prometheus-stack 75.15.0) ServiceAccount monitor"
            "ing/alertmanager → IAM role mlplat-production-irsa-monitoring-kube-prometheus-stack-alertmanage"
            "r: its trust policy admits system:serviceaccount:monitoring:kube-prometheus-stack-alertmanager,"
            " not system:serviceaccount:monitoring:alertmanager, so the pods get no AWS credentials",
        ),
    ],
    "service-monitor-port": [
        (
            "contract-ref-service-port",
            "mlplat-production-digits",
            "ServiceMonitor serving/mlplat-production-digits endpoint → Service serving/mlplat-production-di"
            'gits-canary port "metrics": no such port; ports: http(80)',
        ),
        (
            "contract-ref-service-port",
            "mlplat-production-digits",
            "ServiceMonitor serving/mlplat-production-digits endpoint → Service serving/mlplat-production-di"
            'gits-stable port "metrics": no such port; ports: http(80)',
        ),
    ],
    "service-selects-nothing": [
        (
            "contract-ref-selector",
            "mlplat-production-tracking-server",
            "Service mlflow/mlflow → pods {app.kubernetes.io/component=server, app.kubernetes.io/name=mlflow"
            "}: no workload in mlflow has pods with these labels, so the Service has no endpoints",
        ),
    ],
    "priority-class-missing": [
        (
            "contract-ref-priority-class",
            "mlplat-production-cluster-autoscaler",
            "Release kube-system/cluster-autoscaler (cluster-autoscaler 9.59.0) values.priorityClassName → P"
            "riorityClass platform-critical: no such PriorityClass; PriorityClasses: system-cluster-critical"
            ", system-node-critical",
        ),
    ],
    "ingress-class-without-controller": [
        (
            "contract-ref-ingress-class",
            "mlplat-production-tracking-ingress",
            "Ingress mlflow/mlflow → IngressClass nginx: no such IngressClass, so no controller serves it; I"
            "ngressClasses: alb",
        ),
    ],
    "chart-version-without-facts": [
        (
            "contract-ref-chart-facts",
            "mlplat-production-nvidia-device-plugin",
            "Release kube-system/nvidia-device-plugin (nvidia-device-plugin 0.18.0): mlplat declares what th"
            "is chart creates for versions 0.17.1 only; the contract rules read those facts (NVIDIA/k8s-devi"
            "ce-plugin deployments/helm/nvidia-device-plugin 0.17.1 values.yaml: a DaemonSet, tolerations Cr"
            "iticalAddonsOnly and nvidia.com/gpu:NoSchedule, affinity on NFD/GFD labels)",
        ),
    ],
    "no-pool-admits": [
        (
            "contract-sched-placement",
            "mlplat-production-digits",
            "CronJob training/mlplat-production-digits → node pools: none admits its pods (mlplat-production"
            "-cpu: no label workload=a100; mlplat-production-gpu: no label workload=a100)",
        ),
    ],
    "device-plugin-not-on-gpu-pool": [
        (
            "contract-sched-gpu",
            "mlplat-production-digits",
            "CronJob training/mlplat-production-digits (nvidia.com/gpu 1) → node pool mlplat-production-gpu:"
            " no NVIDIA device plugin runs there (Release kube-system/nvidia-device-plugin (nvidia-device-pl"
            "ugin 0.17.1) pods 'device-plugin': taint nvidia.com/gpu=true:NoSchedule not tolerated)",
        ),
    ],
    "image-repository-missing": [
        (
            "contract-ready-image",
            "mlplat-production-tracking-server",
            "Deployment mlflow/mlflow container 'auth-bootstrap' → image 123456789012.dkr.ecr.us-east-1.amazo"
            "naws.com/mlplat-production/mlflow:<tag>: the stack's registry has no repository 'mlplat-productio"
            "n/mlflow'; repositories: mlplat-production/serving, mlplat-production/tracking, mlplat-productio"
            "n/training",
        ),
        (
            "contract-ready-image",
            "mlplat-production-tracking-server",
            "Deployment mlflow/mlflow container 'db-upgrade' → image 123456789012.dkr.ecr.us-east-1.amazonaws"
            ".com/mlplat-production/mlflow:<tag>: the stack's registry has no repository 'mlplat-production/ml"
            "flow'; repositories: mlplat-production/serving, mlplat-production/tracking, mlplat-production/tr"
            "aining",
        ),
        (
            "contract-ready-image",
            "mlplat-production-tracking-server",
            "Deployment mlflow/mlflow container 'mlflow' → image 123456789012.dkr.ecr.us-east-1.amazonaws.com"
            "/mlplat-production/mlflow:<tag>: the stack's registry has no repository 'mlplat-production/mlflow"
            "'; repositories: mlplat-production/serving, mlplat-production/tracking, mlplat-production/traini"
            "ng",
        ),
    ],
    "service-awaited-pods-not": [
        (
            "contract-ready-endpoints",
            "mlplat-production-tracking-server",
            "Service mlflow/mlflow → Deployment mlflow/mlflow: the workload is not awaited (pulumi.com/skipA"
            "wait) because its pods may not turn ready, but the Service is: `pulumi up` waits for its endpoi"
            "nts until it times out",
        ),
    ],
    "autoscaler-taint-tag-missing": [
        (
            "contract-rt-instance-tags",
            "mlplat-production-gpu",
            "node pool mlplat-production-gpu (min 0) → cluster-autoscaler node-template tags: k8s.io/cluster"
            "-autoscaler/node-template/taint/nvidia.com/gpu='true:NoSchedule' (tag: missing); an empty pool "
            "is sized from these, so pods needing those labels or tolerating those taints never scale it up",
        ),
    ],
    "gpu-job-cpu-image": [
        (
            "contract-rt-image-contents",
            "mlplat-production-digits",
            "CronJob training/mlplat-production-digits container 'trainer' → image 123456789012.dkr.ecr.us-e"
            "ast-1.amazonaws.com/mlplat-production/training:<tag>: lacks cuda (requests nvidia.com/gpu); it "
            "carries boto3, mlflow, mlplat-train (training/Dockerfile)",
        ),
    ],
}

# The renders run the tests' image tag (MLPLAT_IMAGE_TAG, tests/conftest.py); messages naming an image say <tag>.
EXPECTED = {
    name: [
        (rule, resource, problem.replace("<tag>", os.environ["MLPLAT_IMAGE_TAG"])) for rule, resource, problem in found
    ]
    for name, found in EXPECTED.items()
}

FIRST_DEPLOY_DEFECTS = (
    "alb-action-port-as-string-number",
    "storage-class-auto-named",
    "training-requests-exceed-node",
    "backend-uri-expanded-into-argv",
    "allowed-hosts-miss-the-alb",
    "condensed-lb-controller-policy",
    "instances-lack-nth-tag",
    "job-holds-pulumi-up",
    "workload-before-capacity",
    "official-mlflow-image",
    "service-before-lb-controller",
)


@pytest.mark.parametrize("name", list(BREAKS))
def test_breaking_render_is_caught_with_the_exact_message(name: str, dev: Doc, production: Doc) -> None:
    assert contract_findings(broken(name, dev, production)) == EXPECTED[name]


def test_every_contract_rule_has_a_breaking_render() -> None:
    caught = {rule for findings in EXPECTED.values() for rule, _, _ in findings}
    assert caught == {r.id for r in CONTRACT_RULES}


@pytest.mark.parametrize("name", FIRST_DEPLOY_DEFECTS)
def test_first_deploy_defect_is_caught_by_mlplat_check_render(
    name: str, dev: Doc, production: Doc, tmp_path: Path
) -> None:
    base = BREAKS[name][0]
    path = tmp_path / "render.json"
    path.write_text(json.dumps(broken(name, dev, production)))
    result = CliRunner().invoke(app, ["check", base, "--render", str(path), "--format", "json"])
    assert result.exit_code == 1, result.output
    found = {(f["rule"], f["problem"]) for f in json.loads(result.output)["findings"]}
    assert {(rule, problem) for rule, _, problem in EXPECTED[name]} <= found


def test_github_annotations_name_the_rule_and_escape_newlines(production: Doc, tmp_path: Path) -> None:
    path = tmp_path / "render.json"
    path.write_text(json.dumps(broken("alb-action-port-as-string-number", {}, production)))
    result = CliRunner().invoke(app, ["check", "production", "--render", str(path), "--format", "github"])
    assert result.exit_code == 1
    line = next(x for x in result.output.splitlines() if "contract-ref-service-port" in x)
    assert line.startswith("::error file=") and str(path).replace(":", "%3A") in line
    assert "title=mlplat check production (production)%3A contract-ref-service-port::" in line
    assert 'port "80": no such port; ports: http(80). Fix: ' in line
    assert to_github([], "dev", "dev").startswith("::notice ")


def test_tracking_image_contents_match_its_requirements_file() -> None:
    pinned = {
        line.split("==")[0].split("-binary")[0]
        for line in (ROOT / "tracking" / "requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert pinned <= tables.OWN_IMAGES["tracking"].provides


def test_shipped_charts_have_declared_facts(production: Doc) -> None:
    for record in production["resources"]:
        if record["type"] == "kubernetes:helm.sh/v3:Release":
            facts = tables.CHARTS[tables.chart_name(record["inputs"]["chart"])]
            assert record["inputs"]["version"] in facts.versions
