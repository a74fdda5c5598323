"""COCO reading (including malformed annotations) and box-consistent transforms (Ray-free)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from raydistill.config import JobError
from raydistill.detection.coco import read_coco
from raydistill.detection.data import _encode, rows_to_tensors
from raydistill.detection.synthetic import CATEGORIES, write_shapes_coco
from raydistill.detection.transforms import fit_size, flip_decision, hflip


def _write(tmp_path: Path, annotations: list[dict], images: list[dict] | None = None) -> Path:
    images = images or [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}]
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "a.png")
    path = tmp_path / "instances.json"
    path.write_text(
        json.dumps(
            {
                "images": images,
                "annotations": annotations,
                "categories": [{"id": 5, "name": "a"}, {"id": 9, "name": "b"}],
            }
        )
    )
    return path


def _ann(i: int, bbox, cat: int = 5, **extra) -> dict:
    return {"id": i, "image_id": 1, "category_id": cat, "bbox": bbox, **extra}


def test_malformed_annotations_are_dropped_and_counted(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        [
            _ann(1, [2, 3, 10, 5]),  # kept
            _ann(2, [30, 20, 20, 20], cat=9),  # partly outside: clipped to 10 x 10
            _ann(3, [5, 5, 0, 4]),  # zero width
            _ann(4, [50, 50, 5, 5]),  # wholly outside the 40 x 30 image
            _ann(5, [1, 1, 5, 5], cat=7),  # unknown category
            _ann(6, [1, 1, 5, 5], iscrowd=1),  # crowd region
            _ann(7, [1, 2, "x", 4]),  # malformed
            {"id": 8, "image_id": 99, "category_id": 5, "bbox": [1, 1, 2, 2]},  # unknown image
        ],
    )
    split = read_coco(str(tmp_path), str(path))
    (record,) = split.records
    np.testing.assert_allclose(record["boxes"], [[2, 3, 12, 8], [30, 20, 40, 30]])
    assert record["labels"].tolist() == [1, 2]  # category ids 5, 9 -> labels 1, 2
    assert split.num_classes == 3 and split.label_to_category() == {1: 5, 2: 9}
    assert split.dropped == {
        "degenerate box": 1,
        "box outside its image": 1,
        "unknown category id": 1,
        "crowd region": 1,
        "malformed bbox": 1,
        "annotation of an unknown image": 1,
    }
    assert "2 boxes" in split.describe() and "1 crowd region" in split.describe()


def test_val_split_uses_the_training_labels(tmp_path: Path) -> None:
    path = _write(tmp_path, [_ann(1, [2, 3, 10, 5], cat=9)])
    split = read_coco(str(tmp_path), str(path), categories=[{"id": 9, "name": "b"}])
    assert split.records[0]["labels"].tolist() == [1]
    gt = split.ground_truth()
    assert gt["annotations"][0]["category_id"] == 9
    assert gt["annotations"][0]["bbox"] == [2.0, 3.0, 10.0, 5.0]


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "not valid JSON"), ('{"images": []}', "no 'annotations' list")],
)
def test_unreadable_annotation_files_name_the_file(tmp_path: Path, content: str, message: str):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(JobError, match=message) as info:
        read_coco(str(tmp_path), str(path))
    assert "bad.json" in str(info.value)


def test_uri_paths_read_through_pyarrow(tmp_path: Path) -> None:
    path = _write(tmp_path, [_ann(1, [2, 3, 10, 5])])
    split = read_coco(f"file://{tmp_path}", f"file://{path}")
    row = _encode(split.records[0], 64)
    assert (row["height"], row["width"]) == (30, 40)


def test_corrupt_image_is_a_clear_error(tmp_path: Path) -> None:
    path = _write(tmp_path, [_ann(1, [2, 3, 10, 5])])
    (tmp_path / "a.png").write_bytes(b"not a png")
    split = read_coco(str(tmp_path), str(path))
    with pytest.raises(JobError, match=r"a\.png: cannot decode image"):
        _encode(split.records[0], 64)


def test_fit_size_moves_boxes_with_pixels() -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    image[20:40, 50:90] = 255  # an object at x 50..90, y 20..40
    boxes = np.array([[50, 20, 90, 40]], np.float32)
    small, moved, scale = fit_size(image, boxes, 100)
    assert small.shape == (50, 100, 3) and scale == 0.5
    np.testing.assert_allclose(moved, [[25, 10, 45, 20]])
    ys, xs = np.nonzero(small[..., 0] > 127)
    assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (25, 45, 10, 20)
    same, kept, one = fit_size(image, boxes, 400)  # never enlarged
    assert same is image and one == 1.0 and np.array_equal(kept, boxes)


def test_hflip_moves_boxes_with_pixels() -> None:
    image = torch.zeros(3, 10, 20)
    image[:, 2:5, 3:8] = 1.0
    flipped, boxes = hflip(image, torch.tensor([[3.0, 2.0, 8.0, 5.0]]))
    cols = flipped[0].nonzero()[:, 1]
    assert boxes.tolist() == [[12.0, 2.0, 17.0, 5.0]]
    assert (cols.min().item(), cols.max().item() + 1) == (12, 17)
    back, again = hflip(flipped, boxes)
    assert torch.equal(back, image) and again.tolist() == [[3.0, 2.0, 8.0, 5.0]]


def test_flip_is_seeded_per_image_and_epoch() -> None:
    coins = [flip_decision(0, epoch, image) for epoch in range(4) for image in range(50)]
    assert coins == [flip_decision(0, e, i) for e in range(4) for i in range(50)]
    assert 60 < sum(coins) < 140  # about half
    assert coins[:50] != coins[50:100]  # a fresh mix each epoch


def test_synthetic_dataset_rows_round_trip(tmp_path: Path) -> None:
    paths = write_shapes_coco(tmp_path, train=6, val=2, size=48, seed=3)
    split = read_coco(str(paths["train"][0]), str(paths["train"][1]))
    assert split.num_classes == len(CATEGORIES) + 1 and not split.dropped
    rows = [_encode(r, 32) for r in split.records]
    batch = {k: np.array([r[k] for r in rows], dtype=object) for k in rows[0]}
    images, targets, meta = rows_to_tensors(batch)
    for record, image, target, m in zip(split.records, images, targets, meta, strict=True):
        assert image.shape == (3, 32, 32) and 0 <= image.min() and image.max() <= 1
        # boxes shrank with the image; scale maps them back to the annotation pixels
        np.testing.assert_allclose(
            target["boxes"].numpy() / m["scale_x"], record["boxes"], atol=1e-4
        )
        assert target["labels"].tolist() == record["labels"].tolist()
    flipped = rows_to_tensors(batch, flip_seed=0, epoch=0)
    assert any(not torch.equal(a, b) for a, b in zip(images, flipped[0], strict=True))
