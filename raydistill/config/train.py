"""The ``train`` section: optimizer, LR schedule, epochs, early stopping, and the teacher
stage's overrides of them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from raydistill.config.base import Section
from raydistill.config.errors import KeyedError

Optimizer = Literal["adamw", "adam", "sgd"]


Monitor = Literal["auto", "val_acc", "val_ce", "val_map"]


class EarlyStopping(Section):
    """Stop a stage when ``train.monitor`` stops improving."""

    monitor: Literal["val_loss", "val_acc", "val_ce", "val_map"] | None = Field(
        None,
        description="null: train.monitor (one metric for early stopping and keep_best); when"
        " set, it is train.monitor. val_loss is refused: the objective at the epoch's"
        " temperature and alpha moves with their schedules while the weights do not",
    )
    patience: int = Field(10, ge=1, description="epochs without improvement before stopping")
    min_delta: float = Field(
        0.0, ge=0, description="smallest change of the monitored metric that counts as improving"
    )


class TrainConfig(Section):
    """How every stage trains (the teacher stage applies ``teacher.train`` on top)."""

    epochs: int = Field(40, ge=1, description="epochs per stage")
    batch_size: int = Field(64, ge=1, description="per worker")
    optimizer: Optimizer = Field("adamw", description="adamw, adam or sgd")
    lr: float = Field(3e-3, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.0, ge=0, description="the optimizer's weight decay")
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd only")
    lr_schedule: Literal["none", "cosine", "step"] = Field(
        "cosine",
        description="none: constant lr; cosine: from lr to 0 over the epochs; step: times"
        " lr_gamma every lr_step_size epochs",
    )
    lr_step_size: int = Field(10, ge=1, description="step schedule: epochs between decays")
    lr_gamma: float = Field(0.1, gt=0, le=1, description="step schedule: decay factor")
    grad_clip: float | None = Field(5.0, gt=0, description="max gradient norm; null: off")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="fp32: float32 throughout; bf16: every train step's forward and loss, and"
        " the teacher pool's forwards, under torch.autocast in bfloat16 (weights, gradients and"
        " optimizer state stay float32: bfloat16 weights would round small updates away)",
    )
    early_stopping: EarlyStopping | None = Field(None, description="null: train every epoch")
    monitor: Monitor = Field(
        "auto",
        description="the validation metric keep_best and early stopping both watch; auto: the"
        " task's (val_acc for classification and cross_modal, val_map for detection); val_ce:"
        " cross entropy with the labels (means the same every epoch, whatever the schedules)",
    )
    keep_best: bool = Field(True, description="evaluate the best epoch on val, not the last")
    baseline: bool = Field(
        False, description="also train the student alone, to show what distillation bought"
    )


    @model_validator(mode="after")
    def _one_monitor(self) -> TrainConfig:
        early = self.early_stopping
        if early is None or early.monitor is None:
            return self
        if early.monitor == "val_loss":
            raise KeyedError(
                "train.early_stopping.monitor",
                "val_loss moves with the temperature and alpha schedules while the weights do"
                " not: monitor val_ce or val_acc (train.monitor)",
            )
        if self.monitor not in ("auto", early.monitor):
            raise KeyedError(
                "train.early_stopping.monitor",
                f"{early.monitor} differs from train.monitor {self.monitor}: keep_best and early"
                " stopping watch one metric (set train.monitor only)",
            )
        object.__setattr__(self, "monitor", early.monitor)  # no re-validation loop
        return self


class TrainOverrides(Section):
    """Fields of ``train`` that the teacher stage may set differently (null: as in ``train``)."""

    epochs: int | None = Field(None, ge=1, description="teacher epochs; null: train.epochs")
    batch_size: int | None = Field(
        None, ge=1, description="teacher batch size per worker; null: train.batch_size"
    )
    optimizer: Optimizer | None = Field(None, description="null: train.optimizer")
    lr: float | None = Field(None, gt=0, description="null: train.lr")
    weight_decay: float | None = Field(None, ge=0, description="null: train.weight_decay")
