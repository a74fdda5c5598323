"""``TemperatureSearch``: the classic convenience of searching the distillation temperature
(and alpha), over a job (a ``raydistill tune`` search, :mod:`.search`) or over models and
tensors held in memory (:mod:`.in_memory`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raydistill.config import JobConfig, job_from_dict
from raydistill.tune.in_memory import InMemoryResult
from raydistill.tune.record import read_best_job
from raydistill.tune.search import Log, TuneSummary, run_tune


@dataclass
class TemperatureSearchResult:
    """The best temperature (and alpha schedule) found, with the full search summary."""

    temperature: float
    alpha: Any
    summary: TuneSummary | InMemoryResult

    @property
    def table(self) -> str:
        return self.summary.table()


class TemperatureSearch:
    """The classic convenience: search the distillation temperature (and alpha).

    Over a job: ``job`` is a :class:`JobConfig` or a job YAML path, and the search is
    ``raydistill tune`` (one teacher pass through the cache, every trial a Ray Train run). The
    temperature is drawn from ``uniform(*temperatures)`` (a constant schedule); ``alphas``, when
    given, is a list of constants or schedule mappings chosen from. Other ``tune`` settings
    (``scheduler``, ``max_concurrent_trials``, ``epochs``, ``workers_per_trial``, ...) pass as
    keywords::

        result = TemperatureSearch("jobs/digits.yaml", temperatures=(1, 10)).run(trials=20)
        result.temperature, print(result.table)

    Over models in memory (no job file): give ``teacher`` (trained), ``student`` and
    ``train``/``val`` as ``(inputs [N, ...], labels [N])`` tensors. The teacher labels them once
    and every trial trains a copy of the student on those logits in plain PyTorch
    (:mod:`raydistill.tune.in_memory`; keywords: ``epochs``, ``batch_size``, ``lr``,
    ``max_concurrent_trials``, ``scheduler``, ``metric``, ``seed``, ``storage_path``, ...)::

        result = TemperatureSearch(teacher=teacher, student=student, train=(x, y),
                                   val=(xv, yv), epochs=10).run(trials=8)
    """

    def __init__(
        self,
        job: JobConfig | str | Path | None = None,
        temperatures: tuple[float, float] = (1.0, 10.0),
        alphas: list[Any] | None = None,
        *,
        teacher: Any = None,
        student: Any = None,
        train: Any = None,
        val: Any = None,
        **settings: Any,
    ) -> None:
        from raydistill.config import load_job

        models = (teacher, student, train, val)
        self.job: JobConfig | None = None
        if job is None:
            if any(m is None for m in models):
                raise ValueError(
                    "TemperatureSearch needs a job, or teacher=, student=, train= and val="
                )
            from raydistill.tune.in_memory import settings_from

            low, high = temperatures
            if not 0 < low < high:
                raise ValueError(f"temperatures: need 0 < low < high, got {temperatures}")
            if alphas is not None and not all(
                isinstance(a, int | float) and 0 <= a <= 1 for a in alphas
            ):
                raise ValueError(f"alphas: constants in [0, 1] over models, got {alphas}")
            self.models = models
            self.in_memory = settings_from(settings)
            self.temperatures, self.alphas = (float(low), float(high)), alphas
            return
        if any(m is not None for m in models):
            raise ValueError("give a job or models (teacher=, student=, ...), not both")
        base = job if isinstance(job, JobConfig) else load_job(job)
        space: dict[str, Any] = {"distill.temperature": {"uniform": list(temperatures)}}
        if alphas is not None:
            space["distill.alpha"] = {"choice": list(alphas)}
        raw = base.model_dump(mode="json")
        raw["tune"] = {**settings, "space": space}
        self.job = job_from_dict(raw, "TemperatureSearch")

    def run(
        self, trials: int = 20, resume: bool = False, fresh: bool = False, log: Log = print
    ) -> TemperatureSearchResult:
        """Run ``trials`` trials; the best trial's temperature and alpha come back.
        (``resume``/``fresh`` apply to a job's search.)"""
        if self.job is None:
            return self._run_in_memory(trials, log)
        assert self.job.tune is not None
        self.job.tune.num_samples = trials
        summary = run_tune(self.job, resume=resume, fresh=fresh, log=log)
        best = read_best_job(summary.best_job)
        return TemperatureSearchResult(
            temperature=best.distill.temperature.start,
            alpha=best.distill.alpha.start
            if best.distill.alpha.kind == "constant"
            else best.distill.alpha,
            summary=summary,
        )

    def _run_in_memory(self, trials: int, log: Log) -> TemperatureSearchResult:
        from ray import tune

        from raydistill.tune.in_memory import search_in_memory

        teacher, student, train, val = self.models
        alpha = tune.choice(list(self.alphas)) if self.alphas is not None else 0.9
        space = {"temperature": tune.uniform(*self.temperatures), "alpha": alpha}
        found = search_in_memory(teacher, student, train, val, space, trials, self.in_memory, log)
        return TemperatureSearchResult(
            temperature=float(found.best.params["temperature"]),
            alpha=float(found.best.params["alpha"]),
            summary=found,
        )
