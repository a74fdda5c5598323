"""A stage collects its newest complete state by the epoch recorded in it, never by the name
Ray gave the checkpoint nor by which one Ray registered (issue 25, scenario 5). Ray-free: the
checkpoint directories are written as Ray Train lays them out (``checkpoint_<timestamp>``)."""

from __future__ import annotations

from pathlib import Path

from raydistill.train.state import (
    STATE_FILE,
    final_state,
    latest_checkpoint,
    newest_state,
    save_state,
)


def _checkpoint(stage: Path, stamp: str, epoch: int) -> Path:
    """A checkpoint as Ray Train v2 names it (wall-clock time), holding the state of ``epoch``."""
    directory = stage / f"checkpoint_{stamp}"
    directory.mkdir(parents=True)
    history = [{"epoch": e + 1} for e in range(epoch + 1)]
    save_state(directory, {"epoch": epoch, "history": history})
    return directory


def test_the_newest_checkpoint_is_the_latest_epoch_not_the_latest_name(tmp_path):
    """Names are timestamps: a clock set back (or another node's clock) names a later epoch
    earlier. The epoch inside state.pt decides."""
    stage = tmp_path / "student"
    _checkpoint(stage, "2026-12-01_10-00-05.000000", 1)
    last = _checkpoint(stage, "2026-12-01_09-59-58.000000", 3)  # written after, named before
    _checkpoint(stage, "2026-12-01_10-00-01.000000", 2)
    assert latest_checkpoint(stage) == last
    found = newest_state(sorted(stage.iterdir(), reverse=True))
    assert found is not None and found[0] == last and found[1]["epoch"] == 3


def test_a_final_epoch_ray_never_registered_is_collected(tmp_path):
    """The driver was killed after the last epoch's checkpoint was written, before Ray's
    snapshot: the rerun trains nothing and Ray's result names the older checkpoint. The stage
    collects the final epoch, so model.pt and history.json include it."""
    stage = tmp_path / "student"
    registered = _checkpoint(stage, "2026-12-01_10-00-01.000000", 8)
    _checkpoint(stage, "2026-12-01_10-00-09.000000", 9)  # the final epoch, unregistered
    state = final_state(registered, stage)
    assert state is not None and state["epoch"] == 9
    assert [h["epoch"] for h in state["history"]] == list(range(1, 11))


def test_an_unreadable_newest_checkpoint_falls_back_to_the_next(tmp_path):
    stage = tmp_path / "student"
    whole = _checkpoint(stage, "2026-12-01_10-00-01.000000", 4)
    torn = _checkpoint(stage, "2026-12-01_10-00-02.000000", 5)
    (torn / STATE_FILE).write_bytes((torn / STATE_FILE).read_bytes()[:64])  # killed mid-copy
    (stage / "checkpoint_2026-12-01_10-00-03.000000").mkdir()  # not written at all
    assert latest_checkpoint(stage) == whole
    state = final_state(None, stage)
    assert state is not None and state["epoch"] == 4


def test_a_state_continued_at_its_final_epoch_is_the_result(tmp_path):
    """PBT continuing a finished trial trains nothing and leaves no checkpoint of its own:
    the state it continued from is collected; with nothing at all there is nothing."""
    start = tmp_path / "start"
    start.mkdir()
    save_state(start, {"epoch": 5, "history": []})
    stage = tmp_path / "student"
    state = final_state(None, stage, start)
    assert state is not None and state["epoch"] == 5
    assert final_state(None, stage) is None
    # a later epoch trained after it wins over the state it started from
    _checkpoint(stage, "2026-12-01_10-00-01.000000", 6)
    assert final_state(None, stage, start)["epoch"] == 6
