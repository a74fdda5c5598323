"""PBT and per-trial resources in the tune section, without Ray: the checks, the explore step kept
inside the space, the learning rate a continued trial trains with, and the schedules written
back from the best student's lineage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from raydistill.config import JobError, job_from_dict
from raydistill.distill.schedules import as_schedule
from raydistill.train.optim import build_lr_scheduler, build_optimizer, rebase_lr
from raydistill.train.state import save_state
from raydistill.tune.discovered import as_piecewise, discovered_schedules, lineage_history
from raydistill.tune.results import EPOCHS_DONE
from raydistill.tune.schedulers import WithinSpace
from raydistill.tune.search import _base_job, planned_tune_cpus
from raydistill.tune.space import parse_dimension
from raydistill.tune.trial import TrialContext, unreported_end

ROOT = Path(__file__).resolve().parents[1]


def _job(space: dict, **tune) -> dict:
    raw = yaml.safe_load((ROOT / "jobs" / "digits.yaml").read_text())
    raw["tune"] = {"space": space, **tune}
    return raw


@pytest.mark.parametrize(
    ("spec", "value", "clamped"),
    [
        ("uniform(0.1, 0.9)", 1.08, 0.9),  # an alpha perturbed x1.2 past its range
        ("uniform(1, 10)", 0.8, 1.0),
        ("uniform(1, 10)", 5.5, 5.5),
        ("loguniform(0.001, 0.1)", 0.12, 0.1),
        ("quniform(1, 9, 0.5)", 4.3, 4.5),
        ("randint(16, 65)", 76.8, 64),  # high is exclusive
        ("randint(16, 65)", 19.2, 19),
        ("choice([0.5, 0.9])", 0.9, 0.9),
    ],
)
def test_pbt_explore_stays_inside_each_dimension(spec, value, clamped):
    dim = parse_dimension("distill.alpha.start", spec)
    explored = WithinSpace((dim,))({"distill.alpha.start": value, "other": 3})
    assert explored == {"distill.alpha.start": clamped, "other": 3}
    assert type(explored["distill.alpha.start"]) is type(clamped)


def test_pbt_perturbs_the_non_grid_entries_only():
    raw = _job(
        {"temperature.start": "uniform(1, 10)", "train.batch_size": "grid([16, 32])"},
        scheduler="pbt",
    )
    job = job_from_dict(raw)
    assert [d.key for d in job.tune.mutations] == ["distill.temperature.start"]
    with pytest.raises(JobError, match=r"tune\.scheduler: pbt perturbs .* there are none"):
        job_from_dict(_job({"train.batch_size": "grid([16, 32])"}, scheduler="pbt"))
    with pytest.raises(JobError, match=r"tune\.quantile_fraction"):
        job_from_dict(_job({"temperature.start": "uniform(1, 10)"}, quantile_fraction=0.8))
    with pytest.raises(JobError, match=r"tune\.perturbation_interval"):
        job_from_dict(_job({"temperature.start": "uniform(1, 10)"}, perturbation_interval=0))


def test_trials_get_their_own_workers_and_resources(tmp_path):
    raw = _job(
        {"temperature.start": "uniform(1, 10)"},
        workers_per_trial=2,
        cpus_per_worker=0.5,
        use_gpu=True,
        resources_per_worker={"GPU": 0.25, "student": 1},
        max_concurrent_trials=4,
    )
    raw["output"]["storage_path"] = str(tmp_path / "runs")
    job = job_from_dict(raw)
    weights = tmp_path / "t.pt"
    weights.write_bytes(b"weights")
    context = TrialContext(_base_job(job), str(weights), str(tmp_path / "tune"), job.tune)
    trial = context.job({}, "trial_1")
    assert trial.scaling.workers == 2 and trial.scaling.cpus_per_worker == 0.5
    assert trial.scaling.use_gpu and trial.scaling.resources_per_worker == {
        "GPU": 0.25,
        "student": 1,
    }
    assert job.scaling.cpus_per_worker == 1.0 and not job.scaling.use_gpu  # the job's own stay
    # 4 trials x (2 workers x 0.5 CPU + the trial function's 0.1) + 2 of headroom
    assert planned_tune_cpus(job) == 7
    # unset: a trial takes the job's scaling
    plain = job_from_dict(_job({"temperature.start": "uniform(1, 10)"}))
    same = TrialContext(_base_job(plain), str(weights), str(tmp_path / "tune"), plain.tune)
    same = same.job({}, "t")
    assert same.scaling.cpus_per_worker == plain.scaling.cpus_per_worker
    assert same.scaling.resources_per_worker == plain.scaling.resources_per_worker
    # a continued PBT trial trains in a run directory of its own
    assert context.job({}, "trial_1", generation=2).run_dir.name == "trial_1.g2"


@pytest.mark.parametrize("schedule", ["cosine", "step", "none"])
def test_a_continued_schedule_follows_the_new_base_lr(schedule):
    """A PBT trial restores another trial's optimizer and lr schedule, then trains with its own
    (perturbed) train.lr: the curve continues at the new height."""
    raw = yaml.safe_load((ROOT / "jobs" / "digits.yaml").read_text())
    raw["train"].update(lr=0.01, lr_schedule=schedule, epochs=10, lr_step_size=3)
    train = job_from_dict(raw).train
    reference = build_optimizer(train, [torch.nn.Parameter(torch.zeros(1))])
    ref_sched = build_lr_scheduler(train, reference)
    curve = []
    for _ in range(10):
        curve.append(reference.param_groups[0]["lr"])
        reference.step()
        ref_sched.step()
    donor = build_optimizer(train, [torch.nn.Parameter(torch.zeros(1))])
    donor_sched = build_lr_scheduler(train, donor)
    for _ in range(4):
        donor.step()
        donor_sched.step()
    doubled = train.model_copy(update={"lr": 0.02})
    optimizer = build_optimizer(doubled, [torch.nn.Parameter(torch.zeros(1))])
    scheduler = build_lr_scheduler(doubled, optimizer)
    optimizer.load_state_dict(donor.state_dict())
    scheduler.load_state_dict(donor_sched.state_dict())
    assert optimizer.param_groups[0]["lr"] == pytest.approx(curve[4])  # the donor's height
    rebase_lr(optimizer, scheduler, doubled.lr)
    continued = []
    for _ in range(4, 10):
        continued.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert continued == pytest.approx([2 * lr for lr in curve[4:]])
    assert scheduler.get_last_lr()[0] == pytest.approx(optimizer.param_groups[0]["lr"])
    # the same lr: nothing changes
    rebase_lr(optimizer, scheduler, doubled.lr)
    assert scheduler.base_lrs == [0.02]


def test_values_become_a_piecewise_schedule_only_where_they_change():
    assert as_piecewise([4.0, 4.0, 4.0]) == {"kind": "constant", "start": 4.0}
    schedule = as_piecewise([4.0, 4.0, 4.8, 4.8, 3.84])
    assert schedule == {"kind": "piecewise", "start": 4.0, "changes": {2: 4.8, 4: 3.84}}
    assert as_schedule(schedule).values(6) == [4.0, 4.0, 4.8, 4.8, 3.84, 3.84]


def test_the_best_students_lineage_gives_the_discovered_schedules(tmp_path):
    trials = tmp_path / "trials"

    def history(name: str, temperatures: list[float]) -> None:
        directory = trials / name / "student"
        directory.mkdir(parents=True)
        rows = [{"epoch": i, "temperature": t, "alpha": 0.5} for i, t in enumerate(temperatures)]
        (directory / "history.json").write_text(json.dumps(rows))

    history("t_1", [4.0, 4.0])
    history("t_1.g1", [4.0, 4.0, 6.0])
    history("t_1.g2", [4.0, 4.0, 6.0, 7.2])  # the newest generation is the student it ended with
    history("t_10", [9.0])  # another trial whose id starts the same
    (trials / "t_1.g3").mkdir()  # a generation that wrote nothing yet
    lineage = lineage_history(trials, "t_1")
    assert [row["temperature"] for row in lineage] == [4.0, 4.0, 6.0, 7.2]
    assert lineage_history(trials, "t_2") == []

    temperature = parse_dimension("distill.temperature.start", "uniform(1, 10)")
    found = discovered_schedules(lineage, [temperature])
    assert found == {
        "distill.temperature": {"kind": "piecewise", "start": 4.0, "changes": {2: 6.0, 3: 7.2}}
    }
    # alpha was not perturbed: its own schedule stays in the job
    alpha = parse_dimension("distill.alpha", "choice([0.5, 0.9])")
    assert set(discovered_schedules(lineage, [temperature, alpha])) == {
        "distill.temperature",
        "distill.alpha",
    }
    assert discovered_schedules(lineage, [parse_dimension("train.lr", "uniform(0.1, 1)")]) == {}


def test_a_generation_continued_from_a_last_epoch_reports_that_epoch_as_its_own(tmp_path):
    """A poor trial moved onto a donor's final checkpoint has nothing left to train; it must
    still end in Tune at the donor state's last epoch (else its row keeps the epochs before
    the exploit, 'stopped early', under the donor's trial id that Tune's restore left)."""
    start = tmp_path / "start"
    start.mkdir()
    rows = [{"epoch": e, "val_acc": 0.5 + e / 10, "temperature": 3.0} for e in range(4)]
    save_state(start, {"epoch": 3, "history": rows})
    owed = unreported_end(start, reported=0, extra={"teacher_forward_passes": 0})
    assert owed is not None
    assert owed[EPOCHS_DONE] == 4 and owed["val_acc"] == pytest.approx(0.8)
    assert owed["temperature"] == 3.0 and owed["teacher_forward_passes"] == 0
    # a generation that trained (and so reported) owes nothing, nor does a fresh trial
    assert unreported_end(start, reported=1, extra={}) is None
    assert unreported_end(None, reported=0, extra={}) is None


def test_tpe_draws_inside_the_space_repeatably_from_the_job_seed():
    from raydistill.tune.search import _param_space, _search_alg

    raw = _job(
        {"temperature.start": "uniform(1, 10)", "train.lr": "loguniform(0.001, 0.03)",
         "train.batch_size": "choice([16, 32])"},
        search="tpe",
        max_concurrent_trials=2,
    )  # fmt: skip
    job = job_from_dict(raw)

    def draws() -> list[dict]:
        alg = _search_alg(job, job.tune)
        assert alg.set_search_properties("val_acc", "max", _param_space(job.tune))
        out = [alg.suggest(f"t{i}") for i in range(3)]
        assert out[2] is None  # two at a time: the third waits for a result
        return out[:2]

    first = draws()
    for config in first:
        assert 1 <= config["distill.temperature.start"] <= 10
        assert 0.001 <= config["train.lr"] <= 0.03
        assert config["train.batch_size"] in (16, 32)
        job_from_dict({**raw, "tune": None, "train": {**raw["train"], "lr": config["train.lr"]}})
    assert draws() == first  # the job's seed fixes the sampler
    with pytest.raises(JobError, match=r"tune\.space\.distill\.alpha: tpe chooses among numbers"):
        job_from_dict(
            _job(
                {"alpha": {"choice": [0.5, {"kind": "linear", "start": 0.9, "end": 0.1}]}},
                search="tpe",
            )
        )
    with pytest.raises(JobError, match="tpe draws values: use choice"):
        job_from_dict(_job({"train.batch_size": "grid([16, 32])"}, search="tpe"))


def test_pbt_explores_choices_along_their_list_and_numbers_inside_their_range():
    """What PBT's explore step makes of the scheduler this search builds, many times over:
    a choice only ever becomes one of its values (not 1.2x a learning rate), and a number
    never leaves its range."""
    import random

    from ray.tune.schedulers.pbt import _explore

    from raydistill.tune.schedulers import build_scheduler

    raw = _job(
        {"temperature.start": "uniform(1, 8)", "train.lr": "choice([0.01, 0.00001])"},
        scheduler="pbt",
        resample_probability=0.25,
    )
    settings = job_from_dict(raw).tune
    pbt = build_scheduler(settings, epochs=4)
    assert pbt._hyperparam_mutations["train.lr"] == [0.01, 0.00001]
    random.seed(0)
    config = {"distill.temperature.start": 7.5, "train.lr": 0.01}
    seen_lr, seen_t = set(), []
    for _ in range(200):
        new, _ = _explore(
            config,
            pbt._hyperparam_mutations,
            pbt._resample_probability,
            pbt._perturbation_factors,
            pbt._custom_explore_fn,
        )
        seen_lr.add(new["train.lr"])
        seen_t.append(new["distill.temperature.start"])
        config = new
    assert seen_lr == {0.01, 0.00001}
    assert 1 <= min(seen_t) and max(seen_t) <= 8 and len(set(seen_t)) > 10
