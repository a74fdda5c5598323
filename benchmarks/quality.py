"""The quality table: teacher, the student alone, and the student distilled by each method.

    .venv/bin/python benchmarks/quality.py jobs/digits.yaml --seeds 0 1 2 \
        --features features.7=features.7
    .venv/bin/python benchmarks/quality.py jobs/fashion-mnist.yaml --seeds 0 1 2 \
        --features features.7=layer2 --set data.subset=0.1 --set train.epochs=8
    .venv/bin/python benchmarks/quality.py jobs/bbc-news.yaml --seeds 0 1 2   # the job's pairs
    .venv/bin/python benchmarks/quality.py jobs/fashion-mnist-hinton.yaml --seeds 0 1 2 \
        --only KD --paper 67 146 74 --paper-name "paper (MNIST)"   # test errors, docs/hinton.md

Trains the teacher once (seed of the job), then for every seed: the student alone, KD, KD with
decaying schedules (temperature linear from 2T to T, alpha linear from alpha to alpha/2), KD
plus attention transfer on the ``--features`` pair (without it: KD plus the job's own feature
pairs, loss and weight), DKD, and KD with dynamic per-sample weighting, each a real pipeline
run (Ray Data teacher pool, Ray Train workers). Every variant starts from the job's own
temperature/alpha and training settings; only the method changes. Prints and writes
(``--out``, Markdown) mean +- std test accuracy over the seeds, parameters, CPU latency per
sample (batch 1), and the share of the teacher-student gap each variant closes:
``(variant - alone) / (teacher - alone)``. The split is fixed by ``data.split.seed``, so every
seed is scored on the same test set. Runs go to a temporary directory unless ``--storage``.
``--errors`` adds a table of test errors (counts out of the test rows) and of the share of the
gap each row closes per seed (mean +- std), with a verdict; ``--paper T A D`` shows published
teacher / alone / distilled errors beside it.

The distilled rows read one shared Parquet teacher cache (``distill.teacher_pass: cache``) per
distinct cache key: one for all rows and seeds, or one per seed where the job augments (the
views depend on the seed) and one per feature-layer set the pool ships. The teacher runs once
per cache, not once per row; ``--no-shared-cache`` keeps each row's own teacher pass.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
import time
from pathlib import Path

from raydistill.config import JobConfig, load_job
from raydistill.pipeline import run_job, run_teacher
from raydistill.runtime import ray_session

ALONE = "student alone"


SCHEDULED = "KD, decaying schedules"


def variants(
    pairs: list[tuple[str, str]],
    feature_loss: str,
    feature_weight: float,
    weighting: str,
    temperature: float,
    alpha: float,
) -> dict[str, list]:
    """Overrides of each row; every distilled row starts from plain KD with the job's
    ``temperature`` and ``alpha`` (as constants, their values at epoch 0)."""
    kd = [
        "distill.enabled=true",
        "distill.method=kd",
        "distill.weighting=none",
        "distill.feature_layers=[]",
        "distill.feature_weight=0",
    ]
    rows: dict[str, list[str]] = {ALONE: ["distill.enabled=false"], "KD": kd}
    # The same KD with the schedules users reach for: a temperature annealed from twice the
    # job's down to it, and alpha decayed to half, so hard labels weigh more late in training.
    rows[SCHEDULED] = [
        *kd,
        f"distill.temperature={{kind: linear, start: {2 * temperature:g}, end: {temperature:g}}}",
        f"distill.alpha={{kind: linear, start: {alpha:g}, end: {alpha / 2:g}}}",
    ]
    if pairs:
        layers = "[" + ", ".join(f"{{student: {s}, teacher: {t}}}" for s, t in pairs) + "]"
        rows[f"KD + {feature_loss.upper()} features"] = [
            *kd,
            f"distill.feature_layers={layers}",
            f"distill.feature_loss={feature_loss}",
            f"distill.feature_weight={feature_weight}",
        ]
    rows["DKD"] = [*kd, "distill.method=dkd"]
    rows[f"KD + dynamic weighting ({weighting})"] = [*kd, f"distill.weighting={weighting}"]
    return rows


def shared_cache_overrides(job: JobConfig, storage: Path) -> list[str]:
    """Overrides that point a distilled run at the cache it can share with the other runs:
    its directory is named by what the cache key takes from the run (the seed where views are
    augmented, the feature layers the pool ships), so runs that agree on them share it."""
    if not job.distill.enabled or job.distill.teacher_pass == "per_epoch":
        return []
    varies = {
        "seed": job.seed if job.data.augment is not None else None,
        "pool_features": job.pool_feature_layers,
    }
    tag = hashlib.sha256(json.dumps(varies, sort_keys=True).encode()).hexdigest()[:10]
    return ["distill.teacher_pass=cache", f"cache.path={storage / 'teacher-cache' / tag}"]


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def table(
    title: str, teacher: dict, rows: dict[str, dict[str, list[float]]], seeds: list[int]
) -> str:
    """The Markdown table: accuracy in %, latency in ms."""
    alone = statistics.mean(rows[ALONE]["acc"])
    gap = teacher["acc"] - alone
    lines = [
        title,
        "",
        "| model | test accuracy (mean +- std) | per seed | parameters "
        "| latency / sample (CPU, batch 1) | teacher-student gap closed |",
        "|---|---:|---|---:|---:|---:|",
        f"| teacher (trained once) | {teacher['acc']:.2f}% | - | {teacher['params']:,} "
        f"| {teacher['latency']:.3f} ms | - |",
    ]
    for name, r in rows.items():
        mean, std = _mean_std(r["acc"])
        closed = "-" if name == ALONE or abs(gap) < 1e-9 else f"{100 * (mean - alone) / gap:+.0f}%"
        lines.append(
            f"| {name} | {mean:.2f} +- {std:.2f}% | {', '.join(f'{v:.2f}' for v in r['acc'])} "
            f"| {int(r['params'][0]):,} | {statistics.mean(r['latency']):.3f} ms | {closed} |"
        )
    best = max((n for n in rows if n != ALONE), key=lambda n: statistics.mean(rows[n]["acc"]))
    b_mean, b_std = _mean_std(rows[best]["acc"])
    a_mean, a_std = _mean_std(rows[ALONE]["acc"])
    gain, spread = b_mean - a_mean, max(a_std, b_std)
    verdict = "beats" if gain > spread else "is WORSE than" if -gain > spread else "does NOT beat"
    lines += [
        "",
        f"- best distillation variant: {best}, {b_mean - a_mean:+.2f} points over the student "
        f"alone; it {verdict} the student alone by more than the seeds' spread "
        f"(std {a_std:.2f} / {b_std:.2f})",
        f"- seeds {seeds}; the teacher-student gap is teacher minus the student alone's mean",
    ]
    return "\n".join(lines)


def test_errors(score: object) -> tuple[int, int] | None:
    """(errors, rows) of a classification score on the test split, or None without rows:
    the rows are those of its reliability bins, so ``errors`` is ``rows * (1 - accuracy)``."""
    bins = getattr(score, "reliability", ())
    rows = sum(int(n) for n, _, _ in bins)
    if not rows:
        return None
    return round(rows * (1 - score.accuracy)), rows


def errors_table(
    title: str,
    teacher: dict,
    rows: dict[str, dict[str, list[float]]],
    seeds: list[int],
    paper: tuple[int, int, int] | None = None,
    paper_name: str = "paper",
) -> str:
    """The Markdown table of test errors (counts out of the test rows) and of the share of the
    teacher-student gap each distilled row closes per seed, ``(alone_s - row_s) / (alone_s -
    teacher)`` with errors, as mean +- std over the seeds; ``paper``: published (teacher,
    alone, distilled) errors shown beside them. The verdict says a row "closes at least half
    the gap" only when its share stays >= 50% one std below its mean and its gain over the
    student alone (in errors) exceeds the seeds' spread (the larger of the two stds)."""
    n = teacher["rows"]
    alone = rows[ALONE]["errors"]
    a_mean, a_std = _mean_std(alone)
    ref = {"teacher": paper[0], ALONE: paper[1]} if paper else {}
    head = f" {paper_name} |" if paper else ""
    lines = [
        title,
        "",
        f"| model | test errors of {n:,} (mean +- std) | per seed | test accuracy "
        f"| gap closed (mean +- std) |{head}",
        "|---|---:|---|---:|---:|" + ("---:|" if paper else ""),
        f"| teacher (trained once) | {teacher['errors']} | - "
        f"| {100 * (1 - teacher['errors'] / n):.2f}% | - |"
        + (f" {ref['teacher']} |" if paper else ""),
        f"| {ALONE} | {a_mean:.1f} +- {a_std:.1f} | {', '.join(f'{e:g}' for e in alone)} "
        f"| {100 * (1 - a_mean / n):.2f}% | - |" + (f" {ref[ALONE]} |" if paper else ""),
    ]
    paper_cell = ""
    if paper:
        paper_closed = 100 * (paper[1] - paper[2]) / (paper[1] - paper[0])
        paper_cell = f" {paper[2]} ({paper_closed:.0f}% closed) |"
    shares: dict[str, tuple[float, float]] = {}
    for name, r in rows.items():
        if name == ALONE:
            continue
        mean, std = _mean_std(r["errors"])
        closed = [
            (a - e) / (a - teacher["errors"]) if a != teacher["errors"] else float("nan")
            for a, e in zip(alone, r["errors"], strict=False)
        ]
        shares[name] = _mean_std(closed)
        s_mean, s_std = shares[name]
        lines.append(
            f"| {name} | {mean:.1f} +- {std:.1f} | {', '.join(f'{e:g}' for e in r['errors'])} "
            f"| {100 * (1 - mean / n):.2f}% | {100 * s_mean:.0f} +- {100 * s_std:.0f}% |"
            + paper_cell
        )
    lines.append("")
    if shares:
        best = max(shares, key=lambda k: shares[k][0])
        s_mean, s_std = shares[best]
        b_mean, b_std = _mean_std(rows[best]["errors"])
        gain, spread = a_mean - b_mean, max(a_std, b_std)
        if s_mean - s_std >= 0.5 and gain > spread:
            verdict = "closes at least half the gap"
        elif gain > spread:
            verdict = (
                f"beats the student alone by more than the spread but does NOT close at least"
                f" half the gap ({100 * s_mean:.0f} +- {100 * s_std:.0f}%)"
            )
        elif -gain > spread:
            verdict = "is WORSE than the student alone by more than the seeds' spread"
        else:
            verdict = "does NOT beat the student alone by more than the seeds' spread"
        lines.append(
            f"- {best}: {gain:+.1f} errors against the student alone (spread: std "
            f"{a_std:.1f} / {b_std:.1f}); it {verdict}"
        )
    lines.append(
        f"- seeds {seeds}; the teacher is trained once; a seed's gap is its student alone's "
        "errors minus the teacher's"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument(
        "--features",
        default=None,
        help="STUDENT=TEACHER layer pair for an AT row (default: a row with the job's own"
        " feature pairs, loss and weight; no feature row without either)",
    )
    parser.add_argument("--at-weight", type=float, default=10.0, help="feature_weight of AT")
    parser.add_argument("--weighting", default="confidence", help="the dynamic weighting row")
    parser.add_argument("--only", nargs="*", default=None, help="run only these rows")
    parser.add_argument(
        "--no-shared-cache",
        dest="shared_cache",
        action="store_false",
        help="every distilled row runs its own teacher pass (default: one shared cache)",
    )
    parser.add_argument(
        "--errors",
        action="store_true",
        help="also a table of test errors (counts) and the share of the gap closed per seed",
    )
    parser.add_argument(
        "--paper",
        type=int,
        nargs=3,
        default=None,
        metavar=("TEACHER", "ALONE", "DISTILLED"),
        help="published test errors to show beside the errors table (implies --errors)",
    )
    parser.add_argument("--paper-name", default="paper", help="the --paper column's heading")
    parser.add_argument("--storage", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="Markdown file (default: storage)")
    args = parser.parse_args()
    storage = args.storage or Path(tempfile.mkdtemp(prefix="rd-quality-"))
    common = [*args.overrides, f"output.storage_path={storage}"]

    base = load_job(args.job, common)
    if args.features:
        student, sep, teacher = args.features.partition("=")
        pairs, loss, weight = [(student, teacher if sep else student)], "at", args.at_weight
    else:
        pairs = [(p.student, p.teacher) for p in base.distill.feature_layers]
        loss, weight = base.distill.feature_loss, base.distill.feature_weight
    t0, a0 = base.distill.temperature.value(0), base.distill.alpha.value(0)
    rows_spec = variants(pairs, loss, weight, args.weighting, t0, a0)
    if args.only:
        rows_spec = {k: v for k, v in rows_spec.items() if k == ALONE or k in args.only}

    started = time.perf_counter()
    out = args.out or storage / f"quality-{base.name}.md"
    total = len(args.seeds) * len(rows_spec)
    teacher: dict = {}
    rows: dict[str, dict[str, list[float]]] = {}

    def write(done: int) -> str:
        title = (
            f"### {base.name}: test accuracy over seeds {args.seeds} "
            f"({time.perf_counter() - started:.0f} s in all"
            + (f"; overrides: {' '.join(args.overrides)}" if args.overrides else "")
            + ")"
            + ("" if done == total else f" - PARTIAL: {done} of {total} runs")
        )
        text = table(title, teacher, rows, args.seeds)
        if (args.errors or args.paper) and "errors" in teacher:
            errors_title = title.replace("test accuracy", "test errors", 1)
            text += "\n\n" + errors_table(
                errors_title, teacher, rows, args.seeds, args.paper, args.paper_name
            )
        out.write_text(text + "\n")
        return text

    with ray_session(base):
        teacher_weights = run_teacher(base)
        for seed in args.seeds:
            for name, changes in rows_spec.items():
                tag = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
                overrides = [
                    *common,
                    f"name={base.name}-{tag}-seed{seed}",
                    f"seed={seed}",
                    f"teacher.checkpoint={teacher_weights}",
                    "train.baseline=false",
                    *changes,
                ]
                job = load_job(args.job, overrides)
                if args.shared_cache:
                    job = load_job(args.job, [*overrides, *shared_cache_overrides(job, storage)])
                summary = run_job(job)
                student = summary.scores[-1]
                row = rows.setdefault(name, {"acc": [], "params": [], "latency": [], "errors": []})
                row["acc"].append(100 * student.accuracy)
                counted = test_errors(student)
                if counted is not None:
                    row["errors"].append(counted[0])
                row["params"].append(student.parameters)
                row["latency"].append(student.latency_ms)
                if not teacher and summary.scores[0].name == "teacher":
                    t = summary.scores[0]
                    teacher = {
                        "acc": 100 * t.accuracy,
                        "params": t.parameters,
                        "latency": t.latency_ms,
                    }
                    counted = test_errors(t)
                    if counted is not None:
                        teacher["errors"], teacher["rows"] = counted
                done = sum(len(r["acc"]) for r in rows.values())
                # what has run so far survives a run that dies or is stopped later
                if teacher and ALONE in rows and len(rows) > 1 and done < total:
                    write(done)
                    print(f"[quality] {done}/{total} runs; partial table in {out}", flush=True)

    text = write(total)
    print("\n" + text)
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
