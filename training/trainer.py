"""The trainer: data validation, resume, the loop, the evaluation gate and registration, tracked in MLflow.

:func:`train` runs the same in one process and as one rank of a torchrun job; rank 0 alone logs,
checkpoints and registers. It raises :class:`~mlplat.training.validation.DataValidationError`,
:class:`~mlplat.training.loop.Preempted` (SIGTERM, or a transient fault past its retry budget),
:class:`~mlplat.training.loop.NonFiniteLoss`, :class:`~mlplat.training.lineage.LineageMismatch`,
:class:`~mlplat.training.faults.TransientFault` or :class:`GateRejected` for the outcomes the CLI turns
into exit codes (see :mod:`mlplat.contracts.exit_codes`). Which checkpoints a run may resume is decided by
:mod:`mlplat.training.lineage`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mlplat.contracts.training_config import TrainingConfig
from mlplat.training.checkpoint import CheckpointManager
from mlplat.training.data import DataSplits, load_data
from mlplat.training.distributed import (
    DistributedContext,
    any_rank,
    barrier,
    broadcast_state,
    init_distributed,
    shutdown,
)
from mlplat.training.faults import RetryPolicy, retry_call
from mlplat.training.gate import GateDecision, decide, evaluate
from mlplat.training.lineage import (
    AttemptPlan,
    Fingerprint,
    LineageMismatch,
    model_fingerprint,
    plan_attempt,
    read_record,
    write_record,
)
from mlplat.training.loop import LoopOutcome, NonFiniteLoss, Preempted, TrainLoop, steps_per_epoch
from mlplat.training.models import build_model
from mlplat.training.optim import build_optimizer, build_scheduler
from mlplat.training.preemption import PreemptionHandler
from mlplat.training.progress import Progress, make_progress
from mlplat.training.registry import check_exportable, find_version_for_run, load_alias, register_model
from mlplat.training.reproducibility import configure_determinism, git_commit, seed_everything
from mlplat.training.storage import ByteStore, open_store
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


def _log_rejected_data(tracker: Tracker, report: ValidationReport) -> None:
    tracker.start(None)
    tracker.set_tags({"mlplat.data_validation": "failed"})
    tracker.log_dict(report.model_dump(), "data_validation.json")
    tracker.log_text(report.render(), "data_validation.txt")


def _log_new_run(
    tracker: Tracker,
    config: TrainingConfig,
    ctx: DistributedContext,
    fingerprint: Fingerprint,
    report: ValidationReport,
    attempt: str | None,
) -> None:
    tracker.log_params({**config.flat_params(), "world_size": str(ctx.world_size)})
    tracker.set_tags(
        {
            "mlflow.source.git.commit": git_commit(),
            "mlplat.data_sha256": fingerprint.data,
            "mlplat.config_fingerprint": fingerprint.config,
            "mlplat.model_fingerprint": fingerprint.model,
            "mlplat.attempt": attempt or "-",
            "mlplat.device": str(ctx.device),
            "mlplat.data_validation": "passed",
        }
    )
    tracker.log_dict(config.model_dump(mode="json"), "training_config.yaml")
    tracker.log_dict(report.model_dump(), "data_validation.json")


@dataclass
class _Lineage:
    """Rank 0's view of the attempt this run belongs to."""

    store: ByteStore
    plan: AttemptPlan
    policy: RetryPolicy
    starting_over: int = 0
    """Corrupt checkpoints found when none verified (the attempt starts over from step 0)."""

    def commit(self, **changes: Any) -> None:
        """Write the attempt record with ``changes`` (status, MLflow run id, outcome)."""
        self.plan = dataclasses.replace(
            self.plan, record=write_record(self.store, dataclasses.replace(self.plan.record, **changes), self.policy)
        )


@dataclass
class _AttemptOutcome:
    """Where rank 0 records how its attempt ended, once the MLflow run is closed (see :func:`_train`)."""

    lineage: _Lineage | None = None

    def record(self, status: str, outcome: str) -> None:
        """Commit the attempt's terminal status (no-op on other ranks, or before the attempt was planned)."""
        if self.lineage is not None:
            self.lineage.commit(status=status, outcome=outcome)


