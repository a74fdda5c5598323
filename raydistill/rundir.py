"""The run directory: every file name a run or a search writes, in one place.

::

    <output.storage_path>/<name>/
      job.yaml                 the job as resolved (earlier versions: job.<n>.yaml)
      ray.log                  Ray's own output (warnings, INFO lines) kept off the terminal
      summary.md, metrics.json the test-split comparison
      teacher/ student/ baseline/
        model.pt               the stage's kept weights (written last: the stage is done)
        history.json           one entry per epoch
        fingerprint.json       what the stage was trained from (written when it starts)
        checkpoint_*/state.pt  Ray Train's checkpoints (resume)
      teacher_cache/           the Parquet teacher cache (manifest.json) unless cache.path
      tensorboard/<stage>/     event files (output.tensorboard)
      wandb/                   W&B offline runs (output.tracking.wandb, unless WANDB_DIR)
      tune/                    results.md, results.csv, best.yaml, summary.json, search.png,
                               curves.png, trials/<trial>/ (raydistill tune)
      report.md, report.html, report/*.png   raydistill report
      export/                  raydistill export
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from raydistill.config import JobConfig

JOB_FILE = "job.yaml"
SUMMARY_FILE = "summary.md"
METRICS_FILE = "metrics.json"
WEIGHTS_FILE = "model.pt"
HISTORY_FILE = "history.json"
STATE_FILE = "state.pt"
FINGERPRINT_FILE = "fingerprint.json"
# a stage directory raydistill made holds one of these (--fresh-stage deletes only such)
STAGE_MARKERS = (FINGERPRINT_FILE, "model.pt", "history.json")
TEACHER_CACHE_DIR = "teacher_cache"
TENSORBOARD_DIR = "tensorboard"
TUNE_DIR = "tune"
TRIALS_DIR = "trials"
BEST_JOB = "best.yaml"
RESULTS_CSV = "results.csv"
RESULTS_MD = "results.md"
SEARCH_SUMMARY = "summary.json"
SEARCH_JOB = "search_job.json"  # the resolved job a search started with, and its hash
TUNER_STATE = "tuner.pkl"  # Ray Tune's own file in a search directory
CACHE_MANIFEST = "manifest.json"
CACHE_BUILD_MARKER = ".raydistill-cache"
CHECKPOINT_GLOB = "checkpoint_*"  # Ray Train's checkpoints in a stage directory
SEARCH_PLOT = "search.png"
CURVES_PLOT = "curves.png"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
PLOTS_DIR = "report"
EXPORT_DIR = "export"
RAY_LOG = "ray.log"  # what Ray printed during the run's commands, unless run with -v


def stage_dir(run_dir: Path, role: str) -> Path:
    """Where a stage (teacher, student, baseline) keeps its weights, history and checkpoints."""
    return Path(run_dir) / role


def weights_file(run_dir: Path, role: str) -> Path:
    return stage_dir(run_dir, role) / WEIGHTS_FILE


def history_file(run_dir: Path, role: str) -> Path:
    return stage_dir(run_dir, role) / HISTORY_FILE


def teacher_weights_path(job: JobConfig, run_dir: Path | None = None) -> Path:
    """The teacher's weights: the job's checkpoint, or the teacher stage's output in
    ``run_dir`` (default: the job's run directory)."""
    if job.teacher.checkpoint is not None:
        return Path(job.teacher.checkpoint)
    return weights_file(run_dir or job.run_dir, "teacher")
