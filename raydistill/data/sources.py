"""Turn a job's data section into splits and Ray datasets with ``input``/``label`` rows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from raydistill.columns import INPUT, LABEL, ROW_ID, TEXT, VIEW, view_dataset_name
from raydistill.config import AugmentConfig, DataConfig, JobConfig, JobError, ModelSpec
from raydistill.data.arrays import LabelledArrays, split_arrays
from raydistill.data.augment import augment_batch
from raydistill.data.digits import load_digits_arrays
from raydistill.data.idx import IdxError, load_fashion_mnist
from raydistill.data.keys import labelled_mask

if TYPE_CHECKING:
    import ray.data

__all__ = ["INPUT", "LABEL", "ROW_ID", "load_splits", "training_datasets", "view_dataset_name"]


def _read_npz(path: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(Path(path).expanduser(), allow_pickle=False) as arrays:
            files = getattr(arrays, "files", None)
            if files is None:  # a bare .npy holds one array, not the two a job needs
                raise JobError(f"data.path: {path} is one array, not an .npz archive")
            missing = {"inputs", "labels"} - set(files)
            if missing:
                raise JobError(f"data.path: {path} lacks arrays {sorted(missing)} (has {files})")
            return arrays["inputs"], arrays["labels"]
    except JobError:
        raise
    except Exception as exc:  # truncated zip, pickled objects (refused: no code runs), garbage
        why = str(exc).split("\n")[0]
        raise JobError(f"data.path: cannot read {path} as .npz: {why}") from None


def load_arrays(data: DataConfig) -> LabelledArrays:
    """All rows of the job's source, checked: float32 inputs, labels in range(num_classes)."""
    if data.text is not None:
        from raydistill.data.text import read_text_arrays

        return read_text_arrays(data)[0]
    if data.source == "fashion_mnist":
        try:
            parts = load_fashion_mnist(data.path)
        except IdxError as exc:
            raise JobError(f"data: {exc}") from None
        inputs = np.concatenate([parts["train"].inputs, parts["test"].inputs])
        return LabelledArrays(
            inputs, np.concatenate([parts["train"].labels, parts["test"].labels]), 10
        )
    if data.source == "digits":
        arrays = load_digits_arrays()
        if data.num_classes is None or data.num_classes == arrays.num_classes:
            return arrays
        inputs, labels = arrays.inputs, arrays.labels
    elif data.source == "npz":
        inputs, labels = _read_npz(str(data.path))
    else:  # a file source: every row through the streaming reader, in listing order
        from raydistill.data.plan import whole_source

        source = whole_source(data)
        parts = list(source.iter_arrays(4096))
        return LabelledArrays(
            np.concatenate([p.inputs for p in parts]),
            np.concatenate([p.labels for p in parts]),
            source.num_classes,
        )
    if not np.issubdtype(np.asarray(labels).dtype, np.integer):
        raise JobError(f"data: labels in {data.path} must be integers, got {labels.dtype}")
    labels = np.asarray(labels, dtype=np.int64)
    num_classes = data.num_classes or int(labels.max()) + 1
    try:
        return LabelledArrays(np.asarray(inputs, dtype=np.float32), labels, num_classes)
    except ValueError as exc:
        raise JobError(f"data ({data.path}): {exc}") from None


def subsample(arrays: LabelledArrays, share: float | None, seed: int) -> LabelledArrays:
    """A stratified, seeded ``share`` of the rows (in their original order); all for None/1."""
    if share is None or share >= 1:
        return arrays
    from sklearn.model_selection import train_test_split

    keep = max(arrays.num_classes, round(share * len(arrays)))
    if keep >= len(arrays):
        return arrays
    index, _ = train_test_split(
        np.arange(len(arrays)), train_size=keep, random_state=seed, stratify=arrays.labels
    )
    return arrays.take(np.sort(index))


def load_splits(data: DataConfig) -> dict[str, Any]:
    """The job's train/val/test splits: planned, streamed splits for file sources of tensors
    and images (:mod:`raydistill.data.plan`), arrays for the bundled sets and text."""
    from raydistill.data.plan import plan_splits, streams

    if streams(data):
        return plan_splits(data)
    seed = data.split.seed
    if data.source == "fashion_mnist":
        try:
            parts = load_fashion_mnist(data.path)
        except IdxError as exc:
            raise JobError(f"data: {exc}") from None
        from sklearn.model_selection import train_test_split

        train = subsample(parts["train"], data.subset, seed)
        train_idx, val_idx = train_test_split(
            np.arange(len(train)),
            test_size=data.split.val,
            random_state=seed,
            stratify=train.labels,
        )
        return {
            "train": train.take(np.sort(train_idx)),
            "val": train.take(np.sort(val_idx)),
            "test": subsample(parts["test"], data.subset, seed),
        }
    arrays = load_arrays(data)
    _check_class_sizes(arrays, data)
    arrays = subsample(arrays, data.subset, seed)
    return split_arrays(arrays, data.split.val, data.split.test, seed)


