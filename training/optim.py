"""Optimizer and per-step learning-rate schedule from the config."""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.lr_scheduler import (
    ConstantLR,
    CosineAnnealingLR,
    LinearLR,
    LRScheduler,
    SequentialLR,
    StepLR,
)

from mlplat.contracts.training_config import OptimizerConfig, ScheduleConfig


def build_optimizer(config: OptimizerConfig, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW, Adam or SGD (with momentum) over the model's parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if config.name == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.name == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def build_scheduler(config: ScheduleConfig, optimizer: torch.optim.Optimizer, total_steps: int) -> LRScheduler:
    """The schedule, stepped after every optimizer step, with an optional linear warm-up in front."""
    warmup = min(config.warmup_steps, max(total_steps - 1, 0))
    main: LRScheduler
    if config.name == "cosine":
        main = CosineAnnealingLR(optimizer, T_max=max(total_steps - warmup, 1), eta_min=config.min_lr)
    elif config.name == "step":
        main = StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
    else:
        main = ConstantLR(optimizer, factor=1.0, total_iters=0)
    if not warmup:
        return main
    ramp = LinearLR(optimizer, start_factor=0.01, end_factor=1.0, total_iters=warmup)
    return SequentialLR(optimizer, schedulers=[ramp, main], milestones=[warmup])
