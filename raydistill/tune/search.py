"""``raydistill tune``: a Ray Tune search whose trials all read one teacher pass.

The driver trains (or finds) the teacher, builds (or reuses) the teacher cache once, then runs
Ray Tune: each trial is a student training on the cache (see :mod:`.trial`: in the trial's own
process with one worker, a Ray Train run with more), ASHA stops poor trials early. At the end
the run's ``tune/`` directory holds the results table, the plots and ``best.yaml``, a
complete job that ``raydistill train`` runs as is.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from raydistill.config import JobConfig, JobError, TuneConfig, job_from_dict
from raydistill.console import ray_prints
from raydistill.files import atomic_write_json, atomic_write_text, remove_owned_dir
from raydistill.rundir import BEST_JOB as BEST_JOB
from raydistill.rundir import RESULTS_CSV as RESULTS_CSV
from raydistill.rundir import RESULTS_MD as RESULTS_MD
from raydistill.rundir import TUNE_DIR as TUNE_DIR
from raydistill.rundir import TUNER_STATE as TUNER_STATE
from raydistill.tune.discovered import discovered_schedules, lineage_history
from raydistill.tune.local import in_process, shared_rows, trial_resources
from raydistill.tune.record import (
    SEARCH_JOB,
    SUMMARY_JSON,
    check_search_job,
    record_search_job,
)
from raydistill.tune.results import (
    TrialRow,
    ranked,
    reported_rows,
    results_markdown,
    write_plots,
)
from raydistill.tune.schedulers import build_scheduler
from raydistill.tune.space import apply_params
from raydistill.tune.trial import TEACHER_PASSES, TRIALS_DIR, TrialContext, run_trial

Log = Callable[[str], None]

# a multi-worker trial's function only drives its TorchTrainer (a zero request is refused)
TRIAL_CPUS = 0.1
# single-worker trials train in the trial's process (False: every trial on Ray Train, as
# before; benchmarks/tune_startup.py compares the two)
IN_PROCESS_TRIALS = True


@dataclass
class TuneSummary:
    """What a search produced: one row per trial, the best trial and its job, and the cost."""

    tune_dir: Path
    rows: list[TrialRow]
    best: TrialRow
    best_job: Path
    metric: str
    mode: str
    teacher_forward_passes: int
    cache_built: bool
    seconds: float
    plots: list[Path] = field(default_factory=list)
    # pbt: job key -> the schedule the best student trained with (see :mod:`.discovered`)
    discovered: dict[str, Any] = field(default_factory=dict)

    @property
    def best_params(self) -> dict[str, Any]:
        return self.best.params

    def table(self) -> str:
        """The results as Markdown, best first."""
        return results_markdown(self.rows, self.metric, self.mode)

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "mode": self.mode,
            "trials": len(self.rows),
            "best": self.best.as_dict(),
            "best_job": str(self.best_job),
            "teacher_forward_passes": self.teacher_forward_passes,
            "cache_built_by_this_run": self.cache_built,
            "seconds": round(self.seconds, 1),
            "discovered_schedules": self.discovered,
        }


def planned_tune_cpus(job: JobConfig) -> int:
    """Logical CPUs a search needs at once: concurrent trials, each its workers (and its own
    teacher pool when trials do not share the teacher), plus the cache pass's pool."""
    from raydistill.runtime import planned_cpus

    assert job.tune is not None
    s, t = job.scaling, job.tune
    cpus_per_worker = t.cpus_per_worker if t.cpus_per_worker is not None else s.cpus_per_worker
    # an in-process trial (one worker) is its worker; a multi-worker one drives a TorchTrainer
    per_trial = t.workers_per_trial * cpus_per_worker + (
        TRIAL_CPUS if t.workers_per_trial > 1 else 0
    )
    if not t.shared_teacher:
        per_trial += 2 * s.teacher_pool.planned_max_actors * s.teacher_pool.num_cpus
    return max(planned_cpus(job), math.ceil(t.max_concurrent_trials * per_trial + 2))


