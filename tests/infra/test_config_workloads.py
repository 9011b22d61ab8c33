"""Stack config of tracking, services and training jobs: defaults per environment and clear errors."""

from __future__ import annotations

from typing import Any

import pytest
from support.config import config, problems

from mlplat.components.model_service import ModelServiceSpec
from mlplat.components.training_job import TrainingJobSpec
from mlplat.infra import config as config_module
from mlplat.infra.config import load


def test_production_database_defaults_are_ha_and_protected() -> None:
    prod = load(config("production")).tracking.database
    dev = load(config("dev")).tracking.database
    assert prod.multi_az and prod.deletion_protection and prod.protect and prod.backup_retention_days >= 7
    assert not dev.multi_az and not dev.deletion_protection and not dev.protect
    assert load(config("production")).tracking.replicas == 2


def test_services_are_the_components_specs_wired_by_the_platform() -> None:
    cfg = load(
        config(
            "production",
            services={
                "digits": {
                    "modelUri": "models:/digits@champion",
                    "minReplicas": 3,
                    "maxReplicas": 9,
                    "resources": {"cpu": "2", "memory": "4Gi", "gpus": 1},
                    "canary": {"modelUri": "models:/digits@challenger", "weight": 25},
                }
            },
        )
    )
    spec = cfg.services["digits"]
    assert isinstance(spec, ModelServiceSpec), "one schema: the stack config holds the component's own spec"
    assert "namespace" not in ModelServiceSpec.model_fields and "image" not in ModelServiceSpec.model_fields
    assert (spec.min_replicas, spec.max_replicas, spec.resources.gpus) == (3, 9, 1)
    assert spec.canary is not None and spec.canary.weight == 25
    assert spec.allow_pickle is False, "pickles stay refused unless a service opts in"
    trusting = load(config("production", services={"digits": {"modelUri": "models:/d@a", "allowPickle": True}}))
    assert trusting.services["digits"].allow_pickle is True


def test_bad_service_entries_name_the_key() -> None:
    found = problems("dev", services={"Digits!": {"modelUri": "digits"}})
    assert any(p.startswith("mlplat:services: 'Digits!' is not a valid workload name") for p in found)
    found = problems("dev", services={"digits": {"modelUri": "digits-latest", "minReplicas": 5, "maxReplicas": 2}})
    assert any(
        p.startswith("mlplat:services.digits.modelUri: ModelServiceArgs.model_uri='digits-latest': not a model URI")
        for p in found
    )
    (problem,) = problems("dev", services={"digits": {"modelUri": "models:/d@a", "minReplicas": 5, "maxReplicas": 2}})
    assert "min_replicas (5) must be >= 1 and <= max_replicas (2)" in problem
    (problem,) = problems(
        "dev", services={"digits": {"modelUri": "models:/d@a", "canary": {"modelUri": "models:/d@b", "weight": 150}}}
    )
    assert problem.startswith("mlplat:services.digits.canary.weight:")
    (problem,) = problems("dev", services={"digits": {"modelUri": "models:/d@a", "resources": {"memory": "2GB"}}})
    assert problem.startswith(
        "mlplat:services.digits.resources.memory: Resources.memory='2GB': not a Kubernetes memory quantity"
    )


def test_training_job_config_is_checked_against_the_trainers_schema() -> None:
    cfg = load(
        config(
            "dev",
            trainingJobs={
                "digits": {"config": {"epochs": 3, "gate": {"min_accuracy": 0.9}}, "nodes": 2, "processesPerNode": 4}
            },
        )
    )
    args = cfg.training_jobs["digits"]
    assert isinstance(args, TrainingJobSpec)
    assert (args.nodes, args.processes_per_node, args.config["epochs"]) == (2, 4, 3)
    (problem,) = problems("dev", trainingJobs={"digits": {"config": {"epochs": 3, "gate": {"min_acuracy": 0.9}}}})
    assert problem.startswith("mlplat:trainingJobs.digits.config:") and "min_acuracy" in problem
    (problem,) = problems("dev", trainingJobs={"digits": {"schedule": "weekly"}})
    assert problem.startswith(
        "mlplat:trainingJobs.digits.schedule: TrainingJobArgs.schedule='weekly': not a cron schedule"
    )


