"""Shared fixtures: one real local Ray cluster per test session, and small job files; the
suite's time budget (``time_budget``: each test under a ceiling unless marked with its reason)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.register_assert_rewrite("time_budget")  # before its import: a plugin, it is rewritten
import time_budget  # noqa: E402

# pytester: the budget plugin's own tests run pytest inside pytest
pytest_plugins = ["pytester", "time_budget"]

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
# Test-only models (module:factory specs) that the driver and the cluster's workers import.
HELPERS = ROOT / "tests" / "helpers"
sys.path.insert(0, str(HELPERS))
from ray_processes import stop_cluster as _stop_cluster  # noqa: E402

# Tests over the per-test ceiling today (tests/time_budget.py), by node id: the targets for
# speed-up, with the times measured on a shared 2-core machine. Kept here so that the files that
# are being cut down need no edit; a test that gets under the ceiling comes off this list, and a
# test's own @pytest.mark.budget takes precedence.
OVER_THE_CEILING = {
    "tests/test_load.py::test_jobs_submitted_back_to_back_all_finish_apart": (
        600,
        "every job a Ray job of its own on one cluster, submitted back to back (383 s loaded)",
    ),
    "tests/test_e2e_text.py::test_bbc_news_job_at_reduced_size": (
        600,
        "fine-tunes the pretrained MiniLM teacher, then distils a 2-layer BERT (247 s loaded)",
    ),
    "tests/test_faults.py::test_a_killed_train_worker_restarts_from_the_latest_checkpoint": (
        400,
        "a run with a killed worker, restarted and resumed (209 s loaded when it also ran its "
        "uninterrupted reference, now the session's single_worker_run)",
    ),
    "tests/test_fashion_mnist.py::test_fashion_job_end_to_end_with_dkd_and_attention_transfer": (
        600,
        "ResNet-18 teacher stage, DKD and attention-transfer students (266 s loaded)",
    ),
    "tests/test_e2e_detection.py::test_detection_job_end_to_end": (
        600,
        "trains a Faster R-CNN teacher, then a student on 2 DDP workers, scored by COCO mAP",
    ),
    # measured 100-200 s on a loaded 2-core machine (2026-12-01, full slow suite in 2771 s)
    "tests/test_cache.py::test_cache_written_once_reused_and_trained_from": (
        400,
        "builds a cache, reuses it, and trains a student from it (152 s loaded)",
    ),
    "tests/test_cache.py::test_a_stage_without_teacher_pass_trains_on_each_view_directly": (
        400,
        "a student-alone stage over four augmented views, every row counted (115 s loaded)",
    ),
    "tests/test_e2e_text.py::test_cross_modal_job_end_to_end": (
        400,
        "image teacher stage, cross-modal student and baseline (143 s loaded)",
    ),
    "tests/test_e2e_text.py::test_text_job_end_to_end_with_two_tokenizers": (
        400,
        "BERT teacher and DistilBERT student, each with its own tokenizer (132 s loaded)",
    ),
    "tests/test_determinism.py::test_single_worker_runs_with_the_same_seed_are_identical": (
        400,
        "the session's single_worker_run rerun, and one run of another seed (106 s loaded "
        "when it trained all three)",
    ),
    "tests/test_e2e_digits.py::test_digits_job_end_to_end": (
        400,
        "the quickstart's students at test size, then its report (111 s on a fresh clone when "
        "it also trained the teacher, now the session's digits_teacher_job)",
    ),
    "tests/test_e2e_digits.py::test_driver_killed_mid_run_resumes_from_checkpoint": (
        400,
        "a run whose driver is killed mid-stage, then the rerun that resumes it (92 s)",
    ),
    "tests/test_faults.py::"
    "test_a_killed_teacher_actor_is_replaced_and_no_row_is_lost_or_repeated": (
        400,
        "a teacher pass with an actor killed mid-pass, every row counted (77 s)",
    ),
    "tests/test_e2e_digits.py::test_teacher_pool_streams_every_epoch": (
        400,
        "a per-epoch teacher pool in the pipeline, counted per epoch (100 s loaded)",
    ),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid in OVER_THE_CEILING and item.get_closest_marker("budget") is None:
            seconds, reason = OVER_THE_CEILING[item.nodeid]
            item.add_marker(pytest.mark.budget(seconds=seconds, reason=reason))


# Filled by the `ray_address` fixture: the head's dashboard (and Jobs API) URL.
_HEAD: dict[str, str] = {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
@time_budget.allow(seconds=300, reason="`ray start` of a head node; minutes on a loaded machine")
def ray_address() -> Iterator[str]:
    """A real Ray head node on loopback, shared by every Ray test (and CLI subprocesses).

    Started with ``ray start`` rather than ``ray.init`` so that CLI subprocesses can join it
    through ``RAY_ADDRESS`` exactly as they would join a cluster.
    """
    import ray

    temp_dir = Path(tempfile.mkdtemp(prefix="rd-ray-", dir="/tmp"))
    # The dashboard agent's HTTP port (what `ray job submit` reaches through the head) is
    # 52365 for every Ray on a machine unless set. When another Ray held it as this head
    # started (an in-process Ray of a test, a second session), the head's agent ran without
    # HTTP and never registered, and every `ray job submit` of the session failed with "No
    # available agent to submit job": a port of its own removes the race.
    port, dashboard_port, agent_port = _free_port(), _free_port(), _free_port()
    from raydistill.runtime import TRAIN_POLL_ENV, TRAIN_POLL_S

    # A loopback-only test cluster: no token auth, on both sides (Ray 2.60 enables it by default).
    os.environ["RAY_AUTH_MODE"] = "disabled"
    # No usage stats in this process either (`ray start --disable-usage-stats` below reaches
    # only the cluster's processes), as raydistill's own ray_session does for its drivers. With
    # them on, the first Ray Data run here starts Ray Data's usage poller: a thread that queries
    # a Prometheus no test runs every 10 s and logs each failure with its traceback. On Python
    # 3.11.7, formatting a traceback calls ast.parse, whose recursion counter is shared by all
    # threads (python/cpython#106905): a parse in a test at the same moment failed with
    # "SystemError: AST constructor recursion depth mismatch".
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    python_path = os.pathsep.join(p for p in (str(HELPERS), os.environ.get("PYTHONPATH")) if p)
    env = {
        **os.environ,
        "RAY_TMPDIR": str(temp_dir),
        TRAIN_POLL_ENV: TRAIN_POLL_S,
        "PYTHONPATH": python_path,
        # Every process of the cluster names it: Ray Train's placement-group cleaner otherwise
        # looks for "the" local Ray, finds several when another cluster runs on the machine
        # (a second test session, a multi-node test), fails, and leaks each stopped trial's
        # placement group until no worker can start.
        "RAY_ADDRESS": f"127.0.0.1:{port}",
    }
    # Everything from `ray start` on sits inside the try: a start that fails or times out
    # still gets its half-started processes stopped.
    try:
        started = subprocess.run(
            [
                RAY,
                "start",
                "--head",
                f"--port={port}",
                "--node-ip-address=127.0.0.1",
                "--num-cpus=8",
                # custom resources, as on a cluster with teacher nodes and student nodes
                '--resources={"teacher": 4, "student": 4}',
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dashboard_port}",
                f"--dashboard-agent-listen-port={agent_port}",
                f"--temp-dir={temp_dir}",
                "--disable-usage-stats",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,  # a busy shared machine can take minutes
        )
        if started.returncode != 0:  # Ray says why on its own output: keep it in the error
            raise RuntimeError(
                f"`ray start` failed ({started.returncode}): "
                f"{(started.stdout + started.stderr)[-3000:]}"
            )
        address = f"127.0.0.1:{port}"
        _HEAD["dashboard"] = f"http://127.0.0.1:{dashboard_port}"
        os.environ["RAY_ADDRESS"] = address
        ray.init(address=address, log_to_driver=True)
        from raydistill.runtime import quiet_data

        quiet_data()
        yield address
    finally:
        ray.shutdown()
        os.environ.pop("RAY_ADDRESS", None)
        _stop_cluster(temp_dir, port)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_dashboard(ray_address: str) -> str:
    """The session head's dashboard URL (loopback), where ``ray job submit --address`` points.

    Checks first that the head's job agent registered its HTTP address (Ray routes every
    submission to it), so that a head without one fails here, naming why, instead of each
    submitting test failing with Ray's "No available agent to submit job"."""
    import time

    import ray
    from ray.dashboard.consts import DASHBOARD_AGENT_ADDR_NODE_ID_PREFIX
    from ray.experimental import internal_kv

    alive = [n for n in ray.nodes() if n["Alive"]]
    head = next(n["NodeID"] for n in alive if "node:__internal_head__" in n["Resources"])
    key = f"{DASHBOARD_AGENT_ADDR_NODE_ID_PREFIX}{head}"
    deadline = time.monotonic() + 120  # the agent registers a few seconds after `ray start`
    while not internal_kv._internal_kv_get(key, namespace="dashboard"):
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the session head's dashboard agent never registered its HTTP address "
                f"({key} missing from the GCS): it could not bind its port, so `ray job "
                f"submit` cannot reach it; see dashboard_agent.log under the session's "
                f"RAY_TMPDIR"
            )
        time.sleep(0.5)
    return _HEAD["dashboard"]


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One torch thread for a module of tiny models (``pytest.mark.usefixtures``): on 2 shared
    cores a second thread only waits for a core."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def write_job(tmp_path: Path):
    """Write a job YAML (the quickstart job with changes) into a temp dir; returns its path."""
    from job_files import write_digits_job

    def write(changes: dict | None = None, name: str = "job") -> Path:
        return write_digits_job(tmp_path, changes, name)

    return write


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A small real run directory (digits; teacher, distilled student and baseline trained
    in-process for 3 epochs, no Ray); returns its job, whose ``run_dir`` holds the run."""
    from tiny_run import build_tiny_run

    return build_tiny_run(tmp_path_factory.mktemp("tiny-run"), epochs=3)


@pytest.fixture(scope="session")
@time_budget.allow(seconds=300, reason="trains the digits teacher on Ray, once for the session")
def digits_teacher_job(ray_address, tmp_path_factory) -> Path:
    """The end-to-end digits job (``job_files.DIGITS_SHORT``: the quickstart with a 4-epoch
    teacher on 2 workers, TensorBoard on) with its teacher stage trained, once per session, by
    ``run_teacher`` on the session's Ray; returns the job file. test_e2e_digits.py trains the
    rest of this very job; ``digits_teacher`` hands its teacher's weights to the other tests."""
    from job_files import DIGITS_SHORT, write_digits_job

    from raydistill.config import load_job
    from raydistill.pipeline import run_teacher

    directory = tmp_path_factory.mktemp("digits-teacher")
    path = write_digits_job(directory, {**DIGITS_SHORT, "output.tensorboard": True}, "e2e")
    run_teacher(load_job(path), log=print)
    return path


