"""raydistill's overhead over a plain PyTorch loop, side by side in one run (issue 20).

    .venv/bin/python benchmarks/overhead.py jobs/digits.yaml --quick

On one machine, one after the other:
(a) plain: one process, no Ray, ``torch.set_num_threads(scaling.cpus_per_worker)``: the
    teacher, its logits over train and val computed once, the distilled student trained on
    those logits (offline KD, ``alpha * KL * T^2 + (1 - alpha) * CE`` written out), and the
    student alone; the job's models, per-worker batch size, optimizer, LR schedule, gradient
    clipping and epochs, a seeded shuffle and a validation pass per epoch in batches of the
    same size (loss and accuracy, as raydistill validates). With ``data.labelled_fraction``
    it trains on what raydistill's stages train on: the distilled student's cross entropy
    over the labelled rows of each batch (their mask computed once, before the first epoch),
    and the student alone on the labelled rows only, each read ``labelled_copies`` times;
(b) ``raydistill train`` of the same job (a copy with a temporary ``storage_path``, on
    ``--workers`` workers, default 1 for a like-for-like rate, ``--fresh``), in a subprocess;
(c) a 4-trial search like ``jobs/digits-tune.yaml`` (FIFO, ``--trial-epochs`` epochs each,
    teacher given as (b)'s weights): its trials' start-up from their results (``startup_s``
    of each trial's history: the trial's stage start to its first step; a trial's scheduling
    and its ``load_splits`` before the stage are not in it). ``--no-tune`` skips it.

Per stage: wall time (plain: the stage's loop; raydistill: from its driver's ``training``
line to its last epoch line, as they reached this process), start-up (plain: first step of
the stage's loop; raydistill: ``startup_s``, stage start to first step) and in-epoch samples/s
(the median over epochs 2 and later: epoch 1 carries the worker's data read). The ratios
are raydistill / plain; ``in_epoch`` is the lower of the distilled student's and the student
alone's. The last line is ``ratios: in_epoch=<x> job=<y> trial_startup_s=<z>``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from raydistill.config import JobConfig, load_job
from raydistill.data.arrays import model_tensor
from raydistill.data.keys import labelled_mask
from raydistill.data.sources import labelled_copies, load_splits
from raydistill.models.specs import build_model
from raydistill.rundir import TRIALS_DIR, TUNE_DIR, history_file, weights_file

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("teacher", "student", "baseline")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out[0] if isinstance(out, tuple) else getattr(out, "logits", out)


def plain_stage(
    job: JobConfig, role: str, data: dict[str, torch.Tensor], teacher_logits: Any = None
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """One stage in a plain loop; returns the model and its wall, start-up and rates."""
    started = time.perf_counter()
    spec = job.teacher if role == "teacher" else job.student
    train = job.teacher_train() if role == "teacher" else job.train
    torch.manual_seed(job.seed)
    model = build_model(spec, 10)
    optimizer = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}.get(
        train.optimizer, torch.optim.SGD
    )(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, train.epochs)
    T, alpha = job.distill.temperature.start, job.distill.alpha.start
    x, y = data["x"], data["y"]
    labelled = data.get("labelled") if teacher_logits is not None else None
    if role == "baseline" and "alone" in data:  # the labelled rows alone, as raydistill's
        x, y = x[data["alone"]], y[data["alone"]]
    rates, first_step = [], None
    generator = torch.Generator().manual_seed(job.seed)
    for _ in range(train.epochs):
        model.train()
        epoch_started, n = time.perf_counter(), 0
        for index in torch.randperm(len(x), generator=generator).split(train.batch_size):
            if first_step is None:
                first_step = time.perf_counter() - started
            logits = _logits(model, x[index])
            if labelled is None:
                loss = F.cross_entropy(logits, y[index])
            else:  # the mean cross entropy over the batch's labelled rows (0 without any)
                mask = labelled[index]
                ce = F.cross_entropy(logits, y[index], reduction="none")
                loss = (ce * mask).sum() / mask.sum().clamp_min(1.0)
            if teacher_logits is not None:
                soft = F.kl_div(
                    F.log_softmax(logits / T, -1),
                    F.log_softmax(teacher_logits[index] / T, -1),
                    log_target=True,
                    reduction="batchmean",
                )
                loss = alpha * soft * T * T + (1 - alpha) * loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if train.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
            optimizer.step()
            n += len(index)
        rates.append(n / (time.perf_counter() - epoch_started))
        scheduler.step()
        model.eval()
        with torch.no_grad():  # the validation pass raydistill makes every epoch
            sums = torch.zeros(2, dtype=torch.float64)  # loss * n, correct
            for s in range(0, len(data["val_x"]), train.batch_size):
                val_y = data["val_y"][s : s + train.batch_size]
                val_logits = _logits(model, data["val_x"][s : s + train.batch_size])
                ce = F.cross_entropy(val_logits, val_y)
                sums += torch.tensor(
                    [ce.item() * len(val_y), (val_logits.argmax(-1) == val_y).sum().item()]
                )
    wall = time.perf_counter() - started
    return model, {"wall_s": wall, "startup_s": first_step or 0.0, "rate": _in_epoch(rates)}


def _in_epoch(rates: list[float]) -> float:
    later = rates[1:] or rates
    return statistics.median(later)


def run_plain(job: JobConfig) -> dict[str, Any]:
    torch.set_num_threads(max(1, int(job.scaling.cpus_per_worker)))
    started = time.perf_counter()
    splits = load_splits(job.data)

    def tensors(split: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return model_tensor(split.inputs), torch.as_tensor(np.asarray(split.labels))

    x, y = tensors(splits["train"])
    val_x, val_y = tensors(splits["val"])
    data = {"x": x, "y": y, "val_x": val_x, "val_y": val_y}
    share = job.data.labelled_fraction
    if share is not None:  # row ids of a split held in memory are positions
        mask = labelled_mask(np.arange(len(x)), share, job.data.split.seed)
        data["labelled"] = torch.from_numpy(mask).float()
        data["alone"] = torch.from_numpy(np.tile(np.flatnonzero(mask), labelled_copies(share)))
    stages: dict[str, Any] = {}
    teacher, stages["teacher"] = plain_stage(job, "teacher", data)
    with torch.no_grad():  # offline KD: the teacher's logits, once
        logits = _logits(teacher.eval(), x)
    _, stages["student"] = plain_stage(job, "student", data, logits)
    _, stages["baseline"] = plain_stage(job, "baseline", data)
    return {"stages": stages, "job_s": time.perf_counter() - started}


def _cli(args: list[str], log: Path) -> tuple[float, list[tuple[float, str]]]:
    """Run ``raydistill <args>``; its wall time and its output lines with arrival times."""
    started = time.perf_counter()
    lines: list[tuple[float, str]] = []
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "raydistill.cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            # line by line as printed: the stage walls are taken from arrival times
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            lines.append((time.perf_counter() - started, ANSI.sub("", line)))
        if proc.wait() != 0:
            raise SystemExit(f"raydistill {' '.join(args)} failed; see {log}")
    return time.perf_counter() - started, lines


def _stage_walls(lines: list[tuple[float, str]], epochs: dict[str, int]) -> dict[str, float]:
    walls: dict[str, float] = {}
    for role in STAGES:
        start = next((t for t, s in lines if s.startswith(f"[{role}] training ")), None)
        last = f"[{role}] epoch {epochs[role]}/{epochs[role]} "
        end = next((t for t, s in reversed(lines) if last in s), None)
        if start is not None and end is not None:
            walls[role] = end - start
    return walls


def run_raydistill(job_path: Path, job: JobConfig, storage: Path, workers: int) -> dict[str, Any]:
    raw = yaml.safe_load(job_path.read_text())
    raw["output"] = {**raw.get("output", {}), "storage_path": str(storage)}
    raw.setdefault("scaling", {})["workers"] = workers
    raw.setdefault("teacher", {}).setdefault("train", {})["epochs"] = job.teacher_train().epochs
    raw.setdefault("train", {})["epochs"] = job.train.epochs
    copy = storage / "job.yaml"
    copy.write_text(yaml.safe_dump(raw))
    job_s, lines = _cli(["train", str(copy), "--fresh"], storage / "train.log")
    ran = load_job(copy)
    epochs = {"teacher": ran.teacher_train().epochs, "student": ran.train.epochs}
    epochs["baseline"] = ran.train.epochs
    walls = _stage_walls(lines, epochs)
    stages = {}
    for role in STAGES:
        history = json.loads(history_file(ran.run_dir, role).read_text())
        stages[role] = {
            "wall_s": walls.get(role, math.nan),
            "startup_s": history[0].get("startup_s", math.nan),
            "rate": _in_epoch([h["samples_per_s"] for h in history]),
        }
    return {"stages": stages, "job_s": job_s, "teacher": weights_file(ran.run_dir, "teacher")}


def run_search(teacher: Path, storage: Path, workers: int, epochs: int) -> list[float]:
    """Per-trial start-up (s) of a 4-trial search like jobs/digits-tune.yaml."""
    sets = [
        f"output.storage_path={storage}",
        f"teacher.checkpoint={teacher}",
        "tune.num_samples=4",
        f"tune.epochs={epochs}",
        "tune.scheduler=fifo",
        f"tune.workers_per_trial={workers}",
    ]
    storage.mkdir(parents=True, exist_ok=True)
    args = ["tune", str(ROOT / "jobs" / "digits-tune.yaml")]
    for s in sets:
        args += ["--set", s]
    _cli(args, storage / "tune.log")
    trials = storage / "digits-tune" / TUNE_DIR / TRIALS_DIR
    found = []
    for path in sorted(trials.glob("*/student/history.json")):
        history = json.loads(path.read_text())
        if history and "startup_s" in history[0]:
            found.append(float(history[0]["startup_s"]))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", type=Path, nargs="?", default=ROOT / "jobs" / "digits.yaml")
    parser.add_argument("--epochs", type=int, default=None, help="every stage (default: job's)")
    parser.add_argument("--quick", action="store_true", help="5 epochs a stage, 2 per trial")
    parser.add_argument("--workers", type=int, default=1, help="raydistill's train workers")
    parser.add_argument("--trial-epochs", type=int, default=None, help="default 3 (quick: 2)")
    parser.add_argument("--no-tune", action="store_true", help="skip the 4-trial search")
    args = parser.parse_args()
    epochs = args.epochs or (5 if args.quick else None)
    sets = [f"teacher.train.epochs={epochs}", f"train.epochs={epochs}"] if epochs else []
    job = load_job(args.job, sets)
    storage = Path(tempfile.mkdtemp(prefix="rd-overhead-"))
    print(
        f"job {args.job}: teacher {job.teacher_train().epochs} epochs, students "
        f"{job.train.epochs}, batch {job.train.batch_size}, {args.workers} raydistill "
        f"worker(s), {torch.get_num_threads()} -> {int(job.scaling.cpus_per_worker)} thread(s)"
        f"; runs under {storage}"
    )
    plain = run_plain(job)
    ray = run_raydistill(args.job, job, storage, args.workers)
    print(f"\n{'stage':<9}{'wall s':>16}{'start-up s':>16}{'samples/s':>20}{'ratio':>7}")
    print(f"{'':<9}{'plain  rd':>16}{'plain  rd':>16}{'plain     rd':>20}")
    ratios = {}
    for role in STAGES:
        p, r = plain["stages"][role], ray["stages"][role]
        ratios[role] = r["rate"] / p["rate"]
        print(
            f"{role:<9}{p['wall_s']:>8.1f}{r['wall_s']:>8.1f}{p['startup_s']:>8.2f}"
            f"{r['startup_s']:>8.1f}{p['rate']:>10.0f}{r['rate']:>10.0f}{ratios[role]:>7.2f}"
        )
    print(
        f"{'job':<9}{plain['job_s']:>8.1f}{ray['job_s']:>8.1f}  (raydistill: the whole "
        "command, Ray start, teacher pass, test scoring and report included)"
    )
    trial = "nan"
    if args.no_tune:
        print("trial_startup_s=nan: the search was skipped (--no-tune)")
    else:
        trial_epochs = args.trial_epochs or (2 if args.quick else 3)
        found = run_search(ray["teacher"], storage / "tune", args.workers, trial_epochs)
        print(f"per-trial start-up (stage start to first step), s: {[round(s, 1) for s in found]}")
        if found:
            trial = f"{statistics.mean(found):.1f}"
    in_epoch = min(ratios["student"], ratios["baseline"])
    print(
        f"ratios: in_epoch={in_epoch:.2f} job={ray['job_s'] / plain['job_s']:.2f} "
        f"trial_startup_s={trial}"
    )


if __name__ == "__main__":
    main()
