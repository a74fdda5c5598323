"""Optimizers, learning-rate schedules and early stopping, built from the ``train`` section."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch

from raydistill.config import EarlyStopping, TrainConfig


def build_optimizer(
    train: TrainConfig, params: Iterable[torch.nn.Parameter]
) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if train.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay
        )
    if train.optimizer == "adam":
        return torch.optim.Adam(params, lr=train.lr, weight_decay=train.weight_decay)
    return torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)


def build_lr_scheduler(
    train: TrainConfig, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch."""
    if train.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=train.epochs)
    if train.lr_schedule == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=train.lr_step_size, gamma=train.lr_gamma
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def rebase_lr(
    optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler, lr: float
) -> None:
    """Continue a restored lr schedule from the base ``lr`` of the job now running.

    A checkpoint restores its own base lr; a PBT trial continuing another trial's checkpoint
    (or a resumed run whose ``train.lr`` was changed) means the new one. Every schedule here
    scales linearly with the base lr (cosine to 0, step, constant), so scaling the current lr
    by new/old base continues the same curve at the new height."""
    for i, group in enumerate(optimizer.param_groups):
        old = scheduler.base_lrs[i]
        if old == lr or old == 0:
            continue
        group["lr"] *= lr / old
        group["initial_lr"] = lr
        scheduler.base_lrs[i] = lr
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]  # what get_last_lr says


def retarget_schedule(
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    train: TrainConfig,
) -> None:
    """Give a restored LR schedule the shape the job asks for now, at the epoch it reached.

    A checkpoint brings its own schedule (cosine over its ``epochs``, its step size); a stage
    continued after its ``train`` section changed (``--allow-changed``: 40 -> 80 epochs) must
    follow the new one, or a cosine reaches 0 at the old end. Every schedule here is a
    function of the epoch, so the lr is recomputed in closed form."""
    epoch = scheduler.last_epoch
    if isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
        scheduler.T_max = train.epochs
    elif isinstance(scheduler, torch.optim.lr_scheduler.StepLR):
        scheduler.step_size, scheduler.gamma = train.lr_step_size, train.lr_gamma
    for group, base in zip(optimizer.param_groups, scheduler.base_lrs, strict=True):
        group["lr"] = _lr_at(train, base, epoch)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


def _lr_at(train: TrainConfig, base: float, epoch: int) -> float:
    if train.lr_schedule == "cosine":
        return base * (1 + math.cos(math.pi * min(epoch, train.epochs) / train.epochs)) / 2
    if train.lr_schedule == "step":
        return base * train.lr_gamma ** (epoch // train.lr_step_size)
    return base


@dataclass
class BestTracker:
    """Tracks the best epoch on one validation metric, and patience for early stopping."""

    monitor: str = "val_acc"
    min_delta: float = 0.0
    patience: int | None = None
    best: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0

    @classmethod
    def for_train(cls, early: EarlyStopping | None) -> BestTracker:
        if early is None:
            return cls()
        return cls(monitor=early.monitor, min_delta=early.min_delta, patience=early.patience)

    @property
    def maximize(self) -> bool:
        """Accuracy and mAP (``val_acc``, ``val_map``) grow; losses shrink."""
        return self.monitor.endswith(("acc", "map"))

    def update(self, epoch: int, metrics: dict[str, float]) -> bool:
        """Record an epoch; True when it is the best so far."""
        value = metrics[self.monitor]
        if math.isnan(value):
            improved = False
        elif self.best is None:
            improved = True
        elif self.maximize:
            improved = value > self.best + self.min_delta
        else:
            improved = value < self.best - self.min_delta
        if improved:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience

    def state(self) -> dict[str, float | int | str | None]:
        return asdict(self)