@pytest.fixture(scope="session")
def digits_teacher(digits_teacher_job: Path) -> str:
    """The session's trained digits teacher (``digits_teacher_job``): its weights file, for
    tests about the student side to pass as ``teacher.checkpoint`` instead of each training
    their own."""
    from raydistill.config import load_job
    from raydistill.rundir import teacher_weights_path

    weights = teacher_weights_path(load_job(digits_teacher_job))
    assert weights.is_file(), weights
    return str(weights)


# The node-level jobs, run on one four-node cluster (tests/helpers/node_cluster.py): starting a
# cluster costs more than either job. Read by test_cluster_placement.py and test_node_loss.py.


@pytest.fixture(scope="session")
@time_budget.allow(
    seconds=600,
    reason="starts a four-node cluster of its own, runs the placement job, then trains "
    "through a node's removal",
)
def node_cluster_runs(tmp_path_factory) -> dict:
    """What the two node-level jobs did on one cluster of their own: ``placement`` (where each
    actor ran) and ``node_loss`` (the history of a run that lost a student node)."""
    import json

    from job_files import write_digits_job
    from node_cluster import NODE_LOSS_EPOCHS

    from raydistill.config import load_job
    from raydistill.models import build_model, save_weights
    from raydistill.runtime import TRAIN_POLL_ENV, TRAIN_POLL_S

    directory = tmp_path_factory.mktemp("node-cluster")
    quickstart = load_job(ROOT / "jobs" / "digits.yaml")
    teacher = save_weights(build_model(quickstart.teacher, 10, load=False), directory / "t.pt")
    placed = write_digits_job(
        directory,
        {
            "teacher.checkpoint": str(teacher),
            "train.epochs": 1,
            "train.baseline": False,
            "scaling.workers": 2,
            "scaling.cpus_per_worker": 1,
            "scaling.resources_per_worker": {"student": 1},
            "scaling.teacher_pool": {
                "min_actors": 1,
                "max_actors": 1,
                "num_cpus": 0.5,
                "resources": {"teacher": 1},
            },
        },
        name="placed",
    )
    node_loss = write_digits_job(
        directory,
        {
            "distill.enabled": False,
            "train.epochs": NODE_LOSS_EPOCHS,
            # 80 steps an epoch, not 20: the epochs after the first checkpoint outlast the
            # node's removal
            "train.batch_size": 8,
            "scaling.workers": [1, 2],
            "scaling.cpus_per_worker": 1,
            "scaling.resources_per_worker": {"student": 1},
            "scaling.max_failures": 3,
            "output.report": False,
        },
        name="node-loss",
    )
    script = HELPERS / "node_cluster.py"
    # A short path of its own: Ray's socket paths must stay under 108 characters.
    temp_dir = tempfile.mkdtemp(prefix="rd-nodes-", dir="/tmp")
    out = directory / "nodes.json"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_TMPDIR")}
    # Train's controller polls its workers at the session cluster's pace, not every 2 s
    env[TRAIN_POLL_ENV] = TRAIN_POLL_S
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), str(HELPERS), env.get("PYTHONPATH")) if p
    )
    try:
        done = subprocess.run(
            [sys.executable, str(script), str(placed), str(node_loss), str(out), temp_dir],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="session")
