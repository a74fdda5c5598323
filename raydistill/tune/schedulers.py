"""The trial schedulers of a search: ASHA, FIFO and PBT (kept inside the search space)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from raydistill.tune.results import EPOCHS_DONE
from raydistill.tune.space import Dimension


def build_scheduler(settings: Any, epochs: int) -> Any:
    """The trial scheduler a search's settings name (a :class:`TuneConfig`, or anything with
    its ``scheduler``, ``grace_period``, ``reduction_factor`` and, for pbt, PBT fields);
    ``epochs``: a trial's length."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    if settings.scheduler == "asha":
        return ASHAScheduler(
            time_attr=EPOCHS_DONE,
            # ASHA stops a trial that reaches max_t at once, killing it before it saves its
            # student; one more than the last epoch lets finished trials end on their own.
            max_t=epochs + 1,
            grace_period=min(settings.grace_period, epochs),
            reduction_factor=settings.reduction_factor,
        )
    if settings.scheduler == "pbt":
        return PopulationBasedTraining(
            time_attr=EPOCHS_DONE,
            perturbation_interval=settings.perturbation_interval,
            # a choice as its list: PBT then moves to a neighbouring value or redraws one (a
            # Tune domain would be scaled x0.8/x1.2 like a number, off the list)
            hyperparam_mutations={
                d.key: list(d.args) if d.kind == "choice" else d.to_tune()
                for d in settings.mutations
            },
            quantile_fraction=settings.quantile_fraction,
            resample_probability=settings.resample_probability,
            custom_explore_fn=WithinSpace(tuple(settings.mutations)),
        )
    return FIFOScheduler()


@dataclass(frozen=True)
class WithinSpace:
    """PBT's explore step, kept inside the space: perturbed values are clamped to their
    dimension's range (a plain object, so Tune can save the scheduler with the search)."""

    dimensions: tuple[Dimension, ...]

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        for dim in self.dimensions:
            if dim.key in config:
                config[dim.key] = dim.clamp(config[dim.key])
        return config
