"""A small COCO-format dataset drawn on the fly: shapes of several classes on textured
backgrounds, with their exact boxes. Used by the tests and by ``raydistill make-coco`` so a
detection job runs without any download."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# COCO category ids need not be contiguous; these are not, so the id <-> label mapping is used.
CATEGORIES = [
    {"id": 1, "name": "square"},
    {"id": 3, "name": "disc"},
    {"id": 7, "name": "triangle"},
]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth colour gradients plus fine noise: texture the detector must learn to ignore."""
    ys, xs = np.mgrid[0:size, 0:size] / size
    base = rng.uniform(60, 200, 3)
    tilt = rng.uniform(-60, 60, (2, 3))
    img = base + xs[..., None] * tilt[0] + ys[..., None] * tilt[1]
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _draw(draw: ImageDraw.ImageDraw, name: str, box: tuple[int, int, int, int], fill) -> None:
    x0, y0, x1, y1 = box
    if name == "square":
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)
    elif name == "disc":
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=fill)
    else:
        draw.polygon([(x0, y1 - 1), ((x0 + x1) / 2, y0), (x1 - 1, y1 - 1)], fill=fill)


def _split(
    root: Path, split: str, count: int, size: int, rng: np.random.Generator, max_objects: int
) -> tuple[Path, Path]:
    images_dir = root / split
    images_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(count):
        image = Image.fromarray(_background(rng, size))
        draw = ImageDraw.Draw(image)
        placed: list[tuple[int, int, int, int]] = []
        for _ in range(int(rng.integers(1, max_objects + 1))):
            side = int(rng.integers(size // 6, size // 2.5))
            for _attempt in range(20):  # objects do not overlap, so every box is exact
                x0 = int(rng.integers(0, size - side))
                y0 = int(rng.integers(0, size - side))
                box = (x0, y0, x0 + side, y0 + side)
                if all(
                    box[2] <= p[0] or p[2] <= box[0] or box[3] <= p[1] or p[3] <= box[1]
                    for p in placed
                ):
                    break
            else:
                continue
            placed.append(box)
            category = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
            fill = tuple(int(c) for c in rng.integers(0, 256, 3))
            _draw(draw, category["name"], box, fill)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": category["id"],
                    "bbox": [box[0], box[1], side, side],  # COCO: x, y, width, height
                    "area": float(side * side),
                    "iscrowd": 0,
                }
            )
        name = f"{i:05d}.png"
        image.save(images_dir / name)
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
    annotations_file = root / f"instances_{split}.json"
    annotations_file.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES})
    )
    return images_dir, annotations_file


def write_shapes_coco(
    root: Path,
    train: int = 200,
    val: int = 50,
    size: int = 96,
    seed: int = 0,
    max_objects: int = 3,
) -> dict[str, tuple[Path, Path]]:
    """Write ``train``/``val`` splits of ``size`` x ``size`` RGB PNGs with 1..``max_objects``
    non-overlapping shapes (3 classes, COCO category ids 1, 3, 7) under ``root``.

    Returns ``{split: (images_dir, instances_json)}``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    return {
        split: _split(root, split, count, size, rng, max_objects)
        for split, count in (("train", train), ("val", val))
    }
