"""A dataset written as Parquet files by its own Ray Data stage, with the rows of each file
reported back to the driver as it lands: the teacher cache's write, with progress.

``Dataset.write_parquet`` reports nothing until every file is written; here each block becomes
one file in a task of the pipeline (the writes stay spread over the cluster, streamed behind
the teacher pool) and the driver iterates the one-row results, counting rows as they come.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from raydistill.columns import ROW_ID, VIEW


def file_name(table: Any) -> str:
    """A name from the block's row keys (``row_id``, and ``view`` when there is one): a write
    task Ray Data retries writes the same file again, never a second copy of its rows."""
    if ROW_ID not in table.column_names:
        return f"{uuid.uuid4().hex}.parquet"
    digest = hashlib.sha256()
    for name in (ROW_ID, VIEW):
        if name in table.column_names:
            values = table.column(name).to_numpy()
            if values.dtype == object:  # string keys: their text, not the objects' addresses
                digest.update("\0".join(map(str, values)).encode())
            else:
                digest.update(np.ascontiguousarray(values).tobytes())
    return f"{digest.hexdigest()[:32]}.parquet"


def write_block(table: Any, directory: str) -> dict[str, np.ndarray]:
    """The write stage: one block (an Arrow table) as one Parquet file in ``directory``
    (written beside it, then renamed: a killed task leaves no partial ``.parquet``); returns
    its row count, the driver's progress."""
    import pyarrow.parquet as pq

    if table.num_rows:
        path = Path(directory) / file_name(table)
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
        pq.write_table(table, partial)
        os.replace(partial, path)
    return {"rows": np.array([table.num_rows], dtype=np.int64)}


def write_parquet_files(ds: Any, directory: Path, on_rows: Callable[[int], None]) -> None:
    """Write ``ds`` into ``directory`` as Parquet files, one per block, calling ``on_rows``
    with each file's rows once it is written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = ds.map_batches(
        write_block,
        fn_kwargs={"directory": str(directory)},
        batch_format="pyarrow",
        batch_size=None,  # the whole block: one file each
        zero_copy_batch=True,
    )
    for batch in written.iter_batches(batch_size=None, batch_format="numpy"):
        on_rows(int(batch["rows"].sum()))
