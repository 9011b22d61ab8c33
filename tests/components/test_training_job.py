"""TrainingJob: spot-safe failure policy, torchrun rendezvous for multi-node, GPU placement, CronJob."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pulumi
import pytest
import yaml
from support.secrets import CreatedSecrets, record_secrets, tracking_args, unresolved

from mlplat.components.pods import Resources
from mlplat.components.tracking import Tracking
from mlplat.components.training_job import TrainingJob, TrainingJobArgs
from mlplat.contracts.exit_codes import EXIT_PREEMPTED
from mlplat.infra.engine import Render

Jobs = Callable[..., Render]
PodOf = Callable[[dict], dict]


@pytest.fixture
def job(on_cluster: Callable[..., Render]) -> Jobs:
    def _render(**kwargs: object) -> Render:
        args = {
            "namespace": "training",
            "image": "123.dkr.ecr/training:1-cuda",
            "checkpoint_uri": "s3://art/ckpt/digits",
            "tracking_uri": "http://mlflow.mlflow.svc.cluster.local:5000",
            "config": {"epochs": 5},
            **kwargs,
        }
        return on_cluster(lambda opts: TrainingJob("digits", TrainingJobArgs(**args), opts=opts))  # type: ignore[arg-type]

    return _render


def test_failure_policy_retries_preemption_and_fails_fast_on_errors(job: Jobs) -> None:
    spec = job().one("kubernetes:batch/v1:Job").inputs["spec"]
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "Ignore", "onPodConditions": [{"status": "True", "type": "DisruptionTarget"}]}
    assert rules[1]["action"] == "Ignore" and rules[1]["onExitCodes"]["values"] == [EXIT_PREEMPTED]
    assert rules[2]["action"] == "FailJob"
    assert rules[2]["onExitCodes"] == {"containerName": "trainer", "operator": "NotIn", "values": [0, EXIT_PREEMPTED]}
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    assert spec["backoffLimit"] == 3 and spec["ttlSecondsAfterFinished"] == 86400


def test_single_node_runs_the_trainer_with_its_config(job: Jobs, pod_of: PodOf) -> None:
    stack = job()
    (container,) = pod_of(stack.one("kubernetes:batch/v1:Job").inputs)["containers"]
    assert container["command"] == ["mlplat", "train", "--config", "/etc/mlplat/training.yaml"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.mlflow.svc.cluster.local:5000"
    config = yaml.safe_load(stack.one("kubernetes:core/v1:ConfigMap").inputs["data"]["training.yaml"])
    assert config == {"epochs": 5, "checkpoint": {"uri": "s3://art/ckpt/digits"}, "runtime": {"device": "cuda"}}
    assert stack.by_type("kubernetes:core/v1:Service") == []


def test_multi_node_uses_an_indexed_job_and_a_headless_rendezvous_service(job: Jobs, pod_of: PodOf) -> None:
    stack = job(nodes=3, processes_per_node=4)
    spec = stack.one("kubernetes:batch/v1:Job").inputs["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 3, 3)
    pod = pod_of(stack.one("kubernetes:batch/v1:Job").inputs)
    service = stack.one("kubernetes:core/v1:Service").inputs
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert pod["subdomain"] == service["metadata"]["name"] == "digits"
    assert service["spec"]["selector"] == spec["template"]["metadata"]["labels"]
    (container,) = pod["containers"]
    assert container["command"][-2:] == ["--nproc-per-node", "4"]
    env = {e["name"]: e for e in container["env"]}
    assert env["PET_NNODES"]["value"] == "3"
    assert env["PET_MASTER_ADDR"]["value"] == "digits-0.digits"
    assert env["PET_MASTER_PORT"]["value"] == str(service["spec"]["ports"][0]["port"])
    assert "job-completion-index" in env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]


def test_gpu_jobs_land_on_the_tainted_spot_pool(job: Jobs, pod_of: PodOf) -> None:
    pod = pod_of(job(resources=Resources(cpu="8", memory="32Gi", gpus=4)).one("kubernetes:batch/v1:Job").inputs)
    assert pod["nodeSelector"] == {"workload": "gpu"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "4"
    shm = next(v for v in pod["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"]["medium"] == "Memory"


def test_cpu_jobs_stay_off_the_gpu_pool(job: Jobs, pod_of: PodOf) -> None:
    pod = pod_of(job(resources=Resources(cpu="2", memory="4Gi")).one("kubernetes:batch/v1:Job").inputs)
    assert "nodeSelector" not in pod and "tolerations" not in pod


def test_schedule_makes_a_cron_job_that_never_overlaps(job: Jobs, pod_of: PodOf) -> None:
    stack = job(schedule="0 3 * * 1")
    assert stack.by_type("kubernetes:batch/v1:Job") == []
    cron = stack.one("kubernetes:batch/v1:CronJob").inputs
    assert cron["spec"]["schedule"] == "0 3 * * 1" and cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["jobTemplate"]["spec"]["podFailurePolicy"]["rules"][2]["action"] == "FailJob"
    assert pod_of(cron)["containers"][0]["securityContext"]["runAsNonRoot"] is True


def test_bad_args() -> None:
    with pytest.raises(ValueError, match=r"nodes \(0\)"):
        TrainingJobArgs(namespace="n", image="i", nodes=0)
    with pytest.raises(
        ValueError,
        match=r"TrainingJobArgs.schedule='daily': not a cron schedule: 1 field instead "
        r"of 5; use 5 fields",
    ):
        TrainingJobArgs(namespace="n", image="i", schedule="daily")


@pytest.mark.parametrize(
    ("schedule", "problem"),
    [
        ("61 3 * * *", "minute 61 is above the maximum 59"),
        ("0 24 * * *", "hour 24 is above the maximum 23"),
        ("0 3 0 * *", "day of month 0 is below the minimum 1"),
        ("0 3 * 13 *", "month 13 is above the maximum 12"),
        ("0 3 * * 7", "day of week 7 is above the maximum 6 (Sunday is 0 or sun)"),
        ("0 3 * * mon-funday", "day of week 'funday' is not a number or a name (sun-sat)"),
        ("0 3 * * 5-1", "day of week range '5-1' starts after it ends"),
        ("*/0 3 * * *", "minute step in '*/0' is 0"),
        ("0 */25 * * *", "hour step 25 in '*/25' is longer than its range 0-23, so it matches 0 only"),
        ("0 0 30 2 *", "day of month '30' never falls in month '2', so it never runs"),
        (
            "CRON_TZ=Europe/Paris 0 3 * * *",
            "Kubernetes refuses TZ= and CRON_TZ= in a schedule (a CronJob's timeZone field sets the zone)",
        ),
        ("@fortnightly", "unknown descriptor '@fortnightly'"),
    ],
)
def test_schedules_the_api_server_would_refuse_or_never_run_are_refused(schedule: str, problem: str) -> None:
    with pytest.raises(ValueError) as caught:
        TrainingJobArgs(namespace="n", image="i", schedule=schedule)
    assert f"TrainingJobArgs.schedule={schedule!r}: not a cron schedule: {problem}; " in str(caught.value)


@pytest.mark.parametrize(
    "schedule",
    [
        "0 3 * * 1",
        "*/15 * * * *",
        "0 3 * * MON-fri",
        "0 0 1,15 jan-jun ?",
        "0 0 30 2 1",
        "30 2 1-7/2 * *",
        "@daily",
        "@every 6h",
    ],
)
def test_standard_schedules_pass(schedule: str) -> None:
    assert TrainingJobArgs(namespace="n", image="i", schedule=schedule).schedule == schedule


def test_a_job_name_must_fit_every_object_it_names(on_cluster: Callable[..., Render]) -> None:
    from mlplat.infra.engine import ProgramError

    def build(name: str, **kwargs: object) -> None:
        args = TrainingJobArgs(namespace="training", image="i:1-cuda", **kwargs)
        on_cluster(lambda opts: TrainingJob(name, args, opts=opts))

    with pytest.raises(ProgramError) as caught:
        build("Retrain_V2")
    assert (
        "TrainingJob name='Retrain_V2': not a DNS-1123 label (its pods take their hostnames from it); use "
        "lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters: "
        "it names Kubernetes objects, and the strictest, label value batch.kubernetes.io/job-name 'Retrain_V2', "
        "may have at most 63; e.g. 'retrain-v2'"
    ) in str(caught.value)
    build("2026-retrain")  # a single-node Job's name may start with a digit
    with pytest.raises(ProgramError, match=r"name='2026-retrain': not a DNS-1035 label \(it names the rendezvous "):
        build("2026-retrain", nodes=2)  # ... but multi-node names its headless Service after itself
    with pytest.raises(ProgramError, match=r"too long \(53 characters\); .* at most 52 characters: .*CronJob"):
        build("r" * 53, schedule="0 3 * * 1")
    build("r" * 53)
    with pytest.raises(ProgramError, match=r"at most 60 characters: .*pod hostname 'r{61}-10', may have at most 63"):
        build("r" * 61, nodes=11)


def test_a_one_off_job_never_holds_pulumi_up(job: Jobs) -> None:
    # pulumi-kubernetes waits for a Job to complete unless it carries pulumi.com/skipAwait: a run of hours (or one
    # waiting for a spot GPU) would otherwise fail `pulumi up` after its 10-minute await.
    metadata = job().one("kubernetes:batch/v1:Job").inputs["metadata"]
    assert metadata["annotations"] == {"pulumi.com/skipAwait": "true"}


def test_gpu_jobs_refuse_an_image_that_is_not_a_cuda_build(job: Jobs) -> None:
    from mlplat.infra.engine import ProgramError

    with pytest.raises(ProgramError, match=r"requests 1 GPU\(s\) but '123.dkr.ecr/training:1' is not a CUDA build"):
        job(image="123.dkr.ecr/training:1")
    with pytest.raises(ProgramError, match="image_cuda: the job requests 1 GPU"):
        job(image=pulumi.Output.from_input("123.dkr.ecr/training:1"))
    # Declared, or tagged by the registry's convention: accepted. A CPU job may run any build.
    job(image=pulumi.Output.from_input("123.dkr.ecr/training:1"), image_cuda=True)
    job(image="123.dkr.ecr/training:1@sha256:abc", image_cuda=True)
    job(image="123.dkr.ecr/training:1", resources=Resources(cpu="2", memory="4Gi"))


def test_gpu_jobs_make_the_trainer_insist_on_cuda(job: Jobs, pod_of: PodOf) -> None:
    stack = job(config={"epochs": 5, "runtime": {"deterministic": False}})
    config_map = stack.one("kubernetes:core/v1:ConfigMap").inputs
    document = yaml.safe_load(config_map["data"]["training.yaml"])
    assert document["runtime"] == {"deterministic": False, "device": "cuda"}
    cpu = job(resources=Resources(cpu="2", memory="4Gi")).one("kubernetes:core/v1:ConfigMap").inputs
    assert "runtime" not in yaml.safe_load(cpu["data"]["training.yaml"])


def test_every_pod_knows_its_attempt_from_the_jobs_uid(job: Jobs, pod_of: PodOf) -> None:
    """Retries of one Job run share the Job's controller-uid (they resume); a CronJob's next run is a new Job
    with a new uid (it trains from scratch). The trainer reads it as MLPLAT_ATTEMPT_ID."""
    from mlplat.training.lineage import ATTEMPT_ENV, JOB_NAME_ENV

    for stack in (job(), job(schedule="0 3 * * 1"), job(nodes=2)):
        resource = (stack.by_type("kubernetes:batch/v1:Job") or stack.by_type("kubernetes:batch/v1:CronJob"))[0]
        env = {e["name"]: e for e in pod_of(resource.inputs)["containers"][0]["env"]}
        assert (
            env[ATTEMPT_ENV]["valueFrom"]["fieldRef"]["fieldPath"]
            == "metadata.labels['batch.kubernetes.io/controller-uid']"
        )
        assert (
            env[JOB_NAME_ENV]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['batch.kubernetes.io/job-name']"
        )


def test_a_scheduled_job_keeps_one_run_per_lineage_and_the_spot_settings(job: Jobs, pod_of: PodOf) -> None:
    cron = job(schedule="0 3 * * 1").one("kubernetes:batch/v1:CronJob").inputs
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert pod_of(cron)["terminationGracePeriodSeconds"] == 90
    assert job().one("kubernetes:batch/v1:Job").inputs["metadata"]["annotations"] == {"pulumi.com/skipAwait": "true"}


# -- MLflow credentials (issue 18, item 5) ----------------------------------------------------------------------


def with_tracking(on_cluster: Callable[..., Render], created: CreatedSecrets, **job: object) -> Render:
    """A TrainingJob next to the Tracking whose trainer identity it gets, as MlPlatform wires them."""

    def build(opts: pulumi.ResourceOptions) -> None:
        record_secrets(created)
        tracking = Tracking(
            "tracking",
            tracking_args(),
            opts=opts,
        )
        args: dict[str, Any] = {
            "namespace": "training",
            "image": "123.dkr.ecr/training:1-cuda",
            "tracking_uri": tracking.uri,
            "tracking_credentials_secret": tracking.client_credentials("trainer", "training"),
            **job,
        }
        TrainingJob("digits", TrainingJobArgs(**args), opts=opts)

    return on_cluster(build)


@pytest.mark.parametrize("schedule", [None, "0 3 * * 1"])
def test_the_trainer_logs_in_to_mlflow_as_the_trainer_identity(
    on_cluster: Callable[..., Render], pod_of: PodOf, schedule: str | None
) -> None:
    created: CreatedSecrets = {}
    stack = with_tracking(on_cluster, created, schedule=schedule)
    kind = "kubernetes:batch/v1:CronJob" if schedule else "kubernetes:batch/v1:Job"
    (trainer,) = pod_of(stack.one(kind).inputs)["containers"]
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"] for e in trainer["env"] if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert refs == {
        "MLFLOW_TRACKING_USERNAME": {"name": "mlflow-trainer", "key": "username"},
        "MLFLOW_TRACKING_PASSWORD": {"name": "mlflow-trainer", "key": "password"},
    }
    assert unresolved(stack, created) == []  # every Secret key the job's and MLflow's pods read is rendered
    # The trainer sends the credentials MLflow's bootstrap gives the trainer user (a writer).
    assert created[("training", "mlflow-trainer")] == created[("mlflow", "mlflow-user-trainer")]
    assert created[("training", "mlflow-trainer")]["username"] == "trainer"
    bootstrap = pod_of(stack.one("kubernetes:apps/v1:Deployment").inputs)["initContainers"][1]
    assert "--writer=trainer" in bootstrap["command"]


def test_without_credentials_the_trainer_sends_none(job: Jobs, pod_of: PodOf) -> None:
    (trainer,) = pod_of(job().one("kubernetes:batch/v1:Job").inputs)["containers"]
    assert not {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} & {e["name"] for e in trainer["env"]}
