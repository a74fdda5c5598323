"""Seeded augmentation: a row's augmented input depends only on (seed, row, view)."""

from __future__ import annotations

import numpy as np
import pytest

from raydistill.config import AugmentConfig, DataConfig
from raydistill.data import load_digits_arrays
from raydistill.data.augment import (
    GaussianNoise,
    HorizontalFlip,
    RandomCrop,
    RandomErasing,
    augment_batch,
)

IMAGES = load_digits_arrays().inputs[:16]
ROWS = np.arange(16)


def test_same_seed_row_view_same_output_regardless_of_batching():
    ops = [RandomCrop(padding=1), HorizontalFlip(p=0.5), RandomErasing(p=0.5)]
    whole = augment_batch(IMAGES, ROWS, view=2, seed=7, ops=ops)
    halves = np.concatenate(
        [
            augment_batch(IMAGES[:5], ROWS[:5], 2, 7, ops),
            augment_batch(IMAGES[5:], ROWS[5:], 2, 7, ops),
        ]
    )
    assert np.array_equal(whole, halves)
    assert not np.array_equal(whole, augment_batch(IMAGES, ROWS, view=3, seed=7, ops=ops))
    assert not np.array_equal(whole, augment_batch(IMAGES, ROWS, view=2, seed=8, ops=ops))


def test_ops_do_what_they_say():
    crop = augment_batch(IMAGES, ROWS, 0, 0, [RandomCrop(padding=1)])
    assert crop.shape == IMAGES.shape and crop.dtype == np.float32
    # a 1-pixel shift keeps the image's pixels (minus a border) somewhere
    assert np.isclose(crop.sum(), IMAGES.sum(), rtol=0.2)
    flipped = augment_batch(IMAGES, ROWS, 0, 0, [HorizontalFlip(p=1.0)])
    assert np.array_equal(flipped, IMAGES[:, :, :, ::-1])
    erased = augment_batch(
        np.ones((8, 1, 8, 8), np.float32),
        np.arange(8),
        0,
        0,
        [RandomErasing(p=1.0, scale=(0.25, 0.25))],
    )
    assert np.all((erased == 0).sum(axis=(1, 2, 3)) == 16)  # 25% of 64 pixels
    noisy = augment_batch(IMAGES, ROWS, 0, 0, [GaussianNoise(std=0.1)])
    assert 0.08 < float(np.std(noisy - IMAGES)) < 0.12


def test_augment_parses_from_the_job_and_rejects_non_images():
    cfg = DataConfig.model_validate(
        {"augment": {"views": 2, "ops": [{"op": "hflip", "p": 0.3}, {"op": "random_crop"}]}}
    )
    assert isinstance(cfg.augment, AugmentConfig) and cfg.augment.views == 2
    assert [type(op) for op in cfg.augment.ops] == [HorizontalFlip, RandomCrop]
    with pytest.raises(ValueError, match="op"):
        DataConfig.model_validate({"augment": {"ops": [{"op": "rotate"}]}})
    with pytest.raises(ValueError, match=r"expects images \[N, C, H, W\]"):
        augment_batch(np.zeros((2, 64), np.float32), np.arange(2), 0, 0, [RandomCrop()])


def test_normalize_per_channel_and_bad_settings():
    from raydistill.data.augment import Normalize

    images = np.stack([np.full((2, 3, 3), 2.0, np.float32), np.full((2, 3, 3), 4.0, np.float32)])
    out = augment_batch(images, np.arange(2), 0, 0, [Normalize(mean=[1.0, 2.0], std=[0.5, 2.0])])
    assert np.allclose(out[0, 0], 2.0) and np.allclose(out[0, 1], 0.0)
    assert np.allclose(out[1, 0], 6.0) and np.allclose(out[1, 1], 1.0)
    single = augment_batch(images, np.arange(2), 0, 0, [Normalize(mean=[2.0], std=[2.0])])
    assert np.allclose(single[1], 1.0)
    with pytest.raises(ValueError, match="3 mean values for 2-channel images"):
        augment_batch(images, np.arange(2), 0, 0, [Normalize(mean=[0, 0, 0])])
    with pytest.raises(ValueError, match="greater than 0"):
        DataConfig.model_validate({"augment": {"ops": [{"op": "normalize", "std": [0.0]}]}})
