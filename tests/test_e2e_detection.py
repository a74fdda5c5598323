"""Detection end to end on a real local Ray: drawn COCO-format data, a small Faster R-CNN teacher
trained by the teacher stage, a smaller student distilled from it on 2 DDP workers, COCO mAP."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from raydistill.config import JobError, load_job
from raydistill.detection.synthetic import write_shapes_coco
from raydistill.models.specs import read_state_dict
from raydistill.pipeline import run_cache, run_job, run_teacher
from raydistill.train.state import latest_checkpoint, load_state

ROOT = Path(__file__).resolve().parents[1]


def _job(tmp_path: Path, data: dict, **changes) -> Path:
    raw = yaml.safe_load((ROOT / "jobs" / "shapes.yaml").read_text())
    raw["data"]["coco"].update(
        train={"images": str(data["train"][0]), "annotations": str(data["train"][1])},
        val={"images": str(data["val"][0]), "annotations": str(data["val"][1])},
        image_size=64,
    )
    raw["output"] = {"storage_path": str(tmp_path / "runs")}
    raw["teacher"]["train"] = {"epochs": 4, "lr": 0.003}  # its mAP only has to exceed 0
    raw["train"].update(epochs=4, batch_size=4, baseline=False)
    for key, value in changes.items():
        node = raw
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    path = tmp_path / "shapes.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_example_jobs_validate(tmp_path: Path) -> None:
    data = write_shapes_coco(tmp_path / "data", train=2, val=1, size=32)
    sets = [
        f"data.coco.{split}.{key}={data[split][i]}"
        for split in ("train", "val")
        for i, key in enumerate(("images", "annotations"))
    ]
    for name in ("coco", "shapes", "coco-fcos", "shapes-fcos"):
        job = load_job(ROOT / "jobs" / f"{name}.yaml", sets)
        assert job.task == "detection" and job.distill.temperature.start == 2.0
        one_stage = name.endswith("-fcos")
        assert (job.student.model == "raydistill.models.zoo:small_fcos") == one_stage
    # commands detection does not run refuse in one line, from the task's capabilities
    with pytest.raises(JobError, match="`raydistill cache` does not run task: detection: its"):
        run_cache(job)
    with pytest.raises(JobError, match=r"distill\.teacher_pass: detection runs its teacher"):
        run_teacher(load_job(ROOT / "jobs" / "shapes.yaml", [*sets, "distill.teacher_pass=cache"]))
    with pytest.raises(JobError, match=r"data\.augment: not used by task: detection"):
        run_job(load_job(ROOT / "jobs" / "shapes.yaml", [*sets, "data.augment={views: 2}"]))
    with pytest.raises(JobError, match=r"task: detection reads data\.source: coco"):
        load_job(ROOT / "jobs" / "shapes.yaml", [*sets, "task=classification"])


@pytest.mark.slow
def test_detection_job_end_to_end(ray_address: str, tmp_path: Path) -> None:
    data = write_shapes_coco(tmp_path / "data", train=64, val=24, size=64, seed=0)
    job_file = _job(tmp_path, data, **{"output.tensorboard": True})
    proc = subprocess.run(
        [sys.executable, "-m", "raydistill.cli", "train", str(job_file)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "[data] coco train: 64 images" in out and "FPN imitation:" in out
    run_dir = tmp_path / "runs" / "shapes"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    scores = {s["name"]: s for s in metrics["test"]}
    assert set(scores) == {"teacher", "student (distilled)"}
    teacher, student = scores["teacher"], scores["student (distilled)"]
    assert teacher["map50"] > 0 and student["map50"] > 0, scores
    assert student["parameters"] < teacher["parameters"]
    history = json.loads((run_dir / "student" / "history.json").read_text())
    assert len(history) == 4
    # the kept epoch is the one with the best val mAP, and it is the one the table scores
    best = max(range(4), key=lambda e: history[e]["val_map"])
    assert history[-1]["best_epoch"] == best and history[best]["val_map"] > 0
    # the distillation terms fall as the student learns from the teacher
    assert history[-1]["train_imitation"] < history[0]["train_imitation"]
    assert history[-1]["train_soft"] < history[0]["train_soft"]
    # the weights the table scored are the kept epoch's, tensor for tensor. (Their test mAP is
    # not compared with the epoch's val mAP: at this size both are noise-level, ~0.005, and the
    # driver scores on other threads than the workers, which moves low-score boxes.)
    kept = load_state(latest_checkpoint(run_dir / "student"))["best_student"]
    scored = read_state_dict(run_dir / "student" / "model.pt")
    assert scored.keys() == kept.keys()
    assert all(torch.equal(scored[k], kept[k]) for k in kept)
    assert student["map"] >= 0
    summary = (run_dir / "summary.md").read_text()
    assert "| student (distilled) |" in summary and "mAP" in summary
    job = yaml.safe_load((run_dir / "job.yaml").read_text())
    assert job["student"]["args"]["min_size"] == 64  # the shared detection resize, recorded
    # every stage wrote TensorBoard events (the setting is no longer ignored for detection)
    for role in ("teacher", "student"):
        assert list((run_dir / "tensorboard" / role).glob("events.out.tfevents.*")), role
    _commands_on_the_run(job_file, run_dir, scores)


def _commands_on_the_run(job_file: Path, run_dir: Path, scores: dict) -> None:
    """report, export, evaluate and check-teacher work on a detection run (Ray-free)."""
    from raydistill.check import check_teacher
    from raydistill.export import export_run, load_safetensors
    from raydistill.pipeline import evaluate_checkpoint
    from raydistill.report import write_report

    files = write_report(run_dir)
    md = files.markdown.read_text()
    assert "| mAP | AP50 |" in md and "| student (distilled) |" in md
    assert "COCO AP (percent)" in md and "mAP points over" not in md  # no baseline in this run
    assert (run_dir / "report" / "curves.png").is_file() and "data:image/png" in (
        files.html.read_text()
    )
    exported = export_run(run_dir, "safetensors")
    assert exported.max_abs_diff == 0.0  # the same weights give the same boxes and scores
    assert hasattr(load_safetensors(exported.path), "roi_heads")  # rebuilt as a detector
    with pytest.raises(JobError, match="task detection exports as safetensors, not onnx"):
        export_run(run_dir, "onnx")
    job = load_job(job_file)
    evaluated = evaluate_checkpoint(job)
    # the student's weights scored again on the test split: the table's figure
    assert evaluated.headline == pytest.approx(scores["student (distilled)"]["map"], abs=1e-4)
    checked = check_teacher(job, "val")
    lines = "\n".join(checked.lines())
    assert checked.teacher_accuracy is not None and "mAP (val): teacher" in lines
    assert "images/s at batch 1" in lines and not checked.problems
