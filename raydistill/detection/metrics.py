"""COCO mAP with pycocotools, on the cleaned ground truth of a split."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import torch

from raydistill.config import JobError

MAP_KEYS = ("map", "map50", "map75", "map_small", "map_medium", "map_large")


def to_coco_results(
    detections: list[dict[str, torch.Tensor]],
    meta: list[dict[str, float]],
    label_to_category: dict[int, int],
) -> list[dict[str, Any]]:
    """Detector outputs (``boxes`` [D, 4] x0,y0,x1,y1 in the pixels the model was fed,
    ``scores`` [D], ``labels`` [D]) -> COCO result entries in the annotation file's pixels."""
    results = []
    for det, m in zip(detections, meta, strict=True):
        sx, sy = m["scale_x"], m["scale_y"]
        for box, score, label in zip(
            det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist(), strict=True
        ):
            x0, y0, x1, y1 = box[0] / sx, box[1] / sy, box[2] / sx, box[3] / sy
            results.append(
                {
                    "image_id": int(m["image_id"]),
                    "category_id": label_to_category[int(label)],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": float(score),
                }
            )
    return results


def require_pycocotools() -> None:
    """Detection runs need pycocotools; say so before any training starts."""
    try:
        import pycocotools.cocoeval  # noqa: F401
    except ImportError:
        raise JobError(
            "detection jobs score COCO mAP with pycocotools: pip install 'raydistill[detection]'"
            " (scripts/setup.sh installs it)"
        ) from None


def coco_map(ground_truth: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, float]:
    """AP (IoU 0.50:0.95), AP50, AP75 and AP for small/medium/large objects, as fractions in
    [0, 1]; -1 where a size class has no ground truth. No detections: all zeros."""
    require_pycocotools()
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not results:
        return dict.fromkeys(MAP_KEYS, 0.0)
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):  # pycocotools prints every step
        gt = COCO()
        gt.dataset = ground_truth
        gt.createIndex()
        evaluation = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return {k: float(v) for k, v in zip(MAP_KEYS, evaluation.stats[:6], strict=True)}
