"""COCO mAP (pycocotools), Ray-free: the figures of hand-made detections, and pycocotools'
printing kept off stdout, stderr and Ray Train's patched ``print`` (its summary goes to the
caller's log instead)."""

from __future__ import annotations

import builtins
import logging
from typing import Any

import pytest

from raydistill.detection.metrics import coco_map


def _ground_truth() -> dict[str, Any]:
    boxes = {1: [10.0, 10.0, 20.0, 20.0], 2: [5.0, 30.0, 30.0, 15.0]}  # x, y, w, h (pixels)
    return {
        "images": [{"id": i, "width": 64, "height": 64} for i in boxes],
        "annotations": [
            {"id": i, "image_id": i, "category_id": 7, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
            for i, b in boxes.items()
        ],
        "categories": [{"id": 7, "name": "square"}],
    }


def test_exact_boxes_score_one_and_pycocotools_prints_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], caplog: Any
) -> None:
    """Inside a Ray Train worker ``print`` is Train's: it tees each line to the root logger,
    whose console handler writes to the worker's stderr (so a plain ``redirect_stdout`` would
    still put the summary on the driver's terminal). Here Train's own function is installed."""
    from ray.train.v2._internal.logging.patch_print import redirected_print

    gt = _ground_truth()
    exact = [
        {"image_id": a["image_id"], "category_id": 7, "bbox": a["bbox"], "score": 0.9}
        for a in gt["annotations"]
    ]
    monkeypatch.setattr(builtins, "print", redirected_print)
    caplog.set_level(logging.INFO)
    summary: list[str] = []
    stats = coco_map(gt, exact, log=summary.extend)
    monkeypatch.undo()
    assert stats["map"] == pytest.approx(1.0) and stats["map50"] == pytest.approx(1.0)
    out = capsys.readouterr()
    assert out.out == "" and out.err == "" and "Average" not in caplog.text
    assert len(summary) == 12 and summary[0].lstrip().startswith("Average Precision")
    assert summary[0].endswith("= 1.000")

    # the less confident box shifted by half its width (IoU 1/3: a false positive, and a missed
    # object): precision 1 up to recall 1/2, so AP50 is 51 of pycocotools' 101 recall points
    shifted = [exact[0], dict(exact[1], bbox=[17.5, 30.0, 30.0, 15.0], score=0.5)]
    stats = coco_map(gt, shifted)
    assert stats["map50"] == pytest.approx(51 / 101)
    assert capsys.readouterr().out == ""
    assert coco_map(gt, [], log=summary.extend) == dict.fromkeys(stats, 0.0)
