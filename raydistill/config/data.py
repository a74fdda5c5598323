"""The ``data`` section: where the examples come from, how they are split, balanced, augmented."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from raydistill.config.base import Section
from raydistill.config.coco import CocoConfig
from raydistill.config.errors import KeyedError
from raydistill.data.augment import AugmentOp, RandomCrop


class SplitConfig(Section):
    """How a source is cut into train/val/test: shares of one source, or the locations of
    splits a dataset ships apart (``train``, ``val`` and optionally ``test`` as paths or URIs).

    Bundled and in-memory sources are cut stratified; file sources (parquet, jsonl and
    image_folder rows) by the hash of each row's key (its file path, or file and row index, or
    ``data.key_column``), so a row lands in the same split on every run, node count and file
    order, without the rows being read into one process.
    """

    val: float | str = Field(
        0.2, description="share of the data for validation (0-1), or the val split's location"
    )
    test: float | str | None = Field(
        None,
        description="share of the data for the final test, or the test split's location;"
        " null: 0.2 of one source, or with locations: report on val",
    )
    seed: int = Field(0, description="split seed, fixed apart from the training seed")
    train: str | None = Field(
        None,
        description="file sources: the training split's location (then val and test are"
        " locations too, and data.path is not needed); hf_dataset: split names in data.path",
    )

    @model_validator(mode="after")
    def _shares_or_locations(self) -> SplitConfig:
        if self.train is not None:
            for key in ("val", "test"):
                value = getattr(self, key)
                if value is not None and not isinstance(value, str):
                    raise KeyedError(
                        f"data.split.{key}",
                        "with split.train a location, "
                        f"{key} is a location too, not a share ({value})",
                    )
            if self.val is None:
                raise KeyedError("data.split.val", "split.train needs split.val")
            return self
        if self.test is None:
            self.test = 0.2
        for key in ("val", "test"):
            value = getattr(self, key)
            if isinstance(value, str):
                raise KeyedError(f"data.split.{key}", "a share (0-1); locations need split.train")
            if not 0 < value < 1:
                raise KeyedError(f"data.split.{key}", f"a share between 0 and 1, got {value}")
        if self.val + self.test >= 1:
            raise ValueError(f"val + test = {self.val + self.test:.2f} leaves no training data")
        return self

    def locations(self) -> dict[str, str] | None:
        """``{train, val, test}`` locations of shipped splits (test: val's when not given), or
        None when the splits are shares of one source."""
        if self.train is None:
            return None
        return {"train": self.train, "val": str(self.val), "test": str(self.test or self.val)}


class BalanceConfig(Section):
    """Class balancing while streaming (no full shuffle), reseeded every epoch."""

    keep_ratio: float | None = Field(
        None, gt=0, le=1, description="share of rows kept for classes above the target"
    )
    repeat_rare: bool = Field(True, description="repeat classes below the target up to it")
    target: float | None = Field(None, gt=0, description="rows per class; null: mean count")
    counts: list[int] | None = Field(
        None, description="class counts of the train split; null: counted once from the data"
    )


class AugmentConfig(Section):
    """Seeded augmentation of the training split, applied before the teacher.

    ``views`` augmented copies are made; epoch ``e`` trains on view ``e % views``, and the
    teacher labels every view once (with ``teacher_pass: once`` or ``cache``).
    """

    views: int = Field(4, ge=1, description="augmented copies of the training set")
    ops: list[AugmentOp] = Field(
        default_factory=lambda: [RandomCrop(padding=1)],
        description="applied in order: random_crop, hflip, random_erasing, gaussian_noise,"
        " normalize",
    )


class TextConfig(Section):
    """Text rows: ``column`` holds the text, tokenized inside the Ray Data pipeline by each
    model's own tokenizer into packed token rows int64 [N, 2, max_length] (ids, mask)."""

    column: str = Field("text", description="the text column (csv/jsonl/parquet/hf_dataset)")
    max_length: int = Field(128, ge=4, le=8192, description="tokens per row (padded and cut)")


class DataConfig(Section):
    """Where the examples come from.

    ``digits`` ships with scikit-learn. ``npz`` reads arrays ``inputs`` [N, ...] and ``labels``
    [N] from ``path``; ``parquet`` reads ``input_column`` (a tensor or list column) and
    ``label_column`` from a file or directory at ``path`` (local or any pyarrow filesystem URI);
    ``jsonl`` does the same for JSON lines (inputs as nested lists); ``csv`` with
    ``input_column: [a, b, ...]`` reads those numeric columns as one feature vector per row.
    ``image_folder`` reads ``path/<class name>/*.{png,jpg,...}``; classes are the sorted folder
    names. ``webdataset`` reads tar shards (a ``.tar`` file or a directory of them) whose
    samples pair an image member with a ``.cls`` member (its integer class), WebDataset's way.
    Text: ``csv``, ``jsonl`` or ``parquet`` rows with ``text.column`` and
    ``label_column`` (integer labels, or class names: sorted into ids), or ``text_folder``:
    ``path/<class name>/*.txt``; ``text`` is set by default for csv and text_folder. A
    ``task: cross_modal`` job reads both ``input_column`` (the teacher's images) and the text.
    ``fashion_mnist`` reads the four standard idx(.gz) files from ``path`` (default
    ``/usr/share/datasets/fashion-mnist/``, Debian package ``dataset-fashion-mnist``) and keeps
    their train/test parts: val is cut from train (``split.val``), ``split.test`` is unused.
    ``hf_dataset`` reads a ``datasets`` save_to_disk directory (a Dataset, or a DatasetDict whose
    train/validation/test become the splits) or its Parquet export; ``input_column`` (tensors or
    a ``datasets.Image``), ``label_column`` (a ClassLabel gives the classes) or ``text.column``.
    """

    source: Literal[
        "digits",
        "npz",
        "parquet",
        "jsonl",
        "csv",
        "image_folder",
        "webdataset",
        "text_folder",
        "fashion_mnist",
        "coco",
        "hf_dataset",
    ] = Field("digits", description="digits: scikit-learn's bundled 8x8 handwritten digits")
    path: str | None = Field(
        None,
        description="file or directory for npz/parquet/jsonl/image_folder/webdataset/hf_dataset;"
        " fashion_mnist: the idx directory (null: /usr/share/datasets/fashion-mnist/)",
    )
    subset: float | None = Field(
        None,
        gt=0,
        le=1,
        description="keep this share of the rows (stratified, seeded by split.seed) before"
        " splitting; with fashion_mnist, of train and of test; null: all",
    )
    labelled_fraction: float | None = Field(
        None,
        gt=0,
        le=1,
        description="share of the training rows whose labels the student sees (drawn by"
        " row id, seeded by split.seed): the teacher learns every label, the distilled"
        " student the teacher's soft targets on every row and the labels on this share, the"
        " baseline this share alone (as many steps); null: all",
    )
    input_column: str | list[str] = Field(
        "input",
        description="parquet/jsonl/hf_dataset: the column of inputs, a tensor or nested lists, or"
        " encoded images (datasets.Image) (cross_modal: the teacher's images); a list: numeric"
        " feature columns, one float32 vector [F] per row (tabular rows; a csv source with a"
        " list here holds features, not text)",
    )
    label_column: str = Field(
        "label",
        description="the column of labels (integers, a ClassLabel; text rows: or class names)",
    )
    image_size: tuple[int, int] | None = Field(
        None, description="image_folder, webdataset: resize to [H, W]; null: the first image's size"
    )
    channels: Literal[1, 3] = Field(
        3, description="image_folder, webdataset: 1 (grayscale) or 3 (RGB)"
    )
    split: SplitConfig = Field(
        default_factory=SplitConfig, description="how train/val/test are cut (stratified)"
    )
    num_classes: int | None = Field(None, ge=2, description="null: taken from the source")
    key_column: str | None = Field(
        None,
        description="parquet/jsonl/hf_dataset: a column of stable row ids (the split hashes"
        " it); null: the file's path and the row's index in it",
    )
    skip_bad: bool = Field(
        False,
        description="file sources: skip (and count) an unreadable image or a bad row found"
        " while streaming, instead of ending the run naming it",
    )
    shuffle_buffer: int = Field(512, ge=0, description="rows in each worker's shuffle buffer")
    balance: BalanceConfig | None = Field(None, description="null: classes as they come")
    augment: AugmentConfig | None = Field(None, description="null: no augmentation")
    coco: CocoConfig | None = Field(None, description="source coco: the splits' paths")
    text: TextConfig | None = Field(
        None, description="text rows (set by default for csv and text_folder); null: no text"
    )

    @model_validator(mode="after")
    def _path_for_files(self) -> DataConfig:
        # a resolved job.yaml names every field: only a list of columns makes csv rows numbers
        tabular_csv = self.source == "csv" and isinstance(self.input_column, list)
        if self.source in ("csv", "text_folder") and self.text is None and not tabular_csv:
            self.text = TextConfig()
        features = isinstance(self.input_column, list)
        tables = ("parquet", "jsonl", "csv")
        if features and (not self.input_column or self.text or self.source not in tables):
            why = "a list of feature columns (one or more) is for parquet, jsonl and csv numbers"
            raise KeyedError("data.input_column", why)
        text_sources = ("csv", "jsonl", "parquet", "text_folder", "hf_dataset")
        if self.text is not None and self.source not in text_sources:
            raise KeyedError(
                "data.text", f"text rows come from {', '.join(text_sources)}, not {self.source}"
            )
        if self.text is not None and self.augment is not None:
            raise KeyedError("data.augment", "augmentation applies to images, not text rows")
        if self.source == "coco":
            if self.coco is None:
                raise KeyedError("data.coco", "source 'coco' needs data.coco: {train, val}")
        # fashion_mnist has a default directory; its files are checked when read, so that a job
        # validates on a machine without the dataset installed.
        elif self.split.train is not None and self.source != "hf_dataset":  # names there
            located = ("parquet", "jsonl", "csv", "image_folder", "webdataset")
            if self.source not in located or self.text is not None:
                raise KeyedError(
                    "data.split.train",
                    "split locations are for parquet, jsonl, csv, image_folder and webdataset"
                    f" sources of tensors and images, not {self.source}"
                    + (" text" if self.text is not None else ""),
                )
            for key, value in self.split.locations().items():
                if "://" not in value and not Path(value).expanduser().exists():
                    raise KeyedError(f"data.split.{key}", f"not found: {value}")
        elif self.source not in ("digits", "fashion_mnist"):
            if self.path is None:
                raise KeyedError("data.path", f"source '{self.source}' needs a path")
            if "://" not in self.path and not Path(self.path).expanduser().exists():
                raise KeyedError("data.path", f"not found: {self.path}")
        return self
