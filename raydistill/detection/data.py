"""COCO splits as Ray Data streams, and the rows they carry.

The driver reads and cleans the annotations (small); Ray Data reads, decodes and shrinks the
images in parallel tasks. Images differ in size, so a row carries its pixels as raw bytes with
their height and width, and its boxes and labels as raw arrays: no ragged tensor columns.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from raydistill.config import CocoConfig, JobConfig, JobError
from raydistill.detection.coco import CocoSplit, read_bytes, read_coco
from raydistill.detection.transforms import fit_size, flip_decision, hflip

if TYPE_CHECKING:
    import ray.data

Log = Any


def read_splits(job: JobConfig, log: Log = print) -> dict[str, CocoSplit]:
    """train, val and test (val again when the job names no test split), cleaned; the training
    split's categories fix the labels of the others. Logs what each split dropped."""
    coco = job.data.coco
    assert coco is not None
    train = read_coco(coco.train.images, coco.train.annotations, min_box_size=coco.min_box_size)
    splits = {"train": train}
    for name in ("val", "test"):
        paths = getattr(coco, name) or coco.val
        splits[name] = read_coco(
            paths.images, paths.annotations, train.categories, coco.min_box_size
        )
    for name, split in splits.items():
        log(f"[data] coco {name}: {split.describe()}")
    return splits


def _encode(record: dict[str, Any], image_size: int) -> dict[str, Any]:
    try:
        with Image.open(io.BytesIO(read_bytes(record["path"]))) as im:
            pixels = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise JobError(f"{record['path']}: cannot decode image ({exc})") from None
    h, w = pixels.shape[:2]
    # Annotations are in the pixels the JSON declares; an image stored at another size is scaled.
    boxes = record["boxes"] * np.array(
        [w / record["width"], h / record["height"]] * 2, dtype=np.float32
    )
    pixels, boxes, _ = fit_size(pixels, boxes, image_size)
    return {
        "image_id": record["image_id"],
        "image": np.ascontiguousarray(pixels).tobytes(),
        "height": pixels.shape[0],
        "width": pixels.shape[1],
        # to the annotation file's pixels, where mAP is computed
        "scale_x": pixels.shape[1] / record["width"],
        "scale_y": pixels.shape[0] / record["height"],
        "boxes": boxes.astype(np.float32).tobytes(),
        "labels": record["labels"].astype(np.int64).tobytes(),
    }


class DecodeImages:
    """Ray Data batch function: image files -> decoded, shrunk rows (boxes moved with them)."""

    def __init__(self, image_size: int) -> None:
        self.image_size = image_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        rows = [_encode(r, self.image_size) for r in _unbatch(batch)]
        return {k: [r[k] for r in rows] for k in rows[0]} if rows else {}


def _unbatch(batch: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    n = len(batch["image_id"])
    rows = []
    for i in range(n):
        rows.append(
            {
                "image_id": int(batch["image_id"][i]),
                "path": str(batch["path"][i]),
                "width": int(batch["width"][i]),
                "height": int(batch["height"][i]),
                "boxes": np.frombuffer(batch["boxes"][i], np.float32).reshape(-1, 4),
                "labels": np.frombuffer(batch["labels"][i], np.int64),
            }
        )
    return rows


def split_dataset(split: CocoSplit, coco: CocoConfig) -> ray.data.Dataset:
    """A lazy Ray Data stream of one split's decoded rows."""
    import ray.data

    items = [
        {
            "image_id": r["image_id"],
            "path": r["path"],
            "width": r["width"],
            "height": r["height"],
            "boxes": r["boxes"].tobytes(),
            "labels": r["labels"].tobytes(),
        }
        for r in split.records
    ]
    blocks = max(1, min(len(items) // 16, 64))
    return ray.data.from_items(items, override_num_blocks=blocks).map_batches(
        DecodeImages,
        fn_constructor_args=(coco.image_size,),
        batch_size=16,
        num_cpus=0.5,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=2),
    )


def rows_to_tensors(
    batch: dict[str, np.ndarray],
    flip_seed: int | None = None,
    epoch: int = 0,
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]], list[dict[str, float]]]:
    """A numpy batch of rows -> detector inputs: images [3, H, W] in [0, 1], targets with
    ``boxes`` [N, 4] and ``labels`` [N], and per image its id and scale to the annotation
    pixels. With ``flip_seed`` each image is mirrored (boxes too) on its seeded coin."""
    images, targets, meta = [], [], []
    for i in range(len(batch["image_id"])):
        h, w = int(batch["height"][i]), int(batch["width"][i])
        pixels = np.frombuffer(batch["image"][i], np.uint8).reshape(h, w, 3)
        image = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().div_(255)
        boxes = torch.from_numpy(np.frombuffer(batch["boxes"][i], np.float32).reshape(-1, 4).copy())
        labels = torch.from_numpy(np.frombuffer(batch["labels"][i], np.int64).copy())
        image_id = int(batch["image_id"][i])
        if flip_seed is not None and flip_decision(flip_seed, epoch, image_id):
            image, boxes = hflip(image, boxes)
        images.append(image)
        targets.append({"boxes": boxes, "labels": labels})
        meta.append(
            {
                "image_id": image_id,
                "scale_x": float(batch["scale_x"][i]),
                "scale_y": float(batch["scale_y"][i]),
            }
        )
    return images, targets, meta
