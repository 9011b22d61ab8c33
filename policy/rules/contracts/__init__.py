"""Contract rules: what rendered resources promise each other, checked offline by ``mlplat check``.

One module per family: :mod:`.references` (names resolve), :mod:`.scheduling` (pods fit nodes that admit them),
:mod:`.readiness` (awaited resources can become ready), :mod:`.runtime` (what the platform's software needs at run
time). :mod:`.graph` indexes the render once per run; :mod:`.tables` declares what charts and add-ons create.

:data:`CONTRACT_RULES` lists them; :data:`mlplat.policy.rules.RULES` runs them after the policy rules (and so the
CrossGuard pack serves them too).
"""

from __future__ import annotations

from mlplat.policy.framework import ADVISORY, MANDATORY, StackRule
from mlplat.policy.rules.contracts import readiness, references, runtime, scheduling

CONTRACT_RULES: tuple[StackRule, ...] = (
    # References resolve
    StackRule(
        "contract-ref-namespace",
        "objects and Helm releases name a namespace that exists",
        MANDATORY,
        references.namespaces_exist,
    ),
    StackRule(
        "contract-ref-storage-class",
        "PVCs, volumeClaimTemplates and chart values name a StorageClass that exists under that exact name",
        MANDATORY,
        references.storage_classes_exist,
    ),
    StackRule(
        "contract-ref-secret",
        "Secrets (and keys) read by env, volumes and chart values exist",
        MANDATORY,
        references.secrets_exist,
    ),
    StackRule(
        "contract-ref-configmap",
        "ConfigMaps (and keys) read by env and volumes exist",
        MANDATORY,
        references.config_maps_exist,
    ),
    StackRule(
        "contract-ref-service-account",
        "a pod's ServiceAccount exists in its namespace",
        MANDATORY,
        references.service_accounts_exist,
    ),
    StackRule(
        "contract-ref-irsa",
        "an IRSA role trusts the ServiceAccount annotated with it",
        MANDATORY,
        references.irsa_roles_trust_their_service_accounts,
    ),
    StackRule(
        "contract-ref-service-port",
        "Ingress backends, ALB actions and ServiceMonitors name a Service port "
        "that exists; named targetPorts are container ports",
        MANDATORY,
        references.service_ports_exist,
    ),
    StackRule(
        "contract-ref-selector",
        "Services and PDBs select pods, HPAs target a workload, ServiceMonitors select Services",
        MANDATORY,
        references.selectors_match,
    ),
    StackRule(
        "contract-ref-priority-class",
        "PriorityClasses named by pods and chart values exist",
        MANDATORY,
        references.priority_classes_exist,
    ),
    StackRule(
        "contract-ref-ingress-class",
        "an Ingress's class is created by the stack or a chart it installs",
        MANDATORY,
        references.ingress_classes_exist,
    ),
    StackRule(
        "contract-ref-chart-facts",
        "charts the contract rules see into are at a version whose facts are declared",
        ADVISORY,
        references.chart_facts_declared,
    ),
    # Every pod can be scheduled
    StackRule(
        "contract-sched-placement",
        "some node pool admits each workload's pods (labels, affinity, taints)",
        MANDATORY,
        scheduling.pods_have_a_pool,
    ),
    StackRule(
        "contract-sched-fits",
        "requests fit the smallest node of a pool that admits the pods, after kubelet reservations and DaemonSets",
        MANDATORY,
        scheduling.pods_fit,
    ),
    StackRule(
        "contract-sched-gpu",
        "GPU pods land on a GPU pool where the NVIDIA device plugin runs",
        MANDATORY,
        scheduling.gpu_pods_have_a_device_plugin,
    ),
    # Every awaited resource can become ready
    StackRule(
        "contract-ready-image",
        "images come from a repository the stack creates or a declared external registry",
        MANDATORY,
        readiness.images_come_from_somewhere,
    ),
    StackRule(
        "contract-ready-endpoints",
        "awaited Services select awaited, long-running pods",
        MANDATORY,
        readiness.services_get_endpoints,
    ),
    StackRule(
        "contract-ready-order",
        "pods wait for node capacity, volumes for the EBS CSI driver, Services and "
        "Ingresses for the LB controller, custom resources for their CRDs",
        MANDATORY,
        readiness.ordered_after_what_they_need,
    ),
    StackRule(
        "contract-ready-job",
        "a Job does not hold `pulumi up` unless it says it is meant to",
        MANDATORY,
        readiness.jobs_do_not_block,
    ),
    # Runtime contracts the platform knows
    StackRule(
        "contract-rt-secret-uri",
        "secrets reach containers as env vars, never $(VAR)-expanded into argv; "
        "plain URIs percent-encode their password",
        MANDATORY,
        runtime.secret_uris_stay_encoded,
    ),
    StackRule(
        "contract-rt-allowed-hosts",
        "MLflow's --allowed-hosts covers its Services' names and the Ingress host",
        MANDATORY,
        runtime.mlflow_allows_its_hosts,
    ),
    StackRule(
        "contract-rt-controller-iam",
        "each controller's IAM role grants its pinned upstream policy",
        MANDATORY,
        runtime.controllers_have_their_upstream_policy,
    ),
    StackRule(
        "contract-rt-instance-tags",
        "tags controllers read (NTH managed tag, autoscaler node templates) are on the instances and groups",
        MANDATORY,
        runtime.controllers_find_their_tags,
    ),
    StackRule(
        "contract-rt-image-contents",
        "images carry what their workloads need (database driver, boto3, CUDA)",
        MANDATORY,
        runtime.images_carry_what_workloads_need,
    ),
)
