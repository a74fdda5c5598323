"""A node removed from a multi-node cluster during training: the run recovers (issue #8, item 3).

A four-node Ray cluster runs on this machine (tests/helpers/node_cluster.py, shared with
test_cluster_placement.py through the ``node_cluster_runs`` fixture): a head, a teacher node and
two student nodes with room for one train worker each. The job trains elastically on
``scaling.workers: [1, 2]``; after its first checkpoint one student node is removed. Ray Train
restarts the worker group on what is left and the loop resumes from the checkpoint, so the stage
still ends with every epoch, the later ones on one worker.
"""

from __future__ import annotations

import pytest
from node_cluster import NODE_LOSS_EPOCHS as EPOCHS

pytestmark = pytest.mark.slow


def test_a_removed_node_does_not_end_the_run(node_cluster_runs):
    result = node_cluster_runs["node_loss"]
    removed = result["removed"]
    assert "after_s" in removed, "the student node was never removed"
    assert result["alive_nodes"] == ["head", "student", "teacher"]
    history = result["history"]
    assert [h["epoch"] for h in history] == list(range(EPOCHS))
    workers = [h["workers"] for h in history]
    starts = [h["started_at_epoch"] for h in history]
    # trained on both student nodes, then on the one left, resuming from a checkpoint
    assert workers[0] == 2 and workers[-1] == 1, (workers, removed)
    resumed_at = starts[-1]
    assert resumed_at >= 1 and workers[resumed_at:] == [1] * (EPOCHS - resumed_at), (
        workers,
        starts,
    )
    assert [s["name"] for s in result["scores"]] == ["baseline (student alone)"]
    assert result["scores"][0]["accuracy"] > 0.3  # chance is 0.1
