"""Train a job's image teacher in plain PyTorch (one process, no Ray), for ``teacher.checkpoint``.

    .venv/bin/python benchmarks/plain_teacher.py jobs/fashion-mnist.yaml out.pt \
        --set data.subset=0.25 --set teacher.args.width=16 --epochs 15 --augment

The reference the teacher stage is measured against: batch 64, AdamW at the teacher's lr, cosine
stepped per batch, and (``--augment``) a fresh pad-2 random crop and horizontal flip per sample
and step. It trains on the job's train split only (val and test untouched) and prints val and
test accuracy. The Fashion-MNIST table in docs/benchmarks.md used it, measured before the teacher
stage's augmented views were fixed (then 83.1% test against this script's 91%; now 90.1%).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from raydistill.config import load_job
from raydistill.data.sources import load_splits
from raydistill.evaluate import accuracy
from raydistill.models import build_model


def crop_and_flip(x: torch.Tensor, g: torch.Generator, pad: int = 2) -> torch.Tensor:
    """[N, C, H, W] -> the same shape: each image shifted by up to ``pad`` pixels and mirrored
    with probability 0.5."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    flip = torch.rand(n, generator=g) < 0.5
    out = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    out[flip] = out[flip].flip(-1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", type=Path)
    parser.add_argument("out", type=Path, help="state dict file for teacher.checkpoint")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--epochs", type=int, default=None, help="default: the teacher's")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--augment", action="store_true")
    args = parser.parse_args()
    job = load_job(args.job, args.overrides)
    train = job.teacher_train()
    epochs = args.epochs or train.epochs
    splits = load_splits(job.data)
    x, y = (torch.from_numpy(splits["train"].inputs), torch.from_numpy(splits["train"].labels))
    torch.manual_seed(job.seed)
    g = torch.Generator().manual_seed(job.seed)
    model = build_model(job.teacher, splits["train"].num_classes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train.lr)
    steps = epochs * -(-len(y) // args.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    started = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(y), generator=g)
        total = 0.0
        for i in range(0, len(y), args.batch_size):
            idx = order[i : i + args.batch_size]
            inputs = crop_and_flip(x[idx], g) if args.augment else x[idx]
            loss = F.cross_entropy(model(inputs), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(idx)
        print(
            f"epoch {epoch + 1}/{epochs} loss {total / len(y):.4f} "
            f"({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
    for part in ("val", "test"):
        print(f"{part} accuracy {100 * accuracy(model, splits[part]):.2f}%")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
