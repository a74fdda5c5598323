"""Text rows: reading them, and tokenizing them per model inside the Ray Data pipeline.

A text row keeps its string until the pipeline's tokenize stage; there each model gets its own
token ids from the same string (``input`` for the model being trained, ``teacher_input`` for a
teacher with another tokenizer, or the row's image for a cross-modal teacher). Token rows are
packed int64 [N, 2, max_length] (ids, attention mask), see :mod:`raydistill.models.hf`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from raydistill.columns import INPUT, TEACHER_INPUT, TEXT
from raydistill.config import DataConfig, JobConfig, JobError, ModelSpec
from raydistill.data.arrays import LabelledArrays, register_tensor_types

__all__ = ["TEACHER_INPUT", "TEXT", "for_model", "read_text_arrays", "tokenize_rows"]
TEXT_FORMATS = {"csv": "csv", "jsonl": "json", "parquet": "parquet"}


def _read_text_folder(root: Path) -> tuple[list[str], list[str]]:
    """Texts and class names from ``root/<class>/*.txt`` (classes: sorted folder names)."""
    if not root.is_dir():
        raise JobError(f"data.path: {root} is not a directory of class folders")
    texts, names = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for file in sorted(folder.glob("*.txt")):
            # Corpora mix encodings; a stray byte must not stop a run.
            texts.append(file.read_bytes().decode("utf-8", errors="replace"))
            names.append(folder.name)
    if not texts:
        raise JobError(f"data.path: no <class>/*.txt files under {root}")
    return texts, names


def _label_ids(values: np.ndarray, source: str) -> tuple[np.ndarray, list[str] | None]:
    """Integer labels as they are; class names mapped to ids in sorted order."""
    if np.issubdtype(values.dtype, np.integer):
        return values.astype(np.int64), None
    if values.dtype.kind in "OUS":
        names = sorted({str(v) for v in values})
        index = {name: i for i, name in enumerate(names)}
        return np.asarray([index[str(v)] for v in values], dtype=np.int64), names
    raise JobError(f"data: labels in {source} must be integers or class names, got {values.dtype}")


def _tensor_column(table: pa.Table, name: str) -> np.ndarray:
    column = table.column(name).combine_chunks()
    if hasattr(column, "to_numpy_ndarray"):  # fixed-shape tensor extension column
        return np.asarray(column.to_numpy_ndarray(), dtype=np.float32)
    return np.stack([np.asarray(v, dtype=np.float32) for v in column.to_pylist()])


def read_text_arrays(data: DataConfig) -> tuple[LabelledArrays, list[str] | None]:
    """The rows of a text source and their class names (None for integer labels, unless a
    ClassLabel names them).

    Tables (csv, jsonl, parquet: a file, a directory or a pyarrow URI; hf_dataset: the train
    split of a saved ``datasets`` dataset) need ``text.column`` and ``label_column``; when
    they also hold ``input_column`` it becomes the paired image ``inputs`` (cross-modal rows).
    Empty texts are refused with their row number.
    """
    assert data.text is not None
    inputs: np.ndarray | None = None
    if data.source == "text_folder":
        texts, names = _read_text_folder(Path(str(data.path)).expanduser())
        labels, classes = _label_ids(np.asarray(names, dtype=object), str(data.path))
    elif data.source == "hf_dataset":  # the train split of a saved datasets dataset
        from raydistill.data.hf import read_table

        columns = [data.text.column, data.label_column, data.input_column]
        table, classes = read_table(data, columns)
        texts = table.column(data.text.column).to_pylist()
        labels, names = _label_ids(
            table.column(data.label_column).to_numpy(zero_copy_only=False), str(data.path)
        )
        classes = classes or names
        if data.input_column in table.column_names:
            inputs = _tensor_column(table, data.input_column)
    else:
        import pyarrow.dataset as pads

        register_tensor_types()
        fmt = TEXT_FORMATS[data.source]
        try:
            table = pads.dataset(data.path, format=fmt).to_table()
        except (OSError, pa.ArrowInvalid) as exc:
            raise JobError(f"data.path: cannot read {data.source} at {data.path}: {exc}") from None
        for column in (data.text.column, data.label_column):
            if column not in table.column_names:
                raise JobError(
                    f"data: column '{column}' not in {data.path} (columns: {table.column_names})"
                )
        texts = table.column(data.text.column).to_pylist()
        labels, classes = _label_ids(
            table.column(data.label_column).to_numpy(zero_copy_only=False), str(data.path)
        )
        if data.input_column in table.column_names:
            inputs = _tensor_column(table, data.input_column)
    for row, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise JobError(f"data: row {row} of {data.path} has no text ({text!r})")
    num_classes = data.num_classes or (len(classes) if classes else int(labels.max()) + 1)
    if inputs is None:
        inputs = np.zeros((len(texts), 0), dtype=np.float32)
    try:
        arrays = LabelledArrays(inputs, labels, num_classes, np.asarray(texts, dtype=object))
    except ValueError as exc:
        raise JobError(f"data ({data.path}): {exc}") from None
    return arrays, classes


@functools.lru_cache(maxsize=4)
def cached_tokenizer(source: str) -> Any:
    """One tokenizer per source and process (Ray reuses worker processes across batches)."""
    from raydistill.models.hf import load_tokenizer

    return load_tokenizer(source)


def encode(source: str, texts: Any, max_length: int) -> np.ndarray:
    """Packed token rows int64 [N, 2, max_length] of ``texts`` by the tokenizer of ``source``."""
    from raydistill.models.hf import encode_texts

    strings = [str(t) for t in texts]
    return encode_texts(cached_tokenizer(source), strings, max_length).numpy()


def tokenize_rows(
    batch: dict[str, np.ndarray],
    *,
    tokenizer: str | None,
    teacher_tokenizer: str | None,
    teacher_images: bool,
    max_length: int,
) -> dict[str, np.ndarray]:
    """The Ray Data stage: ``input`` becomes the trained model's view of the row (its tokens,
    or the image when ``tokenizer`` is None); ``teacher_input`` is added for a distilling
    teacher that reads something else (its own tokens, or the image when
    ``teacher_images``). The text column is dropped."""
    texts = batch.pop(TEXT)
    if teacher_images:
        batch[TEACHER_INPUT] = batch[INPUT]
    elif teacher_tokenizer is not None:
        batch[TEACHER_INPUT] = encode(teacher_tokenizer, texts, max_length)
    if tokenizer is not None:
        batch[INPUT] = encode(tokenizer, texts, max_length)
    return batch


def tokenize_stage_kwargs(job: JobConfig, model: ModelSpec, distill: bool) -> dict[str, Any]:
    """:func:`tokenize_rows` arguments for a stage training ``model`` (``distill``: with the
    job's teacher beside it). A teacher without a tokenizer beside text rows reads the rows'
    images (the schema allows that only for cross-modal jobs)."""
    assert job.data.text is not None
    own = model.text_tokenizer
    teacher = job.teacher.text_tokenizer
    cross = distill and teacher is None
    return {
        "tokenizer": own,
        "teacher_tokenizer": teacher if distill and not cross and teacher != own else None,
        "teacher_images": cross,
        "max_length": job.data.text.max_length,
    }


def for_model(job: JobConfig, model: ModelSpec, arrays: LabelledArrays) -> LabelledArrays:
    """``arrays`` as ``model`` reads them: its token rows for a text model, else unchanged."""
    source = model.text_tokenizer
    if source is None or arrays.texts is None or job.data.text is None:
        return arrays
    tokens = encode(source, arrays.texts, job.data.text.max_length)
    return LabelledArrays(tokens, arrays.labels, arrays.num_classes)
