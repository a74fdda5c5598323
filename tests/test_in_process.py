"""Which stages train in the driver's process (raydistill/train/in_process.py), Ray-free: the
rules on the job, its splits, its callbacks and the cluster's nodes. That such a stage trains
exactly as a Ray Train worker does is checked on a real Ray in test_determinism.py."""

from __future__ import annotations

import pytest
from tiny_run import write_tiny_job

from raydistill.config import JobError, load_job
from raydistill.tracking import TensorBoardLogger
from raydistill.train.in_process import node_lacks, why_not_here

NODE = {"Alive": True, "Resources": {"CPU": 2.0}}


@pytest.fixture(scope="module")
def job_file(tmp_path_factory):
    return write_tiny_job(tmp_path_factory.mktemp("in-process"))


def _job(job_file, *overrides):
    return load_job(job_file, ["scaling.workers=1", *overrides])


def test_each_rule_sends_a_stage_to_a_worker_group_and_says_why(job_file, tmp_path):
    held = {"train": [], "val": []}
    cases = {
        "scaling.in_process=false": "in_process is false",
        "scaling.workers=2": "workers is 2, not 1",
        "scaling.max_failures=1": "max_failures restarts failed workers",
        "scaling.resources_per_worker={student: 1}": "resources_per_worker places the worker",
    }
    for override, reason in cases.items():
        assert reason in why_not_here(_job(job_file, override), held, held, []), override
    job = _job(job_file)
    # (a split that streams trains here too, through its own Ray Data iterator: the streamed
    # image-folder test in tests/test_stream_ray.py sees it)
    assert why_not_here(job, held, held, [object()]) == "a callback needs Ray Train"
    # TensorBoard's writer runs here too (it is told each epoch as Ray Train would tell it)
    assert TensorBoardLogger(tmp_path).in_process


def test_the_cluster_must_be_this_one_node_with_the_workers_cpus(job_file):
    job = _job(job_file)
    assert node_lacks(job, [NODE]) is None
    assert node_lacks(job, [NODE, NODE]) == "the cluster has 2 nodes"
    no_cpus = {"Alive": True, "Resources": {"CPU": 0.0}}  # a head kept free of work
    assert node_lacks(job, [no_cpus]) == "the node offers 0 CPUs to workers"
    gpu_job = _job(job_file, "scaling.use_gpu=true")
    assert "sees no GPU" in node_lacks(gpu_job, [NODE])


def test_in_process_true_refuses_what_it_cannot_honour(job_file):
    for override in ("scaling.workers=2", "scaling.max_failures=1"):
        with pytest.raises(JobError, match="in_process: true trains one worker in the driver"):
            _job(job_file, "scaling.in_process=true", override)
    assert _job(job_file, "scaling.in_process=true").scaling.in_process is True
