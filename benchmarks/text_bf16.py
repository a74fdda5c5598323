"""bf16 forward/backward of the BBC News job's MiniLM teacher and 2-layer student, on one device.

    .venv/bin/python benchmarks/text_bf16.py --device cuda            # what gpu_check.sh runs
    .venv/bin/python benchmarks/text_bf16.py --device cpu --batch 4 --seq 16 --steps 2

Both models come from ``jobs/bbc-news.yaml`` (teacher ``hf:data/minilm``, student: its config
shrunk to 2 layers of width 256) through raydistill's ``hf:`` builder. When ``data/minilm`` is
not set up (``scripts/setup-bbc-news.sh``), MiniLM's architecture is written to a temporary
directory and both start from random weights: the speed is the same. For each model it prints
one ``gpu_check: text_bf16`` line: training steps (AdamW, cross-entropy, autocast to bfloat16)
in samples/s, bf16 inference in samples/s, peak device memory, and how far bf16 logits are from
float32 ones on the same batch.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLASSES = 5  # BBC News: business, entertainment, politics, sport, tech
# all-MiniLM-L6-v2's architecture (BERT, 6 layers, hidden 384, 12 heads, vocab 30522)
MINILM = {
    "model_type": "bert",
    "architectures": ["BertModel"],
    "vocab_size": 30522,
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
}


def models(directory: Path | None) -> dict[str, tuple[Any, str]]:
    """``{role: (HFTextClassifier, where its weights came from)}`` for teacher and student."""
    import json

    from raydistill.models.hf import WEIGHT_FILES, build_hf_classifier

    job = yaml.safe_load((ROOT / "jobs" / "bbc-news.yaml").read_text())
    source = ROOT / job["teacher"]["model"].removeprefix("hf:")
    if (source / "config.json").is_file():
        path = str(source)
        pretrained = any((source / f).is_file() for f in WEIGHT_FILES)
    else:
        assert directory is not None
        (directory / "config.json").write_text(json.dumps(MINILM))
        path, pretrained = str(directory), False
    teacher = build_hf_classifier(path, CLASSES, pretrained=pretrained)
    student_args = {**job["student"]["args"], "pretrained": False}
    student = build_hf_classifier(path, CLASSES, **student_args)
    origin = f"{path}, {'pretrained' if pretrained else 'random weights'}"
    return {"teacher": (teacher, origin), "student": (student, f"{path}, random weights")}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model: Any, device: torch.device, batch: int, seq: int, steps: int) -> dict:
    """Training and inference rates of ``model`` on random token rows [batch, 2, seq]."""
    vocab = model.model.get_input_embeddings().num_embeddings
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    rows = torch.stack([ids, torch.ones_like(ids)], dim=1).to(device)  # [B, 2, L]
    labels = torch.randint(0, CLASSES, (batch,), generator=g).to(device)
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def train_step() -> float:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            logits = model(rows)
        loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    model.train()
    train_step()  # warm-up: kernels chosen, memory allocated
    _sync(device)
    started = time.perf_counter()
    losses = [train_step() for _ in range(steps)]
    _sync(device)
    train_rate = steps * batch / (time.perf_counter() - started)

    model.eval()
    with torch.no_grad():
        reference = model(rows).float()  # float32
        with torch.autocast(device.type, dtype=torch.bfloat16):
            model(rows)  # warm-up
            _sync(device)
            started = time.perf_counter()
            for _ in range(steps):
                logits = model(rows)
            _sync(device)
    infer_rate = steps * batch / (time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "train": train_rate,
        "infer": infer_rate,
        "peak_gib": peak,
        "diff": float((logits.float() - reference).abs().max()),
        "finite": all(torch.isfinite(torch.tensor(losses))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=64, help="rows per step")
    parser.add_argument("--seq", type=int, default=128, help="tokens per row (the job's)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps (after one warm-up)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"text_bf16: torch {torch.__version__} sees no CUDA device")
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="minilm-") as directory:
        built = models(Path(directory))
        for role, (model, origin) in built.items():
            m = measure(model, device, args.batch, args.seq, args.steps)
            print(
                f"gpu_check: text_bf16 {role} ({m['params'] / 1e6:.1f}M params; {origin}) on "
                f"{device}: batch {args.batch} x {args.seq} tokens: train {m['train']:,.0f} "
                f"samples/s, inference {m['infer']:,.0f} samples/s, peak {m['peak_gib']:.2f} GiB, "
                f"bf16 vs fp32 logits max |diff| {m['diff']:.3g}, losses finite: {m['finite']}",
                flush=True,
            )
            if not m["finite"]:
                raise SystemExit(f"text_bf16: the {role}'s bf16 training loss is not finite")


if __name__ == "__main__":
    main()
