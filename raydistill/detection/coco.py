"""Read a COCO-format split (an image folder plus an instances JSON) into clean records.

Bad annotations never reach the model: crowd regions, boxes with no area, boxes wholly outside
their image and unknown category ids are dropped (boxes partly outside are clipped), and each
reason is counted so the run can report what it dropped. Paths may be local or URIs that
``pyarrow.fs`` understands (``file://``, ``s3://``, ``gs://``).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow.fs as pafs

from raydistill.config import JobError


def open_path(path: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and in-filesystem path of a local path or URI."""
    if "://" in path:
        try:
            return pafs.FileSystem.from_uri(path)
        except Exception as exc:
            raise JobError(f"cannot open {path}: {exc}") from None
    return pafs.LocalFileSystem(), str(path)


def read_bytes(path: str) -> bytes:
    fs, inner = open_path(path)
    try:
        with fs.open_input_stream(inner) as stream:
            return stream.read()
    except FileNotFoundError:
        raise JobError(f"file not found: {path}") from None


def join(directory: str, name: str) -> str:
    return directory.rstrip("/") + "/" + name


@dataclass
class CocoSplit:
    """One split, cleaned. ``records[i]`` holds ``image_id``, ``path``, ``width``, ``height``,
    ``boxes`` [N, 4] float32 (x0, y0, x1, y1 in pixels) and ``labels`` [N] int64 in 1..K
    (0 is the detectors' background)."""

    records: list[dict[str, Any]]
    categories: list[dict[str, Any]]
    dropped: Counter = field(default_factory=Counter)
    annotations_kept: int = 0

    @property
    def num_classes(self) -> int:
        """Classes the detectors predict: the categories plus background."""
        return len(self.categories) + 1

    def label_to_category(self) -> dict[int, int]:
        return {i + 1: int(c["id"]) for i, c in enumerate(self.categories)}

    def describe(self) -> str:
        dropped = ", ".join(f"{n} {why}" for why, n in sorted(self.dropped.items())) or "none"
        return (
            f"{len(self.records)} images, {self.annotations_kept} boxes, "
            f"{len(self.categories)} categories; dropped: {dropped}"
        )

    def ground_truth(self) -> dict[str, Any]:
        """The cleaned split as a COCO dataset dict (what mAP is computed against)."""
        to_cat = self.label_to_category()
        images, annotations = [], []
        for r in self.records:
            images.append({"id": r["image_id"], "width": r["width"], "height": r["height"]})
            for box, label in zip(r["boxes"].tolist(), r["labels"].tolist(), strict=True):
                w, h = box[2] - box[0], box[3] - box[1]
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": r["image_id"],
                        "category_id": to_cat[label],
                        "bbox": [box[0], box[1], w, h],
                        "area": w * h,
                        "iscrowd": 0,
                    }
                )
        return {"images": images, "annotations": annotations, "categories": self.categories}


def _load_json(annotations: str) -> dict[str, Any]:
    try:
        data = json.loads(read_bytes(annotations))
    except json.JSONDecodeError as exc:
        raise JobError(f"{annotations}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise JobError(f"{annotations}: expected a COCO object with images/annotations")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise JobError(f"{annotations}: no '{key}' list (is this a COCO instances file?)")
    return data


def _clean_box(bbox: Any, width: int, height: int, min_size: float) -> np.ndarray | str:
    """The box clipped to its image as x0, y0, x1, y1, or the reason it is dropped."""
    if not isinstance(bbox, list | tuple) or len(bbox) != 4:
        return "malformed bbox"
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        return "malformed bbox"
    if not all(np.isfinite([x, y, w, h])) or w <= 0 or h <= 0:
        return "degenerate box"
    x0, y0 = max(x, 0.0), max(y, 0.0)
    x1, y1 = min(x + w, float(width)), min(y + h, float(height))
    if x1 <= x0 or y1 <= y0:
        return "box outside its image"
    if x1 - x0 < min_size or y1 - y0 < min_size:
        return "degenerate box"
    return np.array([x0, y0, x1, y1], dtype=np.float32)


def read_coco(
    images_dir: str,
    annotations: str,
    categories: list[dict[str, Any]] | None = None,
    min_box_size: float = 1.0,
) -> CocoSplit:
    """Read and clean one split.

    ``categories`` (from the training split) fixes the label order for a val/test split, so the
    same category id gets the same label everywhere; annotations of other ids are dropped.
    Images without any kept box stay (detectors learn background from them).
    """
    data = _load_json(annotations)
    cats = (
        categories
        if categories is not None
        else sorted(data["categories"], key=lambda c: int(c["id"]))
    )
    if not cats:
        raise JobError(f"{annotations}: no categories")
    label_of = {int(c["id"]): i + 1 for i, c in enumerate(cats)}
    dropped: Counter = Counter()
    images: dict[int, dict[str, Any]] = {}
    for im in data["images"]:
        try:
            image_id, w, h = int(im["id"]), int(im["width"]), int(im["height"])
            name = str(im["file_name"])
        except (KeyError, TypeError, ValueError):
            dropped["malformed image entry"] += 1
            continue
        if w < 1 or h < 1:
            dropped["malformed image entry"] += 1
            continue
        images[image_id] = {
            "image_id": image_id,
            "path": join(images_dir, name),
            "width": w,
            "height": h,
            "boxes": [],
            "labels": [],
        }
    kept = 0
    for ann in data["annotations"]:
        image = images.get(ann.get("image_id")) if isinstance(ann, dict) else None
        if image is None:
            dropped["annotation of an unknown image"] += 1
            continue
        if ann.get("iscrowd", 0):
            dropped["crowd region"] += 1
            continue
        label = label_of.get(ann.get("category_id"))  # type: ignore[arg-type]
        if label is None:
            dropped["unknown category id"] += 1
            continue
        box = _clean_box(ann.get("bbox"), image["width"], image["height"], min_box_size)
        if isinstance(box, str):
            dropped[box] += 1
            continue
        image["boxes"].append(box)
        image["labels"].append(label)
        kept += 1
    records = []
    for image in sorted(images.values(), key=lambda r: r["image_id"]):
        image["boxes"] = np.array(image["boxes"], dtype=np.float32).reshape(-1, 4)
        image["labels"] = np.array(image["labels"], dtype=np.int64)
        records.append(image)
    if not records:
        raise JobError(f"{annotations}: no usable images")
    return CocoSplit(records, [dict(c) for c in cats], dropped, kept)
