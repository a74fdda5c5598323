"""Causal language models: token-level distillation of an ``hf:`` causal LM into a smaller one.

Rows are ``input`` int64 [3, L] (ids, attention, target mask; :mod:`raydistill.data.lm_text`)
and ``row_id``; a distilled stage's rows also carry the teacher's logits [L, V] from the pool.
The objective is :class:`~raydistill.distill.token_distiller.TokenDistiller`'s (a token
divergence at the ``distill`` schedules' temperature and alpha, plus next-token cross entropy);
the figures are held-out perplexity and next-token agreement with the teacher.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from raydistill.columns import INPUT, ROW_ID
from raydistill.config import JobConfig, JobError, ModelSpec
from raydistill.data.lm_splits import LMSplit, lm_config, read_lm_splits, shared_tokenizer
from raydistill.distill.token_distiller import TokenDistiller
from raydistill.distill.token_losses import next_token_ce, token_agreement
from raydistill.models.specs import build_model, count_parameters, load_weights
from raydistill.tasks.base import Log, Shapes, Splits, StepOutput, SummaryTable, Task, batch_rows
from raydistill.tasks.lm_samples import greedy_samples
from raydistill.tasks.summary import comparison_notes, epochs_cell
from raydistill.teacher.topk_codec import TokenTopKCodec

if TYPE_CHECKING:
    from raydistill.train.context import LoopContext
    from raydistill.train.spec import StageSpec

SCORE_BATCH = 16


@dataclass(frozen=True)
class LMScore:
    """A causal LM's test-split row: perplexity (exp of the mean next-token cross entropy in
    nats), next-token accuracy (the headline, a fraction), parameters and CPU latency of one
    row (milliseconds)."""

    name: str
    perplexity: float
    accuracy: float
    parameters: int
    latency_ms: float
    tokens: int
    # share of target tokens where the model's argmax is the teacher's (None: no teacher, or
    # the teacher's own row), a fraction
    agreement: float | None = None

    @property
    def headline(self) -> float:
        return self.accuracy

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "perplexity": self.perplexity,
            "accuracy": self.accuracy,
            "parameters": self.parameters,
            "latency_ms": self.latency_ms,
            "tokens": self.tokens,
            "agreement": self.agreement,
        }


class CausalLMTask(Task):
    """``hf:`` causal LMs on text: perplexity and next-token agreement are the figures."""

    name: ClassVar[str] = "causal_lm"
    commands: ClassVar[frozenset[str]] = frozenset(
        {"validate", "teacher", "cache", "train", "tune", "evaluate", "report", "export"}
    )
    refusals: ClassVar[dict[str, str]] = {
        "check-teacher": "its headroom check measures classifiers",
    }
    scores_with_teacher: ClassVar[bool] = True
    report_samples: ClassVar[bool] = True
    monitor: ClassVar[str] = "val_ce"
    monitors: ClassVar[frozenset[str]] = frozenset({"val_ce", "val_loss"})
    # generate: sequence-level KD, the student trains on the teacher pool's answers
    teacher_passes: ClassVar[frozenset[str]] = frozenset({"once", "per_epoch", "cache", "generate"})
    unit: ClassVar[str] = "tokens"
    export_formats: ClassVar[tuple[str, ...]] = ("hf",)
    headline_name: ClassVar[str] = "next-token accuracy"
    curves: ClassVar[tuple[tuple[str, str | None, str | None], ...]] = (
        ("objective", "train_loss", "val_loss"),
        ("next-token cross entropy", "train_ce", "val_ce"),
        ("next-token agreement with the teacher", None, "val_agree"),
    )
    loss_parts: ClassVar[tuple[str, ...]] = ("loss", "kd", "ce")

    # ------------------------------------------------------------------ driver side

    def check_job(self, job: JobConfig) -> None:
        super().check_job(job)
        refused = {
            "distill.feature_layers": bool(job.distill.feature_layers),
            "distill.method": job.distill.method != "kd",
            "distill.weighting": job.distill.weighting != "none",
            "data.augment": job.data.augment is not None,
            "data.balance": job.data.balance is not None,
        }
        for key, set_ in refused.items():
            if set_:
                raise JobError(f"{key}: task causal_lm distils tokens (lm.loss); unset it")
        if self.teacher_pass(job) == "cache":
            self.cache_codec(job, 1)  # the cache stores top-k only: lm.topk must be set
        if self.teacher_pass(job) == "generate" and job.distill.enabled:
            _check_generate(job)

    def prepare(self, job: JobConfig) -> JobConfig:
        """Both hf: models are built as causal LMs (``args.causal_lm``)."""
        update = {}
        for side in ("teacher", "student"):
            spec = getattr(job, side)
            if spec.model.startswith("hf:") and not spec.args.get("causal_lm"):
                update[side] = spec.model_copy(update={"args": {**spec.args, "causal_lm": True}})
        return job.model_copy(update=update) if update else job

    def cache_datasets(self, job: JobConfig, splits: Splits) -> dict[str, Any]:
        return self.datasets(job, splits, job.student, True)

    def cache_codec(self, job: JobConfig, num_classes: int) -> TokenTopKCodec:
        """Per-token top-``lm.topk`` (ids, log-probs, tail): dense [L, V] rows are not cached."""
        if self.teacher_pass(job) == "generate":
            raise JobError(
                "distill.teacher_pass: generate is not cached (the answers are not in the "
                "corpus): `raydistill cache` and `tune` refuse it; train runs it"
            )
        if job.lm is None or job.lm.topk is None:
            raise JobError(
                "lm.topk: the causal_lm teacher cache stores each token's top k; set lm.topk "
                "(e.g. 16)"
            )
        return TokenTopKCodec(job.lm.topk, num_classes)

    def cache_key_parts(self, job: JobConfig, splits: Splits) -> dict[str, Any]:
        """The per-token codec (k) replaces the classifier's ``cache.codec``; the shared
        tokenizer's vocabulary (a hash) and the row length join the key. The teacher's
        weights, the rows themselves and the vocabulary size are in the common key."""
        assert job.data.text is not None
        tokenizer, _ = shared_tokenizer(job)
        vocab = json.dumps(sorted(tokenizer.get_vocab().items()), separators=(",", ":"))
        return {
            "codec": {"kind": "token_topk", "k": job.lm.topk if job.lm else None},
            "tokenizer_sha256": hashlib.sha256(vocab.encode()).hexdigest(),
            "seq_length": job.data.text.max_length,
        }

    def read_splits(self, job: JobConfig, log: Log = print) -> Splits:
        return read_lm_splits(job, log)

    def describe_data(self, job: JobConfig, splits: Splits) -> str:
        sizes = ", ".join(
            f"{k} {len(v)} rows ({v.tokens} target tokens)" for k, v in splits.items()
        )
        return f"data: {job.data.path}: {sizes}; vocabulary {self.num_classes(splits)}"

    def num_classes(self, splits: Splits) -> int:
        """The shared vocabulary (the tokenizer's size): every model's logits are cut to it."""
        return int(splits["train"].vocab)

    def split_fingerprint(self, split: LMSplit) -> str:
        return split.fingerprint()

    def check_student(self, job: JobConfig, splits: Splits) -> None:
        _check_positions(build_model(job.student, self.num_classes(splits)), job, "student")

    def check_pair(
        self, job: JobConfig, teacher_weights: Path | None, splits: Splits, log: Log = print
    ) -> Shapes:
        """Both models build on the shared vocabulary, take the rows' length, and predict the
        same [1, L, V] on the first training row."""
        vocab = self.num_classes(splits)
        teacher = build_model(job.teacher, vocab, load=False)
        if teacher_weights is not None:
            load_weights(teacher, teacher_weights, what="the teacher")
        student = build_model(job.student, vocab)
        first = torch.from_numpy(np.array(splits["train"].rows[:1]))
        for side, model in (("teacher", teacher), ("student", student)):
            _check_positions(model, job, side)
        with torch.no_grad():
            t_out, s_out = teacher.eval()(first), student.eval()(first)
        if t_out.shape != s_out.shape:
            raise JobError(
                f"teacher predicts {tuple(t_out.shape)} but student {tuple(s_out.shape)} for "
                "one row: both must predict the shared vocabulary"
            )
        return {}, {}

    def datasets(
        self, job: JobConfig, splits: Splits, model: ModelSpec, distill: bool
    ) -> dict[str, Any]:
        return {name: _to_dataset(splits[name]) for name in ("train", "val")}

    def score(
        self, job: JobConfig, name: str, model: nn.Module, spec: ModelSpec, split: LMSplit
    ) -> LMScore:
        return self.score_against(job, name, model, spec, split, None)

    def score_against(
        self,
        job: JobConfig,
        name: str,
        model: nn.Module,
        spec: ModelSpec,
        split: LMSplit,
        teacher: nn.Module | None,
    ) -> LMScore:
        """Perplexity and next-token accuracy over ``split``'s target tokens and, with a
        ``teacher``, the share of them where the model's argmax is the teacher's."""
        ce, correct, agree, tokens = _evaluate(model, split.rows, teacher)
        return LMScore(
            name=name,
            perplexity=math.exp(ce),
            accuracy=correct / max(tokens, 1),
            parameters=count_parameters(model),
            latency_ms=_latency_ms(model, split.rows[:1]),
            tokens=tokens,
            agreement=None if teacher is None else agree / max(tokens, 1),
        )

    def score_line(self, score: LMScore) -> str:
        agreement = (
            f", next-token agreement with the teacher {100 * score.agreement:.2f}%"
            if score.agreement is not None
            else ""
        )
        return (
            f"{score.name}: perplexity {score.perplexity:.3f}, next-token accuracy "
            f"{100 * score.accuracy:.2f}%{agreement} over {score.tokens:,} target tokens, "
            f"{score.parameters:,} parameters, {score.latency_ms:.3f} ms per row (CPU, batch 1)"
        )

    def samples(
        self, job: JobConfig, splits: Splits, models: dict[str, nn.Module]
    ) -> SummaryTable | None:
        """Greedy continuations of a few test rows' openings by every model, side by side."""
        return greedy_samples(job, splits["test"], models)

    def speed(
        self, job: JobConfig, model: nn.Module, spec: ModelSpec, split: LMSplit
    ) -> tuple[float, float, int]:
        rows = split.rows[:SCORE_BATCH]
        batch_ms = _latency_ms(model, rows)
        return _latency_ms(model, rows[:1]), len(rows) / (batch_ms / 1000), len(rows)

    def example_inputs(self, job: JobConfig, spec: ModelSpec, split: LMSplit, rows: int) -> Any:
        return split.rows[: min(rows, len(split))]

    @torch.no_grad()
    def output_difference(self, model: nn.Module, loaded: nn.Module, inputs: Any) -> float:
        x = torch.from_numpy(np.array(inputs))
        return float((loaded.eval()(x) - model.eval()(x)).abs().max())

    def table(
        self, scores: list[Any], epochs: dict[str, int], detailed: bool = False
    ) -> SummaryTable:
        rows = [
            [
                s.name,
                f"{s.perplexity:.2f}",
                f"{100 * s.accuracy:.2f}%",
                "-" if s.agreement is None else f"{100 * s.agreement:.2f}%",
                f"{s.parameters:,}",
                f"{s.latency_ms:.3f} ms",
                epochs_cell(epochs, s.name),
            ]
            for s in scores
        ]
        header = ["model", "test perplexity", "next-token accuracy", "agreement with teacher"]
        header += ["parameters", "latency / row (CPU, batch 1)", "epochs"]
        caption = (
            "Perplexity and next-token accuracy over the test split's target tokens; agreement:"
            " the share of them where the model's most likely next token is the teacher's."
        )
        notes = comparison_notes(scores, "points of next-token accuracy", digits=2, per="row")
        return SummaryTable(header, rows, caption if detailed else "", notes)

    # ------------------------------------------------------------------ worker side

    def build_core(self, spec: StageSpec) -> TokenDistiller:
        lm = lm_config(spec.job)
        return TokenDistiller(
            build_model(spec.model, spec.num_classes),
            spec.job.distill.temperature,
            spec.job.distill.alpha,
            kind=lm.loss,
            beta=lm.beta,
            chunk_tokens=lm.chunk_tokens,
            total_epochs=spec.train.epochs,
        )

    def train_batches(
        self, shard: Any, spec: StageSpec, epoch: int, rank: int, seed: int
    ) -> Iterator[Any]:
        return _batches(shard, spec, seed)

    def step(
        self, module: nn.Module, core: nn.Module, spec: StageSpec, batch: Any, ctx: LoopContext
    ) -> StepOutput:
        rows = batch[INPUT].long()
        out = core.loss(module(rows), rows, _teacher(spec, batch, rows.device))
        where = batch_rows(batch[ROW_ID]) if ROW_ID in batch else "?"
        return StepOutput(out.total, out.as_floats(), out.tokens, f"batch rows {where}")

    def validate(
        self, module: nn.Module, core: nn.Module, spec: StageSpec, shard: Any, ctx: LoopContext
    ) -> dict[str, float]:
        """Objective, next-token CE (and its perplexity) and, distilled, the share of target
        tokens where the student's argmax is the teacher's, summed over every worker."""
        module.eval()
        sums = torch.zeros(4, dtype=torch.float64)  # loss*n, ce*n, agree, n
        with torch.no_grad():
            for batch in _batches(shard, spec, None):
                rows = batch[INPUT].long()
                logits = module(rows)
                teacher = _teacher(spec, batch, rows.device)
                out = core.loss(logits, rows, teacher)
                agree = 0
                if teacher is not None:
                    agree = int(token_agreement(logits[:, :-1], teacher[:, :-1], rows[:, 2, 1:]))
                n = out.tokens
                sums += torch.tensor(
                    [out.total.item() * n, out.ce.item() * n, agree, n], dtype=torch.float64
                )
        loss, ce, agree, n = ctx.all_sum(sums).tolist()
        n = max(n, 1.0)
        metrics = {"val_loss": loss / n, "val_ce": ce / n, "val_ppl": math.exp(ce / n)}
        if spec.distill:
            metrics["val_agree"] = agree / n
        return metrics

    def epoch_line(self, spec: StageSpec, m: dict[str, Any]) -> str:
        line = f"val_ce {m['val_ce']:.4f} val_ppl {m['val_ppl']:.2f}"
        if spec.distill:
            line += f" agree {m['val_agree']:.3f} T={m['temperature']:.2f} alpha={m['alpha']:.2f}"
        return line


def _check_positions(model: nn.Module, job: JobConfig, side: str) -> None:
    assert job.data.text is not None
    positions = getattr(getattr(model, "model", None), "config", None)
    most = getattr(positions, "max_position_embeddings", None)
    if most is not None and job.data.text.max_length > most:
        raise JobError(
            f"data.text.max_length: {job.data.text.max_length} tokens per row, but the {side} "
            f"({getattr(job, side).model}) has {most} positions"
        )


def _check_generate(job: JobConfig) -> None:
    """``teacher_pass: generate`` answers prompts; without the answers' logits the stage is
    next-token CE on them, so an alpha that weighs a divergence is refused."""
    lm = lm_config(job)
    if lm.format != "prompt_response":
        raise JobError(
            "distill.teacher_pass: generate answers prompts: set lm.format prompt_response"
        )
    g = lm.generate
    if g.temperature == 0 and g.samples_per_prompt > 1:
        raise JobError(
            f"lm.generate.samples_per_prompt: {g.samples_per_prompt} greedy answers to a prompt "
            "are one answer repeated: set temperature > 0 or samples_per_prompt 1"
        )
    alphas = job.distill.alpha.values(job.train.epochs)
    if not g.logits and max(alphas) > 0:
        raise JobError(
            f"distill.alpha: {max(alphas):g}, but teacher_pass generate without "
            "lm.generate.logits trains on the answers alone (next-token CE): set alpha 0, or "
            "lm.generate.logits true"
        )


def _teacher(spec: StageSpec, batch: dict[str, torch.Tensor], device: torch.device) -> Any:
    if not spec.distill:
        return None
    teacher = spec.codec.decode(batch, spec.num_classes)  # None: answers shipped no logits
    return None if teacher is None else teacher.to(device)


def _batches(shard: Any, spec: StageSpec, seed: int | None) -> Any:
    shuffle = spec.job.data.shuffle_buffer if seed is not None else 0
    return shard.iter_torch_batches(
        batch_size=spec.train.batch_size,
        local_shuffle_buffer_size=shuffle or None,
        local_shuffle_seed=seed if shuffle else None,
    )


def _to_dataset(split: LMSplit, blocks: int = 4) -> Any:
    import pyarrow as pa
    import ray.data
    from ray.data.extensions import ArrowTensorArray

    table = pa.table(
        {
            INPUT: ArrowTensorArray.from_numpy(np.ascontiguousarray(split.rows)),
            ROW_ID: pa.array(np.arange(len(split)), type=pa.int64()),
        }
    )
    step = max(1, -(-table.num_rows // blocks))
    return ray.data.from_arrow([table.slice(i, step) for i in range(0, table.num_rows, step)])


@torch.no_grad()
def _evaluate(
    model: nn.Module, rows: np.ndarray, teacher: nn.Module | None = None
) -> tuple[float, int, int, int]:
    """Mean next-token CE (nats), correct argmax predictions, predictions equal to the
    ``teacher``'s argmax (0 without one) and target tokens over ``rows``."""
    model.eval()
    if teacher is not None:
        teacher.eval()
    ce_sum, correct, agree, tokens = 0.0, 0, 0, 0
    for start in range(0, len(rows), SCORE_BATCH):
        x = torch.from_numpy(np.array(rows[start : start + SCORE_BATCH]))
        logits = model(x)[:, :-1]
        nxt, counted = x[:, 0, 1:], x[:, 2, 1:].bool()
        n = int(counted.sum())
        ce_sum += next_token_ce(logits, nxt, counted).item() * n
        correct += int(((logits.argmax(-1) == nxt) & counted).sum())
        if teacher is not None:
            agree += int(token_agreement(logits, teacher(x)[:, :-1], counted))
        tokens += n
    return ce_sum / max(tokens, 1), correct, agree, tokens


@torch.no_grad()
def _latency_ms(model: nn.Module, rows: np.ndarray, runs: int = 5) -> float:
    """Median wall time of one forward over ``rows`` (milliseconds, this process's threads)."""
    model.eval()
    x = torch.from_numpy(np.array(rows))
    model(x)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        model(x)
        times.append(1000 * (time.perf_counter() - started))
    return float(np.median(times))
