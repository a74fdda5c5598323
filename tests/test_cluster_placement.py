"""On a cluster with teacher nodes and student nodes, each part of a job lands where it belongs.

A four-node Ray cluster runs on this machine (tests/helpers/node_cluster.py, shared with
test_node_loss.py through the ``node_cluster_runs`` fixture): a head with CPUs only, a node
offering the custom resource ``teacher`` and two offering ``student`` (one train worker each).
The job asks for them through ``scaling.teacher_pool.resources`` and
``scaling.resources_per_worker``; Ray's State API then tells on which node every actor ran.
"""

from __future__ import annotations

from collections import Counter

import pytest

pytestmark = pytest.mark.slow


def test_teacher_actors_and_train_workers_run_on_their_node_groups(node_cluster_runs):
    result = node_cluster_runs["placement"]
    assert result["nodes"] == ["head", "student", "student", "teacher"]
    placed = Counter(
        (a["class_name"], a["node"])
        for a in result["actors"]
        if "TeacherPredictor" in a["class_name"] or a["class_name"] == "RayTrainWorker"
    )
    pool = {node for (name, node) in placed if "TeacherPredictor" in name}
    workers = {node: n for (name, node), n in placed.items() if name == "RayTrainWorker"}
    assert pool == {"teacher"}, placed
    assert workers == {"student": 2}, placed
    assert [s["name"] for s in result["scores"]] == ["teacher", "student (distilled)"]