def _base_job(job: JobConfig) -> dict[str, Any]:
    """The resolved job as a dict, paths absolute: trials run in their own directories."""
    raw = job.model_dump(mode="json")
    if job.data.path is not None:
        raw["data"]["path"] = str(Path(job.data.path).expanduser().resolve())
    raw["output"]["storage_path"] = str(job.run_dir.parent)
    raw["cache"]["path"] = str(job.cache_dir)
    return raw


def best_job(job: JobConfig, params: dict[str, Any], teacher_weights: Path) -> dict[str, Any]:
    """The tuned job: the original with the best trial's parameters, the trained teacher named
    by its weights, no tune section, and a name of its own (so its run does not reuse the
    search's student)."""
    raw = apply_params(_base_job(job), params)
    raw["name"] = f"{job.name}-tuned"
    raw["teacher"]["checkpoint"] = str(teacher_weights.resolve())
    raw.pop("tune", None)
    job_from_dict(raw, "the tuned job")  # it must load back
    return raw


def _trial_epochs(job: JobConfig) -> int:
    assert job.tune is not None
    return job.tune.epochs or job.train.epochs


def _param_space(settings: TuneConfig) -> dict[str, Any]:
    from ray import tune

    space = {}
    for dim in settings.dimensions:
        domain = dim.to_tune()
        if settings.search == "grid" and dim.kind == "choice":
            domain = tune.grid_search(list(dim.args))
        space[dim.key] = domain
    return space


def _tuner(
    job: JobConfig,
    context: TrialContext,
    tune_dir: Path,
    resume: bool,
    callbacks: list[Any] | None = None,
) -> Any:
    """The search's Tuner; ``callbacks`` are Tune's (the trackers', :mod:`raydistill.tracking
    .trials`). A restored search keeps the callbacks it was started with."""
    from ray import tune

    settings = context.settings
    resources = {"CPU": TRIAL_CPUS}
    if context.in_process:
        resources = trial_resources(context.job({}, "resources"))
    trainable = tune.with_resources(tune.with_parameters(run_trial, context=context), resources)
    if resume:
        return tune.Tuner.restore(
            str(tune_dir), trainable=trainable, resume_unfinished=True, resume_errored=True
        )
    return tune.Tuner(
        trainable,
        param_space=_param_space(settings),
        tune_config=tune.TuneConfig(
            metric=settings.metric,
            mode=settings.mode,
            num_samples=settings.num_samples,
            scheduler=build_scheduler(settings, _trial_epochs(job)),
            search_alg=_search_alg(job, settings),
            # an in-process trial's actor has torch and the job's code imported (tens of
            # seconds on a loaded small machine): the next trial reuses it. Not with PBT,
            # whose exploits restart trials from checkpoints mid-run.
            reuse_actors=context.in_process and settings.scheduler != "pbt",
        ),
        run_config=tune.RunConfig(
            name=TUNE_DIR,
            storage_path=str(tune_dir.parent),
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=max(job.scaling.max_failures, 0)),
            callbacks=callbacks or None,
            # No num_to_keep: PBT hands a poor trial the very checkpoint a top trial reported,
            # and with a limit one trial's rotation deletes what the other still holds (a
            # trial then fails on a missing checkpoint_00000N). Each is one state.pt.
        ),
    )


