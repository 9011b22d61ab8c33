"""Process-group set-up from torchrun's environment, and the few collectives the trainer needs.

torchrun (and the TrainingJob's Indexed Job, through torchrun) sets ``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``; without them the run is a single process and every
helper here is a no-op. CUDA uses NCCL with one device per local rank; CPU uses gloo.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in the job."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str | None

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that logs, checkpoints and registers."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1


def select_device(preference: Literal["auto", "cpu", "cuda"], local_rank: int) -> torch.device:
    """The device for this process: one GPU per local rank when CUDA is wanted and present."""
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("runtime.device is 'cuda' but torch sees no CUDA device; use 'auto' or 'cpu'")
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise RuntimeError(f"LOCAL_RANK {local_rank} needs GPU #{local_rank} but only {count} are visible")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def init_distributed(
    preference: Literal["auto", "cpu", "cuda"], timeout: timedelta = timedelta(minutes=30)
) -> DistributedContext:
    """Read torchrun's environment, pick the device and, for several processes, join the process group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = select_device(preference, local_rank)
    backend = None
    if world_size > 1:
        backend = "nccl" if device.type == "cuda" else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend=backend, timeout=timeout)
    return DistributedContext(rank=rank, local_rank=local_rank, world_size=world_size, device=device, backend=backend)


def shutdown(ctx: DistributedContext) -> None:
    """Leave the process group (safe to call twice)."""
    if ctx.is_distributed and dist.is_initialized():
        dist.destroy_process_group()


def any_rank(ctx: DistributedContext, flag: bool) -> bool:
    """True on every rank if ``flag`` is true on any (e.g. one node got SIGTERM: all stop together)."""
    if not ctx.is_distributed:
        return flag
    value = torch.tensor([1 if flag else 0], device=ctx.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def any_ranks(ctx: DistributedContext, flags: list[bool]) -> list[bool]:
    """:func:`any_rank` for several flags in one all-reduce."""
    if not ctx.is_distributed:
        return list(flags)
    value = torch.tensor([1 if flag else 0 for flag in flags], device=ctx.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return [bool(v) for v in value.tolist()]


def mean_across(ctx: DistributedContext, value: float) -> float:
    """The mean of ``value`` over all ranks."""
    if not ctx.is_distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return float(tensor.item()) / ctx.world_size


def gather_objects(ctx: DistributedContext, obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not ctx.is_distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_state(ctx: DistributedContext, state: dict[str, Any] | None) -> dict[str, Any] | None:
    """Rank 0's ``state`` (tensors and plain values, e.g. a checkpoint) on every rank.

    Sent as ``torch.save`` bytes: torch 2.13 cannot unpickle tensors passed to ``broadcast_object_list``
    directly, and bytes load back with ``weights_only=True``.
    """
    if not ctx.is_distributed:
        return state
    payload = None
    if ctx.is_main and state is not None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        payload = buffer.getvalue()
    box: list[bytes | None] = [payload]
    dist.broadcast_object_list(box, src=0)
    received = box[0]
    if received is None:
        return None
    loaded: dict[str, Any] = torch.load(io.BytesIO(received), map_location="cpu", weights_only=True)
    return loaded


def barrier(ctx: DistributedContext) -> None:
    """Wait for every rank."""
    if ctx.is_distributed:
        dist.barrier()
