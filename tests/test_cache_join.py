"""The joined teacher cache, Ray-free: outputs found by row key (and view), whatever the order
rows stream in; a row the cache lacks, or a label that changed, is named."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from ray.data.extensions import ArrowTensorArray

from raydistill.columns import INPUT, LABEL, ROW_ID, TEACHER_LOGITS, VIEW
from raydistill.config import JobError
from raydistill.teacher.join import CachedOutputs, attach_outputs, drop_inputs


def _cache_table(ids: np.ndarray, views: np.ndarray | None, logits: np.ndarray) -> pa.Table:
    columns = {
        ROW_ID: pa.array(ids, type=pa.int64()),
        LABEL: pa.array(ids % 7, type=pa.int64()),
        TEACHER_LOGITS: ArrowTensorArray.from_numpy(logits),
    }
    if views is not None:
        columns[VIEW] = pa.array(views, type=pa.int64())
    return pa.table(columns)


def test_each_streamed_row_gets_its_own_outputs_in_any_order():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 2**62, 500)  # hashed row ids, as a streamed source makes them
    logits = rng.normal(size=(500, 7)).astype(np.float32)
    outputs = CachedOutputs.from_table(_cache_table(ids, None, logits), "cache")
    order = rng.permutation(500)[:200]
    batch = {INPUT: rng.random((200, 3)), ROW_ID: ids[order], LABEL: ids[order] % 7}
    joined = attach_outputs(batch, outputs, "cache")
    assert np.array_equal(joined[TEACHER_LOGITS], logits[order])
    assert joined[INPUT] is batch[INPUT]


def test_views_of_one_row_keep_their_own_outputs():
    ids = np.repeat(np.arange(50), 3)
    views = np.tile(np.arange(3), 50)
    logits = np.arange(150 * 2, dtype=np.float32).reshape(150, 2)
    outputs = CachedOutputs.from_table(_cache_table(ids, views, logits), "cache")
    pick = np.array([149, 0, 77, 78])
    batch = {ROW_ID: ids[pick], VIEW: views[pick], LABEL: ids[pick] % 7}
    assert np.array_equal(attach_outputs(batch, outputs, "c")[TEACHER_LOGITS], logits[pick])


def test_a_row_the_cache_lacks_or_a_changed_label_is_named():
    ids = np.arange(10) * 3
    outputs = CachedOutputs.from_table(_cache_table(ids, None, np.zeros((10, 2), np.float32)), "c")
    with pytest.raises(JobError, match="row 4 of the source has no teacher outputs"):
        attach_outputs({ROW_ID: np.array([3, 4]), LABEL: np.array([3, 4])}, outputs, "c")
    with pytest.raises(JobError, match="row 6 has another label in the source"):
        attach_outputs({ROW_ID: np.array([6]), LABEL: np.array([0])}, outputs, "c")
    twice = _cache_table(np.array([1, 1]), None, np.zeros((2, 2), np.float32))
    with pytest.raises(JobError, match="row key 1 appears twice"):
        CachedOutputs.from_table(twice, "c")


def test_a_joined_cache_row_keeps_no_inputs():
    batch = {INPUT: np.zeros((2, 3)), "teacher_input": np.zeros((2, 1)), ROW_ID: np.arange(2)}
    assert set(drop_inputs(batch)) == {ROW_ID}