def _search_alg(job: JobConfig, settings: TuneConfig) -> Any:
    """Where trials are drawn: the job's seed fixes the draws (a rerun searches the same
    points; with tpe, the same first points). Tune ignores TuneConfig.max_concurrent_trials
    once a search algorithm is given, so each one is limited here."""
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if settings.search != "tpe":
        return BasicVariantGenerator(
            random_state=job.seed, max_concurrent=settings.max_concurrent_trials
        )
    try:
        import optuna
        from ray.tune.search.optuna import OptunaSearch
    except ImportError:
        raise JobError("tune.search: tpe needs Optuna: pip install 'raydistill[tpe]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial otherwise
    sampler = optuna.samplers.TPESampler(seed=job.seed)
    return ConcurrencyLimiter(
        OptunaSearch(sampler=sampler), max_concurrent=settings.max_concurrent_trials
    )


def _check_resume(tune_dir: Path, resume: bool) -> None:
    from ray import tune

    started = tune_dir.exists() and tune.Tuner.can_restore(str(tune_dir))
    if resume and not started:
        raise JobError(f"--resume: no search to continue in {tune_dir}")
    if not resume and started:
        raise JobError(
            f"a search already ran in {tune_dir}: pass --resume to continue it or --fresh to "
            "start over"
        )


def run_tune(
    job: JobConfig, resume: bool = False, fresh: bool = False, log: Log = print
) -> TuneSummary:
    """``raydistill tune``: search the job's ``tune.space``; returns the table and best job.

    ``resume`` continues an interrupted search (finished trials are kept); ``fresh`` deletes
    an earlier search of this job first (the teacher and its cache are kept).
    """
    from raydistill.config.storage import is_uri
    from raydistill.pipeline import prepare_run_dir
    from raydistill.tasks import get_task
    from raydistill.tracking.reach import check_trackers
    from raydistill.tracking.session import job_tracking, search_results

    task = get_task(job)
    task.require("tune")
    if job.tune is None:
        raise JobError("the job has no tune section: add tune.space (see jobs/digits-tune.yaml)")
    job = task.prepare(job)
    if job.tune.shared_teacher:
        task.cache_codec(job, 1)  # what the task cannot cache (causal_lm without lm.topk)
    settings = job.tune
    if is_uri(job.output.storage_path):
        raise JobError(
            f"output.storage_path: raydistill tune writes its search to a local directory; "
            f"{job.output.storage_path} is a URI (train the best job on it instead)"
        )
    job = check_trackers(job, log)  # an unreachable tracker fails before anything is written
    run_dir = prepare_run_dir(job, False, log)
    tune_dir = run_dir / TUNE_DIR
    if fresh and tune_dir.exists():
        log(f"--fresh: removing {tune_dir}")
        remove_owned_dir(tune_dir, [SEARCH_JOB, TUNER_STATE], "search directory")
    splits = task.read_splits(job, lambda _: None)
    started = time.perf_counter()
    # before Ray starts: a wrong flag, or a job changed under a resumed search, fails at once
    _check_resume(tune_dir, resume)
    base = _base_job(job)
    if resume:
        check_search_job(tune_dir, base, log)
    else:
        record_search_job(tune_dir, base)
    with job_tracking(job, "tune", log) as tracking:
        summary = _search(job, splits, tune_dir, base, resume, started, tracking, log)
        if tracking is not None:
            best = {f"best.{settings.metric}": summary.best.best_value}
            tracking.log_files(search_results(tune_dir), best)
    return summary


def _search(
    job: JobConfig,
    splits: dict[str, Any],
    tune_dir: Path,
    base: dict[str, Any],
    resume: bool,
    started: float,
    tracking: Any,
    log: Log,
) -> TuneSummary:
    """:func:`run_tune` once its checks passed: the teacher, its cache, the trials (tracked
    by ``tracking``'s Tune callbacks) and the results."""
    from raydistill.pipeline import check_pair, fit_teacher
    from raydistill.runtime import check_worker_resources, ray_session
    from raydistill.teacher.cache import ensure_cache, read_cache, read_manifest
    from raydistill.tracking.trials import trial_callbacks

    assert job.tune is not None
    settings = job.tune
    with ray_session(job, cpus=planned_tune_cpus(job)):
        weights = fit_teacher(job, splits, log)
        # one probe of the pair here, not one per trial: a mismatch fails before any trial
        shapes = check_pair(job, weights, splits["train"])
        # what every trial's job looks like, for its resources
        probe = TrialContext(base, str(weights.resolve()), str(tune_dir), settings)
        trial = probe.job({}, "resources")
        local = IN_PROCESS_TRIALS and in_process(trial)
        passes, built, cached = 0, False, None
        if settings.shared_teacher:
            built = read_manifest(job.cache_dir) is None
            manifest = ensure_cache(job, weights, splits, log)
            passes = manifest["teacher_forward_passes"] if built else 0
            cached = read_cache(job.cache_dir, manifest)
            if local:
                cached = shared_rows(cached, trial)
        context = TrialContext(
            base,
            str(weights.resolve()),
            str(tune_dir),
            settings,
            cached,
            shapes,
            in_process=local,
        )
        # a trial asking for what no node has (a GPU on a laptop) fails here, not in each trial
        check_worker_resources(trial, log)
        if settings.scheduler == "pbt" and settings.max_concurrent_trials < settings.trials:
            log(
                f"[tune] note: pbt with {settings.max_concurrent_trials} of {settings.trials} "
                "trials at a time pauses trials at each perturbation so the others catch up "
                "(each pause restarts a Ray Train run); max_concurrent_trials: "
                f"{settings.trials} trains the population side by side"
            )
        dims = ", ".join(f"{d.key} ~ {d}" for d in settings.dimensions)
        log(
            f"[tune] {'resuming' if resume else 'starting'} {settings.trials} trial(s), "
            f"{settings.max_concurrent_trials} at a time, {settings.scheduler} on "
            f"{settings.metric} ({settings.mode}): {dims}"
        )
        with ray_prints():  # Tune's banner, whatever its verbosity
            callbacks = trial_callbacks(tracking, context)
            grid = _tuner(job, context, tune_dir, resume, callbacks).fit()
    rows = reported_rows(grid, settings.metric, settings.mode, _trial_epochs(job))
    passes += sum(int(r.last.get(TEACHER_PASSES, 0)) for r in rows)
    best = ranked(rows, settings.mode)[0]
    schedules: dict[str, Any] = {}
    if settings.scheduler == "pbt":
        lineage = lineage_history(tune_dir / TRIALS_DIR, best.trial_id)
        schedules = discovered_schedules(lineage, settings.mutations)
    # the discovered schedules replace what the trial's last values say about them
    best_raw = best_job(job, {**best.params, **schedules}, weights)
    best_path = tune_dir / BEST_JOB
    header = (
        f"# {job.name} tuned by `raydistill tune`: best trial {best.trial_id}, "
        f"{settings.metric} {best.best_value:.4f}\n"
    )
    if schedules:
        header += (
            f"# {', '.join(schedules)}: the schedule(s) PBT discovered, as the best student "
            "trained with them; other searched fields: the trial's last values\n"
        )
    atomic_write_text(best_path, header + yaml.safe_dump(best_raw, sort_keys=False))
    summary = TuneSummary(
        tune_dir=tune_dir,
        rows=rows,
        best=best,
        best_job=best_path,
        metric=settings.metric,
        mode=settings.mode,
        teacher_forward_passes=passes,
        cache_built=built,
        seconds=time.perf_counter() - started,
        discovered=schedules,
    )
    write_results(summary, context.alpha_of)
    return summary


def write_results(summary: TuneSummary, alpha_of: Callable[[TrialRow], str]) -> None:
    """``results.md``, ``results.csv``, the plots and ``summary.json`` (each written whole or
    not at all: a killed or full-disk write leaves the previous file)."""
    tune_dir = summary.tune_dir
    atomic_write_text(tune_dir / RESULTS_MD, summary.table() + "\n")
    _write_csv(summary.rows, tune_dir / RESULTS_CSV)
    summary.plots = write_plots(summary.rows, alpha_of, tune_dir, summary.metric)
    atomic_write_json(tune_dir / SUMMARY_JSON, summary.as_dict())


def _write_csv(rows: list[TrialRow], path: Path) -> None:
    import csv

    records = [r.as_dict() for r in rows]
    columns = list(dict.fromkeys(k for rec in records for k in rec))
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(records)
    atomic_write_text(path, buffer.getvalue())