MIN_ROWS_PER_CLASS = 3  # a stratified train/val/test split puts one row of a class in each


def _check_class_sizes(arrays: LabelledArrays, data: DataConfig) -> None:
    def rows_of(label: int) -> str:
        rows = np.flatnonzero(arrays.labels == label)[:5].tolist()
        return f"row {', '.join(map(str, rows))}" + (f" of {data.path}" if data.path else "")

    check_class_sizes(np.bincount(arrays.labels, minlength=arrays.num_classes), rows_of)


def check_class_sizes(counts: np.ndarray, rows_of: Callable[[int], str]) -> None:
    """Name a label too rare to split (often a stray label, such as a 42 among 0-9) with its
    rows (``rows_of(label)``: where they are), instead of the stratified split's traceback or
    a model with 43 outputs."""
    rare = [int(c) for c in np.flatnonzero((counts > 0) & (counts < MIN_ROWS_PER_CLASS))]
    if not rare:
        return
    label = rare[0]
    common = [int(c) for c in np.flatnonzero(counts >= MIN_ROWS_PER_CLASS)]
    raise JobError(
        f"data: label {label} has {counts[label]} row(s) ({rows_of(label)}); a train/val/test "
        f"split needs at least {MIN_ROWS_PER_CLASS} per label, and {len(common)} labels have "
        f"that ({_ranges(common)}): fix the label, or set data.num_classes to refuse labels "
        "outside it"
    )