def test_database_contradictions() -> None:
    (problem,) = problems("production", tracking={"database": {"engineVersion": "15"}})
    assert "parameterFamily 'postgres16' does not match engineVersion '15'" in problem
    (problem,) = problems("production", tracking={"database": {"backupRetentionDays": 40}})
    assert problem.startswith("mlplat:tracking.database.backupRetentionDays:")


def test_monitoring_defaults_per_environment_and_alert_thresholds() -> None:
    prod, dev = load(config("production")).monitoring, load(config("dev")).monitoring
    assert (prod.prometheus_replicas, prod.retention) == (2, "30d")
    assert (dev.prometheus_replicas, dev.retention) == (1, "7d")
    args = load(config("dev", monitoring={"alerts": {"p99LatencyMs": 80, "driftPsi": 0.3}})).monitoring
    assert args.thresholds.p99_latency_seconds == 0.08 and args.thresholds.drift_psi == 0.3
    seconds = load(config("dev", monitoring={"alerts": {"p99LatencySeconds": 0.08}})).monitoring
    assert seconds.thresholds == args.thresholds.replace(drift_psi=0.2), "the component's own key works too"
    assert load(config("dev", monitoring={"enabled": False})).monitoring.enabled is False
    quiet = load(config("dev", alarms={"enabled": False}, monitoring={"alertsReceiverOptional": True}))
    assert quiet.alarms.enabled is False
    flat = load(config("dev", alarms={"databaseCpuPercent": 70, "thresholds": {"evaluationMinutes": 10}})).alarms
    assert (flat.thresholds.database_cpu_percent, flat.thresholds.evaluation_minutes) == (70, 10)


def test_bad_monitoring_and_alarm_entries_name_the_key() -> None:
    found = problems("dev", monitoring={"retention": "2 weeks", "prometheusReplicas": 0})
    assert any(p.startswith("mlplat:monitoring.retention:") for p in found)
    assert any(p.startswith("mlplat:monitoring.prometheusReplicas:") for p in found)
    (problem,) = problems("dev", alarms={"emailSubscribers": ["oncall@example.com", "not-an-address"]})
    assert problem.startswith("mlplat:alarms.emailSubscribers:") and "not-an-address" in problem


def test_workload_names_fit_the_longest_kubernetes_name_they_make() -> None:
    longest = "a" * 31
    assert longest in load(config("production", services={longest: {"modelUri": "models:/m@champion"}})).services
    (problem,) = problems("production", services={"a" * 32: {"modelUri": "models:/m@champion"}})
    assert problem.startswith(f"mlplat:services: '{'a' * 32}' is not a valid workload name (a lowercase letter")
    (problem,) = problems("dev", trainingJobs={"9lives": {"resources": {"cpu": "1", "memory": "2Gi", "gpus": 0}}})
    assert "'9lives' is not a valid workload name" in problem


def test_services_and_jobs_of_a_preset_are_replaced_whole_by_the_stack_files(monkeypatch: pytest.MonkeyPatch) -> None:
    # The shipped presets declare no workloads; one that does (an organisation's own) is overridden map by map.
    shipped = config_module.preset

    def with_workloads(env: str) -> dict[str, Any]:
        defaults = shipped(env)
        defaults["mlplat:services"] = {
            "digits": {"modelUri": "models:/digits@champion", "minReplicas": 3, "maxReplicas": 3},
            "fraud": {"modelUri": "models:/fraud@champion"},
        }
        defaults["mlplat:trainingJobs"] = {
            "digits": {"nodes": 2, "resources": {"cpu": "1", "memory": "2Gi", "gpus": 0}}
        }
        return defaults

    monkeypatch.setattr(config_module, "preset", with_workloads)
    kept = load(config("dev"))
    assert set(kept.services) == {"digits", "fraud"} and kept.training_jobs["digits"].nodes == 2
    cfg = load(config("dev", services={"digits": {"modelUri": "models:/digits@challenger"}}, trainingJobs={}))
    assert list(cfg.services) == ["digits"], "a stack drops a preset's service by leaving it out"
    assert cfg.services["digits"].min_replicas == 2, "the field default, not the preset entry's 3"
    assert cfg.training_jobs == {}, "an empty map drops the preset's jobs"
