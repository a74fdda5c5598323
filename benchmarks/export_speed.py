"""CPU speed of a job's teacher and student as exported: PyTorch eager vs TorchScript vs ONNX
Runtime, latency per sample at batch 1 and throughput at batch 64, on one thread.

    .venv/bin/python benchmarks/export_speed.py jobs/digits.yaml [--set student.args.width=32]

Ray-free; the models keep their initial weights (speed does not depend on them), exported with
the same functions ``raydistill export`` uses. Ratios are against PyTorch eager.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from raydistill.config import load_job
from raydistill.data.sources import load_splits
from raydistill.evaluate import THROUGHPUT_BATCH
from raydistill.export import write_onnx, write_torchscript
from raydistill.models import build_model


def _median_s(run: Callable[[], object], runs: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(forward: Callable[[np.ndarray], object], sample: np.ndarray) -> tuple[float, float]:
    """(milliseconds per sample at batch 1, samples/s at batch 64)."""
    one = sample[:1]
    batch = np.repeat(sample[:1], THROUGHPUT_BATCH, axis=0)
    latency = _median_s(lambda: forward(one), 200) * 1000
    throughput = THROUGHPUT_BATCH / _median_s(lambda: forward(batch), 30)
    return latency, throughput


def main(argv: list[str]) -> None:
    job_file, overrides = argv[0], [a for a in argv[1:] if a != "--set"]
    job = load_job(job_file, overrides)
    data = load_splits(job.data)["test"]
    sample = np.ascontiguousarray(data.inputs[:1], dtype=np.float32)
    torch.set_num_threads(1)
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    print(f"{job_file}: CPU, one thread; latency at batch 1, throughput at batch 64")
    print("| model | runtime | latency / sample | speedup | throughput | vs eager |")
    print("|---|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for role, spec in (("teacher", job.teacher), ("student", job.student)):
            model = build_model(spec, data.num_classes, load=False).eval()
            example = torch.from_numpy(np.repeat(sample, 2, axis=0))
            script_path, onnx_path = Path(tmp) / f"{role}.pt", Path(tmp) / f"{role}.onnx"
            write_torchscript(model, example, script_path)
            write_onnx(model, example, onnx_path)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 deprecates jit.load
                scripted = torch.jit.load(str(script_path)).eval()
            session = onnxruntime.InferenceSession(
                str(onnx_path), options, providers=["CPUExecutionProvider"]
            )

            def eager(x: np.ndarray, m: torch.nn.Module = model) -> object:
                with torch.no_grad():
                    return m(torch.from_numpy(x))

            def script(x: np.ndarray, m: torch.nn.Module = scripted) -> object:
                with torch.no_grad():
                    return m(torch.from_numpy(x))

            def ort(x: np.ndarray, s: onnxruntime.InferenceSession = session) -> object:
                return s.run(None, {"input": x})

            base = measure(eager, sample)
            runtimes = (("PyTorch eager", eager), ("TorchScript", script), ("ONNX Runtime", ort))
            for name, forward in runtimes:
                latency, rate = base if forward is eager else measure(forward, sample)
                print(
                    f"| {role} | {name} | {latency:.3f} ms | {base[0] / latency:.2f}x | "
                    f"{rate:,.0f}/s | {rate / base[1]:.2f}x |"
                )


if __name__ == "__main__":
    main(sys.argv[1:])
