"""The quiet terminal (raydistill.console), without Ray: which lines are raydistill's, how a
stream is split by line, and that a quiet block sends descriptor-level output to the log."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from raydistill import console
from raydistill.console import LineRouter, is_own_line, quiet_ray

OWN = [
    "[teacher] epoch 1/2 loss 1.8044 val_loss 1.9455 val_acc 0.7306 lr 3.00e-03 eta 65s",
    "[student] training raydistill.models.zoo:digits_cnn for up to 2 epochs on 2 workers",
    "[a1b2c_00001] epoch 2/2 loss 0.6 val_acc 0.9",  # a tune trial's lines
    "[21c9b_00000] temperature.start=3.2, train.lr=0.01",
    "[tune] starting 4 trial(s), 2 at a time, asha on val_acc (max)",
    "warning: no node offers GPU: 1 per train worker yet; waiting for the autoscaler",
    "error: data.path: no such file",
    "\x1b[36m[student] epoch 1/2 loss 0.5\x1b[0m",
]
RAY = [  # lines Ray printed in a real `raydistill train jobs/digits.yaml`
    "2026-12-02 06:53:55,133\tINFO worker.py:2029 -- Started a local Ray instance.",
    "[2026-12-02 06:58:52,431 E 6906 14899] core_worker.cc:2465: Actor with class name: "
    "'MapWorker(MapBatches(TeacherPredictor))' has constructor arguments in the object store",
    "Requesting resources: {'CPU': 1.0} * 2",
    "/x/ray/data/_internal/execution/interfaces/execution_options.py:436: "
    "RayDeprecationWarning: `ExecutionOptions.exclude_resources` is deprecated",
    "✔️  Dataset val_0357ZQfQ_1 execution finished in 1.21 seconds [repeated 2x across cluster]",
    "Traceback (most recent call last):",
    "Setting up process group for: env:// [rank=0, world_size=2]",
    "- (ip=192.0.2.2, pid=11095) world_rank=0, local_rank=0, node_rank=0",
    "",
]


@pytest.mark.parametrize("line", OWN)
def test_raydistill_lines_are_its_own(line):
    assert is_own_line(line)


@pytest.mark.parametrize("line", RAY)
def test_rays_lines_are_not(line):
    assert not is_own_line(line)


def test_the_router_splits_whole_lines_and_strips_colour_in_the_log():
    own, other = io.StringIO(), io.StringIO()
    router = LineRouter(own, other)
    router.write("[student] epoch 1/2")  # a line written in pieces goes out whole
    router.write(" loss 0.5\n\x1b[33m2026-12-02 INFO worker.py -- started\x1b[0m\n")
    router.write("warning: half")
    assert own.getvalue() == "[student] epoch 1/2 loss 0.5\n"
    router.flush()
    assert own.getvalue() == "[student] epoch 1/2 loss 0.5\nwarning: half\n"
    assert other.getvalue() == "2026-12-02 INFO worker.py -- started\n"


# console.py loaded by path: the package's own imports (torch, ...) take a minute on a loaded box
SCRIPT = r"""
import importlib.util, os, sys, warnings
spec = importlib.util.spec_from_file_location("console", sys.argv[2])
console = importlib.util.module_from_spec(spec)
spec.loader.exec_module(console)
console.configure(quiet=True)
with console.quiet_ray(sys.argv[1]):
    print("[student] epoch 1/1 shown")
    os.write(2, b"[2026-12-02 E 1 2] core_worker.cc:1: from C++\n")
    os.write(1, b"raw stdout from C\n")
    print("2026 INFO from a Ray logger", file=sys.stderr)
    warnings.warn("a deprecation from Ray", DeprecationWarning, stacklevel=1)
    print("warning: raydistill's own", file=sys.stderr)
print("after the session")
"""


def test_a_quiet_block_keeps_rays_output_in_the_log(tmp_path):
    """Run in a subprocess: the block points descriptors 1 and 2 at the log."""
    log = tmp_path / "run" / "ray.log"
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", SCRIPT, str(log), console.__file__],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[student] epoch 1/1 shown\nafter the session\n"
    assert done.stderr == "warning: raydistill's own\n"
    text = log.read_text()
    for expected in ("from C++", "raw stdout from C", "INFO from a Ray logger", "deprecation"):
        assert expected in text, text


def test_without_configure_a_block_changes_nothing(tmp_path, capsys):
    console.configure(quiet=False)
    with quiet_ray(tmp_path / "ray.log") as active:
        print("[x] shown")
        print("2026 INFO also shown", file=sys.stderr)
    assert active is None and not (tmp_path / "ray.log").exists()
    out = capsys.readouterr()
    assert out.out == "[x] shown\n" and out.err == "2026 INFO also shown\n"


def test_forwarded_worker_lines_and_raylet_messages_are_routed():
    """Ray's two printers of lines from elsewhere (no Ray started): the dispatcher of worker
    output and the error listener's direct print of raylet messages."""
    from ray._private import worker
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    terminal, log = io.StringIO(), io.StringIO()
    active = console.Console(terminal, log)  # type: ignore[arg-type]
    original = worker.print_to_stdstream
    handlers = list(dispatcher.handlers)  # a session's Ray printing worker lines, if any
    active.route_worker_lines()
    try:
        dispatcher.emit(
            {"lines": ["[student] epoch 1/2 loss 0.5", "INFO setting up"], "pid": 7, "is_err": 0}
        )
        worker.print_to_stdstream(
            {"lines": ["WARNING: 12 PYTHON worker processes"], "pid": "raylet", "is_err": False},
            ignore_prefix=False,
        )
    finally:
        active.restore()
    assert worker.print_to_stdstream is original
    assert dispatcher.handlers == handlers  # Ray's own handler is back
    assert terminal.getvalue() == "[student] epoch 1/2 loss 0.5\n"
    assert "INFO setting up" in log.getvalue() and "12 PYTHON worker" in log.getvalue()
    assert "[student]" not in log.getvalue()
