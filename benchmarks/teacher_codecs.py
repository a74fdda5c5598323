"""Bytes per sample of each teacher-logit codec, and the KD loss error of top-k vs dense.

    .venv/bin/python benchmarks/teacher_codecs.py

Ray-free and quick. The logits are synthetic but shaped like a trained classifier's (a clear
winner, a runner-up, a long Gaussian tail); the error is relative to the dense fp32 KD loss.
"""

from __future__ import annotations

import numpy as np
import torch

from raydistill.distill.losses import soft_target_loss
from raydistill.teacher.codec import LogitCodec

CODECS = [LogitCodec("fp32"), LogitCodec("fp16"), LogitCodec("topk", 16), LogitCodec("topk", 128)]


def peaked_logits(n: int, c: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.0, size=(n, c)).astype(np.float32)
    logits[np.arange(n), rng.integers(0, c, n)] += 9.0
    logits[np.arange(n), rng.integers(0, c, n)] += 5.0
    return torch.from_numpy(logits)


def name(codec: LogitCodec) -> str:
    return f"topk k={codec.k}" if codec.kind == "topk" else codec.kind


def main() -> None:
    classes = (10, 1000, 32000)
    print("bytes per sample of teacher logits (payload before Parquet compression)")
    print("| codec | " + " | ".join(f"{c} classes" for c in classes) + " |")
    print("|---|" + "---:|" * len(classes))
    for codec in CODECS:
        sizes = [codec.bytes_per_sample(c) for c in classes]
        ratios = [
            f"{s} B ({s / LogitCodec('fp32').bytes_per_sample(c):.3f}x)"
            for s, c in zip(sizes, classes, strict=True)
        ]
        print(f"| {name(codec)} | " + " | ".join(ratios) + " |")

    temps = (1.0, 2.0, 4.0)
    print("\nrelative KD-loss error vs dense fp32 (1000 classes, 512 samples)")
    print("| codec | " + " | ".join(f"T={t:g}" for t in temps) + " |")
    print("|---|" + "---:|" * len(temps))
    teacher, student = peaked_logits(512, 1000, 1), peaked_logits(512, 1000, 2)
    for codec in CODECS:
        decoded = codec.decode(codec.encode(teacher.numpy()), 1000)
        errors = []
        for t in temps:
            dense = soft_target_loss(student, teacher, t).item()
            errors.append(abs(soft_target_loss(student, decoded, t).item() - dense) / dense)
        print(f"| {name(codec)} | " + " | ".join(f"{e:.2%}" for e in errors) + " |")


if __name__ == "__main__":
    main()