def _plan_lineage(config: TrainingConfig, store: ByteStore, fingerprint: Fingerprint, policy: RetryPolicy) -> _Lineage:
    plan = plan_attempt(read_record(store, policy), fingerprint, uri=store.uri, resume=config.checkpoint.resume)
    log.info("attempt %s: %s", plan.attempt, plan.reason)
    for note in plan.notes:
        log.warning("starting a fresh attempt: the %s", note)
    lineage = _Lineage(store=store, plan=plan, policy=policy)
    if not plan.resume:
        lineage.commit()  # the commit point: from here on, only this attempt's checkpoints count
        if plan.retired:
            log.info(
                "attempt %s replaces attempt %s in %s; its checkpoints are retired",
                plan.attempt,
                plan.retired,
                store.uri,
            )
    return lineage


def _resume_state(
    config: TrainingConfig,
    ctx: DistributedContext,
    manager: CheckpointManager | None,
    lineage: _Lineage | None,
    fingerprint: Fingerprint | None,
) -> dict[str, Any] | None:
    """Rank 0 finds this attempt's newest valid checkpoint and hands it to every rank (local disks need not
    be shared). A lineage error on rank 0 is raised on every rank."""
    state: dict[str, Any] | None = None
    error: str | None = None
    if manager is not None and lineage is not None and fingerprint is not None:
        try:
            retry_call(manager.retire_foreign, f"retiring old checkpoints in {manager.store.uri}", lineage.policy)
            if lineage.plan.resume:
                state = _load_attempt_state(manager, lineage, fingerprint)
        except LineageMismatch as mismatch:
            if not ctx.is_distributed:
                raise
            error = str(mismatch)
    if ctx.is_distributed:
        box = broadcast_state(ctx, {"error": error} if error else state)
        if box is not None and "error" in box and len(box) == 1:
            raise LineageMismatch(config.checkpoint.uri, [str(box["error"])])
        return box
    return state


def _load_attempt_state(
    manager: CheckpointManager, lineage: _Lineage, fingerprint: Fingerprint
) -> dict[str, Any] | None:
    loaded = retry_call(manager.load_latest, f"reading checkpoints in {manager.store.uri}", lineage.policy)
    if loaded is None:
        if manager.corrupt_steps:
            lineage.starting_over = len(manager.corrupt_steps)
            log.error(
                "STARTING OVER: every checkpoint of attempt %s in %s is corrupt (steps %s); training restarts "
                "from step 0 (metric checkpoint_start_over)",
                lineage.plan.attempt,
                manager.store.uri,
                sorted(manager.corrupt_steps),
            )
            retry_call(lambda: manager.retire_newer_than(-1), "retiring corrupt checkpoints", lineage.policy)
        else:
            log.info(
                "attempt %s has no checkpoint yet in %s: starting at step 0", lineage.plan.attempt, manager.store.uri
            )
        return None
    state = loaded.state
    recorded = Fingerprint(
        config=state.get("config_fingerprint", "?"),
        data=state.get("data_fingerprint", "?"),
        model=state.get("model_fingerprint", "?"),
    )
    differences = recorded.differences(fingerprint)
    if differences:
        raise LineageMismatch(
            f"{manager.store.uri}/{loaded.manifest.payload}",
            [
                f"checkpoint step {loaded.manifest.step} of attempt {lineage.plan.attempt} holds a different {d}"
                for d in differences
            ]
            + ["refusing to load it into this run; run a new Job (a new attempt) to train the change"],
        )
    if manager.corrupt_steps:
        retry_call(
            lambda: manager.retire_newer_than(loaded.manifest.step), "retiring corrupt checkpoints", lineage.policy
        )
    log.info("resuming from checkpoint step %d in %s", loaded.manifest.step, manager.store.uri)
    return state


