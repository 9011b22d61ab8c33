"""The training loop: steps, checkpoints (every N steps and at epoch end), SIGTERM, metrics.

Resuming is exact on CPU: the batch order of an epoch depends only on (seed, epoch) through
``DistributedSampler``, a checkpoint stores the position inside the epoch, and every rank's RNG states
(dropout) travel in the checkpoint. A run interrupted at any step and resumed therefore produces the
same weights and metrics, bit for bit, as one that never stopped.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import Dataset, DistributedSampler

from mlplat.contracts.training_config import TrainingConfig
from mlplat.training.checkpoint import CheckpointManager
from mlplat.training.data import DataSplits
from mlplat.training.distributed import (
    DistributedContext,
    any_rank,
    any_ranks,
    barrier,
    gather_objects,
    mean_across,
)
from mlplat.training.faults import TransientFault
from mlplat.training.gate import evaluate
from mlplat.training.preemption import PreemptionHandler
from mlplat.training.progress import Progress
from mlplat.training.reproducibility import capture_rng_state, restore_rng_state
from mlplat.training.tracking import Tracker

log = logging.getLogger("mlplat.training")
STATE_FORMAT = 1
LOG, EPOCH = 0, 1
PREEMPTION_SYNC_STEPS = 10
"""Under DDP, how often (in steps) the ranks agree on whether SIGTERM arrived: a stop lands within this
many steps of the signal, far inside Kubernetes' 30 s grace period for any realistic step time."""


class Preempted(Exception):
    """SIGTERM, or a transient fault past its retry budget, stopped the run after a step; a checkpoint at
    :attr:`step` was written (on rank 0, unless the store itself is what failed). Exit 75: retry to resume."""

    def __init__(self, step: int, reason: str = "SIGTERM") -> None:
        self.step = step
        self.reason = reason
        what = "preempted by SIGTERM" if reason == "SIGTERM" else f"stopped ({reason})"
        super().__init__(f"{what} at step {step}; checkpoint written, resume to continue")


class NonFiniteLoss(Exception):
    """The training loss became NaN or infinite: the run stops at once (exit 4), nothing is registered."""

    def __init__(self, step: int, loss: float) -> None:
        self.step = step
        self.loss = loss
        super().__init__(
            f"training loss is {loss} at step {step}: the run diverged and is stopped (nothing registered, no "
            "checkpoint of the diverged weights); lower optimizer.lr, set optimizer.max_grad_norm or check the data"
        )


def steps_per_epoch(train_rows: int, world_size: int, batch_size: int) -> int:
    """Optimizer steps per epoch on each rank (the sampler pads ranks to equal length)."""
    return math.ceil(math.ceil(train_rows / world_size) / batch_size)


@dataclass
class LoopOutcome:
    """What the loop did in this session."""

    history: list[dict[str, float]]
    final_step: int
    start_step: int
    train_seconds: float
    cpu_seconds: float
    """CPU time of the whole process (all threads) during the loop: unlike wall time, not inflated when
    other work on the machine takes the CPU away."""
    samples: int
    """Training rows processed by this session, summed over ranks."""


