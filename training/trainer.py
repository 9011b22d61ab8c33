"""The trainer: data validation, resume, the loop, the evaluation gate and registration, tracked in MLflow.

:func:`train` runs the same in one process and as one rank of a torchrun job; rank 0 alone logs,
checkpoints and registers. It raises :class:`~mlplat.training.validation.DataValidationError`,
:class:`~mlplat.training.loop.Preempted` or :class:`GateRejected` for the outcomes the CLI turns into
exit codes (see :mod:`mlplat.training.exit_codes`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from torch.nn.parallel import DistributedDataParallel

from mlplat.training.checkpoint import CheckpointManager
from mlplat.training.config import TrainingConfig
from mlplat.training.data import DataSplits, load_data
from mlplat.training.distributed import (
    DistributedContext,
    any_rank,
    barrier,
    broadcast_state,
    init_distributed,
    shutdown,
)
from mlplat.training.gate import GateDecision, decide, evaluate
from mlplat.training.loop import LoopOutcome, Preempted, TrainLoop, steps_per_epoch
from mlplat.training.models import build_model
from mlplat.training.optim import build_optimizer, build_scheduler
from mlplat.training.preemption import PreemptionHandler
from mlplat.training.progress import Progress, make_progress
from mlplat.training.registry import check_exportable, load_alias, register_model
from mlplat.training.reproducibility import configure_determinism, git_commit, seed_everything
from mlplat.training.storage import open_store
from mlplat.training.tracking import MlflowTracker, NullTracker, Tracker
from mlplat.training.validation import DataValidationError, ValidationReport, validate_data

log = logging.getLogger("mlplat.training")


@dataclass
class TrainingResult:
    """The outcome of a run, as seen by this rank (only rank 0 has gate and registry results)."""

    rank: int
    run_id: str | None
    final_step: int
    resumed_from_step: int | None
    history: list[dict[str, float]]
    train_seconds: float
    samples_per_second: float
    cpu_seconds: float
    """Process CPU time (all threads) of the training loop on this rank."""
    checkpoint_seconds: list[float] = field(default_factory=list)
    test_metrics: dict[str, float] | None = None
    gate: GateDecision | None = None
    registered_version: str | None = None


class GateRejected(Exception):
    """The evaluation gate rejected the model; nothing was registered. :attr:`decision` says why."""

    def __init__(self, decision: GateDecision, result: TrainingResult) -> None:
        self.decision = decision
        self.result = result
        super().__init__(decision.render())


def train(config: TrainingConfig, *, progress: Progress | None = None) -> TrainingResult:
    """Train, gate and (on success) register per ``config``; resumes from a checkpoint when one exists.

    ``progress`` receives rank 0's position and metrics (default: a bar on a terminal, log lines otherwise).
    """
    # Determinism first: cuBLAS reads its workspace setting when CUDA starts, which device selection does.
    configure_determinism(config.runtime.deterministic, config.runtime.num_threads)
    ctx = init_distributed(config.runtime.device)
    try:
        with PreemptionHandler() as preemption:
            return _train(config, ctx, preemption, progress)
    finally:
        shutdown(ctx)


def _load_validated(config: TrainingConfig) -> tuple[DataSplits | None, ValidationReport]:
    try:
        data = load_data(config.data, config.seed)
    except DataValidationError as error:
        return None, error.report
    return data, validate_data(data, config.data.validation)


def _reject_data(tracker: Tracker, report: ValidationReport) -> DataValidationError:
    tracker.start(None)
    tracker.set_tags({"mlplat.data_validation": "failed"})
    tracker.log_dict(report.model_dump(), "data_validation.json")
    tracker.log_text(report.render(), "data_validation.txt")
    tracker.end("FAILED")
    return DataValidationError(report)


def _log_new_run(tracker: Tracker, config: TrainingConfig, ctx: DistributedContext, data: DataSplits,
                 report: ValidationReport) -> None:
    tracker.log_params({**config.flat_params(), "world_size": str(ctx.world_size)})
    tracker.set_tags({
        "mlflow.source.git.commit": git_commit(),
        "mlplat.data_sha256": data.fingerprint(),
        "mlplat.config_fingerprint": config.fingerprint(),
        "mlplat.device": str(ctx.device),
        "mlplat.data_validation": "passed",
    })
    tracker.log_dict(config.model_dump(mode="json"), "training_config.yaml")
    tracker.log_dict(report.model_dump(), "data_validation.json")


def _resume_state(config: TrainingConfig, ctx: DistributedContext,
                  manager: CheckpointManager | None) -> dict[str, Any] | None:
    """Rank 0 finds the newest valid checkpoint and hands it to every rank (local disks need not be shared)."""
    state = None
    if manager is not None and config.checkpoint.resume:
        loaded = manager.load_latest()
        if loaded is not None:
            state = loaded.state
            log.info("resuming from checkpoint step %d in %s", loaded.manifest.step, manager.store.uri)
            if state["config_fingerprint"] != config.fingerprint():
                log.warning(
                    "checkpoint in %s was written with a different config (fingerprint %s, now %s); "
                    "resuming anyway: give each training job its own checkpoint.uri",
                    manager.store.uri, state["config_fingerprint"], config.fingerprint(),
                )
    return broadcast_state(ctx, state)


def _gate(config: TrainingConfig, core: Any, data: DataSplits, ctx: DistributedContext) -> GateDecision:
    metrics = evaluate(core, data.x_test, data.y_test, data.classes, ctx.device)
    metrics = {k: v for k, v in metrics.items() if k != "loss"}
    champion_metrics, champion_version = None, None
    if config.gate.must_beat_champion and config.registry.model_name:
        champion = load_alias(config.registry.model_name, config.gate.champion_alias)
        if champion is not None:
            champion_version, model = champion
            try:
                champion_metrics = evaluate(model, data.x_test, data.y_test, data.classes, ctx.device)
            except Exception as error:  # can't compare, so don't replace it: the gate fails and says why
                champion_metrics = {"accuracy": float("inf"), "macro_f1": float("inf")}
                log.error("champion v%s could not be evaluated on this test split: %s", champion_version, error)
            champion_metrics.pop("loss", None)
    return decide(metrics, config.gate, champion_metrics, champion_version)


def _train(config: TrainingConfig, ctx: DistributedContext, preemption: PreemptionHandler,
           progress: Progress | None) -> TrainingResult:
    seed_everything(config.seed)
    tracker: Tracker = MlflowTracker(config.tracking) if ctx.is_main else NullTracker()

    loaded_data, report = _load_validated(config)
    if loaded_data is None or not report.passed:
        raise _reject_data(tracker, report)
    data = loaded_data.as_float32()

    manager = (
        CheckpointManager(open_store(config.checkpoint.uri, config.checkpoint.s3_endpoint_url),
                          config.checkpoint.keep_last)
        if ctx.is_main else None
    )
    try:
        state = _resume_state(config, ctx, manager)
        tracker.start(state["mlflow_run_id"] if state else None)
        if state is None:
            _log_new_run(tracker, config, ctx, data, report)
        else:
            tracker.set_tags({"mlplat.resumed_from_step": str(state["step"])})

        model = build_model(config.model, data.x_train.shape[1], data.classes).to(ctx.device)
        if ctx.is_main and config.registry.model_name and config.registry.serialization_format == "pt2":
            check_exportable(model, data.x_train)
        optimizer = build_optimizer(config.optimizer, model)
        total = steps_per_epoch(len(data.x_train), ctx.world_size, config.batch_size) * config.epochs
        scheduler = build_scheduler(config.schedule, optimizer, total)
        if progress is None or not ctx.is_main:
            progress = make_progress(ctx.is_main)
        wrapped = model
        if ctx.is_distributed:
            wrapped = DistributedDataParallel(model, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None)
        loop = TrainLoop(
            config=config, ctx=ctx, model=wrapped, optimizer=optimizer, scheduler=scheduler, data=data,
            checkpoints=manager, tracker=tracker, progress=progress, preemption=preemption,
            fingerprint=config.fingerprint(),
        )
        if state is not None:
            loop.load_state_dict(state)
        outcome = _run_loop(loop, tracker, ctx, preemption)
    except Preempted:
        raise  # _run_loop closed the run as KILLED
    except BaseException:
        tracker.end("FAILED")  # e.g. a custom model builder failed after the run started
        raise
    finally:
        if manager is not None:
            manager.close()

    result = TrainingResult(
        rank=ctx.rank, run_id=tracker.run_id, final_step=outcome.final_step,
        resumed_from_step=state["step"] if state else None, history=outcome.history,
        train_seconds=outcome.train_seconds,
        samples_per_second=outcome.samples / outcome.train_seconds if outcome.train_seconds > 0 else 0.0,
        cpu_seconds=outcome.cpu_seconds,
        checkpoint_seconds=list(manager.save_seconds) if manager else [],
    )
    if outcome.final_step > outcome.start_step:
        tracker.log_metrics({"train_seconds": result.train_seconds,
                             "train_samples_per_second": result.samples_per_second}, step=outcome.final_step)
    # Every rank stays in the process group until rank 0 has gated and registered: a rank that tears its
    # group down while another still holds it can abort the process (seen with gloo).
    if not ctx.is_main:
        barrier(ctx)
        return result
    try:
        return _gate_and_register(config, loop, data, ctx, tracker, result)
    except BaseException:
        tracker.end("FAILED")
        raise
    finally:
        barrier(ctx)


def _run_loop(loop: TrainLoop, tracker: Tracker, ctx: DistributedContext,
              preemption: PreemptionHandler) -> LoopOutcome:
    try:
        outcome = loop.run()
        # SIGTERM after the last step: the final checkpoint exists; a retry goes straight to the gate.
        if any_rank(ctx, preemption.requested):
            raise Preempted(loop.step)
        barrier(ctx)
    except Preempted:
        tracker.end("KILLED")
        raise
    except BaseException:
        tracker.end("FAILED")
        raise
    return outcome


def _gate_and_register(config: TrainingConfig, loop: TrainLoop, data: DataSplits, ctx: DistributedContext,
                       tracker: Tracker, result: TrainingResult) -> TrainingResult:
    decision = _gate(config, loop.core, data, ctx)
    result.gate, result.test_metrics = decision, decision.metrics
    tracker.log_metrics({f"test_{k}": v for k, v in decision.metrics.items()}, step=loop.step, wait=True)
    tracker.set_tags({"mlplat.gate": "passed" if decision.passed else "rejected"})
    tracker.log_dict(decision.model_dump(), "gate.json")
    if not decision.passed:
        log.error("%s", decision.render())
        tracker.end("FINISHED")
        raise GateRejected(decision, result)
    log.info("%s", decision.render())
    done = tracker.tags().get("mlplat.registered_version")
    if config.registry.model_name and done:
        # A retried job whose first attempt registered before it died: don't register a duplicate.
        log.info("this run already registered %s version %s", config.registry.model_name, done)
        result.registered_version = done
    elif config.registry.model_name:
        result.registered_version = register_model(
            loop.core, name=config.registry.model_name, alias=config.registry.alias, x_train=data.x_train,
            num_classes=data.classes, feature_names=data.feature_names,
            tags={"mlplat.run_id": str(tracker.run_id), "mlplat.test_accuracy": f"{decision.metrics['accuracy']:.4f}",
                  "mlplat.test_macro_f1": f"{decision.metrics['macro_f1']:.4f}"},
            serialization_format=config.registry.serialization_format,
        )
        tracker.set_tags({"mlplat.registered_version": result.registered_version})
    tracker.end("FINISHED")
    return result