def _gate(config: TrainingConfig, core: Any, data: DataSplits, ctx: DistributedContext) -> GateDecision:
    metrics = evaluate(core, data.x_test, data.y_test, data.classes, ctx.device)
    metrics = {k: v for k, v in metrics.items() if k != "loss"}
    champion_metrics, champion_version = None, None
    if config.gate.must_beat_champion and config.registry.model_name:
        name, alias = config.registry.model_name, config.gate.champion_alias
        champion = retry_call(lambda: load_alias(name, alias), f"loading {name}@{alias}", _policy(config))
        if champion is not None:
            champion_version, model = champion
            try:
                champion_metrics = evaluate(model, data.x_test, data.y_test, data.classes, ctx.device)
            except Exception as error:  # can't compare, so don't replace it: the gate fails and says why
                champion_metrics = {"accuracy": float("inf"), "macro_f1": float("inf")}
                log.error("champion v%s could not be evaluated on this test split: %s", champion_version, error)
            champion_metrics.pop("loss", None)
    return decide(metrics, config.gate, champion_metrics, champion_version)


def _policy(config: TrainingConfig) -> RetryPolicy:
    return RetryPolicy(
        config.retry.budget_seconds, config.retry.initial_backoff_seconds, config.retry.max_backoff_seconds
    )


@contextlib.contextmanager
def _closes_run(tracker: Tracker) -> Iterator[None]:
    """The one place the MLflow run is closed, once, with the status the way out of the block implies.

    FINISHED when the block returns or the gate rejects the model (the run itself succeeded), KILLED when
    preempted (a retry reopens it), FAILED for anything else. A failure before any run could open (data
    rejected, a model that does not build) has its own run, which the block opens with ``start(None)``.
    """
    try:
        yield
    except GateRejected:
        tracker.end("FINISHED", must_succeed=True)
        raise
    except Preempted:
        tracker.end("KILLED")
        raise
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.end("FINISHED", must_succeed=True)


def _train(
    config: TrainingConfig, ctx: DistributedContext, preemption: PreemptionHandler, progress: Progress | None
) -> TrainingResult:
    seed_everything(config.seed)
    tracker: Tracker = MlflowTracker(config.tracking, _policy(config)) if ctx.is_main else NullTracker()
    attempt = _AttemptOutcome()
    # The attempt's terminal status is committed after the run is closed: if closing fails (tracking
    # outage), the retried pod still resumes this attempt and closes the run instead of training again.
    try:
        with _closes_run(tracker):
            result = _train_tracked(config, ctx, preemption, progress, tracker, attempt)
    except NonFiniteLoss as diverged:
        attempt.record("failed", str(diverged))  # terminal: a later run starts a new attempt
        raise
    except GateRejected:
        attempt.record("finished", "gate rejected")
        raise
    name = config.registry.model_name
    attempt.record("finished", f"registered {name} version {result.registered_version}" if name else "gate passed")
    return result


def _train_tracked(
    config: TrainingConfig,
    ctx: DistributedContext,
    preemption: PreemptionHandler,
    progress: Progress | None,
    tracker: Tracker,
    attempt: _AttemptOutcome,
) -> TrainingResult:
    loaded_data, report = _load_validated(config)
    if loaded_data is None or not report.passed:
        _log_rejected_data(tracker, report)
        raise DataValidationError(report)
    data = loaded_data.as_float32()

    # The model comes first: its architecture is part of the fingerprint that decides whether to resume.
    model = _build_model(config, data, ctx, tracker)
    fingerprint = Fingerprint(config=config.fingerprint(), data=data.fingerprint(), model=model_fingerprint(model))
    manager, lineage = _open_attempt(config, ctx, fingerprint, attempt)
    try:
        state = _resume_state(config, ctx, manager, lineage, fingerprint)
        _start_run(tracker, state, lineage)
        if state is None:
            _log_new_run(tracker, config, ctx, fingerprint, report, lineage.plan.attempt if lineage else None)
        else:
            tracker.set_tags({"mlplat.resumed_from_step": str(state["step"])})
        _log_corrupt_checkpoints(tracker, state, manager, lineage)
        loop = _build_loop(config, ctx, model, data, manager, tracker, progress, preemption, fingerprint, lineage)
        if state is not None:
            loop.load_state_dict(state)
        outcome = _run_loop(loop, tracker, ctx, preemption)
    finally:
        if manager is not None:
            manager.close()

    result = TrainingResult(
        rank=ctx.rank,
        run_id=tracker.run_id,
        final_step=outcome.final_step,
        resumed_from_step=state["step"] if state else None,
        history=outcome.history,
        train_seconds=outcome.train_seconds,
        samples_per_second=outcome.samples / outcome.train_seconds if outcome.train_seconds > 0 else 0.0,
        cpu_seconds=outcome.cpu_seconds,
        checkpoint_seconds=list(manager.save_seconds) if manager else [],
    )
    if outcome.final_step > outcome.start_step:
        tracker.log_metrics(
            {"train_seconds": result.train_seconds, "train_samples_per_second": result.samples_per_second},
            step=outcome.final_step,
        )
    # Every rank stays in the process group until rank 0 has gated and registered: a rank that tears its
    # group down while another still holds it can abort the process (seen with gloo).
    if not ctx.is_main:
        barrier(ctx)
        return result
    try:
        return _gate_and_register(config, loop, data, ctx, tracker, result)
    finally:
        barrier(ctx)


