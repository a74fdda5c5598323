"""scikit-learn's bundled handwritten digits: 1797 real 8x8 images, 10 classes, no download."""

from __future__ import annotations

import numpy as np

from raydistill.data.arrays import LabelledArrays


def load_digits_arrays() -> LabelledArrays:
    """All digits as inputs float32 [N, 1, 8, 8] scaled to [0, 1] and labels int64 [N]."""
    # imported here: scikit-learn costs every Ray process that imports raydistill ~3 s of CPU
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    return LabelledArrays(images, bunch.target.astype(np.int64), num_classes=10)
