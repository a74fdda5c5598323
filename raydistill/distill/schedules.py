"""Per-epoch schedules for scalar hyperparameters (distillation temperature, alpha).

A schedule maps a 0-based epoch index to a float. Job files give either a bare number (a constant)
or a mapping such as ``{kind: step, start: 5.0, step: -0.5, every: 10, floor: 1.0}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

ScheduleKind = Literal["constant", "linear", "step", "cosine", "piecewise"]

# Fields that only mean something for some kinds; giving one a non-default value for another kind
# is almost certainly a mistake in the job file (e.g. ``step: -0.5`` without ``kind: step``), so
# it is refused rather than silently ignored.
_FIELDS_FOR_KIND: dict[str, frozenset[str]] = {
    "end": frozenset({"linear", "cosine"}),
    "epochs": frozenset({"linear", "cosine"}),
    "step": frozenset({"step"}),
    "every": frozenset({"step"}),
    "floor": frozenset({"step"}),
    "changes": frozenset({"piecewise"}),
}


class Schedule(BaseModel):
    """A float that changes with the epoch.

    Kinds (``epoch`` is 0-based; ``E`` is ``epochs`` if set, else the ``total_epochs`` passed to
    :meth:`value`):

    * ``constant``: ``start`` at every epoch.
    * ``linear``: ``start + (end - start) * p`` with ``p = min(epoch / max(E - 1, 1), 1)``: the
      value is ``start`` at epoch 0 and reaches ``end`` at epoch ``E - 1``, then stays there.
      With ``E == 1`` the ramp is one epoch long: ``start`` at epoch 0, ``end`` from epoch 1.
    * ``cosine``: ``end + (start - end) * (1 + cos(pi * p)) / 2`` with the same ``p``.
    * ``step``: ``start + step * floor(epoch / every)``, never crossing ``floor`` (a minimum when
      ``step < 0``, a maximum when ``step > 0``).
    * ``piecewise``: ``start``, then from each epoch named in ``changes`` (``{epoch: value}``)
      that value; this is how ``raydistill tune`` writes a schedule PBT discovered.

    The value carries the unit of whatever it schedules (temperature, a mixing weight, ...).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    kind: ScheduleKind = Field(
        "constant", description="constant, linear, step, cosine or piecewise (see above)"
    )
    start: float = Field(..., description="the value at epoch 0")
    end: float | None = Field(None, description="linear, cosine: the value the ramp reaches")
    step: float | None = Field(
        None, description="step: added every `every` epochs (negative decays)"
    )
    every: int = Field(1, ge=1, description="step: epochs between steps")
    floor: float | None = Field(
        None, description="step: the bound the value never crosses; null: none"
    )
    epochs: int | None = Field(
        None, ge=1, description="linear, cosine: the ramp's length; null: the run's epochs"
    )
    changes: dict[int, float] | None = Field(
        None, description="piecewise: {epoch: value from then on}"
    )

    @field_validator("start", "end", "step", "floor", "every", "epochs", mode="before")
    @classmethod
    def _no_bool(cls, value: Any) -> Any:
        # pydantic's lax mode reads True as 1.0; in a job file that is a mistake, not a number.
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got the boolean {value}")
        return value

    @model_validator(mode="after")
    def _fields_match_kind(self) -> Schedule:
        if self.kind in ("linear", "cosine") and self.end is None:
            raise ValueError(f"kind={self.kind} needs `end` (the value the ramp reaches)")
        if self.kind == "step" and self.step is None:
            raise ValueError("kind=step needs `step` (added every `every` epochs; negative decays)")
        if self.kind == "piecewise":
            if not self.changes:
                raise ValueError("kind=piecewise needs `changes` ({epoch: value from then on})")
            if min(self.changes) < 1:
                raise ValueError("piecewise `changes` name epochs >= 1 (epoch 0 is `start`)")
        for name, kinds in _FIELDS_FOR_KIND.items():
            # Compared with the default, not checked for presence: a dumped schedule lists every
            # field (``end: null``, ``every: 1``) and must load back.
            default = type(self).model_fields[name].default
            if getattr(self, name) != default and self.kind not in kinds:
                allowed = " or ".join(f"kind={k}" for k in sorted(kinds))
                raise ValueError(f"`{name}` is only used by {allowed}, not kind={self.kind}")
        if self.kind == "step" and self.floor is not None and self.step:
            if self.step < 0 and self.floor > self.start:
                raise ValueError(
                    f"floor {self.floor:g} is above start {self.start:g} for a decaying step"
                    " (step < 0): floor is the minimum the value decays to"
                )
            if self.step > 0 and self.floor < self.start:
                raise ValueError(
                    f"floor {self.floor:g} is below start {self.start:g} for a growing step"
                    " (step > 0): floor is the maximum the value grows to"
                )
        return self

    def value(self, epoch: int, total_epochs: int | None = None) -> float:
        """The value at 0-based ``epoch``.

        ``total_epochs`` sizes the ramp of ``linear``/``cosine`` when ``epochs`` is not set;
        ValueError if such a ramp has neither.
        """
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        if self.kind == "constant":
            return float(self.start)
        if self.kind == "piecewise":
            assert self.changes is not None  # guaranteed by the validator
            value = self.start
            for since in sorted(self.changes):
                if epoch >= since:
                    value = self.changes[since]
            return float(value)
        if self.kind == "step":
            assert self.step is not None  # guaranteed by the validator
            value = self.start + self.step * (epoch // self.every)
            if self.floor is not None:
                value = max(value, self.floor) if self.step < 0 else min(value, self.floor)
            return float(value)
        assert self.end is not None  # guaranteed by the validator
        length = self.epochs if self.epochs is not None else total_epochs
        if length is None:
            raise ValueError(
                f"a {self.kind} schedule needs its length: set `epochs` on the schedule or pass"
                " total_epochs"
            )
        if length < 1:
            raise ValueError(f"total_epochs must be >= 1, got {length}")
        progress = min(epoch / max(length - 1, 1), 1.0)
        if self.kind == "linear":
            return float(self.start + (self.end - self.start) * progress)
        return float(self.end + (self.start - self.end) * (1 + math.cos(math.pi * progress)) / 2)

    def describe(self) -> str:
        """Short text for tables and legends: ``0.5``, ``linear 0.9->0.1``, ``step 5-0.5/10``."""
        if self.kind == "constant":
            return f"{self.start:g}"
        if self.kind == "step":
            return f"step {self.start:g}{self.step:+g}/{self.every}"
        if self.kind == "piecewise":
            assert self.changes is not None
            return f"{self.start:.3g}" + "".join(
                f", {v:.3g} from {k}" for k, v in sorted(self.changes.items())
            )
        return f"{self.kind} {self.start:g}->{self.end:g}"

    def values(self, total_epochs: int) -> list[float]:
        """The value at each epoch ``0 .. total_epochs - 1``."""
        return [self.value(epoch, total_epochs) for epoch in range(total_epochs)]


def _number_to_constant(value: Any) -> Any:
    """A bare int/float becomes ``{"kind": "constant", "start": value}``; anything else passes."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number or a schedule mapping, got the boolean {value}")
    if isinstance(value, (int, float)):
        return {"kind": "constant", "start": float(value)}
    return value


ScheduleLike = Annotated[Schedule, BeforeValidator(_number_to_constant)]
"""A pydantic field type that accepts a number (a constant schedule), a mapping or a Schedule."""


def as_schedule(value: float | int | dict[str, Any] | Schedule) -> Schedule:
    """``value`` as a :class:`Schedule`: a number becomes a constant, a dict is validated."""
    if isinstance(value, Schedule):
        return value
    if isinstance(value, Mapping):
        return Schedule.model_validate(dict(value))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"expected a number, a dict or a Schedule, got {type(value).__name__}: {value!r}"
        )
    return Schedule(kind="constant", start=float(value))