def _build_model(config: TrainingConfig, data: DataSplits, ctx: DistributedContext, tracker: Tracker) -> nn.Module:
    """The configured model on this rank's device; rank 0 checks up front that a ``pt2`` registration can export it."""
    try:
        model = build_model(config.model, data.x_train.shape[1], data.classes).to(ctx.device)
        if ctx.is_main and config.registry.model_name and config.registry.serialization_format == "pt2":
            check_exportable(model, data.x_train)
    except BaseException:
        tracker.start(None)  # the failure gets a run of its own: the attempt's run is not known yet
        raise
    return model


def _open_attempt(
    config: TrainingConfig, ctx: DistributedContext, fingerprint: Fingerprint, attempt: _AttemptOutcome
) -> tuple[CheckpointManager | None, _Lineage | None]:
    """Rank 0 plans the attempt and opens its checkpoints; other ranks get ``(None, None)``."""
    if not ctx.is_main:
        return None, None
    policy = _policy(config)
    store = open_store(config.checkpoint.uri, config.checkpoint.s3_endpoint_url)
    try:
        lineage = _plan_lineage(config, store, fingerprint, policy)
    except LineageMismatch as mismatch:
        if not ctx.is_distributed:
            raise
        broadcast_state(ctx, {"error": str(mismatch)})
        raise
    attempt.lineage = lineage
    manager = CheckpointManager(store, config.checkpoint.keep_last, attempt=lineage.plan.attempt, retry=policy)
    return manager, lineage


def _start_run(tracker: Tracker, state: dict[str, Any] | None, lineage: _Lineage | None) -> None:
    """Start the MLflow run: the checkpoint's, else the attempt's, else a new one; the attempt records its id."""
    run_id = state["mlflow_run_id"] if state else None
    if run_id is None and lineage is not None and lineage.plan.resume:
        run_id = lineage.plan.record.mlflow_run_id  # the attempt's run, restarted from step 0
    tracker.start(run_id)
    if lineage is not None and lineage.plan.record.mlflow_run_id != tracker.run_id:
        lineage.commit(mlflow_run_id=tracker.run_id)


def _log_corrupt_checkpoints(
    tracker: Tracker, state: dict[str, Any] | None, manager: CheckpointManager | None, lineage: _Lineage | None
) -> None:
    """Flag an attempt that started over because no checkpoint verified; count corrupt ones a resume skipped."""
    if lineage is not None and lineage.starting_over:
        tracker.set_tags({"mlplat.checkpoint_start_over": f"{lineage.starting_over} corrupt checkpoint(s)"})
        tracker.log_metrics({"checkpoint_start_over": 1.0, "checkpoints_corrupt": float(lineage.starting_over)}, step=0)
    elif manager is not None and manager.corrupt_steps and state is not None:
        tracker.log_metrics({"checkpoints_corrupt": float(len(manager.corrupt_steps))}, step=state["step"])


