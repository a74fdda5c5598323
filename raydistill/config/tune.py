"""The ``tune`` section: a search over job fields run by ``raydistill tune``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from raydistill.config.base import Section
from raydistill.config.distill import DistillConfig
from raydistill.config.errors import KeyedError
from raydistill.tune.space import Dimension, SpaceError, parse_dimension, qualify


class TuneConfig(Section):
    """``raydistill tune``: a search over job fields, every trial reading one teacher pass.

    ``space`` maps job key paths to distributions (see :mod:`raydistill.tune.space`)::

        space:
          temperature.start: uniform(1, 10)
          alpha: choice([0.5, {kind: linear, start: 0.9, end: 0.1}])
    """

    space: dict[str, Any] = Field(
        default_factory=dict,
        description="job key path -> uniform/loguniform/quniform/randint/choice/grid expression",
    )
    num_samples: int = Field(8, ge=1, description="trials (with grid: samples per grid point)")
    max_concurrent_trials: int = Field(2, ge=1, description="trials running at once")
    scheduler: Literal["asha", "fifo", "pbt"] = Field(
        "asha",
        description="asha: stop poor trials early; fifo: run every trial to the end; pbt:"
        " Population Based Training, poor trials continue from a good trial's checkpoint with"
        " perturbed values (the values then change during training: a discovered schedule)",
    )
    grace_period: int = Field(2, ge=1, description="asha: epochs every trial gets")
    reduction_factor: float = Field(2.0, gt=1, description="asha: 1/r of trials go on per rung")
    perturbation_interval: int = Field(
        2, ge=1, description="pbt: epochs between exploit/explore steps"
    )
    quantile_fraction: float = Field(
        0.25, gt=0, le=0.5, description="pbt: the bottom share copies the top share"
    )
    resample_probability: float = Field(
        0.25, ge=0, le=1, description="pbt: chance a value is redrawn instead of perturbed"
    )
    search: Literal["random", "grid", "tpe"] = Field(
        "random",
        description="random: sample the space; grid needs only grid()/choice() entries; tpe:"
        " Optuna's Tree-structured Parzen Estimator, each trial drawn where earlier trials did"
        " well (pip install 'raydistill[tpe]'; choices of numbers or strings, no grid())",
    )
    metric: Literal["val_acc", "val_loss", "val_ce"] = Field(
        "val_acc", description="the validation metric trials are ranked by"
    )
    mode: Literal["max", "min"] = Field("max", description="max or min the metric")
    epochs: int | None = Field(None, ge=1, description="per trial; null: train.epochs")
    workers_per_trial: int = Field(1, ge=1, description="Ray Train workers of each trial")
    cpus_per_worker: float | None = Field(
        None, gt=0, description="per trial worker; null: scaling.cpus_per_worker"
    )
    use_gpu: bool | None = Field(None, description="per trial worker; null: scaling.use_gpu")
    resources_per_worker: dict[str, float] | None = Field(
        None,
        description="per trial worker, e.g. {GPU: 0.25} to fit four trials on one GPU (with"
        " use_gpu: true) or {student: 1}; null: scaling.resources_per_worker",
    )
    shared_teacher: bool = Field(
        True,
        description="true: one teacher pass (the cache) serves every trial; false: each trial"
        " runs its own teacher pass, as single-process frameworks do (for comparison)",
    )

    @property
    def trials(self) -> int:
        """Trials the search runs: ``num_samples`` times each combination of grid values."""
        grid = 1
        for dim in self.dimensions:
            if dim.kind == "grid" or (self.search == "grid" and dim.kind == "choice"):
                grid *= len(dim.args)
        return self.num_samples * grid

    @property
    def dimensions(self) -> list[Dimension]:
        """The parsed space, with ``distill.`` prefixed where it was left out."""
        # Imported here: the job section holds this one.
        from raydistill.config.job import JobConfig

        top, inner = set(JobConfig.model_fields), set(DistillConfig.model_fields)
        dims = []
        for key, spec in self.space.items():
            dim = parse_dimension(key, spec)
            path = qualify(dim.path, top, inner)
            dims.append(Dimension(path, dim.kind, dim.args))
        return dims

    @property
    def mutations(self) -> list[Dimension]:
        """The dimensions PBT perturbs: all but grid points (with ``search: grid``, choices
        are grid points too)."""
        return [
            d
            for d in self.dimensions
            if d.kind != "grid" and not (self.search == "grid" and d.kind == "choice")
        ]

    def trial_scaling(self, scaling: dict[str, Any]) -> dict[str, Any]:
        """A trial's ``scaling`` section (as a dict): the job's, with the per-trial workers
        and resources set."""
        out = {**scaling, "workers": self.workers_per_trial}
        for name in ("cpus_per_worker", "use_gpu", "resources_per_worker"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    @field_validator("space")
    @classmethod
    def _parses(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, spec in value.items():
            try:
                parse_dimension(key, spec)
            except SpaceError as exc:
                raise KeyedError(f"tune.space.{key}", str(exc).split(": ", 1)[1]) from None
        return value
