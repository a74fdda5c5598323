"""The ``data.coco`` section: COCO-format detection splits."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from raydistill.config.base import Section


class CocoSplitPaths(Section):
    """One COCO-format split: an image folder and its instances JSON (local paths or URIs)."""

    images: str = Field(..., description="the folder of the split's images")
    annotations: str = Field(..., description="the split's COCO instances JSON file")

    @field_validator("images", "annotations")
    @classmethod
    def _exists(cls, value: str) -> str:
        # a plain error: pydantic names the full key path (data.coco.train.images)
        if "://" not in value and not Path(value).expanduser().exists():
            raise ValueError("not found")
        return value


class CocoConfig(Section):
    """COCO-format detection data (``data.source: coco``, ``task: detection``)."""

    train: CocoSplitPaths = Field(..., description="the training split")
    val: CocoSplitPaths = Field(..., description="the validation split")
    test: CocoSplitPaths | None = Field(None, description="null: report on val")
    image_size: int = Field(
        512,
        ge=32,
        description="longest image side in pixels: images shrink to it before they travel,"
        " and teacher and student both resize to it (so proposals carry over)",
    )
    flip: bool = Field(True, description="mirror half the training images each epoch (seeded)")
    min_box_size: float = Field(1.0, ge=0, description="boxes thinner than this (px) are dropped")