class TrainLoop:
    """Runs epochs from the current position to the end, checkpointing and honouring SIGTERM."""

    def __init__(
        self,
        *,
        config: TrainingConfig,
        ctx: DistributedContext,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: LRScheduler,
        data: DataSplits,
        checkpoints: CheckpointManager | None,
        tracker: Tracker,
        progress: Progress,
        preemption: PreemptionHandler,
        fingerprint: str,
        lineage: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self.ctx = ctx
        self.model = model
        self.core: nn.Module = model.module if isinstance(model, DistributedDataParallel) else model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.data = data
        self.checkpoints = checkpoints
        self.tracker = tracker
        self.progress = progress
        self.preemption = preemption
        self.fingerprint = fingerprint
        self.lineage = dict(lineage or {})
        """Attempt id and data/model fingerprints, stored in every checkpoint."""
        self.x_train = torch.as_tensor(data.x_train, device=ctx.device)
        self.y_train = torch.as_tensor(data.y_train, device=ctx.device)
        # The sampler only needs len(); its permutation depends on (seed, epoch) alone.
        rows = cast("Dataset[int]", range(len(data.x_train)))
        self.sampler: DistributedSampler[int] = DistributedSampler(
            rows,
            num_replicas=ctx.world_size,
            rank=ctx.rank,
            shuffle=True,
            seed=config.seed,
            drop_last=False,
        )
        self.steps_per_epoch = steps_per_epoch(len(data.x_train), ctx.world_size, config.batch_size)
        self.total_steps = self.steps_per_epoch * config.epochs
        # Position: `batch` is the next batch to run within `epoch`.
        self.step = 0
        self.epoch = 0
        self.batch = 0
        self.history: list[dict[str, float]] = []
        self._last_checkpoint_step: int | None = None
        # Loss sums since the last log line (LOG) and since the epoch began (EPOCH), in one tensor so a
        # step adds its loss to both with one op; read back with .item() only when logging.
        self._loss_sums = torch.zeros(2, device=ctx.device)
        self._loss_count = self._epoch_loss_count = 0
        self._samples = self._interval_samples = 0
        self._last_log = time.perf_counter()

    # ---- checkpoint state -------------------------------------------------------------------------
    def state_dict(self, rng: list[dict[str, Any]], run_id: str | None) -> dict[str, Any]:
        """Everything needed to continue exactly where the loop is."""
        return {
            "format": STATE_FORMAT,
            "step": self.step,
            "epoch": self.epoch,
            "batch": self.batch,
            "model": self.core.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng,
            "world_size": self.ctx.world_size,
            "history": self.history,
            "loss_sum": float(self._loss_sums[LOG].item()),
            "loss_count": self._loss_count,
            "epoch_loss_sum": float(self._loss_sums[EPOCH].item()),
            "epoch_loss_count": self._epoch_loss_count,
            "mlflow_run_id": run_id,
            "config_fingerprint": self.fingerprint,
            **self.lineage,
            # Metrics the tracking server has not confirmed (it is away): re-sent after a resume.
            "pending_metrics": self.tracker.unsent_metrics(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's state."""
        self.core.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.epoch, self.batch = state["step"], state["epoch"], state["batch"]
        self.history = list(state["history"])
        self._loss_sums = torch.tensor([state["loss_sum"], state["epoch_loss_sum"]], device=self.ctx.device)
        self._loss_count, self._epoch_loss_count = state["loss_count"], state["epoch_loss_count"]
        self.tracker.requeue([(str(k), float(v), int(t), int(s)) for k, v, t, s in state.get("pending_metrics", [])])
        if state["world_size"] == self.ctx.world_size:
            restore_rng_state(state["rng"][self.ctx.rank])
        else:
            log.warning(
                "checkpoint was written by %d processes, this run has %d: training continues, but random "
                "streams (dropout) restart from the seed, so results will differ from an uninterrupted run",
                state["world_size"],
                self.ctx.world_size,
            )
        self._last_checkpoint_step = self.step

    def _check_finite(self, loss: float | None = None) -> None:
        """Raise NonFiniteLoss if the loss (``loss``, else this rank's running sums) is NaN or infinite.

        Collective under DDP (the ranks agree), so call it where every rank does: at a log step, a
        checkpoint, an epoch end. Every step's loss is in a sum checked before the next checkpoint.
        """
        if loss is None:
            sums = self._loss_sums
            bad = any_rank(self.ctx, not bool(torch.isfinite(sums).all().item()))
            loss = float("nan") if bad else 0.0
            if bad:
                local = [float(v) for v in sums.tolist()]
                loss = next((v for v in local if not math.isfinite(v)), float("nan"))
        if not math.isfinite(loss):
            raise NonFiniteLoss(self.step, loss)

    def checkpoint(self, wait: bool = False) -> None:
        """Write a checkpoint of the current position (collective: every rank must call it)."""
        if self._last_checkpoint_step != self.step:
            self._check_finite()  # never commit diverged weights
            rng = gather_objects(self.ctx, capture_rng_state())
            if self.checkpoints is not None:
                self.checkpoints.save(self.state_dict(rng, self.tracker.run_id), self.step, self.epoch, wait=wait)
            self._last_checkpoint_step = self.step
        elif wait and self.checkpoints is not None:
            self.checkpoints.flush()
        if wait:
            barrier(self.ctx)

    # ---- the loop ---------------------------------------------------------------------------------
    def _fault(self) -> str | None:
        """A transient fault past its budget on this rank (tracking server, checkpoint store), if any."""
        fault = self.tracker.fault or (self.checkpoints.fault if self.checkpoints is not None else None)
        return str(fault) if fault is not None else None

    def _stop_if_preempted(self, every_step: bool = True) -> None:
        # Ranks must agree to stop at the same step, which costs an all-reduce; under DDP they agree every
        # PREEMPTION_SYNC_STEPS steps (and at epoch ends) instead of after each one.
        if not every_step and self.ctx.is_distributed and self.step % PREEMPTION_SYNC_STEPS:
            return
        fault = self._fault()
        preempted, faulted = any_ranks(self.ctx, [self.preemption.requested, fault is not None])
        if preempted:
            log.warning("SIGTERM received: checkpointing at step %d and exiting", self.step)
            self.checkpoint(wait=True)
            raise Preempted(self.step)
        if faulted:
            log.error(
                "a transient fault outlasted its retry budget (%s): checkpointing at step %d and exiting %d",
                fault or "on another rank",
                self.step,
                75,
            )
            try:
                self.checkpoint(wait=True)
            except Exception as error:  # the store is what failed: the retry resumes from the last committed one
                log.error("the final checkpoint could not be written either: %s", error)
            raise Preempted(self.step, reason=fault or "a transient fault on another rank")

    def _train_step(self, indices: torch.Tensor) -> None:
        features = self.x_train.index_select(0, indices)
        labels = self.y_train.index_select(0, indices)
        self.optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(self.model(features), labels)
        loss.backward()
        if self.config.optimizer.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optimizer.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        # Accumulate on the device; .item() only when logging, so a GPU is not synced every step.
        self._loss_sums += loss.detach()
        self._loss_count += 1
        self._epoch_loss_count += 1
        self._samples += len(indices)

    def _log_step(self) -> None:
        now = time.perf_counter()
        loss = mean_across(self.ctx, float(self._loss_sums[LOG].item()) / max(self._loss_count, 1))
        metrics = {
            "train_loss": loss,
            "lr": float(self.scheduler.get_last_lr()[0]),
            "samples_per_second": self._interval_samples * self.ctx.world_size / max(now - self._last_log, 1e-9),
        }
        self._check_finite(loss)
        self.tracker.log_metrics(metrics, step=self.step)
        self.progress.update(self.step, self.epoch, metrics)
        self._loss_sums[LOG], self._loss_count = 0.0, 0
        self._interval_samples, self._last_log = 0, now

    def _end_epoch(self) -> None:
        val = evaluate(self.core, self.data.x_val, self.data.y_val, self.data.classes, self.ctx.device)
        record = {
            "epoch": float(self.epoch + 1),
            "epoch_train_loss": mean_across(
                self.ctx, float(self._loss_sums[EPOCH].item()) / max(self._epoch_loss_count, 1)
            ),
            "val_loss": val["loss"],
            "val_accuracy": val["accuracy"],
            "val_macro_f1": val["macro_f1"],
        }
        self._check_finite(record["epoch_train_loss"])
        self._check_finite(val["loss"])
        self.history.append(record)
        self.tracker.log_metrics(record, step=self.step)
        self.progress.epoch_end(self.epoch, record)
        self.epoch, self.batch = self.epoch + 1, 0
        self._loss_sums[EPOCH], self._epoch_loss_count = 0.0, 0
        self.checkpoint()

    def run(self) -> LoopOutcome:
        """Train from the current position to the last epoch; raise :class:`Preempted` on SIGTERM."""
        start_step = self.step
        self.progress.start(self.total_steps, self.step)
        started = self._last_log = time.perf_counter()
        cpu_started = time.process_time()
        self._samples = self._interval_samples = 0
        every = self.config.checkpoint.every_n_steps
        log_every = self.config.tracking.log_every_n_steps
        try:
            self._stop_if_preempted()  # SIGTERM during set-up
            self.model.train()
            while self.epoch < self.config.epochs:
                self.sampler.set_epoch(self.epoch)
                order = torch.tensor(list(self.sampler), dtype=torch.long, device=self.ctx.device)
                batches = order.split(self.config.batch_size)
                while self.batch < len(batches):
                    before = self._samples
                    self._train_step(batches[self.batch])
                    self._interval_samples += self._samples - before
                    self.batch += 1
                    self.step += 1
                    if self.step % log_every == 0:
                        self._log_step()
                    # The last batch of an epoch is checkpointed by _end_epoch, after validation, so a
                    # step number always names one position.
                    if self.batch < len(batches):
                        if every and self.step % every == 0:
                            self.checkpoint()
                        self._stop_if_preempted(every_step=False)
                self._end_epoch()
                self._stop_if_preempted()
            if self.checkpoints is not None:
                try:
                    self.checkpoints.flush()
                except TransientFault as fault:  # the final checkpoint did not land: the retry redoes the end
                    raise Preempted(self.step, reason=str(fault)) from fault
        finally:
            self.progress.close()
        return LoopOutcome(
            history=self.history,
            final_step=self.step,
            start_step=start_step,
            train_seconds=time.perf_counter() - started,
            cpu_seconds=time.process_time() - cpu_started,
            samples=self._samples * self.ctx.world_size,
        )
