"""Box-consistent image transforms: whatever moves the pixels moves the boxes with them.

Images are HWC uint8 arrays (before the model) or CHW float tensors (in the train loop); boxes
are [N, 4] (x0, y0, x1, y1) in pixels of the image they belong to.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def fit_size(
    image: np.ndarray, boxes: np.ndarray, max_side: int | None
) -> tuple[np.ndarray, np.ndarray, float]:
    """Shrink ``image`` so its longer side is at most ``max_side`` pixels (never enlarge).

    Returns the image, the boxes scaled with it, and the scale (new / original): predictions
    divided by it are in the original image's pixels, which is where COCO mAP is computed.
    """
    h, w = image.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return image, boxes, 1.0
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resized = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    sx, sy = size[0] / w, size[1] / h
    return resized, boxes * np.array([sx, sy, sx, sy], dtype=np.float32), scale


def hflip(image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror a [C, H, W] image left-right and its [N, 4] boxes with it."""
    width = image.shape[-1]
    flipped = boxes.clone()
    flipped[:, 0] = width - boxes[:, 2]
    flipped[:, 2] = width - boxes[:, 0]
    return image.flip(-1), flipped


def flip_decision(seed: int, epoch: int, image_id: int) -> bool:
    """Whether an image is mirrored this epoch: seeded per image and epoch, so reruns repeat it
    and every epoch sees a fresh mix."""
    mixed = (seed * 1_000_003 + epoch * 7919 + image_id * 104_729) % (2**32)
    return bool(np.random.default_rng(mixed).integers(2))
