"""The terminal of a real `raydistill train` (a CLI subprocess on the session's Ray): Ray's own
lines stay in the run's ray.log, raydistill's (the workers' epoch lines too) reach the
terminal; `-v` shows Ray's lines as well. Ray-free checks of the line filter: test_console.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from raydistill.config import load_job
from raydistill.models import build_model, save_weights

pytestmark = pytest.mark.slow

HELPERS = Path(__file__).resolve().parent / "helpers"
# What Ray prints in a run (seen in a real one): log records, its C++ core's lines, the worker
# prefix of forwarded lines, dedup notices, Python warnings.
RAY_LINE = re.compile(
    r"\b(INFO|WARNING|ERROR)\b|\bpid=\d+|repeated \d+x|core_worker|Warning:|Traceback"
)


def _run(job_file: Path, address: str, *flags: str) -> subprocess.CompletedProcess:
    python_path = os.pathsep.join(p for p in (str(HELPERS), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "RAY_ADDRESS": address, "PYTHONPATH": python_path}
    cli = [str(Path(sys.executable).with_name("raydistill")), "train", str(job_file), *flags]
    return subprocess.run(cli, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.budget(
    seconds=400,
    reason="two short CLI train runs on the session's Ray (200 s on a 2-core machine at load 30)",
)
def test_the_terminal_shows_raydistills_lines_and_ray_log_keeps_rays(
    ray_address, write_job, tmp_path
):
    """One short distilled run (1 worker, 2 epochs, the teacher given as seeded weights, a
    teacher-pool pass that starts Ray Data actors), then the same job again with -v."""
    quickstart = load_job(write_job(name="base"))
    teacher = save_weights(build_model(quickstart.teacher, 10, load=False), tmp_path / "t.pt")
    changes = {
        "teacher.checkpoint": str(teacher),
        "train.epochs": 2,
        "train.baseline": False,
        "scaling.workers": 1,
        "output.report": False,
    }
    job_file = write_job(changes, name="quiet")
    job = load_job(job_file)

    quiet = _run(job_file, ray_address)
    assert quiet.returncode == 0, (quiet.stdout + quiet.stderr)[-3000:]
    terminal = quiet.stdout + quiet.stderr
    noise = [line for line in terminal.splitlines() if RAY_LINE.search(line)]
    assert not noise, "\n".join(noise[:20])
    # raydistill's own lines, the worker's epoch lines included, and the table
    assert "[student] epoch 1/2" in quiet.stdout and "[student] epoch 2/2" in quiet.stdout
    assert "| student (distilled) |" in quiet.stdout or "student (distilled)" in quiet.stdout
    log = (job.run_dir / "ray.log").read_text()
    assert RAY_LINE.search(log), log[:2000]
    assert "[student] epoch" not in log  # raydistill's lines went to the terminal, not here

    loud = _run(job_file, ray_address, "-v", "--fresh")
    assert loud.returncode == 0, (loud.stdout + loud.stderr)[-3000:]
    terminal = loud.stdout + loud.stderr
    assert any(RAY_LINE.search(line) for line in terminal.splitlines()), terminal[-3000:]
    assert "[student] epoch 2/2" in loud.stdout
