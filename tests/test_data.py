"""The bundled digits and the seeded stratified split."""

from __future__ import annotations

import numpy as np
import pytest

from raydistill.data import LabelledArrays, load_digits_arrays, split_arrays


def test_digits_are_real_and_scaled():
    d = load_digits_arrays()
    assert d.inputs.shape == (1797, 1, 8, 8) and d.inputs.dtype == np.float32
    assert 0.0 == d.inputs.min() and d.inputs.max() == 1.0
    assert set(np.unique(d.labels)) == set(range(10))


def test_split_is_disjoint_stratified_and_deterministic():
    d = load_digits_arrays()
    a = split_arrays(d, 0.2, 0.2, seed=0)
    b = split_arrays(d, 0.2, 0.2, seed=0)
    c = split_arrays(d, 0.2, 0.2, seed=1)
    assert [len(a[k]) for k in ("train", "val", "test")] == [1077, 360, 360]
    assert np.array_equal(a["test"].inputs, b["test"].inputs)
    assert not np.array_equal(a["test"].inputs, c["test"].inputs)
    shares = np.bincount(a["test"].labels, minlength=10) / len(a["test"])
    assert np.all(np.abs(shares - 0.1) < 0.02)
    rows = {x.tobytes() for k in ("train", "val", "test") for x in a[k].inputs}
    assert len(rows) == len({x.tobytes() for x in d.inputs})


def test_labels_outside_num_classes_are_refused():
    with pytest.raises(ValueError, match="row 1: label 12 is outside num_classes=10"):
        LabelledArrays(np.zeros((3, 2), np.float32), np.array([0, 12, 1]), num_classes=10)