def _build_loop(
    config: TrainingConfig,
    ctx: DistributedContext,
    model: nn.Module,
    data: DataSplits,
    manager: CheckpointManager | None,
    tracker: Tracker,
    progress: Progress | None,
    preemption: PreemptionHandler,
    fingerprint: Fingerprint,
    lineage: _Lineage | None,
) -> TrainLoop:
    """The loop over ``model`` (wrapped in DDP across ranks), with its optimizer, schedule and progress display."""
    optimizer = build_optimizer(config.optimizer, model)
    total = steps_per_epoch(len(data.x_train), ctx.world_size, config.batch_size) * config.epochs
    scheduler = build_scheduler(config.schedule, optimizer, total)
    if progress is None or not ctx.is_main:
        progress = make_progress(ctx.is_main)
    wrapped = model
    if ctx.is_distributed:
        wrapped = DistributedDataParallel(model, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None)
    return TrainLoop(
        config=config,
        ctx=ctx,
        model=wrapped,
        optimizer=optimizer,
        scheduler=scheduler,
        data=data,
        checkpoints=manager,
        tracker=tracker,
        progress=progress,
        preemption=preemption,
        fingerprint=fingerprint.config,
        lineage={
            "attempt": lineage.plan.attempt if lineage else "",
            "data_fingerprint": fingerprint.data,
            "model_fingerprint": fingerprint.model,
        },
    )


def _run_loop(loop: TrainLoop, tracker: Tracker, ctx: DistributedContext, preemption: PreemptionHandler) -> LoopOutcome:
    try:
        outcome = loop.run()
    except NonFiniteLoss as diverged:
        log.error("%s", diverged)
        tracker.set_tags({"mlplat.diverged": f"step {diverged.step}: loss {diverged.loss}"})
        raise
    # SIGTERM after the last step: the final checkpoint exists; a retry goes straight to the gate.
    if any_rank(ctx, preemption.requested):
        raise Preempted(loop.step)
    barrier(ctx)
    return outcome


def _gate_and_register(
    config: TrainingConfig,
    loop: TrainLoop,
    data: DataSplits,
    ctx: DistributedContext,
    tracker: Tracker,
    result: TrainingResult,
) -> TrainingResult:
    decision = _gate(config, loop.core, data, ctx)
    result.gate, result.test_metrics = decision, decision.metrics
    tracker.log_metrics({f"test_{k}": v for k, v in decision.metrics.items()}, step=loop.step, wait=True)
    tracker.set_tags({"mlplat.gate": "passed" if decision.passed else "rejected"})
    tracker.log_dict(decision.model_dump(), "gate.json")
    if not decision.passed:
        log.error("%s", decision.render())
        raise GateRejected(decision, result)
    log.info("%s", decision.render())
    name = config.registry.model_name
    done = tracker.tags().get("mlplat.registered_version")
    if name and done:
        # A retried pod whose predecessor registered before it died: don't register a duplicate.
        log.info("this run already registered %s version %s", name, done)
        result.registered_version = done
    elif name:
        run_id = str(tracker.run_id)

        def register() -> str:
            # Idempotent: a registration cut off by an outage after the version was created is not repeated.
            existing = find_version_for_run(name, run_id)
            if existing is not None:
                log.info("%s version %s of this run exists already; not registering it again", name, existing)
                return existing
            return register_model(
                loop.core,
                name=name,
                alias=config.registry.alias,
                x_train=data.x_train,
                num_classes=data.classes,
                feature_names=data.feature_names,
                tags={
                    "mlplat.run_id": run_id,
                    "mlplat.test_accuracy": f"{decision.metrics['accuracy']:.4f}",
                    "mlplat.test_macro_f1": f"{decision.metrics['macro_f1']:.4f}",
                },
                serialization_format=config.registry.serialization_format,
            )

        result.registered_version = retry_call(register, f"registering {name}", _policy(config))
        tracker.set_tags({"mlplat.registered_version": result.registered_version})
    return result