@time_budget.allow(seconds=300, reason="one distilled run on the session's Ray, for the session")
def single_worker_run(ray_address, tmp_path_factory) -> dict:
    """A short distilled digits run on one train worker (teacher given as seeded weights, so no
    teacher stage), run once per session: the reference that test_determinism.py reruns and
    test_faults.py interrupts. Returns its ``changes`` (to write the same job) and ``summary``."""
    import torch
    from job_files import write_digits_job

    from raydistill.config import load_job
    from raydistill.models import build_model, save_weights
    from raydistill.pipeline import run_job

    directory = tmp_path_factory.mktemp("single-worker")
    quickstart = load_job(ROOT / "jobs" / "digits.yaml")
    torch.manual_seed(1)
    teacher = save_weights(build_model(quickstart.teacher, 10, load=False), directory / "t.pt")
    changes = {
        "seed": 3,
        "teacher.checkpoint": str(teacher),
        "train.epochs": 4,
        "train.baseline": False,
        "scaling.workers": 1,
        "scaling.max_failures": 1,  # test_faults.py kills a worker of the same job
        "output.report": False,
    }
    summary = run_job(load_job(write_digits_job(directory, changes, "reference")), log=print)
    return {"changes": changes, "summary": summary}


@pytest.fixture(scope="session")
def mlflow_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` on loopback for the session's tracking tests, stopped by its
    pid. One for all (its start migrates a fresh sqlite store, 20-45 s on 2 cores); each test
    logs to an experiment of its own name, so none reads another's runs."""
    from tracking_servers import mlflow_server

    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as url:
        yield url


@pytest.fixture
def wandb_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """W&B offline, its files in the test's directory; its service process stopped after."""
    directory = tmp_path / "wandb-files"
    directory.mkdir()
    monkeypatch.setenv("WANDB_DIR", str(directory))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    yield directory
    import wandb

    wandb.teardown()
