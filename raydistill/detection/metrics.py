"""COCO mAP with pycocotools, on the cleaned ground truth of a split."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
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


@contextlib.contextmanager
def _pycocotools_quiet(into: io.StringIO) -> Iterator[None]:
    """pycocotools' ``print`` calls write into ``into`` while the block runs.

    ``redirect_stdout`` alone is not enough inside a Ray Train worker: Train patches
    ``builtins.print`` to also send each line to its logger, whose console handler writes to
    the worker's stderr (forwarded to the driver). A module-level ``print`` in pycocotools'
    own modules is found before the builtin, so theirs never reaches the patch, and nothing
    else in the process is changed.
    """
    from pycocotools import coco, cocoeval

    def quiet_print(*objects: Any, sep: str = " ", end: str = "\n", **_: Any) -> None:
        into.write(sep.join(map(str, objects)) + end)

    modules = (coco, cocoeval)
    saved = [m.__dict__.get("print") for m in modules]
    for m in modules:
        m.print = quiet_print  # type: ignore[attr-defined]
    try:
        with contextlib.redirect_stdout(into):
            yield
    finally:
        for m, before in zip(modules, saved, strict=True):
            if before is None:
                del m.print
            else:
                m.print = before


def summary_lines(text: str) -> list[str]:
    """The 12 ``Average Precision``/``Average Recall`` lines of pycocotools' summary in its
    captured output (the progress chatter around them dropped)."""
    return [line for line in text.splitlines() if line.lstrip().startswith("Average")]


def coco_map(
    ground_truth: dict[str, Any],
    results: list[dict[str, Any]],
    log: Callable[[list[str]], None] | None = None,
) -> dict[str, float]:
    """AP (IoU 0.50:0.95), AP50, AP75 and AP for small/medium/large objects, as fractions in
    [0, 1]; -1 where a size class has no ground truth. No detections: all zeros.

    pycocotools prints as it goes; none of it reaches stdout or stderr. ``log``, when given,
    gets its 12-line summary (see :func:`summary_lines`; none when there are no detections),
    for a run's log file.
    """
    require_pycocotools()
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not results:
        return dict.fromkeys(MAP_KEYS, 0.0)
    captured = io.StringIO()
    with _pycocotools_quiet(captured):
        gt = COCO()
        gt.dataset = ground_truth
        gt.createIndex()
        evaluation = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    if log is not None:
        log(summary_lines(captured.getvalue()))
    return {k: float(v) for k, v in zip(MAP_KEYS, evaluation.stats[:6], strict=True)}
