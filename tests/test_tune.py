"""`raydistill tune` on a real local Ray: trials share one teacher pass, ASHA stops poor trials,
an interrupted search resumes, the best job it writes trains as is, and a second search of the
same job (through the Python API, its trials on Ray Train) runs no teacher at all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from counting_teacher import samples_labelled

from raydistill.config import load_job
from raydistill.data.sources import load_splits
from raydistill.pipeline import run_job, teacher_pass_rows
from raydistill.tune.search import run_tune
from raydistill.tune.temperature_search import TemperatureSearch

pytestmark = pytest.mark.slow

HELPERS = Path(__file__).resolve().parent / "helpers"
ROOT = Path(__file__).resolve().parents[1]
TRIAL_EPOCHS = 2


@pytest.fixture(scope="module")
def teacher_weights(digits_teacher) -> Path:
    """The session's digits teacher, for this module's searches."""
    return Path(digits_teacher)


def _tune_job(write_job, tmp_path: Path, name: str, weights: Path) -> tuple[Path, Path]:
    """A search over temperature and two learning rates (one hopeless, so ASHA has something
    to stop), with a teacher that counts every sample it labels."""
    counts = tmp_path / f"{name}-counts"
    counts.mkdir()
    changes = {
        "teacher.model": "counting_teacher:counting_cnn",
        "teacher.args": {"width": 32, "count_dir": str(counts)},
        "teacher.checkpoint": str(weights),
        "distill.teacher_pass": "cache",
        "train.epochs": 20,
        "train.baseline": False,
        "tune": {
            "space": {"temperature.start": "uniform(1, 8)", "train.lr": "grid([0.01, 0.00001])"},
            "num_samples": 2,  # x 2 grid points: 4 trials
            "max_concurrent_trials": 2,
            "scheduler": "asha",
            "grace_period": 1,
            "epochs": TRIAL_EPOCHS,
            "workers_per_trial": 1,
        },
    }
    return write_job(changes, name=name), counts


def _finished_trials(tune_dir: Path) -> list[Path]:
    return sorted((tune_dir / "trials").glob("*/student/model.pt"))


@pytest.mark.budget(
    seconds=900,
    reason="a 4-trial ASHA search killed and resumed, its best job trained, then a second "
    "2-trial search: about ten Ray Train runs (311-463 s loaded)",
)
def test_interrupted_search_resumes_over_one_teacher_pass(
    ray_address, write_job, tmp_path, teacher_weights
):
    job_file, counts = _tune_job(write_job, tmp_path, "tune", teacher_weights)
    job = load_job(job_file)
    tune_dir = job.run_dir / "tune"
    cli = [str(Path(sys.executable).with_name("raydistill")), "tune", str(job_file)]
    # the caller's PYTHONPATH stays: it may name the checkout under test (conftest does the same)
    python_path = os.pathsep.join(p for p in (str(HELPERS), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "RAY_ADDRESS": ray_address, "PYTHONPATH": python_path}
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(
        cli, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    # a bound, not a pace: the loop ends when a trial finishes (the cache pass alone took 155 s
    # on a loaded 2-core machine)
    deadline = time.time() + 600
    while not _finished_trials(tune_dir) and first.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    os.killpg(first.pid, signal.SIGKILL)  # the driver dies mid-search
    first.wait()
    finished = _finished_trials(tune_dir)
    assert finished, "no trial finished before the kill"
    stamps = {p: p.stat().st_mtime for p in finished}

    summary = run_tune(job, resume=True, log=print)

    # Every trial of the search is there once, finished or stopped by ASHA.
    assert len(summary.rows) == 4
    assert len({r.trial_id for r in summary.rows}) == 4
    assert all(r.best_value is not None and r.error is None for r in summary.rows)
    assert {r.epochs_run for r in summary.rows} <= set(range(1, TRIAL_EPOCHS + 1))
    assert any(r.status == "stopped early" for r in summary.rows), summary.table()
    stopped = [r for r in summary.rows if r.status == "stopped early"]
    assert all(r.params["train.lr"] == 0.00001 for r in stopped), summary.table()
    # Trials finished before the kill were not trained again.
    assert {p: p.stat().st_mtime for p in finished} == stamps

    # One teacher pass over train and val served every trial (plus one one-sample probe of the
    # teacher/student pair per driver run); no trial ran the teacher.
    splits = load_splits(job.data)
    assert samples_labelled(counts) == teacher_pass_rows(job, splits) + 2
    assert summary.teacher_forward_passes == 0  # the resumed run reused the cache
    assert all(r.last["teacher_forward_passes"] == 0 for r in summary.rows)

    # The table, plots and the best job are written; the best job trains as is.
    for name in ("results.md", "results.csv", "search.png", "curves.png", "summary.json"):
        assert (tune_dir / name).is_file(), name
    assert json.loads((tune_dir / "summary.json").read_text())["trials"] == 4
    best = load_job(summary.best_job, ["train.epochs=1"])
    assert best.tune is None and best.name == "tune-tuned"
    assert best.train.lr == summary.best_params["train.lr"] == 0.01
    assert best.distill.temperature.start == summary.best_params["distill.temperature.start"]
    result = run_job(best, log=print)
    assert result.score("student (distilled)").accuracy > 0.1

    # The Python convenience, as a second search of the same job: the teacher and its cache are
    # reused, so it costs no teacher pass at all. Its trials have two workers each, so they run
    # on Ray Train (the search above trained in the trials' own processes).
    labelled = samples_labelled(counts)
    found = TemperatureSearch(
        job,
        temperatures=(1, 8),
        epochs=1,
        scheduler="fifo",
        workers_per_trial=2,
        max_concurrent_trials=2,  # side by side: their worker groups start together
    ).run(trials=2, fresh=True)
    assert 1 <= found.temperature <= 8
    assert found.alpha == job.distill.alpha.start  # not searched: the job's own
    assert len(found.summary.rows) == 2 and "| trial |" in found.table
    assert found.summary.teacher_forward_passes == 0 and not found.summary.cache_built
    assert samples_labelled(counts) == labelled + 1  # only the pair probe


def _first_temperature(stage: Path) -> float | None:
    """The temperature of the first epoch a stage directory recorded (its finished history, or
    else its newest checkpoint's), or None when it recorded none."""
    from raydistill.train.state import latest_checkpoint, load_state

    if (stage / "history.json").is_file():
        history = json.loads((stage / "history.json").read_text())
    elif (checkpoint := latest_checkpoint(stage)) is not None:
        history = load_state(checkpoint)["history"]
    else:
        return None
    return float(history[0]["temperature"]) if history else None


@pytest.mark.budget(
    seconds=600,
    reason="four PBT trials side by side; every exploit or pause restarts a trial (194-352 s "
    "on Ray Train trials; 889 s in-process on a machine at load 30)",
)
def test_pbt_continues_poor_trials_from_good_checkpoints(
    ray_address, write_job, tmp_path, teacher_weights
):
    """Four trials side by side; one learning rate is hopeless, so PBT has poor trials to move
    onto a good trial's checkpoint. Per-trial resources ask for the head's custom resource."""
    counts = tmp_path / "pbt-counts"
    counts.mkdir()
    epochs = 4
    job = load_job(
        write_job(
            {
                "teacher.model": "counting_teacher:counting_cnn",
                "teacher.args": {"width": 32, "count_dir": str(counts)},
                "teacher.checkpoint": str(teacher_weights),
                "distill.teacher_pass": "cache",
                "train.baseline": False,
                "tune": {
                    "space": {
                        "temperature.start": "uniform(1, 8)",
                        "train.lr": "choice([0.01, 0.00001])",
                    },
                    "scheduler": "pbt",
                    "num_samples": 4,
                    "max_concurrent_trials": 4,
                    "perturbation_interval": 1,
                    # the bottom trial of four copies the top one: each exploit restarts a
                    # Ray Train run, and one per interval is all the checks below need
                    "quantile_fraction": 0.25,
                    "epochs": epochs,
                    "workers_per_trial": 1,
                    "cpus_per_worker": 0.5,
                    "resources_per_worker": {"student": 0.5},
                },
            },
            name="pbt",
        )
    )
    summary = run_tune(job, log=print)
    trials_dir = summary.tune_dir / "trials"

    # PBT stops no trial: every one trained all its epochs, and none ran the teacher
    assert len(summary.rows) == 4 and all(r.error is None for r in summary.rows)
    assert {r.epochs_run for r in summary.rows} == {epochs}, summary.table()
    splits = load_splits(job.data)
    assert samples_labelled(counts) == teacher_pass_rows(job, splits) + 1  # + the pair probe

    # Some trial continued from another trial's checkpoint in a run directory of its own: its
    # student's history starts with the donor's first epoch (the donor's temperature, as the
    # donor first reported it to Tune) and goes on to the last epoch.
    # Each trial's own first epoch is read from its first generation's run directory: Tune's
    # per-trial results are no record of it, as a restored trial's rows may begin with the
    # donor's.
    first_temperature = {
        r.trial_id: t
        for r in summary.rows
        if (t := _first_temperature(trials_dir / r.trial_id / "student")) is not None
    }
    exploits = []
    for trial in first_temperature:
        generations = sorted(
            trials_dir.glob(f"{trial}.g*"), key=lambda d: int(d.name.rsplit(".g", 1)[1])
        )
        if not generations:
            continue
        # a generation may itself be cut short by the next exploit; the newest one finished
        newest = generations[-1]
        assert (newest / "start" / "state.pt").is_file()
        lineage = json.loads((newest / "student" / "history.json").read_text())
        assert [h["epoch"] for h in lineage] == list(range(epochs))
        donors = [t for t, temp in first_temperature.items() if temp == lineage[0]["temperature"]]
        assert len(donors) == 1, f"{newest}: its first epoch is no trial's first epoch"
        if donors != [trial]:
            exploits.append((trial, donors[0]))
    assert exploits, "no trial continued from another trial's checkpoint"

    # best.yaml replays what the best student trained with and loads as a job
    best = load_job(summary.best_job)
    lineage = next(
        json.loads((d / "student" / "history.json").read_text())
        for d in sorted(trials_dir.glob(f"{summary.best.trial_id}*"), reverse=True)
        if (d / "student" / "history.json").is_file()
    )
    assert best.distill.temperature.values(epochs) == [h["temperature"] for h in lineage]
    assert summary.discovered["distill.temperature"]["start"] == lineage[0]["temperature"]
