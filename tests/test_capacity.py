"""What a cluster holds and its autoscaler can launch (raydistill/capacity.py), and the two
uses of it: ``teacher_pool.max_actors: auto`` and the pool check on a joined cluster. Ray-free:
the autoscaler's config is the one tests/test_autoscaling.py runs a real autoscaler on."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from autoscaling_cluster import TEACHER_NODES, autoscaling_config

from raydistill import capacity, runtime
from raydistill.capacity import ClusterOffer, autoscaler_config_path, fit_count, read_types
from raydistill.config import JobError, TeacherPoolConfig, load_job

ROOT = Path(__file__).resolve().parents[1]
HEAD = {"CPU": 2.0, "memory": 1e9, "node:__internal_head__": 1.0}
ACTOR = {"CPU": 0.5, "teacher": 1.0}


def _types(tmp_path: Path) -> list[capacity.NodeType]:
    path = tmp_path / "autoscaling.json"
    path.write_text(json.dumps(autoscaling_config(6379)))
    types = read_types(path)
    assert types is not None
    return types


def test_slots_per_node_are_bounded_by_the_scarcest_resource():
    assert fit_count(ACTOR, {"CPU": 4.0, "teacher": 1.0}) == 1
    assert fit_count(ACTOR, {"CPU": 4.0, "teacher": 3.0}) == 3
    assert fit_count(ACTOR, {"CPU": 1.0, "teacher": 8.0}) == 2
    assert fit_count(ACTOR, HEAD) == 0
    assert fit_count({"CPU": 0.1}, {"CPU": 0.3}) == 3  # no float shortfall (0.3 / 0.1)


def test_node_types_come_from_the_autoscalers_config(tmp_path):
    types = {t.name: t for t in _types(tmp_path)}
    assert types["teacher"].max_workers == TEACHER_NODES
    assert types["teacher"].resources == {"CPU": 1.0, "teacher": 1.0}  # no object store
    assert types["ray.head.default"].max_workers == 1  # the head: up, once
    assert read_types(tmp_path / "missing.json") is None


def test_an_auto_pool_is_sized_by_what_the_autoscaler_can_launch(tmp_path):
    offer = ClusterOffer(live=[HEAD], types=_types(tmp_path))
    most, why = offer.capacity(ACTOR)
    assert most == TEACHER_NODES
    assert f"{TEACHER_NODES} x teacher (1 each)" in why and "autoscaler" in why
    # no autoscaler known: what is up now
    assert ClusterOffer(live=[HEAD, {"CPU": 4.0, "teacher": 3.0}], types=None).capacity(ACTOR) == (
        3,
        "3 fit the 2 live node(s)",
    )


def test_a_pool_the_autoscaler_can_host_passes_and_one_it_cannot_is_refused(tmp_path, monkeypatch):
    offer = ClusterOffer(live=[HEAD], types=_types(tmp_path))
    assert offer.hosts(ACTOR)  # no teacher node is up, but one can be launched
    assert not offer.hosts({"CPU": 1.0, "GPU": 1.0})
    monkeypatch.setattr(ClusterOffer, "current", classmethod(lambda cls: offer))
    monkeypatch.setattr(runtime, "_STARTED_HERE", False)  # a joined cluster
    said: list[str] = []
    fits = load_job(ROOT / "jobs" / "digits.yaml", ["scaling.teacher_pool.resources.teacher=1"])
    runtime.check_pool_resources(fits, said.append)
    assert said == []  # no "waiting for the autoscaler" warning: it can launch one
    gpu = load_job(ROOT / "jobs" / "digits.yaml", ["scaling.teacher_pool.num_gpus=1"])
    with pytest.raises(JobError, match=r"needs GPU: 1 on one node.*no node type the autos") as e:
        runtime.check_pool_resources(gpu, said.append)
    assert "teacher {" in str(e.value) and "\n" not in str(e.value)


def test_max_actors_auto_validates_and_resolves_once(tmp_path, monkeypatch):
    pool = TeacherPoolConfig(min_actors=1, max_actors="auto", resources={"teacher": 1})
    assert pool.planned_max_actors == 1  # before Ray: the pool's floor
    assert pool.request == ACTOR
    with pytest.raises(ValueError):
        TeacherPoolConfig(max_actors="many")
    with pytest.raises(ValueError):
        TeacherPoolConfig(min_actors=3, max_actors=2)
    assert runtime.pool_max_actors(TeacherPoolConfig(max_actors=3)) == 3

    calls = []
    offer = ClusterOffer(live=[HEAD], types=_types(tmp_path))
    monkeypatch.setattr(ClusterOffer, "current", classmethod(lambda cls: calls.append(1) or offer))
    monkeypatch.setattr(runtime, "_AUTO_SIZES", {})
    said: list[str] = []
    assert runtime.pool_max_actors(pool, said.append) == TEACHER_NODES
    assert runtime.pool_max_actors(pool, said.append) == TEACHER_NODES
    assert len(calls) == 1 and len(said) == 1, said
    assert f"auto: {TEACHER_NODES} actor(s) at most" in said[0]
    floor = TeacherPoolConfig(min_actors=5, max_actors="auto", resources={"teacher": 1})
    assert runtime.pool_max_actors(floor, said.append) == 5  # never below min_actors
    # a local Ray's logical CPUs are a plan, not cores: actors are bounded by the cores
    monkeypatch.setattr(runtime, "_STARTED_HERE", True)
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 2)
    roomy = ClusterOffer(live=[{"CPU": 16.0}], types=None)
    monkeypatch.setattr(ClusterOffer, "current", classmethod(lambda cls: roomy))
    local = TeacherPoolConfig(max_actors="auto", num_cpus=0.5)
    assert runtime.pool_max_actors(local, said.append) == 1
    assert "a local Ray: half of this machine's 2 cores" in said[-1]


def test_the_autoscaler_config_is_found_on_its_monitors_command_line(tmp_path):
    """A real process carrying a monitor's flags (as Ray's autoscaler ``monitor.py`` runs on
    a head started with ``--autoscaling-config``), matched to the cluster by its GCS port."""
    config = tmp_path / "autoscaling.json"
    flags = ["--gcs-address=127.0.0.1:47123", f"--autoscaling-config={config}"]
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *flags])
    try:
        deadline = time.monotonic() + 30
        while autoscaler_config_path(47123) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert autoscaler_config_path(47123) == config
        assert autoscaler_config_path(47124) is None  # another cluster's port
    finally:
        proc.kill()
        proc.wait()
