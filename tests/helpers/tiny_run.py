"""A small but real run directory, trained in-process without Ray.

The digits job is written with tiny models; its teacher, distilled student and baseline are
trained for a few epochs in-process by the shared epoch loop (no Ray), and saved exactly where
``raydistill train`` puts them (``job.yaml``, ``<stage>/model.pt``, ``<stage>/history.json``).
Takes a few seconds on one CPU thread.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml
from local_rows import classification_rows

from raydistill.config import JobConfig, load_job
from raydistill.data.arrays import LabelledArrays
from raydistill.data.sources import load_splits
from raydistill.models import build_model, save_weights
from raydistill.tasks import get_task
from raydistill.train.context import LocalContext
from raydistill.train.loop import run_epochs
from raydistill.train.spec import StageSpec

ROOT = Path(__file__).resolve().parents[2]


def write_tiny_job(directory: Path, name: str = "tiny", **changes: Any) -> Path:
    """The quickstart job with small models and short stages, writing under ``directory``;
    ``changes`` maps dotted keys (``teacher__args`` for ``teacher.args``) to values."""
    raw = yaml.safe_load((ROOT / "jobs" / "digits.yaml").read_text())
    raw["name"] = name
    raw["output"] = {"storage_path": str(directory / "runs")}
    raw["data"]["labelled_fraction"] = None  # every label, unless a test sets a share
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


def train_stage(
    job: JobConfig,
    role: str,
    splits: dict[str, LabelledArrays],
    epochs: int,
    teacher: torch.nn.Module | None = None,
) -> tuple[torch.nn.Module, list[dict[str, Any]]]:
    """Train one stage in-process through the shared epoch loop; returns the kept model and
    its per-epoch history."""
    spec = StageSpec(
        role=role,  # type: ignore[arg-type]
        job=job,
        model=job.teacher if role == "teacher" else job.student,
        train=job.train.model_validate({**job.train.model_dump(), "epochs": epochs}),
        num_classes=10,
        distill=teacher is not None,
    )
    rows = {k: classification_rows(job, splits[k], teacher) for k in ("train", "val")}
    ctx = LocalContext(rows, log=lambda _: None, keep_state=True)
    history = run_epochs(get_task(job), spec, ctx)
    assert ctx.last_state is not None
    model = build_model(spec.model, 10, load=False)
    model.load_state_dict(ctx.last_state["best_student"])
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
