"""Bytes per sample of each teacher-logit codec, and the error of each one that training feels.

    .venv/bin/python benchmarks/teacher_codecs.py

Ray-free and quick. The logits are synthetic but shaped like a trained classifier's (a clear
winner, a runner-up, a long Gaussian tail), once as they come and once with +500 on every logit
(a per-sample offset that changes nothing a student learns from: a codec must not depend on it).

The error is what the soft loss passes on to the student, against dense fp32 logits:

* total variation ``0.5 * sum |p_decoded - p_dense|`` of the soft targets at temperature T
  (mean and worst sample), and
* the relative error ``||g_decoded - g_dense|| / ||g_dense||`` of the KD loss gradient with
  respect to the student logits (the whole batch's [N, C] gradient).

Not the loss value: most of the KD loss at T=4 is the teacher's entropy, a constant without
gradient, so a relative loss error hides (or inflates) what the student actually receives.
"""

from __future__ import annotations

import numpy as np
import torch

from raydistill.distill.losses import soft_target_loss
from raydistill.teacher.codec import LogitCodec

CODECS = [LogitCodec("fp32"), LogitCodec("fp16"), LogitCodec("topk", 16), LogitCodec("topk", 128)]
OFFSETS = (0.0, 500.0)
TEMPERATURES = (1.0, 4.0)


def peaked_logits(n: int, c: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.0, size=(n, c)).astype(np.float32)
    logits[np.arange(n), rng.integers(0, c, n)] += 9.0
    logits[np.arange(n), rng.integers(0, c, n)] += 5.0
    return torch.from_numpy(logits)


def name(codec: LogitCodec) -> str:
    return f"topk k={codec.k}" if codec.kind == "topk" else codec.kind


def total_variation(decoded: torch.Tensor, dense: torch.Tensor, t: float) -> torch.Tensor:
    """Per-sample total variation [N] between the soft targets at temperature ``t``."""
    p_dec = torch.softmax(decoded.double() / t, dim=1)
    p_dense = torch.softmax(dense.double() / t, dim=1)
    return 0.5 * (p_dec - p_dense).abs().sum(dim=1)


def kd_gradient(student: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    """d soft_target_loss / d student logits [N, C]."""
    s = student.clone().requires_grad_(True)
    soft_target_loss(s, teacher, t).backward()
    assert s.grad is not None
    return s.grad


def gradient_error(student: torch.Tensor, decoded: torch.Tensor, dense: torch.Tensor, t: float):
    g_dense = kd_gradient(student, dense, t)
    return float((kd_gradient(student, decoded, t) - g_dense).norm() / g_dense.norm())


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

    print("\nerror the student receives vs dense fp32 (1000 classes, 512 samples)")
    head = [
        *(f"TV T={t:g} mean / max" for t in TEMPERATURES),
        *(f"grad err T={t:g}" for t in TEMPERATURES),
    ]
    print("| codec | logit offset | " + " | ".join(head) + " |")
    print("|---|---:|" + "---:|" * len(head))
    base, student = peaked_logits(512, 1000, 1), peaked_logits(512, 1000, 2)
    for codec in CODECS:
        for offset in OFFSETS:
            teacher = base + offset
            decoded = codec.decode(codec.encode(teacher.numpy()), 1000)
            cells = []
            for t in TEMPERATURES:
                tv = total_variation(decoded, teacher, t)
                cells.append(f"{tv.mean().item():.2e} / {tv.max().item():.2e}")
            for t in TEMPERATURES:
                cells.append(f"{gradient_error(student, decoded, teacher, t):.3%}")
            print(f"| {name(codec)} | +{offset:g} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