def _ranges(values: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``0-2, 5``."""
    parts: list[str] = []
    for v in values:
        if parts and v == int(parts[-1].split("-")[-1]) + 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{v}"
        else:
            parts.append(str(v))
    return ", ".join(parts)


def to_arrow(arrays: LabelledArrays) -> pa.Table:
    """Rows of ``input`` (a fixed-shape tensor column), ``label`` and a stable ``row_id``; text
    rows carry ``text`` (strings) and have ``input`` only when paired with an image."""
    from ray.data.extensions import ArrowTensorArray

    columns: dict[str, pa.Array] = {}
    if arrays.texts is None or arrays.inputs[0].size:
        columns[INPUT] = ArrowTensorArray.from_numpy(np.ascontiguousarray(arrays.inputs))
    if arrays.texts is not None:
        columns[TEXT] = pa.array([str(t) for t in arrays.texts], type=pa.string())
    columns[LABEL] = pa.array(arrays.labels, type=pa.int64())
    columns[ROW_ID] = pa.array(np.arange(len(arrays)), type=pa.int64())
    return pa.table(columns)


def to_dataset(arrays: Any, blocks: int = 4) -> ray.data.Dataset:
    """A Ray dataset of a split: a streamed split's lazy reader, or the arrays cut into
    ``blocks`` blocks so work can spread."""
    if hasattr(arrays, "dataset"):
        return arrays.dataset()
    table = to_arrow(arrays)
    step = max(1, -(-table.num_rows // blocks))
    return from_tables([table.slice(i, step) for i in range(0, table.num_rows, step)])


def from_tables(tables: list[pa.Table]) -> ray.data.Dataset:
    """A materialized Ray dataset of Arrow tables held in this process, one block each, in
    order. ``ray.data.from_arrow`` reads each table's metadata in a remote task, and on a small
    machine those tasks start worker processes (1-2 CPU-seconds of imports each) that then
    compete with a stage training in the driver's process for its first epochs;
    ``from_blocks`` reads the metadata here."""
    import ray.data

    return ray.data.from_blocks(tables) if tables else ray.data.from_arrow(tables)


def _augment_view(
    batch: dict[str, np.ndarray], view: int, seed: int, augment: AugmentConfig
) -> dict[str, np.ndarray]:
    batch[INPUT] = augment_batch(batch[INPUT], batch[ROW_ID], view, seed, augment.ops)
    batch[VIEW] = np.full(len(batch[ROW_ID]), view, dtype=np.int64)
    return batch


def view_datasets(ds: ray.data.Dataset, augment: AugmentConfig, seed: int) -> list[Any]:
    """``augment.views`` augmented copies of ``ds``, one dataset each, rows tagged ``view``."""
    return [
        ds.map_batches(
            _augment_view,
            fn_kwargs={"view": v, "seed": seed, "augment": augment},
            batch_format="numpy",
        )
        for v in range(augment.views)
    ]


def training_rows(job: JobConfig, splits: dict[str, Any]) -> dict[str, int]:
    """Rows of each dataset :func:`training_datasets` gives a teacher pass (``distill``):
    train once per augmented view, val once (before bad rows a streamed split drops)."""
    views = job.data.augment.views if job.data.augment else 1
    return {"train": views * len(splits["train"]), "val": len(splits["val"])}


def with_views(ds: ray.data.Dataset, augment: AugmentConfig, seed: int) -> ray.data.Dataset:
    """Every augmented view of ``ds`` in one dataset (one teacher pass labels them all)."""
    views = view_datasets(ds, augment, seed)
    return views[0].union(*views[1:]) if len(views) > 1 else views[0]


def split_views(datasets: dict[str, Any], augment: AugmentConfig) -> dict[str, Any]:
    """``datasets`` with ``train`` (every view, tagged ``view``: the stream a teacher pass
    labelled) replaced by one dataset per view.

    Epoch ``e`` reads only :func:`view_dataset_name` ``(e % views)``, so its batches are full
    and Ray Train splits that view evenly across workers (the same step count on every rank).
    Filtering one stream of all views inside the loop instead left most batches with no row of
    the epoch's view, and each such step trained on a single row.
    """
    train = datasets["train"]
    out = {k: ds for k, ds in datasets.items() if k != "train"}
    for v in range(augment.views):
        out[view_dataset_name(v)] = train.filter(expr=f"{VIEW} == {v}")
    return out


def labelled_rows_only(batch: dict[str, Any], share: float, seed: int) -> dict[str, Any]:
    """The rows of ``batch`` (columns [N, ...] with ``row_id``) that ``data.labelled_fraction``
    labels, each :func:`labelled_copies` times: what a stage trained on labels alone reads."""
    keep = np.flatnonzero(labelled_mask(batch[ROW_ID], share, seed))
    # copies apart in the block, so a shuffle buffer mixes them
    index = np.tile(keep, labelled_copies(share))
    return {k: np.asarray(v)[index] for k, v in batch.items()}


def labelled_copies(share: float) -> int:
    """How many times each labelled row is read per epoch by a stage that trains on the
    labelled share alone: as many rows, so as many steps, as an epoch over every row."""
    return max(1, round(1 / share))


def labelled_part(datasets: dict[str, Any], share: float, seed: int) -> dict[str, Any]:
    """``datasets`` with every training dataset (all but ``val``) cut to its rows whose labels
    ``data.labelled_fraction`` (``share``) keeps, each read :func:`labelled_copies` times."""
    from ray.data.dataset import MaterializedDataset

    kwargs = {"share": share, "seed": seed}
    out = {}
    for k, ds in datasets.items():
        if k == "val":
            out[k] = ds
        elif isinstance(ds, MaterializedDataset):
            # rows already in the object store stay there (small ones are then held in each
            # worker's memory and sharded by row id, like the stages that read every row), cut
            # block by block here: a Ray Data run for it cost ~6 s on 2 cores
            out[k] = _labelled_blocks(ds, share, seed)
        else:
            out[k] = ds.map_batches(labelled_rows_only, fn_kwargs=kwargs, batch_format="numpy")
    return out


def _labelled_blocks(ds: Any, share: float, seed: int) -> ray.data.Dataset:
    import ray
    import ray.data
    from ray.data.block import BlockAccessor

    blocks = []
    for table in ray.get(ds.to_arrow_refs()):
        batch = labelled_rows_only(BlockAccessor.for_block(table).to_numpy(), share, seed)
        if len(batch[ROW_ID]):
            blocks.append(BlockAccessor.batch_to_block(batch))
    return from_tables(blocks) if blocks else ds.limit(0).materialize()


def labelled_rows(split: Any, share: float | None, seed: int) -> int | None:
    """Rows of a split held in memory whose labels the student sees (row ids are positions);
    None for a streamed split (its row ids are key hashes, known only when read)."""
    if share is None or not isinstance(split, LabelledArrays):
        return None
    return int(labelled_mask(np.arange(len(split)), share, seed).sum())


def training_datasets(
    job: JobConfig,
    splits: dict[str, Any],
    model: ModelSpec | None = None,
    distill: bool = True,
) -> dict[str, Any]:
    """Ray datasets of the train split and the val split, as ``model`` (default: the student)
    reads them; text rows are tokenized in the pipeline, for the job's teacher too when
    ``distill``. Augmented views are one ``train`` dataset when ``distill`` (one teacher pass
    labels them all; :func:`split_views` follows it), else one dataset per view already."""
    train = to_dataset(splits["train"])
    datasets = {"val": to_dataset(splits["val"])}
    if job.data.augment is None:
        datasets["train"] = train
    elif distill:
        datasets["train"] = with_views(train, job.data.augment, job.seed)
    else:
        views = view_datasets(train, job.data.augment, job.seed)
        datasets.update({view_dataset_name(v): ds for v, ds in enumerate(views)})
    if job.data.text is None:
        return datasets
    from raydistill.data.text import tokenize_rows, tokenize_stage_kwargs

    kwargs = tokenize_stage_kwargs(job, model or job.student, distill)
    return {
        k: ds.map_batches(tokenize_rows, fn_kwargs=kwargs, batch_format="numpy")
        for k, ds in datasets.items()
    }
