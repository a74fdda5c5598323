"""One epoch of a streamed Parquet split through a 2-worker TorchTrainer, on a Ray of its own
whose object store is smaller than the split; run as a script by ``test_stream_ray.py``.

Usage: ``python stream_epoch.py PARQUET_DIR OUT_DIR OBJECT_STORE_BYTES``. Each worker writes
the ``row_id`` of every row its shard gave it to ``OUT_DIR/rank-<r>.npy``; the script writes
``OUT_DIR/result.json`` with the row ids Ray Data yields with one read task and with many.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def _worker(config: dict) -> None:
    import ray.train

    shard = ray.train.get_dataset_shard("train")
    seen = []
    for batch in shard.iter_batches(batch_size=256, batch_format="numpy"):
        assert batch["input"].dtype == np.float32
        seen.append(batch["row_id"])
    rank = ray.train.get_context().get_world_rank()
    np.save(Path(config["out"]) / f"rank-{rank}.npy", np.concatenate(seen))


def main(source: str, out: str, store_bytes: int) -> None:
    import ray
    import ray.data
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from raydistill.config import DataConfig
    from raydistill.data.sources import load_splits

    splits = load_splits(DataConfig(source="parquet", path=source))
    train = splits["train"]
    ray.init(num_cpus=3, object_store_memory=store_bytes, include_dashboard=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    TorchTrainer(
        _worker,
        train_loop_config={"out": out},
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
        datasets={"train": train.dataset()},
        run_config=RunConfig(storage_path=str(Path(out) / "ray"), name="stream-epoch"),
    ).fit()
    val = splits["val"]
    one_task = val.dataset(items_per_block=val.items.num_rows).take_all()
    many = val.dataset().take_all()
    result = {
        "train_rows": len(train),
        "train_bytes": train.nbytes,
        "store_bytes": store_bytes,
        "val_one_task": sorted(int(r["row_id"]) for r in one_task),
        "val_many_tasks": sorted(int(r["row_id"]) for r in many),
        "val_blocks": val.items.num_rows,
    }
    (Path(out) / "result.json").write_text(json.dumps(result))
    ray.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
