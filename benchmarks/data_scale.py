"""Does the data plane stay flat as the dataset grows? Offline-KD epochs at two sizes.

    .venv/bin/python benchmarks/data_scale.py --sizes 20000 200000 --formats image_folder parquet

For each format and size (10x apart by default) it writes a dataset of small real-looking
32x32 RGB images (smooth colour gradients with blobs, saved as PNG files in class folders, or
as float32 tensors in Parquet), then runs, in a fresh driver process on a local Ray whose object
store is ``--object-store-mb``: the teacher cache pass (a random-init teacher: this measures
data, not learning) and two distilled student epochs reading it. It prints side by side:
rows, bytes on disk, the driver's peak RSS, the object store's peak use, the samples/s of the
second student epoch (the first pays start-up), the cache's bytes against its teacher
outputs' bytes, and the ratios large / small.
Targets: driver_rss <= 1.2, samples_per_s >= 0.8, cache_bytes (cache / teacher outputs, the
large size) <= 1.1. The last line is ``ratios: driver_rss=<x> samples_per_s=<y>
cache_bytes=<z>`` (of the last format measured).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLASSES = 10


def _images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [n, 32, 32, 3] images: a per-class colour gradient plus a random blob and noise,
    so PNG compresses them about as it does small photos."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n)
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    hues = rng.random((CLASSES, 3))
    out = np.empty((n, 32, 32, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        cy, cx, r = rng.random(3) * [32, 32, 10] + [0, 0, 3]
        blob = ((yy * 31 - cy) ** 2 + (xx * 31 - cx) ** 2 < r**2)[..., None]
        base = hues[label] * (0.5 + 0.5 * yy[..., None]) + 0.3 * blob * rng.random(3)
        noisy = base + rng.normal(0, 0.04, (32, 32, 3))
        out[i] = np.clip(noisy * 255, 0, 255).astype(np.uint8)
    return out, labels


def write_dataset(fmt: str, n: int, directory: Path) -> Path:
    """The dataset of ``n`` rows in ``fmt``, written in chunks (never all in memory)."""
    from PIL import Image

    target = directory / f"{fmt}-{n}"
    if target.exists():
        return target
    partial = directory / f".{fmt}-{n}.partial"
    chunk = 5000
    for start in range(0, n, chunk):
        images, labels = _images(min(chunk, n - start), seed=start)
        if fmt == "image_folder":
            for i, (image, label) in enumerate(zip(images, labels, strict=True)):
                folder = partial / f"class_{label}"
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(folder / f"{start + i:07d}.png")
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq
            from ray.data.extensions import ArrowTensorArray

            partial.mkdir(parents=True, exist_ok=True)
            inputs = images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
            table = pa.table(
                {"input": ArrowTensorArray.from_numpy(inputs), "label": pa.array(labels)}
            )
            pq.write_table(table, partial / f"part-{start:07d}.parquet", row_group_size=1000)
    partial.rename(target)
    return target


def _store_used_mb(address: str) -> float:
    from ray._private.internal_api import memory_summary

    text = memory_summary(address=address, stats_only=True)
    found = re.search(r"Plasma memory usage ([\d.]+) MiB", text)
    return float(found.group(1)) if found else 0.0


def run_one(source: Path, fmt: str, out: Path, store_mb: int) -> None:
    """The driver process of one measurement: cache pass plus one student epoch."""
    import torch
    import yaml

    from raydistill.config import load_job
    from raydistill.models.specs import build_model
    from raydistill.pipeline import run_cache, run_job

    work = out.parent
    spec = {"model": "raydistill.models.zoo:pooled_cnn", "args": {"in_channels": 3}}
    teacher = work / "teacher.pt"
    raw = {
        "name": f"scale-{fmt}",
        "data": {"source": fmt, "path": str(source)},
        "teacher": {**spec, "args": {"in_channels": 3, "width": 32}, "checkpoint": str(teacher)},
        "student": {**spec, "args": {"in_channels": 3, "width": 8}},
        "distill": {"teacher_pass": "cache", "temperature": 4.0, "alpha": 0.5},
        "cache": {"path": str(work / "cache")},
        "train": {"epochs": 2, "batch_size": 256, "baseline": False},
        "scaling": {"workers": 1, "teacher_pool": {"min_actors": 1, "max_actors": 1}},
        "output": {"storage_path": str(work / "runs"), "report": False},
    }
    plain = {**raw, "teacher": {k: v for k, v in raw["teacher"].items() if k != "checkpoint"}}
    (work / "job.yaml").write_text(yaml.safe_dump(plain))
    torch.manual_seed(0)
    model = build_model(load_job(work / "job.yaml").teacher, CLASSES, load=False)
    torch.save(model.state_dict(), teacher)
    (work / "job.yaml").write_text(yaml.safe_dump(raw))
    job = load_job(work / "job.yaml")
    peak = [0.0]
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(1.0):
            try:
                peak[0] = max(peak[0], _store_used_mb(address))
            except Exception:  # Ray not up yet, or between sessions
                pass

    import ray

    # the job's Ray, started here to give it a small object store (ray_session then uses it)
    address = ray.init(
        num_cpus=4,
        object_store_memory=store_mb * 2**20,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        log_to_driver=False,
    ).address_info["address"]
    threading.Thread(target=watch, daemon=True).start()
    manifest = run_cache(job, log=lambda _: None)
    started = time.perf_counter()
    summary = run_job(job, log=lambda _: None)
    stop.set()
    history = summary.stages["student"].history
    result = {
        "rows": sum(manifest["rows"].values()),
        "epoch_s": time.perf_counter() - started,
        "samples_per_s": history[-1]["samples_per_s"],
        "cache_bytes": manifest["parquet_bytes"],
        "output_bytes": manifest["logit_bytes_per_sample"] * sum(manifest["rows"].values()),
        "driver_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "store_peak_mb": peak[0],
    }
    out.write_text(json.dumps(result))


def _disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs=2, type=int, default=[20000, 200000])
    parser.add_argument("--formats", nargs="+", default=["image_folder", "parquet"])
    parser.add_argument("--object-store-mb", type=int, default=300)
    parser.add_argument("--dir", type=Path, default=None, help="keep the datasets here")
    parser.add_argument(
        "--one", nargs=3, metavar=("SOURCE", "FORMAT", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.one:
        run_one(Path(args.one[0]), args.one[1], Path(args.one[2]), args.object_store_mb)
        return
    base = args.dir or Path(tempfile.mkdtemp(prefix="data-scale-"))
    base.mkdir(parents=True, exist_ok=True)
    print(f"data_scale: sizes {args.sizes}, object store {args.object_store_mb} MB, in {base}")
    header = f"{'format':<13}{'rows':>9}{'disk MB':>9}{'driver MB':>10}{'store MB':>9}"
    print(header + f"{'samples/s':>11}{'cache/outputs':>15}")
    line = ""
    for fmt in args.formats:
        results = []
        for n in args.sizes:
            source = write_dataset(fmt, n, base)
            work = Path(tempfile.mkdtemp(prefix=f"{fmt}-{n}-", dir=base))
            out = work / "result.json"
            env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
            cmd = [sys.executable, __file__, "--one", str(source), fmt, str(out)]
            cmd += ["--object-store-mb", str(args.object_store_mb)]
            subprocess.run(cmd, check=True, env=env)
            r = json.loads(out.read_text())
            r["disk_bytes"] = _disk_bytes(source)
            results.append(r)
            print(
                f"{fmt:<13}{r['rows']:>9,}{r['disk_bytes'] / 1e6:>9.1f}{r['driver_rss_mb']:>10.0f}"
                f"{r['store_peak_mb']:>9.0f}{r['samples_per_s']:>11.0f}"
                f"{r['cache_bytes'] / r['output_bytes']:>15.2f}",
                flush=True,
            )
        small, large = results
        line = (
            f"ratios: driver_rss={large['driver_rss_mb'] / small['driver_rss_mb']:.2f} "
            f"samples_per_s={large['samples_per_s'] / small['samples_per_s']:.2f} "
            f"cache_bytes={large['cache_bytes'] / large['output_bytes']:.2f}"
        )
        print(f"{fmt}: {line}")
    print(line)


if __name__ == "__main__":
    main()
