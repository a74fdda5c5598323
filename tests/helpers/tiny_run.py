"""A small but real run directory, trained in-process without Ray.

The digits job is written with tiny models; its teacher, distilled student and baseline are
trained for a few epochs in plain PyTorch with the same :class:`Distiller` the Ray Train loop
uses, and saved exactly where ``raydistill train`` puts them (``job.yaml``,
``<stage>/model.pt``, ``<stage>/history.json`` with the loop's metric names). Takes a few
seconds on one CPU thread.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from raydistill.config import JobConfig, load_job
from raydistill.data.arrays import LabelledArrays
from raydistill.data.sources import load_splits
from raydistill.distill import Distiller
from raydistill.models import build_model, save_weights

ROOT = Path(__file__).resolve().parents[2]


def write_tiny_job(directory: Path, name: str = "tiny", **changes: Any) -> Path:
    """The quickstart job with small models and short stages, writing under ``directory``;
    ``changes`` maps dotted keys (``teacher__args`` for ``teacher.args``) to values."""
    raw = yaml.safe_load((ROOT / "jobs" / "digits.yaml").read_text())
    raw["name"] = name
    raw["output"] = {"storage_path": str(directory / "runs")}
    raw["teacher"]["args"] = {"width": 12}
    raw["student"]["args"] = {"width": 4}
    raw["train"]["epochs"] = 4
    raw["distill"]["temperature"] = {"kind": "linear", "start": 6.0, "end": 2.0}
    raw["distill"]["alpha"] = {"kind": "step", "start": 0.9, "step": -0.2, "every": 2}
    for key, value in changes.items():
        node = raw
        *parents, last = key.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _batches(data: LabelledArrays, batch: int, rng: np.random.Generator | None):
    order = rng.permutation(len(data)) if rng is not None else np.arange(len(data))
    for i in range(0, len(data), batch):
        idx = order[i : i + batch]
        yield torch.from_numpy(data.inputs[idx].copy()), torch.from_numpy(data.labels[idx].copy())


def train_stage(
    job: JobConfig,
    role: str,
    splits: dict[str, LabelledArrays],
    epochs: int,
    teacher: torch.nn.Module | None = None,
) -> tuple[torch.nn.Module, list[dict[str, Any]]]:
    """Train one stage in-process; returns the model and its per-epoch history."""
    torch.manual_seed(job.seed)
    spec = job.teacher if role == "teacher" else job.student
    model = build_model(spec, 10)
    distiller = Distiller(
        model,
        teacher,
        temperature=job.distill.temperature,
        alpha=job.distill.alpha,
        total_epochs=epochs,
    )
    optimizer = torch.optim.AdamW(distiller.parameters(), lr=job.train.lr)
    rng = np.random.default_rng(job.seed)
    history = []
    for epoch in range(epochs):
        distiller.set_epoch(epoch)
        distiller.train()
        sums = np.zeros(5)
        for x, y in _batches(splits["train"], 64, rng):
            out = distiller.step(x, y)
            optimizer.zero_grad()
            out.total.backward()
            optimizer.step()
            parts = out.as_floats()
            sums += np.array([parts["loss"], parts["soft"], parts["hard"], parts["feature"], 1])
        distiller.eval()
        with torch.no_grad():
            vx = torch.from_numpy(splits["val"].inputs.copy())
            vy = torch.from_numpy(splits["val"].labels.copy())
            val = distiller.step(vx, vy)
            val_acc = float((model(vx).argmax(-1) == vy).float().mean())
        n = sums[4]
        history.append(
            {
                "epoch": epoch,
                "train_loss": sums[0] / n,
                "train_soft": sums[1] / n,
                "train_hard": sums[2] / n,
                "train_feature": sums[3] / n,
                "temperature": distiller.temperature,
                "alpha": distiller.alpha if teacher is not None else 0.0,
                "lr": job.train.lr,
                "val_loss": float(val.total),
                "val_ce": float(val.hard),
                "val_acc": val_acc,
            }
        )
    return model.eval(), history


def build_tiny_run(directory: Path, epochs: int = 4, **changes: Any) -> JobConfig:
    """Write the job, train teacher, distilled student and baseline, and lay them out as
    ``raydistill train`` does; returns the job (its ``run_dir`` holds the run)."""
    job = load_job(write_tiny_job(directory, **changes))
    run_dir = job.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "job.yaml").write_text(job.to_yaml())
    splits = load_splits(job.data)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        teacher, history = train_stage(job, "teacher", splits, epochs)
        stages = {"teacher": (teacher, history)}
        stages["student"] = train_stage(job, "student", splits, epochs, teacher=teacher)
        stages["baseline"] = train_stage(job, "baseline", splits, epochs)
    finally:
        torch.set_num_threads(threads)
    for role, (model, history) in stages.items():
        save_weights(model, run_dir / role / "model.pt", {"role": role})
        (run_dir / role / "history.json").write_text(json.dumps(history, indent=1))
    return job
