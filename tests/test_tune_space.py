"""The tune section: search-space parsing, its checks against the job, and trial jobs (no Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from raydistill.config import JobError, job_from_dict, load_job
from raydistill.tune.results import TrialRow, results_markdown
from raydistill.tune.search import best_job
from raydistill.tune.space import SpaceError, apply_params, parse_dimension
from raydistill.tune.trial import TrialContext

ROOT = Path(__file__).resolve().parents[1]


def _job(space: dict, **tune) -> dict:
    raw = yaml.safe_load((ROOT / "jobs" / "digits.yaml").read_text())
    raw["tune"] = {"space": space, **tune}
    return raw


@pytest.mark.parametrize(
    ("spec", "kind", "args"),
    [
        ("uniform(1, 10)", "uniform", (1.0, 10.0)),
        ("loguniform(1e-4, 0.1)", "loguniform", (1e-4, 0.1)),  # `1e-4`: a string to PyYAML
        ("quniform(1, 9, 0.5)", "quniform", (1.0, 9.0, 0.5)),
        ("randint(16, 65)", "randint", (16, 65)),
        ("choice([0.5, 0.9])", "choice", (0.5, 0.9)),
        ({"grid": [16, 32]}, "grid", (16, 32)),
        ({"uniform": [2, 3]}, "uniform", (2.0, 3.0)),
        (
            "choice([0.5, {kind: linear, start: 0.9, end: 0.1}])",
            "choice",
            (0.5, {"kind": "linear", "start": 0.9, "end": 0.1}),
        ),
    ],
)
def test_distributions_parse(spec, kind, args):
    dim = parse_dimension("distill.alpha", spec)
    assert dim.kind == kind
    assert dim.args == args
    assert dim.path == ("distill", "alpha")


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("uniform(10, 1)", "needs low < high"),
        ("uniform(1)", "takes 2 numbers"),
        ("loguniform(0, 1)", "low > 0"),
        ("normal(0, 1)", "unknown distribution 'normal'"),
        ("choice([])", "one non-empty list"),
        ("choice(0.5, 0.9)", "one non-empty list"),
        ("uniform(a, 2)", "expected a number, got 'a'"),
        ("4.0", "is not a distribution"),
        ("randint(1.5, 4)", "randint takes integers"),
        ({"uniform": [1, 2], "choice": [1]}, "mapping with one key"),
        ("uniform(1, [2)", "cannot read the arguments"),
    ],
)
def test_bad_distributions_name_the_key(spec, says):
    with pytest.raises(SpaceError, match=r"tune\.space\.distill\.alpha") as info:
        parse_dimension("distill.alpha", spec)
    assert says in str(info.value)


def test_distill_prefix_may_be_left_out():
    space = {"temperature.start": "uniform(1, 10)", "train.lr": "uniform(0.001, 0.1)"}
    job = job_from_dict(_job(space))
    assert [d.key for d in job.tune.dimensions] == ["distill.temperature.start", "train.lr"]


@pytest.mark.parametrize(
    ("space", "says"),
    [
        ({"temperature.start": "uniform(0, 10)"}, "distill.temperature: must stay > 0"),
        ({"alpha": "choice([0.5, 1.5])"}, "gives 1.5, which the job refuses"),
        ({"train.lrr": "uniform(0.1, 0.2)"}, "the job has no field train.lrr"),
        ({"teacher.args.width": "choice([8, 16])"}, "teacher is fixed for a search"),
        ({"distill.teacher_pass": "choice([once, cache])"}, "fixed for a search"),
        ({"scaling.workers": "choice([1, 2])"}, "scaling is fixed"),
        ({"train.epochs.start": "uniform(1, 2)"}, "train.epochs is not a section"),
        ({}, "tune.space: is empty"),
    ],
)
def test_space_is_checked_against_the_job(space, says):
    with pytest.raises(JobError) as info:
        job_from_dict(_job(space), "x.yaml")
    assert says in str(info.value)
    assert "tune.space" in str(info.value)


def test_grid_search_needs_enumerable_dimensions():
    with pytest.raises(JobError, match=r"grid cannot enumerate distill\.temperature\.start"):
        job_from_dict(_job({"temperature.start": "uniform(1, 4)"}, search="grid"))
    space = {"temperature.start": "grid([1, 4])", "alpha": "choice([0.5])"}
    settings = job_from_dict(_job(space, search="grid", num_samples=3)).tune
    assert len(settings.dimensions) == 2
    assert settings.trials == 3 * 2  # grid points times samples


def test_seed_is_fixed_when_the_teacher_labelled_augmented_views():
    raw = _job({"seed": "choice([0, 1])"})
    job_from_dict(raw)  # no augmentation: the seed is free
    raw["data"]["augment"] = {"views": 2}
    with pytest.raises(JobError, match="seed picks the augmented views"):
        job_from_dict(raw)


def test_the_tune_example_job_resolves():
    job = load_job(ROOT / "jobs" / "digits-tune.yaml")
    assert job.tune is not None and job.tune.scheduler == "asha"
    kinds = {d.key: d.kind for d in job.tune.dimensions}
    assert kinds == {"distill.temperature.start": "uniform", "distill.alpha": "choice"}


def _context(tmp_path: Path, **settings) -> tuple[TrialContext, object]:
    raw = _job({"temperature.start": "uniform(1, 10)"}, **settings)
    raw["output"]["storage_path"] = str(tmp_path / "runs")
    job = job_from_dict(raw)
    weights = tmp_path / "teacher.pt"
    weights.write_bytes(b"weights")
    from raydistill.tune.search import _base_job

    return TrialContext(_base_job(job), str(weights), str(tmp_path / "tune"), job.tune), job


def test_trial_job_reads_the_shared_cache_with_the_trial_parameters(tmp_path):
    context, job = _context(tmp_path, epochs=5, workers_per_trial=1)
    trial = context.job({"distill.temperature.start": 7.5}, "trial_0001")
    assert trial.distill.temperature.start == 7.5
    assert trial.distill.teacher_pass == "cache"
    assert trial.cache_dir == job.cache_dir  # every trial reads the one cache
    assert trial.teacher.checkpoint == tmp_path / "teacher.pt"
    assert trial.train.epochs == 5 and trial.scaling.workers == 1
    assert trial.tune is None and not trial.train.baseline
    assert trial.run_dir == (tmp_path / "tune" / "trials" / "trial_0001").resolve()
    # a trial does not share the cache when the search compares per-trial teachers
    own, _ = _context(tmp_path, shared_teacher=False)
    assert own.job({}, "t").distill.teacher_pass == "once"


def test_best_job_is_complete_and_names_the_trained_teacher(tmp_path):
    _, job = _context(tmp_path)
    weights = tmp_path / "teacher.pt"
    raw = best_job(job, {"distill.temperature.start": 2.5, "distill.alpha": 0.9}, weights)
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump(raw))
    best = load_job(path)
    assert best.name == "digits-tuned" and best.tune is None
    assert best.distill.temperature.start == 2.5 and best.distill.alpha.start == 0.9
    assert best.teacher.checkpoint == weights.resolve()
    assert best.train.epochs == job.train.epochs


def test_apply_params_does_not_touch_the_base():
    base = {"distill": {"alpha": {"kind": "constant", "start": 0.5}}}
    out = apply_params(base, {"distill.alpha.start": 0.7})
    assert out["distill"]["alpha"]["start"] == 0.7
    assert base["distill"]["alpha"]["start"] == 0.5


def test_results_table_ranks_trials_and_marks_early_stops():
    def row(trial, accs, error=None):
        history = [{"val_acc": a, "epochs_done": i + 1} for i, a in enumerate(accs)]
        return TrialRow(trial, {"t": float(len(accs))}, history, "val_acc", "max", 3, error)

    rows = [row("a", [0.5, 0.6]), row("b", [0.5, 0.9, 0.8]), row("c", [], error="boom")]
    assert rows[1].best_value == 0.9 and rows[1].status == "finished"
    assert rows[0].status == "stopped early" and rows[2].status == "error"
    lines = results_markdown(rows, "val_acc", "max").splitlines()
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["b", "a", "c"]
    assert "0.9000" in lines[2] and "stopped early" in lines[3]


def test_teacher_passes_a_trial_makes_depend_on_how_it_gets_the_teacher(tmp_path):
    from raydistill.data.sources import load_splits
    from raydistill.pipeline import planned_teacher_passes, teacher_pass_rows

    context, job = _context(tmp_path, epochs=3)
    splits = load_splits(job.data)
    rows = teacher_pass_rows(job, splits)
    assert rows == len(splits["train"]) + len(splits["val"])
    shared = context.job({}, "t")
    assert planned_teacher_passes(shared, splits) == rows  # its cache is not built yet
    (shared.cache_dir).mkdir(parents=True)
    (shared.cache_dir / "manifest.json").write_text('{"format": "raydistill.teacher_cache/1"}')
    assert planned_teacher_passes(shared, splits) == 0  # every trial reads the one pass
    own, _ = _context(tmp_path, shared_teacher=False, epochs=3)
    assert planned_teacher_passes(own.job({}, "t"), splits) == rows  # once per trial
    per_epoch = own.job({}, "t").model_copy(
        update={"distill": job.distill.model_copy(update={"teacher_pass": "per_epoch"})}
    )
    assert planned_teacher_passes(per_epoch, splits) == 3 * rows


def test_temperature_search_builds_the_tune_section(tmp_path):
    from raydistill.tune.temperature_search import TemperatureSearch

    job = load_job(ROOT / "jobs" / "digits.yaml")
    search = TemperatureSearch(job, temperatures=(2, 6), alphas=[0.5, 0.9], epochs=3)
    dims = {d.key: d for d in search.job.tune.dimensions}
    assert str(dims["distill.temperature"]) == "uniform(2, 6)"
    assert dims["distill.alpha"].args == (0.5, 0.9)
    assert search.job.tune.epochs == 3 and search.job.train == job.train
    with pytest.raises(JobError, match=r"distill\.temperature: must stay > 0"):
        TemperatureSearch(job, temperatures=(0, 6))
    with pytest.raises(JobError, match="unknown key"):
        TemperatureSearch(job, shceduler="fifo")
